// Publishers (admin): the trust policies for CI ID tokens. Listed, created
// from their JSON (the contract's shape), deleted; each change asks first.
import { api, enc, get } from '../lib/api.js';
import { confirmDialog, error, field, h, table, time } from '../lib/dom.js';

const EXAMPLE = {
  name: 'web release',
  issuer: 'github',
  github: { repository: 'acme/web', repository_id: '123456789', repository_owner_id: '98765', workflow: 'release.yml', environment: 'production', refs: ['refs/heads/main', 'refs/tags/v*'] },
  grants: [{ repos: 'acme/web', actions: ['push', 'pull'] }],
  token_lifetime: 900,
};

const trusts = (p) => {
  const t = p.github ?? p.gitlab ?? p.generic ?? {};
  return Object.entries(t).map(([k, v]) => `${k}: ${Array.isArray(v) ? v.join(', ') : v}`).join('; ');
};

export async function render(main) {
  const { publishers } = await get('/v1/publishers');
  const problem = h('div', {});
  const reload = async () => {
    main.replaceChildren();
    await render(main);
  };
  const text = h('textarea', { rows: 14, spellcheck: 'false', class: 'json' });
  text.value = JSON.stringify(EXAMPLE, null, 2);
  const form = h('form', { class: 'panel', id: 'create-publisher' }, h('h3', {}, 'Create a publisher'), field('Publisher (JSON)', text), h('div', { class: 'actions' }, h('button', { type: 'submit' }, 'Create publisher…')));
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    problem.replaceChildren();
    let body;
    try {
      body = JSON.parse(text.value);
    } catch (err) {
      problem.replaceChildren(error(`Not JSON: ${err.message}`));
      return;
    }
    if (!(await confirmDialog('Create this publisher?', `CI runs of ${body.issuer} matching it will get tokens with ${JSON.stringify(body.grants)}.`, 'Create'))) return;
    try {
      await api('POST', '/v1/publishers', body);
      await reload();
    } catch (err) {
      problem.replaceChildren(error(err));
    }
  });
  const remove = async (p) => {
    if (!(await confirmDialog(`Delete publisher ${p.name}?`, 'CI runs it trusted can no longer exchange ID tokens; tokens already minted keep working until they expire.', 'Delete'))) return;
    try {
      await api('DELETE', `/v1/publishers/${enc(p.id)}`);
      await reload();
    } catch (err) {
      problem.replaceChildren(error(err));
    }
  };
  main.append(
    h('h2', {}, 'Publishers'),
    h('p', {}, 'CI runs whose ID tokens a publisher trusts exchange them for short-lived tokens: no stored secret in CI.'),
    problem,
    table('Publishers', ['Name', 'Issuer', 'Trusts', 'Grants', 'Token lifetime', 'Created', ''], publishers.map((p) => [
      p.name, p.issuer, trusts(p), p.grants.map((g) => `${g.repos}=${g.actions.join(',')}`).join('; '), `${p.token_lifetime} s`, time(p.created_at),
      h('button', { type: 'button', class: 'danger', onclick: () => remove(p), 'aria-label': `Delete ${p.name}` }, 'Delete'),
    ]), 'No publishers: CI uses tokens an operator created.'),
    form,
  );
}
