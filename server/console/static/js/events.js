/** A table of events, newest first, a page at a time ("Newer" / "Older" by page token), with live updates
 * while the first page is shown: events newer than the newest one shown appear without a reload, and the
 * oldest rows beyond the page size go (the "Older" page then starts after the first page as it is then). */

import { get, isAbort } from './api.js';
import { badge, h, replace } from './dom.js';
import { number, plural, timeEl } from './format.js';
import { every } from './poll.js';

export const DECISIONS = ['match', 'unknown', 'ambiguous', 'undecided', 'granted', 'denied'];
const TONES = { match: 'ok', granted: 'ok', unknown: 'warn', ambiguous: 'warn', undecided: 'muted', denied: 'bad' };
const LIVE_MS = 4000;

/** A decision as a badge: its colour and its word. */
export function decisionBadge(decision) {
  return badge(decision || '—', TONES[decision] || 'muted');
}

/** A person id (cut short on screen, whole in its title and text) with the person's name when known. */
export function personCell(personId, names) {
  if (!personId) return h('span', { class: 'muted', text: '—' });
  const name = names?.get(personId);
  const id = h('span', { class: ['id', name ? 'muted' : null], title: personId, text: personId });
  return name ? h('span', null, h('span', { class: ['block', 'name'], text: name }), h('small', { class: 'block' }, id)) : id;
}

/** A name or id in a table cell: wrapped anywhere within a bounded width (see .name in console.css). */
const nameEl = (text) => h('span', { class: 'name', text });

/** The columns an events table can show, by key. */
export const COLUMNS = {
  time: { label: 'Time', cell: (e) => timeEl(e.time) },
  device: { label: 'Device', cell: (e) => nameEl(e.device_id) },
  camera: { label: 'Camera', cell: (e) => nameEl(e.camera || '—') },
  door: { label: 'Door', cell: (e) => nameEl(e.door || '—') },
  kind: { label: 'Kind', cell: (e) => e.kind },
  decision: { label: 'Decision', cell: (e) => decisionBadge(e.decision) },
  person: { label: 'Person', cell: (e, names) => personCell(e.person_id, names) },
  reason: { label: 'Reason', cell: (e) => e.reason || '—', wrap: true },
  score: { label: 'Score', cell: (e) => (e.kind === 'face' ? number(e.score, 2) : '—'), num: true },
  expression: { label: 'Expression', cell: (e) => e.expression?.label || '—' },
};

/**
 * The events view. options: title (its h2), columns (keys of COLUMNS), query() (the filter as API query
 * parameters, with start and end; asked again at each live update when `rolling`, for a range such as "the
 * last hour", whose older rows then go), live() (whether new events may still come: no end time), names() (person
 * id → name, or null), lookupNames(ids) (asks for the names of the people shown before they are drawn, or
 * null), signal (the page's), pageSize, emptyText. Returns {element, load}: load() shows the first page of
 * the current query.
 */
export function eventsTable({
  title = 'Events', columns, query, live = () => true, rolling = false, names = () => null, lookupNames = null,
  signal, pageSize = 50, emptyText = 'No events in this range',
}) {
  /** Names of the people in these events, looked up before the rows are drawn (a failure draws ids). */
  const nameThem = async (events) => {
    if (!lookupNames) return;
    try {
      await lookupNames(events.map((e) => e.person_id).filter(Boolean));
    } catch (error) {
      if (!isAbort(error)) console.warn('names cannot be looked up', error);
    }
  };
  const headingId = `events-heading-${Math.random().toString(36).slice(2, 8)}`;
  const status = h('p', { class: 'meta', role: 'status', 'aria-live': 'polite' });
  const body = h('tbody');
  const table = h('table', { class: 'data events' },
    h('thead', null, h('tr', null, columns.map((key) =>
      h('th', { scope: 'col', class: COLUMNS[key].num ? 'num' : null, text: COLUMNS[key].label })))),
    body);
  const wrap = h('div', { class: 'table-wrap', hidden: true }, table);
  const empty = h('p', { class: 'empty', hidden: true, text: emptyText });
  const newer = h('button', { type: 'button', text: 'Newer', disabled: true });
  const older = h('button', { type: 'button', text: 'Older', disabled: true });
  const pageLabel = h('span', { class: 'meta' });
  const pager = h('div', { class: 'pager', role: 'group', 'aria-label': `${title} pages`, hidden: true },
    newer, pageLabel, older);
  const element = h('section', { class: 'panel' },
    h('h2', { id: headingId, text: title }), status, wrap, empty, pager);
  const tokens = [''];
  let next = '';
  let trimmed = false; // rows went from the first page: `next` no longer follows its last row
  let shown = [];
  let seen = new Set();
  let sequence = 0;
  let loaded = false;
  let failing = false; // the last live update failed (said in the status line)
  let current = {};

  const row = (event, fresh = false) => h('tr', { class: fresh ? 'fresh' : null, dataset: { eventId: event.event_id } },
    columns.map((key) => h('td', { class: [COLUMNS[key].num && 'num', COLUMNS[key].wrap && 'reason'] },
      COLUMNS[key].cell(event, names()))));

  const render = () => {
    replace(body, shown.map((event) => row(event)));
    wrap.hidden = shown.length === 0;
    empty.hidden = shown.length !== 0;
    newer.disabled = tokens.length === 1;
    older.disabled = !next && !trimmed;
    pageLabel.textContent = `Page ${tokens.length}`;
    pager.hidden = tokens.length === 1 && !next;
  };

  const fetchPage = async () => {
    const mine = ++sequence;
    status.textContent = 'Loading events…';
    table.setAttribute('aria-busy', 'true');
    try {
      const page = await get('/api/events', { ...current, page_size: pageSize, page_token: tokens.at(-1) }, { signal });
      if (mine !== sequence) return;
      await nameThem(page.events);
      if (mine !== sequence) return;
      shown = page.events;
      seen = new Set(shown.map((e) => e.event_id));
      next = page.next_page_token;
      trimmed = false;
      loaded = true;
      render();
      failing = false;
      const livePart = tokens.length === 1 && live() ? ' New events appear as they arrive.' : '';
      status.textContent = shown.length ? `${plural(shown.length, 'event')}, newest first.${livePart}` : '';
    } catch (error) {
      if (isAbort(error) || mine !== sequence) return;
      status.textContent = '';
      replace(status, h('span', { role: 'alert', class: 'error-text', text: `Events cannot be loaded: ${error.message}` }));
    } finally {
      if (mine === sequence) table.removeAttribute('aria-busy');
    }
  };

  const summary = (arrived) => {
    const shownText = `${plural(shown.length, 'event')} shown, newest first`;
    status.textContent = arrived ? `${plural(arrived, 'new event')} arrived; ${shownText}.`
      : shown.length ? `${shownText}. New events appear as they arrive.` : '';
  };

  /** Keep the first page at most pageSize rows (and, for a rolling range, none before its start). */
  const trim = () => {
    const start = current.start ? Date.parse(current.start) : -Infinity;
    const keep = shown.filter((e, i) => i < pageSize && Date.parse(e.time) >= start);
    if (keep.length === shown.length) return;
    shown = keep;
    seen = new Set(shown.map((e) => e.event_id));
    while (body.rows.length > shown.length) body.lastElementChild.remove();
    trimmed = true;
    older.disabled = false;
    pager.hidden = false;
    wrap.hidden = shown.length === 0;
    empty.hidden = shown.length !== 0;
  };

  const poll = async () => {
    if (tokens.length !== 1 || !live() || sequence === 0) return;
    const mine = sequence;
    if (rolling) {
      current = query();
      trim();
    }
    const since = shown.length ? shown[0].time : current.start;
    let page;
    try {
      page = await get('/api/events', { ...current, start: since, end: '', page_size: 100 }, { signal });
    } catch (error) {
      if (isAbort(error) || mine !== sequence) return;
      replace(status, h('span', { role: 'alert', class: 'error-text',
        text: `New events cannot be fetched: ${error.message} Trying again every ${LIVE_MS / 1000} s.` }));
      failing = true;
      return;
    }
    if (mine !== sequence || tokens.length !== 1) return;
    if (page.next_page_token) { await fetchPage(); return; }
    const recovered = failing;
    failing = false;
    const fresh = page.events.filter((e) => !seen.has(e.event_id));
    if (fresh.length) await nameThem(fresh);
    if (mine !== sequence || tokens.length !== 1) return;
    const unseen = fresh.filter((e) => !seen.has(e.event_id));
    if (!unseen.length) {
      if (recovered) summary(0);
      return;
    }
    unseen.forEach((e) => seen.add(e.event_id));
    shown = [...unseen, ...shown];
    body.prepend(...unseen.map((e) => row(e, true)));
    wrap.hidden = false;
    empty.hidden = true;
    trim();
    summary(unseen.length);
  };

  const keepFocus = (from, to) => { if (from.disabled && !to.disabled) to.focus(); };
  newer.addEventListener('click', () => { tokens.pop(); fetchPage().then(() => keepFocus(newer, older)); });
  older.addEventListener('click', async () => {
    if (trimmed && tokens.length === 1) {
      // Where the first page ends now: ask for it again (its rows changed while it was live).
      try {
        next = (await get('/api/events', { ...current, page_size: pageSize }, { signal })).next_page_token;
        trimmed = false;
      } catch (error) {
        if (!isAbort(error)) {
          replace(status, h('span', { role: 'alert', class: 'error-text', text: `Events cannot be loaded: ${error.message}` }));
        }
        return;
      }
      if (!next) { older.disabled = true; newer.focus(); return; }
    }
    if (next) { tokens.push(next); fetchPage().then(() => keepFocus(older, newer)); }
  });
  every(LIVE_MS, poll, signal);

  const load = () => {
    current = query();
    tokens.length = 1;
    next = '';
    return fetchPage();
  };
  return { element, load, redraw: () => { if (loaded) render(); } };
}
