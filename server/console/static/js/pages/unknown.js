/** Unknown faces (admin): the clusters of unknown faces under review, each a grid of face crops with times,
 * devices and cameras; enrol a cluster as a new person or add it to an existing one (each in a dialog),
 * dismiss it or delete it (both confirmed first). An action covers every face of the cluster, so it needs
 * every face on screen first. Each action names the version of the cluster on screen: if faces joined or
 * left it since, the server refuses (409; 404 when its oldest face left, which gives it a new id) and the
 * page shows that cluster as it is now, where the operator was, to be checked and confirmed again. */

import { del, get, isAbort, post, seg, withQuery } from '../api.js';
import { field, h, messageBox, replace, uid, words } from '../dom.js';
import { confirmDialog, formDialog } from '../dialog.js';
import { plural, timeEl } from '../format.js';
import { forgetPeople, pickPeople, resolvePerson } from '../directory.js';

const PAGE_SIZE = 10;
const nameOf = (person) => person.display_name || person.person_id;
const FIRST_FACES = 18; // shown at first; the rest on request
const FACES_PAGE = 120; // shown at a time after that (their images load as they scroll into view)
const PROBES = 5; // faces tried as the new id of a cluster whose oldest face left

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

/** A cluster's label: its id cut short (the id of its oldest face), not its place in the list. */
export const clusterLabel = (clusterId) => `Unknown person ${String(clusterId).slice(0, 8)}`;

const clusterPath = (clusterId) => `/api/unknown/clusters/${seg(clusterId)}`;

/** Where a cluster shown as `shown` (a detail, with its snapshots) is now: the same id, or, when its oldest
 * face left and the id with it (404), the cluster of one of its older faces left. null: none is under review. */
async function findAgain(shown, signal) {
  const oldestFirst = [shown.cluster_id, ...[...(shown.snapshots || [])]
    .sort((a, b) => Date.parse(a.time) - Date.parse(b.time)).map((s) => s.snapshot_id)
    .filter((id) => id !== shown.cluster_id).slice(0, PROBES)];
  for (const id of oldestFirst) {
    try {
      return await get(clusterPath(id), null, { signal });
    } catch (error) {
      if (error.status !== 404) throw error;
    }
  }
  return null;
}

/** Render the page into ctx.main. */
export function render(ctx) {
  const { main, signal, notify } = ctx;
  let clusters = null;
  let people = [];
  let page = 0;
  /** A cluster shown again after a refused action: {detail, index (its place on the page), note}. */
  let pinned = null;
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
    pinned = null;
    forgetPeople();
    notify(text, 'ok');
    await load();
  };

  /** Show the cluster again where it was after the server refused an action on it (409: faces joined or
   * left; 404: its oldest face left, so its id changed), with a note saying so. */
  const shownAgain = async (article, shown, error) => {
    const index = Math.max(0, [...list.querySelectorAll('article.cluster')].indexOf(article));
    let now = null;
    try {
      now = await findAgain(shown, signal);
    } catch (failure) {
      if (isAbort(failure)) return;
      notify(`${error.message} The cluster cannot be shown again: ${failure.message}`, 'error');
      await load();
      return;
    }
    if (!now) {
      pinned = null;
      notify('This cluster is no longer under review: its faces were enrolled, dismissed or deleted '
        + 'elsewhere, or expired. Nothing was done.', 'error');
      await load();
      return;
    }
    const note = now.cluster_id === shown.cluster_id
      ? `Faces joined or left this cluster since it was shown; it now holds ${plural(now.count, 'face')}, `
        + 'shown here as it is now. Nothing was done: check them, then act again.'
      : `The oldest face of this cluster left it, so it is now ${clusterLabel(now.cluster_id)} with `
        + `${plural(now.count, 'face')}, shown here as it is now. Nothing was done: check them, then act again.`;
    pinned = { detail: now, index, note };
    notify('');
    await load();
    list.querySelector(`article[data-cluster-id="${CSS.escape(now.cluster_id)}"] h2`)?.focus();
  };

  const clusterView = (summary, { detail = null, note = '' } = {}) => {
    const headingId = uid('cluster');
    let onScreen = summary; // the cluster as shown; its version goes with every action on it
    let limit = FIRST_FACES; // faces drawn
    const base = () => clusterPath(onScreen.cluster_id);
    const faceCount = () => plural(onScreen.count, 'face');
    const at = (path) => withQuery(path, { version: onScreen.version });
    const heading = h('h2', { id: headingId, tabindex: -1 });
    const seen = h('p', { class: 'meta' });
    const noteBox = messageBox();
    const faces = h('ul', { class: 'crop-grid', 'aria-label': 'Faces', tabindex: -1 },
      h('li', { class: 'loading', text: 'Loading faces…' }));
    const withCrops = () => (onScreen.snapshots || []).filter((one) => one.crop_bytes > 0);
    const hidden = () => !onScreen.snapshots || withCrops().length > limit;
    const drawFaces = () => {
      const all = withCrops();
      const rest = all.length - limit;
      const more = rest > 0 ? h('li', { class: 'more' }, h('button', { type: 'button',
        text: limit === FIRST_FACES ? `Show all ${plural(all.length, 'face')}` : `Show the other ${plural(rest, 'face')}`,
        onclick: () => {
          limit += FACES_PAGE;
          drawFaces();
          (faces.querySelector('li.more button') || faces).focus();
        } })) : null;
      replace(faces, all.slice(0, limit).map(face), more);
    };
    const draw = () => {
      article.dataset.clusterId = onScreen.cluster_id;
      heading.textContent = `${clusterLabel(onScreen.cluster_id)}: ${faceCount()}`;
      replace(seen, 'First seen ', timeEl(onScreen.first_seen), ', last seen ', timeEl(onScreen.last_seen),
        ` on ${onScreen.cameras.join(', ') || onScreen.devices.join(', ')}`);
      if (onScreen.snapshots) drawFaces();
    };
    /** The cluster as it is now (all faces on screen after a change the operator must check). */
    const showDetail = (now, { all = false } = {}) => {
      onScreen = now;
      if (all) limit = Math.max(limit, withCrops().length);
      draw();
    };

    /** An action needs every face on screen: when some are hidden, show them all and say so instead. */
    const allShown = (label) => {
      if (!hidden()) return true;
      if (!onScreen.snapshots) {
        noteBox.show('The faces of this cluster are still loading; wait for them, then press it again.', 'warn');
        return false;
      }
      limit = Math.max(limit, withCrops().length);
      drawFaces();
      noteBox.show(`${label} acts on all ${faceCount()} of this cluster, so all are shown now. `
        + `Check them, then press ${label} again.`, 'warn');
      faces.focus();
      return false;
    };

    /** An enrolment refused because the cluster changed: its faces as they are now, and what to do. */
    const enrolling = (label) => async (error) => {
      if (error.status !== 409 && error.status !== 404) throw error;
      const sent = onScreen;
      const now = await findAgain(sent, signal).catch(() => null);
      if (!now) {
        throw new Error('This cluster is no longer under review: its faces were enrolled, dismissed or deleted '
          + 'elsewhere, or expired. Nothing was done; cancel and refresh the list.');
      }
      if (now.cluster_id === sent.cluster_id && now.version === sent.version) throw error;
      showDetail(now, { all: true });
      const what = now.cluster_id === sent.cluster_id ? 'Faces joined or left this cluster since it was shown'
        : `The oldest face of this cluster left it, so it is now ${clusterLabel(now.cluster_id)}`;
      throw new Error(`${what}; it now holds ${faceCount()}, shown behind this dialog. Check them, then press `
        + `${label} again.`);
    };

    const act = async (work, success) => {
      const shown = onScreen;
      try {
        await done(success(await work()));
      } catch (error) {
        if (isAbort(error)) return;
        if (error.status === 409 || error.status === 404) await shownAgain(article, shown, error);
        else notify(error.message, 'error');
      }
    };

    const enrolNew = () => {
      if (!allShown('Enrol as new person')) return;
      const name = h('input', { type: 'text', name: 'display_name', required: true, autocomplete: 'off', maxlength: 200 });
      const groups = h('input', { type: 'text', name: 'groups', autocomplete: 'off' });
      formDialog({
        title: `Enrol ${faceCount()} as a new person`,
        submitLabel: 'Enrol',
        fields: [field('Name', name), field('Groups', groups, 'Comma separated, e.g. visitors')],
        onSubmit: () => post(at(`${base()}/enrol`), { person_id: newPersonId(), display_name: name.value.trim(),
          groups: words(groups.value), existing: false }).catch(enrolling('Enrol')),
      }).then((r) => r && done(`Enrolled ${plural(r.snapshot_ids.length, 'face')} as ${nameOf(r.person)}.`));
    };

    const addToExisting = () => {
      if (!allShown('Add to existing person')) return;
      const who = h('input', { type: 'text', name: 'person', list: listId, required: true, autocomplete: 'off' });
      pickPeople(who, document.getElementById(listId), { signal, found: (found) => { people = found; } });
      formDialog({
        title: `Add ${faceCount()} to an existing person`,
        submitLabel: 'Add',
        fields: [field('Person', who, 'A person id, or pick a name from the list')],
        onSubmit: () => post(at(`${base()}/enrol`), { person_id: resolvePerson(who.value, people), existing: true })
          .catch(enrolling('Add')),
      }).then((r) => r && done(`Added ${plural(r.snapshot_ids.length, 'face')} to ${nameOf(r.person)}.`));
    };

    const dismiss = async () => {
      if (!allShown('Dismiss')) return;
      if (await confirmDialog({ title: `Dismiss ${faceCount()}?`, danger: false,
        message: 'They leave the review of unknown faces; nobody is enrolled.' })) {
        act(() => post(at(`${base()}/dismiss`)), (r) => `Dismissed ${plural(r.count, 'face')}.`);
      }
    };
    const remove = async () => {
      if (!allShown('Delete')) return;
      if (await confirmDialog({ title: `Delete ${faceCount()}?`,
        message: 'Their snapshots and images are deleted now. This cannot be undone.' })) {
        act(() => del(at(base())), (r) => `Deleted ${plural(r.count, 'face')}.`);
      }
    };

    const article = h('article', { class: 'cluster panel', 'aria-labelledby': headingId },
      heading, seen, noteBox, faces,
      h('div', { class: 'actions' },
        h('button', { type: 'button', class: 'primary', text: 'Enrol as new person', onclick: enrolNew }),
        h('button', { type: 'button', text: 'Add to existing person', onclick: addToExisting }),
        h('button', { type: 'button', text: 'Dismiss', onclick: dismiss }),
        h('button', { type: 'button', class: 'danger', text: 'Delete', onclick: remove })));
    draw();
    if (note) noteBox.show(note, 'warn');
    if (detail) {
      showDetail(detail, { all: true });
    } else {
      get(base(), null, { signal }).then((found) => showDetail(found)).catch((error) => {
        if (!isAbort(error)) replace(faces, h('li', { class: 'error-text', text: `Faces cannot be loaded: ${error.message}` }));
      });
    }
    return article;
  };

  const show = () => {
    const others = pinned ? clusters.filter((c) => c.cluster_id !== pinned.detail.cluster_id) : clusters;
    const pages = Math.max(1, Math.ceil(others.length / PAGE_SIZE));
    page = Math.min(page, pages - 1);
    const shown = others.slice(page * PAGE_SIZE, (page + 1) * PAGE_SIZE).map((c) => clusterView(c));
    if (pinned) {
      shown.splice(Math.min(pinned.index, shown.length), 0, clusterView(pinned.detail, pinned));
    }
    replace(list, shown.length ? shown : h('p', { class: 'empty', text: 'No unknown faces to review.' }));
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

  const turn = (by, from, to) => {
    pinned = null;
    page += by;
    show();
    if (from.disabled) to.focus();
  };
  previous.addEventListener('click', () => turn(-1, previous, next));
  next.addEventListener('click', () => turn(1, next, previous));
  main.append(h('h1', { text: 'Unknown faces' }),
    h('div', { class: 'toolbar' }, count, h('button', { type: 'button', text: 'Refresh',
      onclick: () => { pinned = null; load(); } })),
    messages, list, pager, datalist);
  load();
}
