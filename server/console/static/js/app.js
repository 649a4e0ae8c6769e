/** The console's boot: the session (sign in, sign out, back to the sign-in form on any 401), the header
 * and its navigation, and the hash router (#/fleet, #/activity?device=…, #/rollouts/12). */

import { del, get, post, SESSION_ENDED, setCsrfToken, setUnauthorizedHandler, SESSION_PATH } from './api.js';
import { badge, field, h, replace } from './dom.js';
import { forgetPeople } from './directory.js';
import * as fleet from './pages/fleet.js';
import * as activity from './pages/activity.js';
import * as people from './pages/people.js';
import * as unknown from './pages/unknown.js';
import * as rollouts from './pages/rollouts.js';
import * as doors from './pages/doors.js';

/** Every page: its hash path, its name (nav link and <h1>), and whether it needs an admin session. */
const ROUTES = [
  { path: 'fleet', name: 'Fleet', page: fleet },
  { path: 'activity', name: 'Activity', page: activity },
  { path: 'people', name: 'People', page: people, admin: true },
  { path: 'unknown', name: 'Unknown faces', page: unknown, admin: true },
  { path: 'rollouts', name: 'Rollouts', page: rollouts, admin: true },
  { path: 'doors', name: 'Doors', page: doors },
];
const DEFAULT_ROUTE = '#/fleet';

const main = document.getElementById('main');
const nav = document.getElementById('nav');
const who = document.getElementById('who');
const notice = document.getElementById('notice');
let session = null;
let pageAbort = null;
let keepNotice = false;
let rendered = false;

/** Say something in the page-wide status region (tone: info, ok or error). */
export function notify(text, tone = 'info') {
  replace(notice, text ? h('p', { class: ['message', tone], role: tone === 'error' ? 'alert' : null, text }) : null);
}

function parseHash() {
  const raw = location.hash.replace(/^#/, '');
  if (!raw.startsWith('/')) return null;
  const [path, query = ''] = raw.slice(1).split('?');
  return { parts: path.split('/').filter(Boolean).map(decodeURIComponent), params: new URLSearchParams(query) };
}

function stopPage() {
  if (pageAbort) pageAbort.abort();
  pageAbort = null;
}

function showNav(current) {
  const allowed = ROUTES.filter((r) => !r.admin || session.role === 'admin');
  replace(nav, h('ul', null, allowed.map((r) => h('li', null,
    h('a', { href: `#/${r.path}`, 'aria-current': r === current ? 'page' : null, text: r.name })))));
  nav.hidden = false;
}

function showWho() {
  replace(who,
    h('span', { class: 'operator' }, h('span', { class: 'visually-hidden', text: 'Signed in as ' }),
      h('strong', { dataset: { operator: '' }, text: session.operator }), ' ',
      badge(session.role, session.role === 'admin' ? 'info' : 'muted')),
    h('button', { type: 'button', class: 'quiet', text: 'Sign out', onclick: signOut }));
  who.hidden = false;
}

function route() {
  if (!session) return;
  const target = parseHash();
  if (!target) {
    if (!location.hash) location.replace(DEFAULT_ROUTE);
    return; // an in-page anchor, not a route
  }
  const def = ROUTES.find((r) => r.path === target.parts[0]);
  if (!def || (def.admin && session.role !== 'admin')) {
    if (def) notify(`${def.name} needs an admin token; this session has the query role.`, 'error');
    keepNotice = Boolean(def);
    location.replace(DEFAULT_ROUTE);
    return;
  }
  stopPage();
  pageAbort = new AbortController();
  if (!keepNotice) notify(''); // a notice is about the page it was given on
  keepNotice = false;
  showNav(def);
  main.replaceChildren();
  document.title = `${def.name} · FaceFleet`;
  const path = def.path;
  def.page.render({
    main,
    session,
    isAdmin: session.role === 'admin',
    parts: target.parts.slice(1),
    params: target.params,
    signal: pageAbort.signal,
    notify,
    /** Keep a page's state (filters) in the address without reloading the page. */
    setParams(params) {
      const query = new URLSearchParams(params).toString();
      history.replaceState(null, '', `#/${path}${query ? `?${query}` : ''}`);
    },
  });
  const heading = main.querySelector('h1');
  if (heading) heading.tabIndex = -1;
  if (rendered && heading) heading.focus();
  rendered = true;
}

/** Start the pages for a session; signedIn: just now through the form (the page's <h1> gets the focus). */
function start(body, { signedIn = false } = {}) {
  if (signedIn) rendered = true;
  session = { operator: body.operator, role: body.role, expiresAt: body.expires_at };
  setCsrfToken(body.csrf_token);
  showWho();
  if (parseHash()) route();
  else location.replace(DEFAULT_ROUTE); // hashchange routes
}

/** The sign-in form; message: why it is shown (an ended session). */
function showSignIn(message = '') {
  stopPage();
  // Dialogs of the pages go with them (removed, not closed: nothing is given back the focus).
  document.querySelectorAll('dialog').forEach((dialog) => dialog.remove());
  session = null;
  setCsrfToken('');
  forgetPeople();
  nav.hidden = true;
  who.hidden = true;
  replace(nav);
  replace(who);
  document.title = 'Sign in · FaceFleet';
  const token = h('input', { type: 'password', name: 'token', autocomplete: 'off', required: true,
    spellcheck: 'false', autocapitalize: 'off' });
  const error = h('p', { role: 'alert', class: 'error-text', hidden: true });
  const button = h('button', { type: 'submit', class: 'primary', text: 'Sign in' });
  const form = h('form', { class: 'signin panel stack' },
    h('h1', { id: 'signin-title', tabindex: -1, text: 'Sign in' }),
    message ? h('p', { class: 'message info', text: message }) : null,
    h('p', { class: 'meta', text: 'Use an operator token (facefleet-server tokens create NAME --role admin|query). '
      + 'It is sent once to start a session and never stored by this page.' }),
    field('Token', token), error, h('div', { class: 'actions' }, button));
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    const value = token.value;
    token.value = '';
    error.hidden = true;
    button.disabled = true;
    try {
      start(await post(SESSION_PATH, { token: value }), { signedIn: true });
    } catch (failure) {
      error.textContent = failure.status === 401
        ? `That token was not accepted: ${failure.message}` : `Cannot sign in: ${failure.message}`;
      error.hidden = false;
      token.focus();
    } finally {
      button.disabled = false;
    }
  });
  replace(main, form);
  token.focus();
}

async function signOut() {
  stopPage(); // no refresh may race the sign-out
  try {
    await del(SESSION_PATH);
  } catch (failure) {
    if (failure.status !== 401) {
      notify(`Cannot sign out: ${failure.message}`, 'error');
      route();
      return;
    }
  }
  notify('');
  showSignIn('You have signed out.');
}

async function boot() {
  setUnauthorizedHandler(() => {
    if (session) showSignIn(SESSION_ENDED);
  });
  window.addEventListener('hashchange', route);
  try {
    start(await get(SESSION_PATH));
  } catch (failure) {
    showSignIn(failure.status === 401 ? '' : `The session cannot be checked: ${failure.message}`);
  }
}

boot();
