/** Doors: access decisions per door over a range (a chart and a table), and the recent access events with
 * their reasons, filterable by door; new events appear as they arrive. The range ("Last hour", …) ends now
 * at every refresh: its start moves on with the clock, for the summary and the table alike. */

import { get, isAbort } from '../api.js';
import { field, h, replace, select, uid } from '../dom.js';
import { number, percent } from '../format.js';
import { every } from '../poll.js';
import { accessChart } from '../aggregates.js';
import { eventsTable } from '../events.js';
import { knownNames, namesFor } from '../directory.js';

const HOUR_MS = 3600000;
const RANGES = [['1h', 'Last hour', HOUR_MS], ['24h', 'Last 24 hours', 24 * HOUR_MS],
  ['7d', 'Last 7 days', 7 * 24 * HOUR_MS], ['30d', 'Last 30 days', 30 * 24 * HOUR_MS]];
const SUMMARY_MS = 30000;

/** Render the page into ctx.main. */
export function render(ctx) {
  const { main, params, signal, isAdmin } = ctx;
  let doors = [];
  const chosenRange = RANGES.some(([key]) => key === params.get('range')) ? params.get('range') : '24h';
  const door = select({ name: 'door' }, [['', 'All doors']], params.get('door') || '');
  const range = select({ name: 'range' }, RANGES.map(([key, text]) => [key, text]), chosenRange);
  const summaryBody = h('div', { class: 'door-summary' }, h('p', { class: 'loading', text: 'Loading…' }));
  const summaryId = uid('doors');

  /** The range's start, now. */
  const since = () => new Date(Date.now() - RANGES.find(([key]) => key === range.value)[2]).toISOString();

  const table = eventsTable({
    title: 'Recent access events',
    columns: ['time', 'door', 'device', 'person', 'decision', 'reason'],
    query: () => ({ kind: 'access', door: door.value, start: since() }),
    rolling: true,
    names: () => (isAdmin ? knownNames() : null),
    lookupNames: isAdmin ? (ids) => namesFor(ids, { signal }) : null,
    signal,
    emptyText: 'No access events in this range',
  });

  const doorOptions = () => {
    const chosen = door.value;
    const all = [...new Set(doors.map((d) => d.door).filter(Boolean))].sort();
    if (chosen && !all.includes(chosen)) all.push(chosen);
    replace(door, [['', 'All doors'], ...all.map((d) => [d, d])].map(([value, text]) =>
      h('option', { value, selected: value === chosen, text })));
  };

  const summaryTable = (rows) => h('div', { class: 'table-wrap' }, h('table', { class: 'data' },
    h('caption', { class: 'visually-hidden', text: 'Decisions per door' }),
    h('thead', null, h('tr', null, ['Door', 'Device', 'Granted', 'Denied', 'Denied share'].map((text, i) =>
      h('th', { scope: 'col', class: i > 1 ? 'num' : null, text })))),
    h('tbody', null, rows.map((d) => h('tr', { dataset: { door: d.door } },
      h('th', { scope: 'row' }, h('span', { class: 'name', text: d.door || 'no door' })),
      h('td', null, h('span', { class: 'name', text: d.device_id })),
      h('td', { class: 'num', text: number(d.granted) }), h('td', { class: 'num', text: number(d.denied) }),
      h('td', { class: 'num', text: d.granted + d.denied ? percent(d.denied / (d.granted + d.denied)) : '—' }))))));

  const loadSummary = async () => {
    try {
      const access = await get('/api/events/access', { start: since() }, { signal });
      doors = access.doors;
      doorOptions();
      const rows = doors.filter((d) => !door.value || d.door === door.value)
        .sort((a, b) => a.door.localeCompare(b.door) || a.device_id.localeCompare(b.device_id));
      replace(summaryBody, accessChart(rows, 'Granted and denied per door'), rows.length ? summaryTable(rows) : null);
    } catch (error) {
      if (!isAbort(error)) {
        replace(summaryBody, h('p', { role: 'alert', class: 'error-text', text: `The decisions cannot be loaded: ${error.message}` }));
      }
    }
  };

  const reload = () => {
    ctx.setParams(Object.fromEntries(Object.entries({ door: door.value, range: range.value }).filter(([, v]) => v)));
    loadSummary();
    table.load();
  };

  door.addEventListener('change', reload);
  range.addEventListener('change', reload);
  main.append(h('h1', { text: 'Doors' }),
    h('form', { class: 'toolbar', onsubmit: (e) => e.preventDefault() },
      field('Door', door), field('Range', range)),
    h('section', { class: 'panel' },
      h('h2', { id: summaryId, text: 'Decisions per door' }), summaryBody),
    table.element);
  reload();
  every(SUMMARY_MS, loadSummary, signal);
}
