/** Unknown faces (admin): the clusters of unknown faces under review, each a grid of face crops with times,
 * devices and cameras; enrol a cluster as a new person or add it to an existing one (each in a dialog),
 * dismiss it or delete it (both confirmed first). Each action names the version of the cluster on screen:
 * if faces joined or left it since, the server refuses (409) and the page shows the cluster as it is now. */

import { del, get, isAbort, post, seg, withQuery } from '../api.js';
import { field, h, messageBox, replace, uid, words } from '../dom.js';
import { confirmDialog, formDialog } from '../dialog.js';
import { plural, timeEl } from '../format.js';
import { forgetPeople, pickPeople, resolvePerson } from '../directory.js';

const PAGE_SIZE = 10;
const nameOf = (person) => person.display_name || person.person_id;
const SHOWN_FACES = 18;

/** A new person id (a random UUID; crypto.randomUUID needs a secure context, getRandomValues does not). */
export function newPersonId() {
  if (crypto.randomUUID) return crypto.randomUUID();
  const b = crypto.getRandomValues(new Uint8Array(16));
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  const hex = [...b].map((x) => x.toString(16).padStart(2, '0')).join('');
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

function face(snapshot) {
  const where = snapshot.camera ? `${snapshot.device_id}/${snapshot.camera}` : snapshot.device_id;
  const img = h('img', { src: `/api/snapshots/${seg(snapshot.snapshot_id)}/crop`, loading: 'lazy', width: 96, height: 96,
    class: 'crop', alt: `Unknown face on ${where}` });
  const picture = snapshot.context_bytes
    ? h('a', { href: `/api/snapshots/${seg(snapshot.snapshot_id)}/context`, target: '_blank', rel: 'noopener',
      title: 'Open the context view' }, img)
    : img;
  return h('li', null, h('figure', null, picture,
    h('figcaption', null, timeEl(snapshot.time), h('small', { class: 'block muted', text: where }))));
}

/** Render the page into ctx.main. */
export function render(ctx) {
  const { main, signal, notify } = ctx;
  let clusters = null;
  let people = [];
  let page = 0;
  const listId = uid('people-list');
  const count = h('p', { class: 'meta', role: 'status', 'aria-live': 'polite' });
  const messages = messageBox();
  const list = h('div', { class: 'clusters' }, h('p', { class: 'loading', text: 'Loading unknown faces…' }));
  const previous = h('button', { type: 'button', text: 'Previous', disabled: true });
  const next = h('button', { type: 'button', text: 'Next', disabled: true });
  const pageLabel = h('span', { class: 'meta' });
  const pager = h('div', { class: 'pager', role: 'group', 'aria-label': 'Cluster pages', hidden: true },
    previous, pageLabel, next);
  const datalist = h('datalist', { id: listId });

  const done = async (text) => {
    forgetPeople();
    notify(text, 'ok');
    await load();
  };
  const act = async (work, success) => {
    try {
      await done(success(await work()));
    } catch (error) {
      if (isAbort(error)) return;
      notify(error.message, 'error');
      if (error.status === 409) await load(); // the cluster changed: show it as it is now
    }
  };

  const clusterView = (summary, index) => {
    const headingId = uid('cluster');
    const base = `/api/unknown/clusters/${seg(summary.cluster_id)}`;
    let onScreen = summary; // the cluster as shown; its version goes with every action on it
    const faceCount = () => plural(onScreen.count, 'face');
    const at = (path) => withQuery(path, { version: onScreen.version });
    const heading = h('h2', { id: headingId });
    const title = () => { heading.textContent = `Unknown person ${page * PAGE_SIZE + index + 1}: ${faceCount()}`; };
    title();
    const faces = h('ul', { class: 'crop-grid', 'aria-label': 'Faces' }, h('li', { class: 'loading', text: 'Loading faces…' }));
    const showFaces = () => get(base, null, { signal }).then((detail) => {
      onScreen = detail;
      title();
      const shown = detail.snapshots.filter((one) => one.crop_bytes > 0).slice(0, SHOWN_FACES);
      replace(faces, shown.map(face), detail.snapshots.length > shown.length
        ? h('li', { class: 'more', text: `and ${detail.snapshots.length - shown.length} more` }) : null);
    });
    showFaces().catch((error) => {
      if (!isAbort(error)) replace(faces, h('li', { class: 'error-text', text: `Faces cannot be loaded: ${error.message}` }));
    });
    /** An enrolment refused because the cluster changed: its faces as they are now, and what to do. */
    const enrolling = (label) => async (error) => {
      if (error.status !== 409) throw error;
      const sent = onScreen.version;
      await showFaces().catch(() => {});
      if (onScreen.version === sent) throw error;
      throw new Error(`Faces joined or left this cluster since it was shown; it now holds ${faceCount()}, `
        + `shown behind this dialog. Check them, then press ${label} again.`);
    };

    const enrolNew = () => {
      const name = h('input', { type: 'text', name: 'display_name', required: true, autocomplete: 'off', maxlength: 200 });
      const groups = h('input', { type: 'text', name: 'groups', autocomplete: 'off' });
      formDialog({
        title: `Enrol ${faceCount()} as a new person`,
        submitLabel: 'Enrol',
        fields: [field('Name', name), field('Groups', groups, 'Comma separated, e.g. visitors')],
        onSubmit: () => post(at(`${base}/enrol`), { person_id: newPersonId(), display_name: name.value.trim(),
          groups: words(groups.value), existing: false }).catch(enrolling('Enrol')),
      }).then((r) => r && done(`Enrolled ${plural(r.snapshot_ids.length, 'face')} as ${nameOf(r.person)}.`));
    };

    const addToExisting = () => {
      const who = h('input', { type: 'text', name: 'person', list: listId, required: true, autocomplete: 'off' });
      pickPeople(who, document.getElementById(listId), { signal, found: (found) => { people = found; } });
      formDialog({
        title: `Add ${faceCount()} to an existing person`,
        submitLabel: 'Add',
        fields: [field('Person', who, 'A person id, or pick a name from the list')],
        onSubmit: () => post(at(`${base}/enrol`), { person_id: resolvePerson(who.value, people), existing: true })
          .catch(enrolling('Add')),
      }).then((r) => r && done(`Added ${plural(r.snapshot_ids.length, 'face')} to ${nameOf(r.person)}.`));
    };

    const dismiss = async () => {
      if (await confirmDialog({ title: `Dismiss ${faceCount()}?`, danger: false,
        message: 'They leave the review of unknown faces; nobody is enrolled.' })) {
        act(() => post(at(`${base}/dismiss`)), (r) => `Dismissed ${plural(r.count, 'face')}.`);
      }
    };
    const remove = async () => {
      if (await confirmDialog({ title: `Delete ${faceCount()}?`,
        message: 'Their snapshots and images are deleted now. This cannot be undone.' })) {
        act(() => del(at(base)), (r) => `Deleted ${plural(r.count, 'face')}.`);
      }
    };

    return h('article', { class: 'cluster panel', dataset: { clusterId: summary.cluster_id } },
      heading,
      h('p', { class: 'meta' }, 'Seen ', timeEl(summary.first_seen), ' to ', timeEl(summary.last_seen),
        ` on ${summary.cameras.join(', ') || summary.devices.join(', ')}`),
      faces,
      h('div', { class: 'actions' },
        h('button', { type: 'button', class: 'primary', text: 'Enrol as new person', onclick: enrolNew }),
        h('button', { type: 'button', text: 'Add to existing person', onclick: addToExisting }),
        h('button', { type: 'button', text: 'Dismiss', onclick: dismiss }),
        h('button', { type: 'button', class: 'danger', text: 'Delete', onclick: remove })));
  };

  const show = () => {
    const pages = Math.max(1, Math.ceil(clusters.length / PAGE_SIZE));
    page = Math.min(page, pages - 1);
    const shown = clusters.slice(page * PAGE_SIZE, (page + 1) * PAGE_SIZE);
    replace(list, shown.length ? shown.map(clusterView)
      : h('p', { class: 'empty', text: 'No unknown faces to review.' }));
    count.textContent = clusters.length ? `${plural(clusters.length, 'cluster')} of unknown faces to review` : '';
    previous.disabled = page === 0;
    next.disabled = page >= pages - 1;
    pageLabel.textContent = `Page ${page + 1} of ${pages}`;
    pager.hidden = pages < 2;
  };

  async function load() {
    try {
      const answer = await get('/api/unknown/clusters', null, { signal });
      clusters = answer.clusters;
      messages.clear();
      show();
    } catch (error) {
      if (isAbort(error)) return;
      replace(list);
      messages.show(`Unknown faces cannot be listed: ${error.message}`, 'error');
    }
  }

  previous.addEventListener('click', () => { page -= 1; show(); if (previous.disabled) next.focus(); });
  next.addEventListener('click', () => { page += 1; show(); if (next.disabled) previous.focus(); });
  main.append(h('h1', { text: 'Unknown faces' }),
    h('div', { class: 'toolbar' }, count, h('button', { type: 'button', text: 'Refresh', onclick: load })),
    messages, list, pager, datalist);
  load();
}
