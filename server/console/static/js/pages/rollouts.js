/** Rollouts (admin): every rollout with its state, model, target and progress; a rollout's page with its
 * progress on each agent and the actions pause, resume, widen and roll back (each confirmed first); and a
 * form to start a rollout of a published model. */

import { get, isAbort, post, seg } from '../api.js';
import { badge, field, h, messageBox, replace, select, uid } from '../dom.js';
import { confirmDialog } from '../dialog.js';
import { number, plural, timeEl } from '../format.js';
import { every } from '../poll.js';

const REFRESH_MS = 5000;
const LIST_REFRESH_MS = 10000;
const IDLE_REFRESHES = 6; // with nothing changing, the list is read once a minute
const FINISHED = ['rolled_back']; // nothing about them changes any more
const STATE_TONES = { preparing: 'info', active: 'ok', paused: 'warn', rolled_back: 'bad' };
const DEVICE_TONES = {
  assigned: 'info', downloading: 'info', verifying: 'info', active: 'ok', failed: 'bad', retrying: 'warn',
};

const stateBadge = (state) => badge(state.replace('_', ' '), STATE_TONES[state] || 'muted');

/** "All agents", "Group night", "25 % of agents". */
export function targetText(target) {
  if (target.kind === 'group') return `Group ${target.group}`;
  if (target.kind === 'percent') return `${target.percent} % of agents`;
  return 'All agents';
}

/** "pauses after more than 2 refusals", "rolls back when over 20 % refuse". */
function budgetText(rollout) {
  const budget = rollout.max_failures;
  if (!budget) return 'no failure limit';
  const action = rollout.on_failures === 'rollback' ? 'rolls back' : 'pauses';
  return budget.count !== null && budget.count !== undefined
    ? `${action} after more than ${plural(budget.count, 'refusal')}` : `${action} when over ${budget.percent} % refuse`;
}

/** Agents per state, {state: count}, of a rollout's agents (as /api/rollouts/{id} lists them). */
export function countStates(devices) {
  const counts = {};
  devices.forEach((d) => { counts[d.state] = (counts[d.state] || 0) + 1; });
  return counts;
}

/** How far a rollout got: a <progress> and the agents per state (`counts`, as GET /api/rollouts gives
 * them). A rolled-back rollout says how far it had got; the Fleet page shows each agent's model now. */
function progress(rollout, counts) {
  const rolloutId = rollout.rollout_id;
  const total = Object.values(counts).reduce((sum, n) => sum + n, 0);
  if (!total) return h('span', { class: 'muted', text: 'no agent yet' });
  const done = counts.active || 0;
  if (rollout.state === 'rolled_back') {
    return h('small', { class: 'block' },
      `rolled back; ${number(done)} of ${plural(total, 'agent')} had switched to it`);
  }
  const id = uid('progress');
  return h('div', { class: 'progress' },
    h('progress', { id, max: total, value: done, 'aria-label': `Progress of rollout ${rolloutId}` }),
    h('small', { class: 'block' }, `${number(done)} of ${plural(total, 'agent')} active`,
      Object.entries(counts).filter(([state]) => state !== 'active')
        .map(([state, n]) => `, ${number(n)} ${state}`).join('')));
}

/** What each action asks before it is done: [button text, dialog title, dialog text, dangerous]. */
function question(action, rollout, percent) {
  const id = rollout.rollout_id;
  const target = targetText(rollout.target).toLowerCase();
  if (action === 'pause') {
    return ['Pause', `Pause rollout ${id}?`, 'Agents that have not switched yet stay on their model until it resumes.', false];
  }
  if (action === 'resume' && percent) {
    return ['Widen', `Widen rollout ${id} to ${percent} %?`, `${percent} % of the fleet switches to ${rollout.model_id}`
      + `${rollout.state === 'paused' ? '; the rollout resumes' : ''}.`, false];
  }
  if (action === 'resume') return ['Resume', `Resume rollout ${id}?`, `Agents of ${target} switch to ${rollout.model_id}.`, false];
  return ['Roll back', `Roll back rollout ${id}?`,
    'Every agent it reached goes back to its previous model. It cannot be resumed.', true];
}

/** Ask, then POST /api/rollouts/{id}/{action}; true when it was done. percent: widen to it. */
async function change(rollout, action, { notify, percent } = {}) {
  const [, title, message, danger] = question(action, rollout, percent);
  if (!await confirmDialog({ title, message, danger })) return false;
  try {
    const changed = await post(`/api/rollouts/${rollout.rollout_id}/${action}`, percent ? { percent } : {});
    const now = percent ? `widened to ${percent} %` : changed.state.replace('_', ' ');
    notify(`Rollout ${rollout.rollout_id} ${now}.`, 'ok');
    return true;
  } catch (error) {
    notify(`${title.replace(/\?$/, '')}: not done: ${error.message}`, 'error');
    return false;
  }
}

/** The actions a rollout in its state allows: pause (active), resume (paused), roll back (not yet). */
function allowed(rollout) {
  return [rollout.state === 'active' && 'pause', rollout.state === 'paused' && 'resume',
    !['rolled_back', 'preparing'].includes(rollout.state) && 'rollback'].filter(Boolean);
}

/** Render the page into ctx.main: the list, or one rollout (#/rollouts/<id>). */
export function render(ctx) {
  if (ctx.parts.length) renderOne(ctx, ctx.parts[0]);
  else renderList(ctx);
}

function renderList(ctx) {
  const { main, signal } = ctx;
  const messages = messageBox();
  const body = h('tbody');
  const wrap = h('div', { class: 'table-wrap', hidden: true }, h('table', { class: 'data' },
    h('caption', { class: 'visually-hidden', text: 'Rollouts, newest first' }),
    h('thead', null, h('tr', null, ['Rollout', 'Model', 'Target', 'State', 'Progress', 'Failure budget', 'Updated', 'Reason',
      'Actions']
      .map((text) => h('th', { scope: 'col', text })))), body));
  const empty = h('p', { class: 'empty', hidden: true, text: 'No rollout has been started.' });
  const loading = h('p', { class: 'loading', text: 'Loading rollouts…' });
  const listId = uid('rollouts');

  let changing = true; // some rollout may still change: keep refreshing

  const load = async () => {
    try {
      const { rollouts } = await get('/api/rollouts', null, { signal });
      changing = rollouts.some((r) => !FINISHED.includes(r.state));
      loading.remove();
      const focused = body.contains(document.activeElement) ? document.activeElement : null;
      const focusRow = focused?.closest('tr')?.dataset.rolloutId;
      const focusAction = focused?.dataset.action;
      replace(body, rollouts.map((r) => h('tr', { dataset: { rolloutId: r.rollout_id } },
        h('th', { scope: 'row' }, h('a', { href: `#/rollouts/${r.rollout_id}`, text: `Rollout ${r.rollout_id}` })),
        h('td', null, r.model_id, h('small', { class: 'block muted', text: r.task })),
        h('td', { text: targetText(r.target) }),
        h('td', null, stateBadge(r.state)),
        h('td', null, r.device_counts ? progress(r, r.device_counts) : h('span', { class: 'muted', text: '—' })),
        h('td', { class: 'small', text: budgetText(r) }),
        h('td', null, timeEl(r.updated_at)),
        h('td', { class: 'reason', text: r.reason || '—' }),
        h('td', { class: 'row-actions' }, allowed(r).map((action) => h('button', {
          type: 'button', class: action === 'rollback' ? 'danger' : null, dataset: { action },
          'aria-label': `${question(action, r)[0]} rollout ${r.rollout_id}`, text: question(action, r)[0],
          onclick: async () => { if (await change(r, action, ctx)) await load(); },
        }))))));
      if (focusRow) {
        const again = body.querySelector(`tr[data-rollout-id="${focusRow}"]`);
        // the same action's button if the rollout still offers it, else the rollout's link
        (focusAction && again?.querySelector(`[data-action="${focusAction}"]`) || again?.querySelector('a'))?.focus();
      }
      wrap.hidden = rollouts.length === 0;
      empty.hidden = rollouts.length !== 0;
      messages.clear();
    } catch (error) {
      if (isAbort(error)) return;
      loading.remove();
      messages.show(`Rollouts cannot be listed: ${error.message}`, 'error');
    }
  };

  main.append(h('h1', { text: 'Rollouts' }),
    h('section', { class: 'panel' },
      h('h2', { id: listId, class: 'visually-hidden', text: 'All rollouts' }), messages, loading, wrap, empty),
    startForm(ctx, load));
  load();
  // One request a refresh while the tab is visible: every LIST_REFRESH_MS while some rollout may still
  // change, else every IDLE_REFRESHES of them, so that a rollout started elsewhere still appears.
  let idle = 0;
  every(LIST_REFRESH_MS, async () => {
    idle = changing ? 0 : (idle + 1) % IDLE_REFRESHES;
    if (changing || idle === 0) await load();
  }, signal);
}

/** The form that starts a rollout of a published, not retired, model. */
function startForm(ctx, reload) {
  const { signal, notify } = ctx;
  const headingId = uid('start');
  const model = select({ name: 'model_id', required: true }, [['', 'Loading models…']]);
  const target = select({ name: 'target' }, [['all', 'All agents'], ['group', 'Agents in a group'],
    ['percent', 'A percentage of agents']], 'all');
  const groupsId = uid('groups');
  const group = h('input', { type: 'text', name: 'group', list: groupsId, autocomplete: 'off' });
  const percent = h('input', { type: 'number', name: 'percent', min: 1, max: 100, step: 1, value: 10 });
  const budget = h('input', { type: 'text', name: 'max_failures', autocomplete: 'off', inputmode: 'numeric' });
  const onFailures = select({ name: 'on_failures' }, [['pause', 'Pause it'], ['rollback', 'Roll it back']], 'pause');
  const groupField = field('Group', group);
  const percentField = field('Percent', percent, '1–100 % of the fleet (a canary)');
  const messages = messageBox();
  const button = h('button', { type: 'submit', class: 'primary', text: 'Start rollout' });
  const groupList = h('datalist', { id: groupsId });

  const showTarget = () => {
    groupField.hidden = target.value !== 'group';
    percentField.hidden = target.value !== 'percent';
    group.required = target.value === 'group';
  };
  target.addEventListener('change', showTarget);
  showTarget();

  Promise.all([get('/api/models', null, { signal }), get('/api/fleet', null, { signal })]).then(([models, fleet]) => {
    const offered = models.models.filter((m) => !m.retired_at);
    replace(model, [['', offered.length ? 'Choose a model' : 'No published model'],
      ...offered.map((m) => [m.model_id, `${m.model_id} (${m.task}, ${m.precision})`])].map(([value, text]) =>
      h('option', { value, text })));
    const groups = [...new Set(fleet.agents.flatMap((a) => a.groups))].sort();
    replace(groupList, groups.map((g) => h('option', { value: g })));
  }).catch((error) => { if (!isAbort(error)) messages.show(`Models cannot be listed: ${error.message}`, 'error'); });

  const form = h('form', { class: 'stack' },
    h('div', { class: 'grid-fields' }, field('Model', model), field('Target', target), groupField, percentField,
      field('Max failures', budget, 'Optional: agents (e.g. 2) or a share (e.g. 20%) that may refuse it'),
      field('When over the budget', onFailures)),
    messages, h('div', { class: 'actions' }, button), groupList);

  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    const kind = target.value;
    const body = { model_id: model.value, target: { kind }, on_failures: onFailures.value };
    if (kind === 'group') body.target.group = group.value.trim();
    if (kind === 'percent') body.target.percent = Number(percent.value);
    const typed = budget.value.trim();
    if (typed) {
      const value = Number(typed.replace(/%$/, '').trim());
      if (!Number.isInteger(value) || value < 0) {
        messages.show('Max failures: give e.g. 2 or 20%.', 'error');
        return;
      }
      body.max_failures = typed.endsWith('%') ? { percent: value } : { count: value };
    }
    if (!await confirmDialog({ title: 'Start the rollout?', danger: false,
      message: `Roll ${body.model_id} out to ${targetText(body.target).toLowerCase()}.` })) return;
    button.disabled = true;
    messages.show('Starting… (an embedding model first re-embeds every enrolled person)');
    try {
      const started = await post('/api/rollouts', body);
      const id = started.rollout.rollout_id;
      let text = `Started rollout ${id}.`;
      if (started.reembedded_count) text += ` ${plural(started.reembedded_count, 'person', 'people')} re-embedded.`;
      if (started.without_crops_count) {
        text += ` ${plural(started.without_crops_count, 'person', 'people')} without stored crops must be re-enrolled: `
          + `${started.without_crops.slice(0, 20).join(', ')}${started.without_crops_count > 20 ? ', …' : ''}`;
      }
      messages.show(text, started.without_crops_count ? 'warn' : 'ok');
      notify(`Started rollout ${id}.`, 'ok');
      await reload();
    } catch (error) {
      messages.show(`Not started: ${error.message}`, 'error');
    } finally {
      button.disabled = false;
    }
  });

  return h('section', { class: 'panel' },
    h('h2', { id: headingId, text: 'Start a rollout' }), form);
}

function renderOne(ctx, idText) {
  const { main, signal, notify } = ctx;
  const id = Number(idText);
  const summary = h('div', { class: 'rollout-summary' }, h('p', { class: 'loading', text: 'Loading the rollout…' }));
  const actions = h('div', { class: 'actions rollout-actions' });
  const messages = messageBox();
  const body = h('tbody');
  const agentsId = uid('agents');
  const wrap = h('div', { class: 'table-wrap' }, h('table', { class: 'data' },
    h('caption', { class: 'visually-hidden', text: 'The rollout on each agent' }),
    h('thead', null, h('tr', null, ['Device', 'State', 'Previous model', 'Reason', 'Updated']
      .map((text) => h('th', { scope: 'col', text })))), body));
  const agentsSection = h('section', { class: 'panel', hidden: true }, h('h2', { id: agentsId, text: 'Agents' }), wrap);
  let current = null;
  let gone = false; // no such rollout: stop asking

  const act = async (action, percent) => {
    if (await change(current, action, { notify, percent })) await load();
  };

  const drawActions = (rollout) => {
    const key = `${rollout.state}|${rollout.target.kind}|${rollout.target.percent}`;
    if (actions.dataset.key === key) return; // keep the focus and what was typed
    actions.dataset.key = key;
    const parts = allowed(rollout).map((action) => h('button', { type: 'button', dataset: { action },
      class: action === 'rollback' ? 'danger' : action === 'resume' ? 'primary' : null,
      text: question(action, rollout)[0], onclick: () => act(action) }));
    if (rollout.target.kind === 'percent' && ['active', 'paused'].includes(rollout.state) && rollout.target.percent < 100) {
      const to = h('input', { type: 'number', name: 'percent', min: rollout.target.percent + 1, max: 100, step: 1,
        required: true, value: Math.min(100, rollout.target.percent * 2) });
      const widen = h('form', { class: 'inline-form' }, field('Widen to percent', to),
        h('button', { type: 'submit', text: 'Widen' }));
      widen.addEventListener('submit', (event) => { event.preventDefault(); act('resume', Number(to.value)); });
      parts.splice(parts.length - (allowed(rollout).includes('rollback') ? 1 : 0), 0, widen);
    }
    replace(actions, parts);
  };

  const load = async () => {
    if (gone) return;
    try {
      const detail = await get(`/api/rollouts/${seg(id)}`, null, { signal });
      current = detail.rollout;
      replace(summary, h('dl', { class: 'facts' },
        h('dt', { text: 'Model' }), h('dd', { text: `${current.model_id} (${current.task})` }),
        h('dt', { text: 'Target' }), h('dd', { text: targetText(current.target) }),
        h('dt', { text: 'State' }), h('dd', null, stateBadge(current.state)),
        h('dt', { text: 'Progress' }), h('dd', null, progress(detail.rollout, countStates(detail.devices))),
        h('dt', { text: 'Failure budget' }), h('dd', { text: budgetText(current) }),
        h('dt', { text: 'Started' }), h('dd', null, timeEl(current.created_at, { mode: 'full' })),
        h('dt', { text: 'Updated' }), h('dd', null, timeEl(current.updated_at, { mode: 'full' })),
        current.reason ? [h('dt', { text: 'Reason' }), h('dd', { class: 'reason', text: current.reason })] : null));
      drawActions(current);
      agentsSection.hidden = false;
      replace(body, detail.devices.length ? detail.devices.map((d) => h('tr', { dataset: { device: d.device_id } },
        h('th', { scope: 'row', text: d.device_id }),
        h('td', null, badge(d.state, DEVICE_TONES[d.state] || 'muted')),
        h('td', { text: d.previous_model_id || '—' }),
        h('td', { class: 'reason', text: d.reason || '—' }),
        h('td', null, timeEl(d.updated_at))))
        : h('tr', null, h('td', { colspan: 5, class: 'empty', text: 'Not announced to any agent yet.' })));
    } catch (error) {
      if (isAbort(error)) return;
      if (!current) replace(summary);
      gone = error.status === 404 || error.status === 400;
      messages.show(error.status === 404 ? `There is no rollout ${idText}.` : `The rollout cannot be loaded: ${error.message}`,
        'error');
    }
  };

  main.append(h('p', null, h('a', { href: '#/rollouts', text: '← All rollouts' })),
    h('h1', { text: `Rollout ${idText}` }), messages, h('section', { class: 'panel' }, summary, actions),
    agentsSection);
  load();
  every(REFRESH_MS, load, signal);
}
