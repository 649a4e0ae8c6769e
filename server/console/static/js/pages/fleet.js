/** Fleet: every agent in a table — online state, last seen, versions, groups, gallery lag, device status
 * and certificate, model statuses, cameras and queues — sortable, filterable by group, refreshed every
 * 5 s while the tab is visible without losing the sort, the filter or the focus. */

import { get, isAbort } from '../api.js';
import { badge, field, h, messageBox, replace, select } from '../dom.js';
import { dateTime, number, plural, relative, shortDateTime, timeEl, toDate } from '../format.js';
import { every } from '../poll.js';

const REFRESH_MS = 5000;
const DAY_MS = 86400000;
const STATUS_TONES = { active: 'ok', disabled: 'warn', revoked: 'bad' };
const MODEL_TONES = {
  active: 'ok', failed: 'bad', retrying: 'warn', downloading: 'info', verifying: 'info', assigned: 'info',
};
const CAMERA_METRICS = { fps: 0, dropped: 1 }; // shown first, in this order

/** Kept across refreshes and visits: the sort column, its direction and the group filter. */
const view = { sort: 'device', descending: false, group: '' };

/** Per camera, the health keys camera.<name>.<metric> → {name: {metric: value}}. */
export function cameras(health) {
  const found = new Map();
  for (const [key, value] of Object.entries(health || {})) {
    if (!key.startsWith('camera.')) continue;
    const rest = key.slice('camera.'.length);
    const dot = rest.lastIndexOf('.');
    if (dot <= 0) continue;
    const name = rest.slice(0, dot);
    if (!found.has(name)) found.set(name, {});
    found.get(name)[rest.slice(dot + 1)] = value;
  }
  return [...found.entries()].sort(([a], [b]) => a.localeCompare(b));
}

function totalFps(agent) {
  const per = cameras(agent.health);
  return per.length ? per.reduce((sum, [, m]) => sum + (m.fps || 0), 0) : agent.health.fps || 0;
}

const text = (a, b) => String(a).localeCompare(String(b), undefined, { numeric: true });
const time = (value) => toDate(value)?.getTime() ?? -Infinity;

/** The columns: header, sort key (if sortable) and cell. */
const COLUMNS = [
  { key: 'device', label: 'Device', compare: (a, b) => text(a.device_id, b.device_id), cell: deviceCell },
  { key: 'online', label: 'State', compare: (a, b) => Number(a.online) - Number(b.online), cell: onlineCell },
  { key: 'last_seen', label: 'Last seen', compare: (a, b) => time(a.last_seen) - time(b.last_seen),
    cell: (a, now) => timeEl(a.last_seen, { mode: 'relative', now }) },
  { key: 'versions', label: 'Versions', compare: (a, b) => text(a.agent_version, b.agent_version), cell: versionsCell },
  { key: 'groups', label: 'Groups', compare: (a, b) => text(a.groups.join(), b.groups.join()),
    cell: (a) => (a.groups.length ? h('span', { class: 'name', text: a.groups.join(', ') }) : h('span', { class: 'muted', text: '—' })) },
  { key: 'gallery', label: 'Gallery', compare: (a, b) => a.revision_lag - b.revision_lag, cell: galleryCell },
  { key: 'device_status', label: 'Device status', compare: (a, b) => text(a.device_status, b.device_status)
    || time(a.certificate_expires) - time(b.certificate_expires), cell: deviceStatusCell },
  { key: 'model_statuses', label: 'Model statuses', cell: modelStatusCell },
  { key: 'cameras', label: 'Cameras', compare: (a, b) => totalFps(a) - totalFps(b), cell: cameraCell },
  { key: 'queues', label: 'Queues', compare: (a, b) => (a.health.outbox_pending || 0) - (b.health.outbox_pending || 0),
    cell: queueCell },
];

function deviceCell(agent) {
  return h('div', null,
    h('strong', { class: ['block', 'name'], text: agent.device_id }),
    agent.hostname ? h('small', { class: ['block', 'muted', 'name'], text: agent.hostname }) : null,
    h('a', { class: 'small', href: `#/activity?device=${encodeURIComponent(agent.device_id)}`,
      dataset: { focusKey: 'events' }, 'aria-label': `Events of ${agent.device_id}`, text: 'Events' }));
}

function onlineCell(agent) {
  return h('div', null, badge(agent.online ? 'Online' : 'Offline', agent.online ? 'ok' : 'bad'),
    agent.watching ? h('small', { class: 'block muted', text: 'watching' }) : null);
}

/** The agent's version, then its model version per task with what it runs at on the device. */
function versionsCell(agent) {
  const entries = Object.entries(agent.model_versions).sort(([a], [b]) => a.localeCompare(b));
  const precisions = agent.model_precisions || {};
  return h('ul', { class: ['plain', 'models'] },
    h('li', null, h('small', { class: 'muted', text: 'agent: ' }), agent.agent_version || '—'),
    entries.map(([task, model]) => h('li', null, h('small', { class: 'muted', text: `${task}: ` }), model,
      precisions[task] ? h('small', { class: 'muted', text: ` at ${precisions[task]}` }) : null)));
}

function galleryCell(agent) {
  const lag = agent.revision_lag;
  return h('div', null, `r${number(agent.gallery_revision)} `,
    lag > 0 ? badge(`${number(lag)} behind`, 'warn') : badge('up to date', 'ok'));
}

function deviceStatusCell(agent, now) {
  const expires = toDate(agent.certificate_expires);
  let certificate = h('small', { class: 'block muted', text: 'no certificate' });
  if (expires) {
    const left = expires.getTime() - now;
    const tone = left <= 0 ? 'bad' : left < 30 * DAY_MS ? 'warn' : 'muted';
    certificate = h('small', { class: ['block', tone === 'muted' ? 'muted' : `${tone}-text`] },
      left <= 0 ? 'certificate expired ' : 'certificate expires ',
      h('time', { datetime: expires.toISOString(), title: dateTime(expires), text: relative(expires, now) }));
  }
  return h('div', null, badge(agent.device_status, STATUS_TONES[agent.device_status] || 'muted'), certificate);
}

function modelStatusCell(agent) {
  if (!agent.model_statuses.length) return h('span', { class: 'muted', text: '—' });
  return h('ul', { class: 'plain' }, agent.model_statuses.map((status) => h('li', null,
    h('span', { class: 'muted', text: `${status.task}: ` }), `${status.model_id} `,
    badge(status.state, MODEL_TONES[status.state] || 'muted'),
    status.rollout_id ? h('small', { class: 'muted', text: ` rollout ${status.rollout_id}` }) : null,
    status.reason ? h('small', { class: 'block reason', text: status.reason }) : null)));
}

function metricText(metric, value) {
  if (metric === 'fps') return `${number(value, 1)} fps`;
  if (metric === 'dropped') return `${number(value)} dropped`;
  return `${metric} ${number(value, 2)}`;
}

function cameraCell(agent) {
  const health = agent.health;
  const per = cameras(health);
  if (!per.length) {
    if (health.cameras === undefined && health.fps === undefined) return h('span', { class: 'muted', text: 'no health report' });
    return h('div', null, `${number(health.cameras_running ?? 0)} of ${number(health.cameras ?? 0)} running`,
      health.fps !== undefined ? h('small', { class: 'block', text: `${number(health.fps, 1)} fps` }) : null);
  }
  return h('ul', { class: 'plain' }, per.map(([name, metrics]) => {
    const parts = Object.entries(metrics).filter(([m]) => m !== 'running')
      .sort(([a], [b]) => (CAMERA_METRICS[a] ?? 9) - (CAMERA_METRICS[b] ?? 9) || a.localeCompare(b))
      .map(([m, v]) => metricText(m, v));
    const running = metrics.running === undefined ? null
      : badge(metrics.running ? 'running' : 'stopped', metrics.running ? 'ok' : 'bad');
    return h('li', { dataset: { camera: name } }, h('strong', { text: name }), ' ', running,
      parts.length ? h('small', { class: 'block', text: parts.join(', ') }) : null);
  }));
}

function queueCell(agent) {
  const health = agent.health;
  const lines = [];
  const add = (label, pending, dropped) => {
    if (health[pending] === undefined) return;
    const droppedCount = dropped ? health[dropped] || 0 : 0;
    lines.push(h('li', null, `${label} ${number(health[pending])}`,
      droppedCount ? h('span', { class: 'bad-text', text: ` (${number(droppedCount)} dropped)` }) : null));
  };
  add('Outbox', 'outbox_pending', 'outbox_dropped');
  add('Reports', 'reports_pending');
  add('Snapshots', 'snapshots_pending', 'snapshots_dropped');
  for (const key of ['errors', 'model_mismatches']) {
    if (health[key]) lines.push(h('li', { class: 'bad-text', text: `${key.replace('_', ' ')} ${number(health[key])}` }));
  }
  return lines.length ? h('ul', { class: 'plain' }, lines) : h('span', { class: 'muted', text: '—' });
}

/** Render the page into ctx.main. */
export function render(ctx) {
  const { main, signal } = ctx;
  let agents = null;
  let skew = 0;
  let groups = '';
  const groupSelect = select({ name: 'group' }, [['', 'All groups']], view.group);
  const summary = h('p', { class: 'meta' });
  const messages = messageBox();
  const headRow = h('tr');
  const body = h('tbody');
  const table = h('table', { class: 'data fleet' }, h('caption', { class: 'visually-hidden', text: 'Agents' }),
    h('thead', null, headRow), body);
  const wrap = h('div', { class: 'table-wrap', hidden: true }, table);
  const empty = h('p', { class: 'empty', hidden: true });
  const loading = h('p', { class: 'loading', text: 'Loading the fleet…' });

  const headers = () => replace(headRow, COLUMNS.map((column) => {
    if (!column.compare) return h('th', { scope: 'col', text: column.label });
    const active = view.sort === column.key;
    return h('th', { scope: 'col', 'aria-sort': active ? (view.descending ? 'descending' : 'ascending') : null },
      h('button', { type: 'button', class: 'sort', dataset: { sort: column.key }, text: column.label, onclick: () => {
        view.descending = view.sort === column.key ? !view.descending : false;
        view.sort = column.key;
        headers();
        headRow.querySelector(`[data-sort="${column.key}"]`).focus();
        rows();
      } }));
  }));

  const rows = () => {
    if (!agents) return;
    const now = Date.now() + skew;
    const column = COLUMNS.find((c) => c.key === view.sort) || COLUMNS[0];
    const shown = agents.filter((a) => !view.group || a.groups.includes(view.group))
      .sort((a, b) => column.compare(a, b) * (view.descending ? -1 : 1) || text(a.device_id, b.device_id));
    const focused = body.contains(document.activeElement) ? document.activeElement : null;
    const focusRow = focused?.closest('tr')?.dataset.device;
    const focusKey = focused?.dataset.focusKey;
    replace(body, shown.map((agent) => h('tr', { dataset: { device: agent.device_id } },
      COLUMNS.map((c, i) => h(i === 0 ? 'th' : 'td', { scope: i === 0 ? 'row' : null }, c.cell(agent, now))))));
    if (focusRow && focusKey) {
      const again = [...body.rows].find((r) => r.dataset.device === focusRow);
      again?.querySelector(`[data-focus-key="${focusKey}"]`)?.focus();
    }
    wrap.hidden = shown.length === 0;
    empty.hidden = shown.length !== 0;
    empty.textContent = agents.length ? `No agent is in the group ${view.group}.` : 'No agent has registered yet.';
  };

  const groupOptions = () => {
    const all = [...new Set(agents.flatMap((a) => a.groups))].sort();
    if (view.group && !all.includes(view.group)) all.push(view.group);
    if (all.join('\n') === groups) return;
    groups = all.join('\n');
    replace(groupSelect, [['', 'All groups'], ...all.map((g) => [g, g])].map(([value, label]) =>
      h('option', { value, selected: value === view.group, text: label })));
  };

  const refresh = async () => {
    try {
      const fleet = await get('/api/fleet', null, { signal });
      agents = fleet.agents;
      skew = (toDate(fleet.server_time)?.getTime() ?? Date.now()) - Date.now();
      const online = agents.filter((a) => a.online).length;
      summary.textContent = `${plural(agents.length, 'agent')}, ${number(online)} online · gallery revision `
        + `${number(fleet.gallery_revision)} · updated ${shortDateTime(new Date())}`;
      loading.remove();
      groupOptions();
      rows();
      messages.clear();
    } catch (error) {
      if (isAbort(error)) return;
      loading.remove();
      messages.show(agents ? `The fleet cannot be refreshed: ${error.message}` : `The fleet cannot be loaded: ${error.message}`,
        'error');
    }
  };

  groupSelect.addEventListener('change', () => { view.group = groupSelect.value; rows(); });
  headers();
  main.append(h('h1', { text: 'Fleet' }),
    h('div', { class: 'toolbar' }, field('Group', groupSelect), summary),
    messages, loading, wrap, empty);
  refresh();
  every(REFRESH_MS, refresh, signal);
}
