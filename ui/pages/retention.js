// Retention (admin): the stored policies, and an editor that shows what a
// policy would expire and unlink before it is saved.
import { api, get } from '../lib/api.js';
import { bytes, confirmDialog, error, field, h, table, time } from '../lib/dom.js';
import { runsPanel } from '../lib/runs.js';

const plural = (n, word) => `${n} ${word}${n === 1 ? '' : 's'}`;
const describe = (p) => Object.entries(p).map(([k, v]) => `${k}: ${Array.isArray(v) ? v.join(', ') : v}`).join('; ');
const path = (scope) => `/v1/retention/${scope.split('/').map(encodeURIComponent).join('/')}`;

function planView(plan) {
  return [
    h('h4', {}, `Would expire ${plural(plan.expire.length, 'tag')}`),
    table('Tags that would expire', ['Repository', 'Tag', 'Bound'], plan.expire.map((e) => [e.repository, e.tag, time(e.bound_at)]), 'No tag would expire.'),
    h('h4', {}, `Would unlink ${plural(plan.unlink.length, 'blob')}`),
    table('Blobs that would be unlinked', ['Repository', 'Digest', 'Size'], plan.unlink.map((u) => [u.repository, h('code', {}, u.digest), bytes(u.size)]), 'No blob would be unlinked.'),
  ];
}

export async function render(main) {
  const { policies } = await get('/v1/retention');
  const problem = h('div', {});
  const reload = async () => {
    main.replaceChildren();
    await render(main);
  };
  const scope = h('input', { required: true, placeholder: 'acme/web or acme/*', autocomplete: 'off', id: 'policy-scope' });
  const keepLast = h('input', { type: 'number', min: 0, id: 'keep-last' });
  const keepDays = h('input', { type: 'number', min: 0, id: 'keep-days' });
  const keepTags = h('input', { placeholder: 'release-*, 1.*', autocomplete: 'off', id: 'keep-tags' });
  const untagged = h('input', { type: 'number', min: 0, id: 'untagged-days' });
  const preview = h('div', { id: 'plan', 'aria-live': 'polite' });
  const save = h('button', { type: 'button', disabled: true, id: 'save-policy' }, 'Save policy…');
  const policy = () => {
    const p = {};
    if (keepLast.value !== '') p.keep_last = Number(keepLast.value);
    if (keepDays.value !== '') p.keep_days = Number(keepDays.value);
    if (untagged.value !== '') p.untagged_days = Number(untagged.value);
    const globs = keepTags.value.split(',').map((g) => g.trim()).filter(Boolean);
    if (globs.length) p.keep_tags = globs;
    return p;
  };
  const form = h('form', { class: 'panel', id: 'policy-editor' },
    h('h3', {}, 'Edit a policy'),
    field('Scope', scope), field('Keep the last N tags', keepLast), field('Keep tags bound within N days', keepDays), field('Always keep tags matching (globs, comma separated)', keepTags), field('Unlink untagged blobs after N days', untagged),
    h('div', { class: 'actions' }, h('button', { type: 'submit' }, 'Show the plan'), save),
    preview);
  for (const input of [scope, keepLast, keepDays, keepTags, untagged]) input.addEventListener('input', () => { save.disabled = true; });
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    problem.replaceChildren();
    try {
      const plan = await api('POST', `${path(scope.value.trim())}/plan`, policy());
      preview.replaceChildren(h('p', {}, `Under ${describe(policy()) || 'the defaults'}, a run now would:`), ...planView(plan));
      save.disabled = false;
      save.dataset.expire = String(plan.expire.length);
    } catch (err) {
      preview.replaceChildren(error(err));
    }
  });
  save.addEventListener('click', async () => {
    if (!(await confirmDialog(`Save the policy of ${scope.value}?`, `The next run expires the ${plural(Number(save.dataset.expire), 'tag')} shown; expired tags never come back.`, 'Save'))) return;
    try {
      await api('PUT', path(scope.value.trim()), policy());
      await reload();
    } catch (err) {
      problem.replaceChildren(error(err));
    }
  });
  const remove = async (p) => {
    if (!(await confirmDialog(`Remove the policy of ${p.scope}?`, 'Its repositories keep every tag from now on.', 'Remove'))) return;
    try {
      await api('DELETE', path(p.scope));
      await reload();
    } catch (err) {
      problem.replaceChildren(error(err));
    }
  };
  const edit = (p) => {
    scope.value = p.scope;
    keepLast.value = p.policy.keep_last ?? '';
    keepDays.value = p.policy.keep_days ?? '';
    untagged.value = p.policy.untagged_days ?? '';
    keepTags.value = (p.policy.keep_tags ?? []).join(', ');
    save.disabled = true;
    scope.focus();
  };
  main.append(
    h('h2', {}, 'Retention'),
    problem,
    table('Policies', ['Scope', 'Policy', 'Updated', ''], policies.map((p) => [p.scope, describe(p.policy), time(p.updated_at), h('span', { class: 'row-actions' }, h('button', { type: 'button', onclick: () => edit(p) }, 'Edit'), h('button', { type: 'button', class: 'danger', onclick: () => remove(p) }, 'Remove'))]), 'No policy: every tag is kept.'),
    form,
    runsPanel(['retention']),
  );
}
