/** The dashboard charts of the event aggregates: events per interval per device, expressions, the
 * unknown-face rate per device and access decisions per door, each from its /api/events/… answer. */

import { barChart, emptyChart, timeSeriesChart } from './charts.js';
import { duration, number, percent, plural, shortDateTime } from './format.js';

const INTERVALS = [60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400, 172800, 604800];
const MAX_BUCKETS = 200;
const MAX_BARS = 12;
const TWO_DAYS_S = 2 * 86400;
const TEN_DAYS_S = 10 * 86400;
export const GRANTED = '#0072b2';
export const DENIED = '#d55e00';

/** The interval (seconds) for a range: at most ~200 buckets, 1 minute to 1 day (longer only for very long
 * ranges), whole hours for ranges over 2 days and whole days over 10 days, so that the server answers from
 * its hourly or daily rollup. */
export function chooseInterval(rangeSeconds) {
  const unit = rangeSeconds > TEN_DAYS_S ? 86400 : rangeSeconds > TWO_DAYS_S ? 3600 : 1;
  return INTERVALS.find((i) => i % unit === 0 && rangeSeconds / i <= MAX_BUCKETS)
    || INTERVALS[INTERVALS.length - 1];
}

function top(entries, count = 3) {
  return entries.slice().sort((a, b) => b[1] - a[1]).slice(0, count);
}

/** Events per interval per device (lines). counts: /api/events/counts rows; start, end: ms; width: px. */
export function eventsChart(counts, start, end, intervalSeconds, width = 960) {
  const fleetWide = counts.length > 0 && counts.every((row) => !row.device_id);
  const title = `Events per ${duration(intervalSeconds)}, ${fleetWide ? 'all devices' : 'by device'}`;
  if (!counts.length) return emptyChart(title);
  const byDevice = new Map();
  for (const row of counts) {
    const name = row.device_id || 'All devices';
    if (!byDevice.has(name)) byDevice.set(name, new Map());
    const points = byDevice.get(name);
    const at = new Date(row.start).getTime();
    points.set(at, (points.get(at) || 0) + row.count);
  }
  const totals = [...byDevice].map(([device, points]) => [device, [...points.values()].reduce((a, b) => a + b, 0)]);
  const total = totals.reduce((sum, [, n]) => sum + n, 0);
  const summary = `${title}, ${shortDateTime(start)} to ${shortDateTime(end)}: ${plural(total, 'event')} in all; `
    + top(totals).map(([d, n]) => `${d} ${number(n)}`).join(', ') + '.';
  const series = [...byDevice.keys()].sort().map((name) => ({ name, points: byDevice.get(name) }));
  return timeSeriesChart({ title, summary, start, end, intervalMs: intervalSeconds * 1000, series, width,
    yTitle: `Events per ${duration(intervalSeconds)}` });
}

/** Face events per expression (bars). rows: the fleet-wide rows of /api/events/expressions. */
export function expressionsChart(rows) {
  const title = 'Expressions';
  const counts = rows.filter((r) => !r.device_id).sort((a, b) => b.count - a.count);
  const total = counts.reduce((sum, r) => sum + r.count, 0);
  if (!total) return emptyChart(title, 'No face events with an expression in this range');
  const summary = `Expressions of ${plural(total, 'face event')}: `
    + counts.slice(0, 4).map((r) => `${r.label} ${percent(r.count / total, 0)}`).join(', ') + '.';
  return barChart({ title, summary, categories: counts.map((r) => r.label),
    series: [{ name: 'Face events', values: counts.map((r) => r.count) }],
    yTitle: 'Face events', xTitle: 'Expression' });
}

/** Share of face events that were unknown, per device (bars, %). rates: /api/events/unknown-rate. */
export function unknownChart(rates) {
  const seen = rates.per_device.filter((r) => r.face_events > 0);
  const many = seen.length > MAX_BARS;
  const title = many ? `Unknown-face rate, the ${MAX_BARS} highest of ${number(seen.length)} devices`
    : 'Unknown-face rate by device';
  if (!seen.length) return emptyChart(title, 'No face events in this range');
  const rows = many ? seen.slice().sort((a, b) => b.rate - a.rate || a.device_id.localeCompare(b.device_id))
    .slice(0, MAX_BARS) : seen;
  const fleet = rates.total;
  const highest = rows.slice().sort((a, b) => b.rate - a.rate)[0];
  const summary = `Unknown faces: ${percent(fleet.rate)} of ${plural(fleet.face_events, 'face event')} fleet-wide; `
    + `highest on ${highest.device_id} (${percent(highest.rate)} of ${number(highest.face_events)}).`;
  return barChart({ title, summary, categories: rows.map((r) => r.device_id),
    series: [{ name: `Unknown faces (fleet: ${percent(fleet.rate)})`, values: rows.map((r) => r.rate * 100) }],
    yTitle: 'Unknown faces (%)', xTitle: 'Device', yMax: 100, integer: false,
    format: (v) => `${number(v, 1)} %` });
}

/** Granted and denied decisions per door (stacked bars). doors: /api/events/access rows. */
export function accessChart(doors, title = 'Access decisions by door') {
  if (!doors.length) return emptyChart(title, 'No access decisions in this range');
  const all = doors.slice().sort((a, b) => (b.granted + b.denied) - (a.granted + a.denied));
  const granted = all.reduce((sum, d) => sum + d.granted, 0);
  const denied = all.reduce((sum, d) => sum + d.denied, 0);
  const worst = all.slice().sort((a, b) => b.denied - a.denied)[0];
  const summary = `Access: ${number(granted)} granted and ${number(denied)} denied at ${plural(all.length, 'door')}`
    + (worst.denied ? `; most denials at ${doorLabel(worst)} (${number(worst.denied)}).` : '.');
  // The busiest doors, and every door with a denial among the busiest of those, while bars stay readable.
  const rows = all.length > MAX_BARS
    ? [...new Set([...all.filter((d) => d.denied).sort((a, b) => b.denied - a.denied).slice(0, MAX_BARS / 2),
      ...all])].slice(0, MAX_BARS)
    : all;
  if (rows.length < all.length) title = `${title}: ${MAX_BARS} of ${number(all.length)}, the most denied and the busiest`;
  return barChart({ title, summary, categories: rows.map(doorLabel), stacked: true,
    series: [{ name: 'Granted', color: GRANTED, values: rows.map((d) => d.granted) },
      { name: 'Denied', color: DENIED, values: rows.map((d) => d.denied) }],
    yTitle: 'Decisions', xTitle: 'Door (device)' });
}

/** "front (door-1)". */
export function doorLabel(row) {
  return `${row.door || 'no door'} (${row.device_id})`;
}
