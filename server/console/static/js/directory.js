/** Who is who: every enrolled person (admin sessions only), loaded once and kept for a minute, for
 * names next to person ids and for person pickers. */

import { get } from './api.js';
import { h } from './dom.js';

const KEEP_MS = 60000;
const MAX_PEOPLE = 20000;
let cache = null;
let loadedAt = 0;

/** Every person (without embeddings), sorted by person id as the API lists them. */
export async function loadPeople({ signal, fresh = false } = {}) {
  if (!fresh && cache && Date.now() - loadedAt < KEEP_MS) return cache;
  const all = [];
  let token = '';
  do {
    const page = await get('/api/people', { page_size: 1000, page_token: token }, { signal });
    all.push(...page.people);
    token = page.next_page_token;
  } while (token && all.length < MAX_PEOPLE);
  cache = all;
  loadedAt = Date.now();
  return all;
}

/** Drop what is cached (after a change, or on sign-out). */
export function forgetPeople() {
  cache = null;
}

/** person id → display name. */
export function namesById(people) {
  return new Map(people.map((p) => [p.person_id, p.display_name]));
}

/** A <datalist> of people: each option's value is the person id, its label the name. */
export function peopleDatalist(id, people) {
  return h('datalist', { id }, people.map((p) =>
    h('option', { value: p.person_id, label: p.display_name ? `${p.display_name} (${p.person_id})` : p.person_id })));
}

/** The person id an operator typed into a picker: an id, or a name that only one person has. */
export function resolvePerson(text, people) {
  const typed = text.trim();
  if (!typed || people.some((p) => p.person_id === typed)) return typed;
  const named = people.filter((p) => p.display_name.toLowerCase() === typed.toLowerCase());
  return named.length === 1 ? named[0].person_id : typed;
}
