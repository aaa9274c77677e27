// The tags of one repository: state, when bound, by whom.
import { ApiError, get, repoPath } from '../lib/api.js';
import { copyButton, h, short, table, time } from '../lib/dom.js';

export const pusher = (by) => {
  if (!by) return '—';
  if (by.ci) return `${by.ci.repository ?? by.ci.publisher} ${by.ci.ref ?? ''} (CI, ${by.ci.publisher})`.trim();
  return by.pipeline ? `${by.token_name} (${by.pipeline})` : by.token_name;
};

const state = (t) => (t.state === 'expired' ? h('span', { class: 'badge expired' }, 'expired') : t.held ? h('span', { class: 'badge held' }, 'held') : h('span', { class: 'badge live' }, 'live'));

export async function render(main, { params }) {
  const repo = `${params[0]}/${params[1]}`;
  main.append(h('nav', { 'aria-label': 'Breadcrumb', class: 'crumbs' }, h('a', { href: '#/repos' }, 'Repositories'), ' / ', repo), h('h2', {}, repo));
  const holder = h('div', {});
  const more = h('button', { type: 'button', hidden: true }, 'More tags');
  main.append(holder, more);
  const rows = [];
  let after = null;
  const load = async () => {
    const page = await get(`/v1/repos/${repoPath(repo)}/tags?limit=100${after ? `&after=${encodeURIComponent(after)}` : ''}`);
    for (const t of page.tags) {
      rows.push([
        h('a', { href: `#/repos/${repo}/tags/${t.tag}` }, t.tag),
        state(t),
        time(t.created_at),
        pusher(t.pushed_by),
        h('span', { class: 'digest' }, h('code', { title: t.digest }, short(t.digest)), copyButton(t.digest, 'Copy digest')),
      ]);
    }
    after = page.next;
    more.hidden = !after;
    holder.replaceChildren(table(`Tags of ${repo}`, ['Tag', 'State', 'Bound', 'Pushed by', 'Manifest digest'], rows, 'No tag is bound in this repository.'));
  };
  more.addEventListener('click', load);
  try {
    await load();
  } catch (err) {
    if (!(err instanceof ApiError && err.code === 'denied')) throw err;
    holder.replaceChildren(h('p', { role: 'alert', class: 'error' }, `${err.message}. Admin grants no pull: to browse tags, sign in with a token that may pull ${repo}.`));
  }
}
