/** Activity: filter events (device, camera, person, door, decision, from/to), charts of the range
 * (events per interval per device, expressions, unknown-face rate, access per door) and the events
 * themselves, a page at a time, with new events appearing while the range is open-ended. */

import { get, isAbort } from '../api.js';
import { field, h, messageBox, replace, select, uid } from '../dom.js';
import { duration, fromLocalInput, shortDateTime, toDate, toLocalInput } from '../format.js';
import { every } from '../poll.js';
import { accessChart, chooseInterval, eventsChart, expressionsChart, unknownChart } from '../aggregates.js';
import { DECISIONS, eventsTable } from '../events.js';
import { knownNames, namesFor, pickPeople, resolvePerson } from '../directory.js';
import { cameras } from './fleet.js';

const DAY_MS = 86400000;
const MAX_RANGE_MS = 400 * DAY_MS;
const MAX_DEVICE_SERIES = 8;
const CHARTS_MS = 30000;

/** Render the page into ctx.main. */
export function render(ctx) {
  const { main, params, signal, isAdmin } = ctx;
  let people = [];
  const ids = { cameras: uid('cameras'), doors: uid('doors'), people: uid('people') };
  const chosenDevice = params.get('device') || '';
  const device = select({ name: 'device' }, [['', 'Any device'], ...(chosenDevice ? [[chosenDevice, chosenDevice]] : [])],
    chosenDevice);
  const camera = h('input', { type: 'text', name: 'camera', list: ids.cameras, value: params.get('camera') || '',
    autocomplete: 'off' });
  const person = h('input', { type: 'text', name: 'person', list: isAdmin ? ids.people : null,
    value: params.get('person') || '', autocomplete: 'off' });
  const door = h('input', { type: 'text', name: 'door', list: ids.doors, value: params.get('door') || '', autocomplete: 'off' });
  const decision = select({ name: 'decision' }, [['', 'Any decision'], ...DECISIONS.map((d) => [d, d])],
    params.get('decision') || '');
  const from = h('input', { type: 'datetime-local', name: 'from', required: true,
    value: toLocalInput(toDate(params.get('from')) || new Date(Date.now() - DAY_MS)) });
  const to = h('input', { type: 'datetime-local', name: 'to', value: toLocalInput(toDate(params.get('to'))) });
  const cameraList = h('datalist', { id: ids.cameras });
  const doorList = h('datalist', { id: ids.doors });
  const peopleList = h('datalist', { id: ids.people });
  const messages = messageBox();
  const form = h('form', { class: 'filters panel' },
    field('Device', device), field('Camera', camera),
    field('Person', person, isAdmin ? 'Person id or pick a name' : 'Person id'),
    field('Door', door), field('Decision', decision), field('From', from),
    field('To', to, 'Empty: until now, with live updates'),
    h('div', { class: 'actions' }, h('button', { type: 'submit', class: 'primary', text: 'Apply' })),
    cameraList, doorList, peopleList);
  const chartsNote = h('p', { class: 'meta' });
  const chartGrid = h('div', { class: 'charts', 'aria-busy': 'true' }, h('p', { class: 'loading', text: 'Loading charts…' }));
  const chartsHeading = uid('charts');
  const charts = h('section', { class: 'panel' },
    h('h2', { id: chartsHeading, text: 'Charts' }), chartsNote, chartGrid);

  /** The filter as it was applied: start and end (ISO; end '' = now) and the lists. */
  let applied = null;
  const readForm = () => {
    const start = fromLocalInput(from.value);
    const end = fromLocalInput(to.value);
    if (!start) throw new Error('Give a valid "From" time.');
    if (end && end <= start) throw new Error('"To" must be after "From".');
    if ((end || new Date()) - start > MAX_RANGE_MS) throw new Error('The range is over 400 days; narrow it.');
    return {
      start: start.toISOString(), end: end ? end.toISOString() : '', device_id: device.value,
      camera: camera.value.trim(), person_id: resolvePerson(person.value, people), door: door.value.trim(),
      decision: decision.value,
    };
  };

  const table = eventsTable({
    title: 'Events',
    columns: ['time', 'device', 'camera', 'kind', 'decision', 'person', 'door', 'reason', 'score', 'expression'],
    query: () => applied,
    live: () => !applied.end,
    names: () => (isAdmin ? knownNames() : null),
    lookupNames: isAdmin ? (ids) => namesFor(ids, { signal }) : null,
    signal,
  });

  let knownFleet;
  const fleetSize = new Promise((resolve) => { knownFleet = resolve; });
  let chartSequence = 0;
  const loadCharts = async () => {
    const mine = ++chartSequence;
    const { person_id: personId, ...flt } = applied;
    const startMs = Date.parse(flt.start);
    const endMs = flt.end ? Date.parse(flt.end) : Date.now();
    const interval = chooseInterval(Math.ceil((endMs - startMs) / 1000));
    chartGrid.setAttribute('aria-busy', 'true');
    try {
      // One line per device while they can be told apart; past that, the fleet's total.
      const perDevice = Boolean(flt.device_id) || (await fleetSize) <= MAX_DEVICE_SERIES;
      const [counts, expressions, rates, access] = await Promise.all([
        get('/api/events/counts', { ...flt, interval_seconds: interval, per_device: perDevice }, { signal }),
        get('/api/events/expressions', flt, { signal }),
        get('/api/events/unknown-rate', { ...flt, decision: '' }, { signal }), // a rate over every decision
        get('/api/events/access', flt, { signal }),
      ]);
      if (mine !== chartSequence) return;
      chartsNote.textContent = `${shortDateTime(startMs)} to ${flt.end ? shortDateTime(endMs) : 'now'}, `
        + `per ${duration(interval)}.`
        + `${personId ? ' The charts cover everyone: the aggregates cannot be filtered by person.' : ''}`
        + `${flt.decision ? ' The unknown-face rate is over every decision.' : ''}`;
      const width = Math.max(560, Math.min(1400, chartGrid.clientWidth - 24));
      replace(chartGrid, h('div', { class: 'wide' }, eventsChart(counts.counts, startMs, endMs, interval, width)),
        expressionsChart(expressions.counts), unknownChart(rates), accessChart(access.doors));
      const doors = [...new Set(access.doors.map((d) => d.door).filter(Boolean))].sort();
      replace(doorList, doors.map((d) => h('option', { value: d })));
    } catch (error) {
      if (isAbort(error) || mine !== chartSequence) return;
      replace(chartGrid, h('p', { role: 'alert', class: 'error-text', text: `The charts cannot be loaded: ${error.message}` }));
    } finally {
      if (mine === chartSequence) chartGrid.removeAttribute('aria-busy');
    }
  };

  const apply = () => {
    try {
      applied = readForm();
    } catch (error) {
      messages.show(error.message, 'error');
      return;
    }
    messages.clear();
    const { start, end, device_id: d, camera: c, person_id: p, door: o, decision: x } = applied;
    ctx.setParams(Object.fromEntries(Object.entries({ device: d, camera: c, person: p, door: o, decision: x,
      from: start, to: end }).filter(([, v]) => v)));
    loadCharts();
    table.load();
  };

  const loadChoices = async () => {
    try {
      const fleet = await get('/api/fleet', null, { signal });
      knownFleet(fleet.agents.length);
      const devices = fleet.agents.map((a) => a.device_id).sort();
      const chosen = device.value;
      if (chosen && !devices.includes(chosen)) devices.push(chosen);
      replace(device, [['', 'Any device'], ...devices.map((d) => [d, d])].map(([value, text]) =>
        h('option', { value, selected: value === chosen, text })));
      const cameraNames = new Set(fleet.agents.flatMap((a) => cameras(a.health).map(([name]) => name)));
      replace(cameraList, [...cameraNames].sort().map((c) => h('option', { value: c })));
    } catch (error) {
      knownFleet(Infinity);
      if (!isAbort(error)) messages.show(`The device list cannot be loaded: ${error.message}`, 'error');
    }
  };
  if (isAdmin) pickPeople(person, peopleList, { signal, found: (found) => { people = found; } });

  form.addEventListener('submit', (event) => { event.preventDefault(); apply(); });
  main.append(h('h1', { text: 'Activity' }), form, messages, charts, table.element);
  loadChoices();
  apply();
  every(CHARTS_MS, async () => { if (applied && !applied.end) await loadCharts(); }, signal);
}
