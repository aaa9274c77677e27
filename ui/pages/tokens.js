// Tokens (admin): list with expiry and last use; create with grants picked
// from the repositories, the secret shown once; rotate with a grace; revoke.
// Every change asks first.
import { all, api, enc } from '../lib/api.js';
import { confirmDialog, copyable, error, field, h, table, time } from '../lib/dom.js';

const LIFETIMES = [['3600', '1 hour'], ['86400', '1 day'], ['604800', '7 days'], ['2592000', '30 days'], ['7776000', '90 days']];

const grantText = (grants) => grants.map((g) => `${g.repos}=${g.actions.join(',')}`).join('; ');

function status(t) {
  if (t.revoked_at) return h('span', { class: 'badge expired' }, 'revoked');
  if (new Date(t.expires_at) <= new Date()) return h('span', { class: 'badge expired' }, 'expired');
  if (t.rotated_to) return h('span', { class: 'badge held' }, 'rotated');
  return h('span', { class: 'badge live' }, 'active');
}

function secretShown(holder, created, what) {
  holder.replaceChildren(
    h('div', { class: 'secret', role: 'status' },
      h('h3', {}, `${what}: ${created.name}`),
      h('p', {}, 'The secret is shown this once. Store it in the CI system now; Amber keeps only its hash.'),
      copyable(created.token, 'Copy secret'),
      h('p', {}, 'Try it: ', h('code', {}, `curl -H "Authorization: Bearer $TOKEN" ${location.origin}/v1/whoami`))),
  );
}

function grantRow(repos) {
  const list = `repos-${Math.random().toString(36).slice(2)}`;
  const pattern = h('input', { list, required: true, placeholder: 'acme/web or acme/*', pattern: '[a-z0-9][a-z0-9._\\-]*/([a-z0-9][a-z0-9._\\-]*|\\*)', class: 'pattern' });
  const pull = h('input', { type: 'checkbox', checked: true, class: 'pull' });
  const push = h('input', { type: 'checkbox', class: 'push' });
  const remove = h('button', { type: 'button', 'aria-label': 'Remove this grant' }, 'Remove');
  const row = h('fieldset', { class: 'grant' },
    h('legend', { class: 'visually-hidden' }, 'Grant'),
    field('Repository', pattern),
    h('datalist', { id: list }, repos.map((r) => h('option', { value: r.name })), [...new Set(repos.map((r) => `${r.name.split('/')[0]}/*`))].map((o) => h('option', { value: o }))),
    h('label', { class: 'check' }, pull, ' pull'),
    h('label', { class: 'check' }, push, ' push'),
    remove);
  remove.addEventListener('click', () => row.remove());
  return row;
}

function createForm(repos, onCreated) {
  const name = h('input', { name: 'name', required: true, maxlength: 128, autocomplete: 'off' });
  const pipeline = h('input', { name: 'pipeline', autocomplete: 'off' });
  const lifetime = h('select', { name: 'expires_in' }, LIFETIMES.map(([v, l]) => h('option', { value: v, selected: v === '2592000' }, l)));
  const admin = h('input', { type: 'checkbox', name: 'admin' });
  const grants = h('div', { class: 'grants' }, grantRow(repos));
  const add = h('button', { type: 'button' }, 'Add a grant');
  add.addEventListener('click', () => grants.append(grantRow(repos)));
  const problem = h('div', {});
  const form = h('form', { id: 'create-token', class: 'panel' },
    h('h3', {}, 'Create a token'),
    field('Name', name), field('Pipeline (optional)', pipeline), field('Expires after', lifetime),
    h('p', { class: 'hint' }, 'Grants: only the repositories and actions this pipeline needs.'),
    grants, add,
    h('label', { class: 'check' }, admin, ' admin (manages tokens, keys, retention; grants no push or pull)'),
    h('div', { class: 'actions' }, h('button', { type: 'submit' }, 'Create token…')),
    problem);
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    problem.replaceChildren();
    const body = { name: name.value.trim(), grants: [], expires_in: Number(lifetime.value) };
    if (pipeline.value.trim()) body.pipeline = pipeline.value.trim();
    for (const row of grants.querySelectorAll('.grant')) {
      const actions = ['pull', 'push'].filter((a) => row.querySelector(`.${a}`).checked);
      if (actions.length) body.grants.push({ repos: row.querySelector('.pattern').value.trim(), actions });
    }
    if (admin.checked) body.grants.push({ repos: '*', actions: ['admin'] });
    if (!(await confirmDialog('Create this token?', `${body.name}: ${grantText(body.grants) || 'no grants'}; expires after ${lifetime.selectedOptions[0].text}.`, 'Create'))) return;
    try {
      onCreated(await api('POST', '/v1/tokens', body));
      form.reset();
    } catch (err) {
      problem.replaceChildren(error(err));
    }
  });
  return form;
}

export async function render(main) {
  const [tokens, repos] = await Promise.all([all('/v1/tokens', 'tokens'), all('/v1/repos', 'repositories')]);
  const secret = h('div', { id: 'secret' });
  const problem = h('div', {});
  const reload = async () => {
    main.replaceChildren();
    await render(main);
  };
  const rotate = async (t) => {
    const grace = h('input', { name: 'grace', type: 'number', min: 0, max: 2592000, value: 3600, required: true });
    const answer = await confirmDialog(`Rotate ${t.name}?`, 'A new secret with the same grants; the old one keeps working for the grace below, then ends.', 'Rotate', [field('Grace (seconds)', grace)]);
    if (!answer) return;
    try {
      const created = await api('POST', `/v1/tokens/${enc(t.id)}/rotate`, { grace_seconds: Number(answer.grace) });
      await reload();
      secretShown(document.getElementById('secret'), created, 'Rotated');
    } catch (err) {
      problem.replaceChildren(error(err));
    }
  };
  const revoke = async (t) => {
    if (!(await confirmDialog(`Revoke ${t.name}?`, 'It stops working at once, on every replica. This cannot be undone.', 'Revoke'))) return;
    try {
      await api('DELETE', `/v1/tokens/${enc(t.id)}`);
      await reload();
    } catch (err) {
      problem.replaceChildren(error(err));
    }
  };
  const live = (t) => !t.revoked_at && new Date(t.expires_at) > new Date();
  const rows = tokens.map((t) => [
    h('span', {}, h('strong', {}, t.name), h('br'), h('code', { class: 'id' }, t.id)),
    t.pipeline ?? '—',
    grantText(t.grants),
    status(t),
    time(t.expires_at),
    time(t.last_used_at),
    live(t)
      ? h('span', { class: 'row-actions' },
        h('button', { type: 'button', onclick: () => rotate(t), 'aria-label': `Rotate ${t.name}` }, 'Rotate'),
        h('button', { type: 'button', class: 'danger', onclick: () => revoke(t), 'aria-label': `Revoke ${t.name}` }, 'Revoke'))
      : '',
  ]);
  main.append(
    h('h2', {}, 'Tokens'),
    secret,
    problem,
    createForm(repos, async (created) => {
      await reload();
      secretShown(document.getElementById('secret'), created, 'Created');
    }),
    table('Tokens', ['Token', 'Pipeline', 'Grants', 'Status', 'Expires', 'Last used', ''], rows, 'No tokens.'),
  );
}
