/** Who is who (admin sessions only): names next to the person ids on screen, asked for in batches of the
 * ids shown and remembered, and people found by name or id for person pickers. Never the whole gallery. */

import { get } from './api.js';
import { h } from './dom.js';

const BATCH = 100;
const FOUND = 20;
const known = new Map(); // person id → display name ('' when none, or when nobody has the id)

/** person id → display name of every person looked up so far (the same Map, filled as names arrive). */
export function knownNames() {
  return known;
}

/** Look up the names of these person ids that are not known yet; resolves to knownNames(). */
export async function namesFor(ids, { signal } = {}) {
  const missing = [...new Set(ids)].filter((id) => id && !known.has(id));
  for (let i = 0; i < missing.length; i += BATCH) {
    const batch = missing.slice(i, i + BATCH);
    const page = await get('/api/people', { person_id: batch, page_size: BATCH }, { signal });
    batch.forEach((id) => known.set(id, ''));
    page.people.forEach((p) => known.set(p.person_id, p.display_name));
  }
  return known;
}

/** Up to 20 people whose id or name contains `text` (remembered as known names). */
export async function searchPeople(text, { signal } = {}) {
  const page = await get('/api/people', { q: text.trim(), page_size: FOUND }, { signal });
  page.people.forEach((p) => known.set(p.person_id, p.display_name));
  return page.people;
}

/** Drop what is remembered (after a change, or on sign-out). */
export function forgetPeople() {
  known.clear();
}

/** A <datalist> of people: each option's value is the person id, its label the name. */
export function peopleDatalist(id, people) {
  return h('datalist', { id }, people.map((p) =>
    h('option', { value: p.person_id, label: p.display_name ? `${p.display_name} (${p.person_id})` : p.person_id })));
}

/** Fill a person picker's datalist with the people matching what is typed (after a short pause).
 * input: the text field; list: its datalist (replaced); found(people): told of each answer. */
export function pickPeople(input, list, { signal, found = () => {} }) {
  let timer = 0;
  let current = list;
  let asked = 0;
  input.addEventListener('input', () => {
    clearTimeout(timer);
    timer = setTimeout(async () => {
      const mine = ++asked;
      try {
        const people = await searchPeople(input.value, { signal });
        if (mine !== asked) return;
        const fresh = peopleDatalist(current.id, people);
        current.replaceWith(fresh);
        current = fresh;
        found(people);
      } catch (error) {
        if (error?.name !== 'AbortError') console.warn('people cannot be searched', error);
      }
    }, 250);
  });
}

/** The person id an operator typed into a picker: an id, or a name that only one of `people` has. */
export function resolvePerson(text, people) {
  const typed = text.trim();
  if (!typed || people.some((p) => p.person_id === typed)) return typed;
  const named = people.filter((p) => p.display_name.toLowerCase() === typed.toLowerCase());
  return named.length === 1 ? named[0].person_id : typed;
}
