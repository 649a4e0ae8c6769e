/** Tiny DOM builders. Everything the console shows is built with createElement and textContent:
 * never innerHTML, never a style attribute (the Content-Security-Policy forbids inline styles). */

const SVG_NS = 'http://www.w3.org/2000/svg';
let counter = 0;

/** A new id, unique in the document: for label/for, aria-labelledby and friends. */
export function uid(prefix = 'ff') {
  counter += 1;
  return `${prefix}-${counter}`;
}

function setAttributes(el, attrs) {
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === 'style') throw new Error('inline styles are refused by the CSP: use a class');
    if (key === 'text') el.textContent = String(value);
    else if (key === 'dataset') Object.assign(el.dataset, value);
    else if (key === 'class') el.setAttribute('class', [].concat(value).filter(Boolean).join(' '));
    else if (key.startsWith('on') && typeof value === 'function') el.addEventListener(key.slice(2), value);
    else el.setAttribute(key, value === true ? '' : String(value));
  }
}

/** Append children: nodes, strings and numbers (as text), arrays of them; null/false/undefined skipped. */
export function append(el, ...children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

/** An HTML element: h('button', {type: 'button', onclick: fn, text: 'Save'}). */
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  setAttributes(el, attrs);
  return append(el, children);
}

/** An SVG element (presentation attributes such as fill and x are attributes, not styles). */
export function s(tag, attrs, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  setAttributes(el, attrs);
  return append(el, children);
}

/** Replace every child of el. */
export function replace(el, ...children) {
  el.replaceChildren();
  return append(el, children);
}

/** A labelled form field: <div class="field"><label for>…</label>control [hint]</div>. */
export function field(label, control, hint) {
  if (!control.id) control.id = uid('f');
  const parts = [h('label', { for: control.id, text: label }), control];
  if (hint) {
    const hintId = uid('hint');
    control.setAttribute('aria-describedby', hintId);
    parts.push(h('small', { id: hintId, class: 'hint', text: hint }));
  }
  return h('div', { class: 'field' }, parts);
}

/** A <select> of [value, text] pairs with `selected` chosen. */
export function select(attrs, options, selected = '') {
  return h('select', attrs, options.map(([value, text]) =>
    h('option', { value, selected: String(value) === String(selected), text })));
}

/** A status badge: colour from `tone` (ok, warn, bad, info, muted) plus the text itself. */
export function badge(text, tone = 'muted') {
  return h('span', { class: ['badge', tone], text });
}

/** A live region for messages about one part of a page; an error is a role=alert paragraph in it. */
export function messageBox() {
  const box = h('div', { class: 'messages', role: 'status', 'aria-live': 'polite' });
  box.show = (text, tone = 'info') => {
    replace(box, h('p', { class: ['message', tone], role: tone === 'error' ? 'alert' : null, text }));
  };
  box.clear = () => box.replaceChildren();
  return box;
}

/** Split "a, b c" (commas or spaces) into non-empty trimmed words, without duplicates. */
export function words(text) {
  return [...new Set(String(text || '').split(/[\s,]+/).filter(Boolean))];
}
