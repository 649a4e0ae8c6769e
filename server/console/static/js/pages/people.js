/** People (admin): the enrolled people with a face crop each, search and paging; enrol a person from
 * photos (with each photo's result or refusal); edit a person's name and groups; delete a person. */

import { del, get, isAbort, patch, request, seg } from '../api.js';
import { field, h, messageBox, replace, select, uid, words } from '../dom.js';
import { confirmDialog, formDialog } from '../dialog.js';
import { number, plural, timeEl } from '../format.js';
import { forgetPeople } from '../directory.js';

const PAGE_SIZE = 25;
const MAX_PHOTOS = 32;
const SHOWN_CROPS = 12;

/** A person's name for sentences: the display name, else the id. */
const nameOf = (person) => person.display_name || person.person_id;

/** A face crop <img> of a person (index: 0…stored_crops-1). */
export function cropImage(person, index = 0, size = 56) {
  const img = h('img', { src: `/api/people/${seg(person.person_id)}/crops/${index}?r=${person.revision}`,
    alt: `Face of ${nameOf(person)}${index ? ` (${index + 1})` : ''}`, loading: 'lazy', width: size, height: size,
    class: 'crop', decoding: 'async' });
  img.addEventListener('error', () => img.replaceWith(h('span', { class: ['crop', 'no-crop'], text: 'no photo' })));
  return img;
}

/** Render the page into ctx.main. */
export function render(ctx) {
  const { main, signal, notify } = ctx;
  let people = null;
  const tokens = ['']; // page_token of each page seen so far: tokens[i] opens page i
  let filter = { q: '', group: '' }; // what the tokens were issued for: typing changes it only when the search restarts
  let page = 0;
  let nextToken = '';
  let loads = 0;
  const search = h('input', { type: 'search', name: 'search', autocomplete: 'off', placeholder: 'Name or id', maxlength: 128 });
  const group = h('input', { type: 'text', name: 'group', autocomplete: 'off', placeholder: 'Any group', maxlength: 128 });
  const count = h('p', { class: 'meta', role: 'status', 'aria-live': 'polite' });
  const messages = messageBox();
  const body = h('tbody');
  const wrap = h('div', { class: 'table-wrap', hidden: true }, h('table', { class: 'data people' },
    h('caption', { class: 'visually-hidden', text: 'Enrolled people' }),
    h('thead', null, h('tr', null, ['Photo', 'Name', 'Person id', 'Groups', 'Face crops', 'Updated', 'Actions']
      .map((text) => h('th', { scope: 'col', text })))), body));
  const empty = h('p', { class: 'empty', hidden: true });
  const loading = h('p', { class: 'loading', text: 'Loading people…' });
  const previous = h('button', { type: 'button', text: 'Previous', disabled: true });
  const next = h('button', { type: 'button', text: 'Next', disabled: true });
  const pageLabel = h('span', { class: 'meta' });
  const pager = h('div', { class: 'pager', role: 'group', 'aria-label': 'People pages', hidden: true },
    previous, pageLabel, next);

  const row = (person) => h('tr', { dataset: { personId: person.person_id } },
    h('td', null, person.stored_crops ? cropImage(person) : h('span', { class: ['crop', 'no-crop'], text: 'no photo' })),
    h('th', { scope: 'row' }, h('span', { class: 'name', text: person.display_name || '—' })),
    h('td', null, h('span', { class: ['mono', 'name'], text: person.person_id })),
    h('td', null, h('span', { class: 'name', text: person.groups.join(', ') || '—' })),
    h('td', { class: 'num', text: number(person.stored_crops ?? 0) }),
    h('td', null, timeEl(person.updated_at || person.created_at)),
    h('td', { class: 'row-actions' },
      h('button', { type: 'button', text: 'Edit', 'aria-label': `Edit ${nameOf(person)}`, onclick: () => edit(person) }),
      h('button', { type: 'button', class: 'danger', text: 'Delete', 'aria-label': `Delete ${nameOf(person)}`,
        onclick: () => remove(person) })));

  const show = () => {
    replace(body, people.map(row));
    wrap.hidden = people.length === 0;
    empty.hidden = people.length !== 0;
    const filtered = filter.q || filter.group;
    empty.textContent = filtered ? 'Nobody matches the search.' : 'Nobody is enrolled yet: enrol someone below.';
    const first = page * PAGE_SIZE;
    count.textContent = people.length
      ? `${number(first + 1)}–${number(first + people.length)}${nextToken ? '' : ` of ${number(first + people.length)}`}`
      : '';
    previous.disabled = page === 0;
    next.disabled = !nextToken;
    pageLabel.textContent = `Page ${page + 1}`;
    pager.hidden = page === 0 && !nextToken;
  };

  /** Load page `index` (0: the first) of the people matching the search and group. */
  const load = async (index = 0) => {
    const mine = ++loads;
    try {
      const answer = await get('/api/people', { page_size: PAGE_SIZE, page_token: tokens[index], ...filter },
        { signal });
      if (mine !== loads) return; // a newer search has started
      people = answer.people;
      page = index;
      nextToken = answer.next_page_token;
      tokens.length = index + 1;
      if (nextToken) tokens.push(nextToken);
      loading.remove();
      messages.clear();
      show();
    } catch (error) {
      if (isAbort(error) || mine !== loads) return;
      loading.remove();
      messages.show(`People cannot be listed: ${error.message}`, 'error');
    }
  };

  let typing = 0;
  const restart = () => {
    clearTimeout(typing);
    typing = setTimeout(() => {
      filter = { q: search.value.trim(), group: group.value.trim() };
      tokens.length = 1;
      load(0);
    }, 250);
  };
  const changed = () => { forgetPeople(); return load(page); };

  async function edit(person) {
    const name = h('input', { type: 'text', name: 'display_name', value: person.display_name, maxlength: 200 });
    const groups = h('input', { type: 'text', name: 'groups', value: person.groups.join(', ') });
    const crops = h('div', { class: 'crops', 'aria-label': 'Stored face crops' });
    const saved = formDialog({
      title: `Edit ${nameOf(person)}`,
      submitLabel: 'Save',
      fields: [h('p', { class: 'meta', text: `Person id ${person.person_id}` }), crops,
        field('Name', name), field('Groups', groups, 'Comma separated, e.g. staff, night-shift')],
      onSubmit: () => patch(`/api/people/${seg(person.person_id)}`,
        { display_name: name.value.trim(), groups: words(groups.value) }),
    });
    get(`/api/people/${seg(person.person_id)}`, null, { signal }).then((detail) => {
      const shown = Math.min(detail.stored_crops, SHOWN_CROPS);
      replace(crops, shown ? Array.from({ length: shown }, (_, i) => cropImage(person, i, 72))
        : h('p', { class: 'meta', text: 'No face crop is stored for this person.' }));
    }).catch(() => crops.remove());
    const result = await saved;
    if (result) {
      notify(`Saved ${nameOf(result.person)}.`, 'ok');
      await changed();
      [...body.rows].find((r) => r.dataset.personId === person.person_id)?.querySelector('button')?.focus();
    }
  }

  async function remove(person) {
    const sure = await confirmDialog({
      title: `Delete ${nameOf(person)}?`,
      message: 'This deletes the person, their embeddings and their face crops; every agent drops them from its gallery.',
    });
    if (!sure) return;
    try {
      await del(`/api/people/${seg(person.person_id)}`);
      notify(`Deleted ${nameOf(person)}.`, 'ok');
      await changed();
      search.focus();
    } catch (error) {
      notify(`${nameOf(person)} cannot be deleted: ${error.message}`, 'error');
    }
  }

  search.addEventListener('input', restart);
  group.addEventListener('input', restart);
  previous.addEventListener('click', async () => { await load(page - 1); if (previous.disabled) next.focus(); });
  next.addEventListener('click', async () => { await load(page + 1); if (next.disabled) previous.focus(); });
  const listId = uid('people');
  main.append(h('h1', { text: 'People' }),
    h('section', { class: 'panel' },
      h('h2', { id: listId, class: 'visually-hidden', text: 'Enrolled people' }),
      h('form', { class: 'toolbar', role: 'search', onsubmit: (e) => e.preventDefault() },
        field('Search', search), field('Group', group, 'Exact group name'), count),
      messages, loading, wrap, empty,
      pager),
    enrolForm(ctx, changed));
  load();
}

/** The enrolment form: photos previewed, then each photo's result (or refusal) after "Enrol". */
function enrolForm(ctx, changed) {
  const { signal, notify } = ctx;
  const name = h('input', { type: 'text', name: 'display_name', required: true, maxlength: 200, autocomplete: 'off' });
  const personId = h('input', { type: 'text', name: 'person_id', autocomplete: 'off' });
  const groups = h('input', { type: 'text', name: 'groups', autocomplete: 'off' });
  const existing = select({ name: 'on_existing' }, [['fail', 'Refuse'], ['append', 'Add these photos'],
    ['replace', 'Replace their photos']], 'fail');
  const photos = h('input', { type: 'file', name: 'images', multiple: true, accept: 'image/*', required: true });
  const list = h('ul', { class: 'photo-results' });
  const messages = messageBox();
  const button = h('button', { type: 'submit', class: 'primary', text: 'Enrol' });
  let urls = [];
  let items = [];
  const headingId = uid('enrol');

  const release = () => { urls.forEach((u) => URL.revokeObjectURL(u)); urls = []; };
  signal.addEventListener('abort', release);

  const preview = () => {
    release();
    items = [...photos.files].map((file) => {
      const url = URL.createObjectURL(file);
      urls.push(url);
      const result = h('span', { class: 'result muted', text: 'not sent yet' });
      const item = h('li', { dataset: { filename: file.name } },
        h('img', { src: url, alt: '', width: 64, height: 64, class: 'thumb' }),
        h('span', { class: 'filename', text: file.name }), result);
      item.result = (text, tone) => { result.className = `result ${tone}-text`; result.textContent = text; };
      return item;
    });
    replace(list, items);
    messages.clear();
  };

  const form = h('form', { class: 'enrol stack' },
    h('div', { class: 'grid-fields' }, field('Name', name),
      field('Person id', personId, 'Optional: empty lets the server assign one'),
      field('Groups', groups, 'Comma separated, e.g. staff, night-shift'),
      field('When the id is taken', existing),
      field('Photos', photos, `1–${MAX_PHOTOS} photos, each with exactly one face`)),
    list, messages, h('div', { class: 'actions' }, button));

  photos.addEventListener('change', preview);
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    const files = [...photos.files];
    if (files.length > MAX_PHOTOS) { messages.show(`Choose at most ${MAX_PHOTOS} photos.`, 'error'); return; }
    const data = new FormData();
    data.append('display_name', name.value.trim());
    if (personId.value.trim()) data.append('person_id', personId.value.trim());
    words(groups.value).forEach((g) => data.append('groups', g));
    data.append('on_existing', existing.value);
    files.forEach((file) => data.append('images', file, file.name));
    items.forEach((item) => item.result('checking…', 'muted'));
    button.disabled = true;
    messages.show(`Enrolling from ${plural(files.length, 'photo')}…`);
    try {
      const enrolled = await request('POST', '/api/people', { form: data, signal });
      const faces = new Map(enrolled.faces.map((f) => [f.image_index, f]));
      items.forEach((item, i) => {
        const face = faces.get(i);
        item.result(face ? `face found, quality ${number(face.quality, 2)}` : 'no face used', face ? 'ok' : 'warn');
      });
      messages.show(`Enrolled ${nameOf(enrolled.person)} (person id ${enrolled.person.person_id}) from `
        + `${plural(enrolled.faces.length, 'photo')}.`, 'ok');
      notify(`Enrolled ${nameOf(enrolled.person)}.`, 'ok');
      form.reset(); // the results stay listed
      await changed();
    } catch (error) {
      if (isAbort(error)) return;
      const refused = new Map((error.problem?.images || []).map((r) => [r.index, r]));
      items.forEach((item, i) => {
        const one = refused.get(i);
        if (one) item.result(`refused: ${one.reason}`, 'bad');
        else if (refused.size) item.result('accepted, but nothing was stored', 'warn');
        else item.result('not enrolled', 'bad');
      });
      messages.show(`Not enrolled: ${error.message}`, 'error');
    } finally {
      button.disabled = false;
    }
  });

  return h('section', { class: 'panel' },
    h('h2', { id: headingId, text: 'Enrol a person' }), form);
}
