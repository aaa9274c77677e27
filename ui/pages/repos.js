// Repositories the token may pull, searchable.
import { all } from '../lib/api.js';
import { bytes, h, table, time } from '../lib/dom.js';

export async function render(main) {
  const repos = await all('/v1/repos', 'repositories');
  const search = h('input', { id: 'filter', type: 'search', placeholder: 'acme/web', autocomplete: 'off' });
  const rows = (needle) =>
    repos
      .filter((r) => r.name.includes(needle))
      .map((r) => [h('a', { href: `#/repos/${r.name}` }, r.name), String(r.tags), String(r.live_tags), String(r.blobs), bytes(r.bytes), time(r.last_push_at)]);
  const holder = h('div', {});
  const draw = () => holder.replaceChildren(table('Repositories', ['Name', 'Tags', 'Live tags', 'Blobs', 'Size', 'Last push'], rows(search.value.trim().toLowerCase()), 'No repository this token may pull holds anything yet.'));
  search.addEventListener('input', draw);
  draw();
  main.append(h('h2', {}, 'Repositories'), h('div', { class: 'field' }, h('label', { for: 'filter' }, 'Search'), search), holder);
}
