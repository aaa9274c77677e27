// The pinned keys, with their ids to compare with `amberd keys export`,
// and any change the server's set shows.
import { confirmDialog, h, table, time, verdict } from '../lib/dom.js';
import { review, trustServed } from '../lib/keys.js';

export async function render(main, ctx) {
  const state = await review();
  const rows = (keys) => keys.map((k) => [h('code', {}, k.keyid), k.purpose ?? 'manifest', k.status, time(k.created_at), h('code', { class: 'key' }, k.vkey ?? k.public_key)]);
  const changed = state.added.length || state.gone.length;
  const accept = h('button', { type: 'button', id: 'trust-keys' }, 'Trust the server’s keys…');
  accept.addEventListener('click', async () => {
    if (!(await confirmDialog('Trust these keys?', 'Only after comparing their ids with `amberd keys export` on the server, over a channel you trust.', 'Trust'))) return;
    await trustServed();
    ctx.refresh();
  });
  main.append(
    h('h2', {}, 'Keys'),
    changed
      ? verdict('bad', 'The server’s keys changed.', `Listed but not pinned: ${state.added.map((k) => k.keyid).join(', ') || 'none'}; pinned but not listed: ${state.gone.map((k) => k.keyid).join(', ') || 'none'}. Nothing signed by an unpinned key verifies here.`)
      : verdict('ok', 'Pinned.', `These keys were pinned in this browser on ${new Date(state.pinned.pinned_at).toLocaleString()}; compare their ids with \`amberd keys export\`.`),
    table('Pinned keys', ['Key id', 'Purpose', 'Status', 'Created', 'Public key'], rows(state.pinned.keys)),
    h('div', {}, changed ? [h('h3', {}, 'What the server lists now'), table('Server keys', ['Key id', 'Purpose', 'Status', 'Created', 'Public key'], rows(state.served)), accept] : null),
  );
}
