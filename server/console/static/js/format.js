/** Formatting of times and numbers, in the browser's locale and time zone. */

import { h } from './dom.js';

const full = new Intl.DateTimeFormat(undefined, {
  year: 'numeric', month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit', second: '2-digit',
  timeZoneName: 'short',
});
const sameDay = new Intl.DateTimeFormat(undefined, { hour: '2-digit', minute: '2-digit', second: '2-digit' });
const otherDay = new Intl.DateTimeFormat(undefined, {
  month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit',
});
const otherYear = new Intl.DateTimeFormat(undefined, {
  year: 'numeric', month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit',
});
const relativeFormat = new Intl.RelativeTimeFormat(undefined, { numeric: 'auto' });
const UNITS = [['year', 31536000], ['month', 2592000], ['week', 604800], ['day', 86400], ['hour', 3600],
  ['minute', 60], ['second', 1]];

/** A Date of an ISO string, a Date or milliseconds; null for '' / null. */
export function toDate(value) {
  if (value === null || value === undefined || value === '') return null;
  const date = value instanceof Date ? value : new Date(value);
  return Number.isNaN(date.getTime()) ? null : date;
}

/** Date and time with seconds and zone, e.g. "3 May 2025, 14:03:09 CEST". */
export function dateTime(value) {
  const date = toDate(value);
  return date ? full.format(date) : '—';
}

/** Compact: the time alone today, else the day and the time (and the year, if not this year's). */
export function shortDateTime(value, now = new Date()) {
  const date = toDate(value);
  if (!date) return '—';
  if (date.toDateString() === now.toDateString()) return sameDay.format(date);
  return (date.getFullYear() === now.getFullYear() ? otherDay : otherYear).format(date);
}

/** "5 minutes ago", "in 3 days"; now: the server's clock when known. */
export function relative(value, now = Date.now()) {
  const date = toDate(value);
  if (!date) return '—';
  const seconds = (date.getTime() - now) / 1000;
  for (const [unit, size] of UNITS) {
    if (Math.abs(seconds) >= size || unit === 'second') {
      const amount = Math.round(seconds / size);
      return unit === 'second' && Math.abs(amount) < 5 ? 'just now' : relativeFormat.format(amount, unit);
    }
  }
  return '—';
}

/** A <time datetime> element: `relative` or `short` text, the full local time as its title. */
export function timeEl(value, { mode = 'short', now } = {}) {
  const date = toDate(value);
  if (!date) return h('span', { class: 'muted', text: '—' });
  const text = mode === 'relative' ? relative(date, now) : mode === 'full' ? dateTime(date) : shortDateTime(date);
  return h('time', { datetime: date.toISOString(), title: dateTime(date), text });
}

/** A number in the locale, with at most `digits` decimals. */
export function number(value, digits = 0) {
  if (value === null || value === undefined || Number.isNaN(value)) return '—';
  return Number(value).toLocaleString(undefined, { maximumFractionDigits: digits });
}

/** A share 0…1 as a percentage, e.g. "12.5 %". */
export function percent(share, digits = 1) {
  return `${number(share * 100, digits)} %`;
}

/** "1 event" / "3 events". */
export function plural(count, one, many = `${one}s`) {
  return `${number(count)} ${count === 1 ? one : many}`;
}

/** A Date as a datetime-local input value (local time, to the minute). */
export function toLocalInput(value) {
  const date = toDate(value);
  if (!date) return '';
  const pad = (n) => String(n).padStart(2, '0');
  const day = `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())}`;
  return `${day}T${pad(date.getHours())}:${pad(date.getMinutes())}`;
}

/** A datetime-local input value (local time) as a Date; null when empty or not valid. */
export function fromLocalInput(text) {
  return text ? toDate(text) : null; // a date-time without an offset is local time
}

/** A duration in seconds as words: "5 minutes", "2 hours", "1 day". */
export function duration(seconds) {
  for (const [unit, size] of [['day', 86400], ['hour', 3600], ['minute', 60]]) {
    if (seconds >= size && seconds % size === 0) return plural(seconds / size, unit);
  }
  return plural(seconds, 'second');
}
