/** Live refresh: run a task every few seconds while the tab is visible, never two at once; and, while any
 * page refreshes itself, a note when what is on screen is overdue ("Not updated for 40 s"). */

import { lastAnswered } from './api.js';
import { shortDateTime } from './format.js';

const refreshing = new Set(); // the intervals (ms) of the refreshes running, one entry each
let ticker = 0;
let visibleSince = Date.now();

/** Show or hide the page-wide "not updated" note (#stale, a status region): shown when the server has not
 * answered for twice the shortest refresh interval (at least 10 s) while a page refreshes itself in a
 * visible tab. Its seconds count, which changes every second, is hidden from screen readers, so they
 * announce the note once, and again only when the time of the last answer changes. */
function showStaleness() {
  const note = document.getElementById('stale');
  if (!note) return;
  const shortest = Math.min(...[...refreshing].map((r) => r.ms));
  const since = Math.max(lastAnswered(), visibleSince);
  const quiet = Date.now() - since;
  const overdue = refreshing.size > 0 && document.visibilityState === 'visible' && quiet > Math.max(2 * shortest, 10000);
  if (!overdue) {
    note.hidden = true;
    note.replaceChildren();
    return;
  }
  if (!note.firstChild) {
    const count = document.createElement('span');
    count.setAttribute('aria-hidden', 'true');
    note.append(count, document.createElement('span'));
  }
  const [count, summary] = note.children;
  count.textContent = `Not updated for ${Math.round(quiet / 1000)} s: `;
  const said = `The server has not answered since ${shortDateTime(lastAnswered())}. What is shown may be out `
    + 'of date.';
  if (summary.textContent !== said) summary.textContent = said;
  note.hidden = false;
}

function watch(entry, signal) {
  refreshing.add(entry);
  if (!ticker) ticker = setInterval(showStaleness, 1000);
  signal.addEventListener('abort', () => {
    refreshing.delete(entry);
    if (!refreshing.size) {
      clearInterval(ticker);
      ticker = 0;
    }
    showStaleness();
  });
}

document.addEventListener('visibilitychange', () => {
  if (document.visibilityState === 'visible') visibleSince = Date.now();
  showStaleness();
});

/** Call task every `ms` while document.visibilityState is "visible", until signal aborts. A hidden tab
 * makes no calls; when it shows again an overdue call runs at once. The task handles its own errors (a call
 * that hangs fails after api.js's READ_TIMEOUT_MS, so refreshing goes on). */
export function every(ms, task, signal) {
  let timer = 0;
  let running = false;
  let last = Date.now();
  const visible = () => document.visibilityState === 'visible';
  const schedule = () => {
    if (signal.aborted || timer || running || !visible()) return;
    timer = setTimeout(run, Math.max(0, last + ms - Date.now()));
  };
  const run = async () => {
    timer = 0;
    if (signal.aborted || !visible()) return;
    running = true;
    last = Date.now();
    try {
      await task();
    } catch (error) {
      if (error?.name !== 'AbortError') console.warn('refresh failed', error);
    } finally {
      running = false;
    }
    schedule();
  };
  const onVisibility = () => {
    if (visible()) schedule();
    else if (timer) { clearTimeout(timer); timer = 0; }
  };
  document.addEventListener('visibilitychange', onVisibility);
  signal.addEventListener('abort', () => {
    clearTimeout(timer);
    document.removeEventListener('visibilitychange', onVisibility);
  });
  watch({ ms }, signal);
  schedule();
}
