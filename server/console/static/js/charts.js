/** Small SVG charts: a time series (a line per series over equal intervals) and bars (single, grouped or
 * stacked) by category. Each chart is a <figure>: a caption, an SVG with role="img" named by a summary,
 * axes with tick labels and titles (with units), a legend, <title> tooltips, and its numbers as a table
 * in a <details>. Sizes are SVG user units and pixels: a chart is drawn at its width, and shrinks
 * with its container. */

import { h, s } from './dom.js';
import { number, shortDateTime } from './format.js';

export const PALETTE = ['#0072b2', '#e69f00', '#009e73', '#cc79a7', '#d55e00', '#56b4e9', '#6f6f6f',
  '#8c564b', '#332288', '#999933'];
const MINUTE = 60000;
const HOUR = 60 * MINUTE;
const DAY = 24 * HOUR;
const TIME_STEPS = [MINUTE, 2 * MINUTE, 5 * MINUTE, 10 * MINUTE, 15 * MINUTE, 30 * MINUTE, HOUR, 2 * HOUR,
  3 * HOUR, 6 * HOUR, 12 * HOUR, DAY, 2 * DAY, 7 * DAY, 14 * DAY, 28 * DAY, 91 * DAY];
const hourMinute = new Intl.DateTimeFormat(undefined, { hour: '2-digit', minute: '2-digit' });
const dayMonth = new Intl.DateTimeFormat(undefined, { day: 'numeric', month: 'short' });
const CHAR_WIDTH = 6.6; // average width of a 12-unit label character

/** Round tick values from 0 to at least max: [0, step, 2·step, …]. */
export function niceTicks(max, count = 5, integer = true) {
  const top = max > 0 ? max : 1;
  const raw = top / count;
  const power = 10 ** Math.floor(Math.log10(raw));
  const mantissa = raw / power;
  let step = (mantissa <= 1 ? 1 : mantissa <= 2 ? 2 : mantissa <= 2.5 ? 2.5 : mantissa <= 5 ? 5 : 10) * power;
  if (integer) step = Math.max(1, Math.ceil(step));
  const ticks = [];
  for (let value = 0; value < top + step / 2; value += step) ticks.push(value);
  if (ticks[ticks.length - 1] < top) ticks.push(ticks[ticks.length - 1] + step);
  return ticks;
}

/** Time ticks in [start, end] at local round times, at most maxTicks. */
export function timeTicks(start, end, maxTicks = 8) {
  const step = TIME_STEPS.find((candidate) => (end - start) / candidate <= maxTicks) || TIME_STEPS.at(-1);
  const ticks = [];
  if (step < DAY) {
    const offset = new Date(start).getTimezoneOffset() * MINUTE;
    for (let t = Math.ceil((start - offset) / step) * step + offset; t <= end; t += step) ticks.push(t);
  } else {
    const day = new Date(start);
    day.setHours(0, 0, 0, 0);
    if (day.getTime() < start) day.setDate(day.getDate() + 1);
    for (; day.getTime() <= end; day.setDate(day.getDate() + step / DAY)) ticks.push(day.getTime());
  }
  return { step, ticks };
}

/** The chart's <svg role="img">, named by its summary. The name is an SVG <title> rather than an
 * aria-label, so that the summary (which mentions devices, doors, …) never matches the label of a form
 * field (e.g. Playwright's get_by_label("Device") finds aria-labels too). */
function chartSvg(width, height, summary) {
  return s('svg', { class: 'chart-svg', viewBox: `0 0 ${width} ${height}`, width, height, role: 'img' },
    s('title', { text: summary }));
}

function truncate(text, width) {
  const max = Math.max(3, Math.floor(width / CHAR_WIDTH));
  return text.length > max ? `${text.slice(0, max - 1)}…` : text;
}

function legend(series) {
  return h('ul', { class: 'legend' }, series.map((one) => h('li', null,
    s('svg', { width: 12, height: 12, viewBox: '0 0 12 12', 'aria-hidden': 'true' },
      s('rect', { width: 12, height: 12, rx: 2, fill: one.color })),
    one.name)));
}

function dataTable(caption, headers, rows) {
  return h('details', { class: 'chart-data' },
    h('summary', { text: 'Data table' }),
    h('div', { class: 'table-wrap' }, h('table', { class: 'data' },
      h('caption', { class: 'visually-hidden', text: caption }),
      h('thead', null, h('tr', null, headers.map((text) => h('th', { scope: 'col', text })))),
      h('tbody', null, rows.map((cells) => h('tr', null, cells.map((text, i) =>
        i === 0 ? h('th', { scope: 'row', text }) : h('td', { class: 'num', text }))))))));
}

function figure(title, summary, svg, series, table) {
  return h('figure', { class: 'chart' }, h('figcaption', { text: title }),
    h('div', { class: 'chart-canvas' }, svg), legend(series), table);
}

/** A figure saying there is nothing to draw. */
export function emptyChart(title, text = 'No events in this range') {
  return h('figure', { class: 'chart' }, h('figcaption', { text: title }), h('p', { class: 'empty', text }));
}

function yAxis(group, ticks, y, left, right, format, title, height) {
  for (const tick of ticks) {
    const at = y(tick);
    group.append(
      s('line', { x1: left, x2: right, y1: at, y2: at, stroke: tick === 0 ? '#6b6b6b' : '#e3e3e3' }),
      s('text', { x: left - 6, y: at + 4, 'text-anchor': 'end', text: format(tick) }));
  }
  group.append(s('text', {
    class: 'axis-title', x: 0, y: 0, 'text-anchor': 'middle', transform: `translate(14 ${height / 2}) rotate(-90)`,
    text: title,
  }));
}

/**
 * Lines over time. options: title, summary (the SVG's accessible name), start and end (ms), intervalMs, series
 * [{name, points: Map(bucket start ms → value)}], yTitle, xTitle, width, height, format (tick and tooltip
 * numbers). Missing buckets count as 0.
 */
export function timeSeriesChart({
  title, summary, start, end, intervalMs, series, yTitle, xTitle = 'Time (local)', width = 960, height = 300,
  format = (v) => number(v),
}) {
  const first = Math.floor(start / intervalMs) * intervalMs;
  const buckets = [];
  for (let t = first; t < end; t += intervalMs) buckets.push(t);
  const colored = series.map((one, i) => ({
    ...one, color: one.color || PALETTE[i % PALETTE.length],
    values: buckets.map((t) => one.points.get(t) || 0),
  }));
  const max = Math.max(0, ...colored.flatMap((one) => one.values));
  const ticks = niceTicks(max);
  const m = { left: 64, right: 16, top: 12, bottom: 58 };
  const plotW = width - m.left - m.right;
  const plotH = height - m.top - m.bottom;
  const x0 = first;
  const x1 = first + buckets.length * intervalMs;
  const x = (t) => m.left + ((t - x0) / (x1 - x0)) * plotW;
  const y = (v) => m.top + plotH - (v / ticks[ticks.length - 1]) * plotH;
  const svg = chartSvg(width, height, summary);
  const axes = s('g', { class: 'axes' });
  yAxis(axes, ticks, y, m.left, width - m.right, format, yTitle, m.top + plotH);
  const { step, ticks: times } = timeTicks(x0, x1, Math.max(2, Math.floor(plotW / 90)));
  let lastDay = '';
  for (const t of times) {
    const at = x(t);
    const day = new Date(t).toDateString();
    const label = s('text', { x: at, y: m.top + plotH + 16, 'text-anchor': 'middle' });
    if (step < DAY) {
      label.append(s('tspan', { x: at, text: hourMinute.format(t) }));
      if (day !== lastDay) label.append(s('tspan', { x: at, dy: 14, text: dayMonth.format(t) }));
    } else {
      label.append(s('tspan', { x: at, text: dayMonth.format(t) }));
    }
    lastDay = day;
    axes.append(s('line', { x1: at, x2: at, y1: m.top + plotH, y2: m.top + plotH + 5, stroke: '#6b6b6b' }), label);
  }
  axes.append(s('text', {
    class: 'axis-title', x: m.left + plotW / 2, y: height - 6, 'text-anchor': 'middle', text: xTitle,
  }));
  svg.append(axes);
  const half = intervalMs / 2;
  for (const one of colored) {
    const path = one.values.map((v, i) => `${i ? 'L' : 'M'}${x(buckets[i] + half).toFixed(1)} ${y(v).toFixed(1)}`);
    svg.append(s('path', { d: path.join(''), fill: 'none', stroke: one.color, 'stroke-width': buckets.length > 80 ? 1.5 : 2,
      'stroke-linejoin': 'round' }));
    if (buckets.length <= 60) {
      one.values.forEach((v, i) => svg.append(s('circle', {
        cx: x(buckets[i] + half), cy: y(v), r: 3, fill: one.color,
      })));
    }
  }
  const bands = s('g', { class: 'bands' });
  const bandW = plotW / buckets.length;
  buckets.forEach((t, i) => {
    const lines = colored.map((one) => `${one.name}: ${format(one.values[i])}`);
    const when = `${shortDateTime(t)} – ${shortDateTime(t + intervalMs)}`;
    bands.append(s('rect', { class: 'band', x: m.left + i * bandW, y: m.top, width: bandW, height: plotH,
      fill: 'transparent' }, s('title', { text: [when, ...lines].join('\n') })));
  });
  svg.append(bands);
  const table = dataTable(title, ['Interval start', ...colored.map((one) => one.name)],
    buckets.map((t, i) => [shortDateTime(t), ...colored.map((one) => format(one.values[i]))]));
  return figure(title, summary, svg, colored, table);
}

/**
 * Bars by category. options: title, summary (the SVG's accessible name), categories (labels), series [{name, values,
 * color}], stacked (else grouped side by side), yTitle, xTitle, format, yMax (the axis never goes past
 * it), width (default: room for every bar), height.
 */
export function barChart({
  title, summary, categories, series, stacked = false, yTitle, xTitle, format = (v) => number(v),
  yMax = Infinity, width = Math.max(400, categories.length * 56 + 90), height = 260, integer = true,
}) {
  const colored = series.map((one, i) => ({ ...one, color: one.color || PALETTE[i % PALETTE.length] }));
  const totals = categories.map((_, c) => colored.reduce((sum, one) => sum + (one.values[c] || 0), 0));
  const max = stacked ? Math.max(0, ...totals) : Math.max(0, ...colored.flatMap((one) => one.values));
  let ticks = niceTicks(Math.min(max, yMax), 5, integer);
  if (ticks[ticks.length - 1] > yMax) ticks = ticks.filter((t) => t < yMax).concat(yMax);
  const rotate = categories.length > 8;
  const m = { left: 64, right: 12, top: 18, bottom: rotate ? 96 : 56 };
  const plotW = width - m.left - m.right;
  const plotH = height - m.top - m.bottom;
  const band = plotW / Math.max(1, categories.length);
  const top = ticks[ticks.length - 1];
  const y = (v) => m.top + plotH - (Math.min(v, top) / top) * plotH;
  const svg = chartSvg(width, height, summary);
  const axes = s('g', { class: 'axes' });
  yAxis(axes, ticks, y, m.left, width - m.right, format, yTitle, m.top + plotH);
  const bars = s('g', { class: 'bars' });
  categories.forEach((category, c) => {
    const left = m.left + c * band;
    const inner = Math.min(band * 0.7, (stacked ? 1 : colored.length) * 56); // bars at most 56 wide
    const start = left + (band - inner) / 2;
    let base = 0;
    colored.forEach((one, k) => {
      const value = one.values[c] || 0;
      const barX = stacked ? start : start + (inner / colored.length) * k;
      const barW = stacked ? inner : inner / colored.length;
      const y0 = y(base + value);
      const tip = `${category}: ${colored.length > 1 ? `${one.name} ` : ''}${format(value)}`;
      bars.append(s('rect', { x: barX, y: y0, width: Math.max(1, barW - 1), height: Math.max(0, y(base) - y0),
        fill: one.color, class: 'bar' }, s('title', { text: tip })));
      if (stacked) base += value;
    });
    if (colored.length === 1 || stacked) {
      const total = totals[c];
      bars.append(s('text', { class: 'value', x: left + band / 2, y: y(total) - 4, 'text-anchor': 'middle',
        text: format(total) }));
    }
    const labelY = m.top + plotH + 16;
    const label = rotate
      ? s('text', { x: left + band / 2, y: labelY, 'text-anchor': 'end',
        transform: `rotate(-35 ${left + band / 2} ${labelY})`, text: truncate(category, 120) })
      : s('text', { x: left + band / 2, y: labelY, 'text-anchor': 'middle', text: truncate(category, band - 4) });
    label.append(s('title', { text: category }));
    axes.append(label);
  });
  axes.append(s('text', { class: 'axis-title', x: m.left + plotW / 2, y: height - 6, 'text-anchor': 'middle',
    text: xTitle }));
  svg.append(axes, bars);
  const headers = [xTitle, ...colored.map((one) => one.name)];
  const rows = categories.map((category, c) => [category, ...colored.map((one) => format(one.values[c] || 0))]);
  return figure(title, summary, svg, colored, dataTable(title, headers, rows));
}
