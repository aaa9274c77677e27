// The audit log (admin): entries newest first, filtered by kind, repository
// and token; and the whole log verified here: the Merkle tree of the exact
// entry bytes is rebuilt (SHA-256, RFC 6962) and its root compared with the
// checkpoint signed by the pinned log key. Each entry's bytes hold its
// sequence number and the previous entry's hash, so any edit, deletion or
// reordering changes the root; the first broken entry is then named by
// comparing the leaves with the server's hash tiles, as `amber audit
// verify` does. (The BLAKE3 chain is not re-hashed here: in JavaScript it
// would triple the time, and the signed tree already covers every byte.)
import { get, request } from '../lib/api.js';
import { h, table, time, verdict } from '../lib/dom.js';
import { trusted } from '../lib/keys.js';
import { Tree, VerifyError, hex, leafHash, openCheckpoint, tileIndex } from '../lib/verify.js';

const utf8 = new TextEncoder();
const SHOWN = 200;

// Parsed once per entry (the filters read every loaded entry on each keystroke).
const parsed = new WeakMap();
function parse(entry) {
  let body = parsed.get(entry);
  if (!body) {
    try {
      body = JSON.parse(entry.entry);
    } catch {
      body = { seq: entry.seq, event: { kind: 'unreadable' }, actor: {} };
    }
    parsed.set(entry, body);
  }
  return body;
}

const repositoryOf = (event) => event.repository ?? event.scope ?? (event.repositories ?? []).join(' ') ?? '';
const tokenOf = (body) => [body.actor?.token_id, body.actor?.token_name, body.event?.token_id].filter(Boolean).join(' ');

function summary(event) {
  const { kind, repository, ...rest } = event;
  return Object.entries(rest)
    .map(([k, v]) => `${k}: ${typeof v === 'string' ? v : JSON.stringify(v)}`)
    .join(', ');
}

/** Walks every entry in order; reports the first break, or the checked size. */
async function verifyAll(checkpoint, onProgress) {
  const tree = new Tree();
  const leaves = [];
  let expected = 1;
  const entries = [];
  const fetchPage = (after) => get(`/v1/audit?limit=10000&after=${after}`);
  // The next page is asked for while this one is checked.
  let pending = fetchPage(0);
  for (;;) {
    const page = await pending;
    if (page.next !== null && page.next !== undefined) pending = fetchPage(page.next);
    for (const entry of page.entries) {
      const bytes = utf8.encode(entry.entry);
      if (entry.seq !== expected) throw new VerifyError(`entry ${expected} is missing or out of order (found ${entry.seq} in its place)`);
      const body = parse(entry);
      if (body.seq !== entry.seq) throw new VerifyError(`entry ${entry.seq} says it is entry ${body.seq}`);
      expected += 1;
      if (tree.size < checkpoint.size) {
        const leaf = leafHash(bytes);
        tree.push(leaf);
        leaves.push(leaf);
      }
      entries.push(entry);
      if (entries.length % 2000 === 0) await onProgress(tree.size);
    }
    await onProgress(tree.size);
    if (page.next === null || page.next === undefined) break;
  }
  if (tree.size < checkpoint.size) {
    throw new VerifyError(`the signed checkpoint covers ${checkpoint.size} entries but the log has ${tree.size}: entries were deleted from the end`);
  }
  const root = tree.root();
  if (hex(root) === hex(checkpoint.root)) return entries;
  // Which entry differs from the server's tree: compare with its hash tiles.
  for (let index = 0; index * 256 < checkpoint.size; index += 1) {
    const width = Math.min(256, checkpoint.size - index * 256);
    const path = `/v1/log/tile/0/${tileIndex(index)}${width < 256 ? `.p/${width}` : ''}`;
    const tile = new Uint8Array(await (await request('GET', path)).arrayBuffer());
    for (let i = 0; i < width; i += 1) {
      if (hex(tile.subarray(i * 32, i * 32 + 32)) !== hex(leaves[index * 256 + i])) {
        throw new VerifyError(`entry ${index * 256 + i + 1} is not the entry the signed checkpoint covers: it was edited`);
      }
    }
  }
  throw new VerifyError('the entries do not rebuild the tree of the signed checkpoint: the stored tree was altered');
}

export async function render(main) {
  const keys = trusted();
  const note = await (await request('GET', '/v1/log/checkpoint', { accept: 'text/plain' })).text();
  let checkpoint = null;
  const status = h('div', { id: 'audit-status' });
  try {
    checkpoint = await openCheckpoint(note, keys.log);
    status.append(verdict('wait', 'Not verified yet.', `The signed checkpoint covers ${checkpoint.size} entries.`));
  } catch (err) {
    status.append(verdict('bad', 'Checkpoint not verified:', err.message));
  }
  const progress = h('progress', { id: 'audit-progress', max: String(checkpoint?.size || 1), value: '0', 'aria-label': 'Entries verified', hidden: true });
  const button = h('button', { type: 'button', id: 'verify-log', disabled: !checkpoint }, 'Verify the whole log');

  let entries = (await get(`/v1/audit?limit=10000&after=${Math.max(0, (checkpoint?.size ?? 0) - SHOWN)}`)).entries;
  const kind = h('select', { id: 'audit-kind' }, h('option', { value: '' }, 'Any kind'));
  const repo = h('input', { id: 'audit-repo', type: 'search', autocomplete: 'off' });
  const token = h('input', { id: 'audit-token', type: 'search', autocomplete: 'off' });
  const holder = h('div', {});
  let known = '';
  const draw = () => {
    // The kinds seen so far (more once the whole log is loaded); the options
    // are rebuilt only when they change, never under the user's choice.
    const kinds = [...new Set(entries.map((e) => parse(e).event.kind))].sort();
    const chosen = kind.value;
    if (kinds.join() !== known) {
      known = kinds.join();
      kind.replaceChildren(h('option', { value: '' }, 'Any kind'), ...kinds.map((k) => h('option', { value: k }, k)));
      kind.value = kinds.includes(chosen) ? chosen : '';
    }
    const rows = [];
    for (let i = entries.length - 1; i >= 0 && rows.length < 1000; i -= 1) {
      const body = parse(entries[i]);
      if (chosen && body.event.kind !== chosen) continue;
      if (repo.value && !repositoryOf(body.event).includes(repo.value)) continue;
      if (token.value && !tokenOf(body).includes(token.value)) continue;
      rows.push([String(body.seq), time(body.at), body.event.kind, body.actor?.token_name ?? '', repositoryOf(body.event), h('span', { class: 'detail' }, summary(body.event))]);
    }
    holder.replaceChildren(
      h('p', { class: 'count' }, `Showing ${rows.length} of the ${entries.length} entries loaded, newest first${entries.length && entries[0].seq > 1 ? '; verifying the whole log loads every entry for the filters' : ''}.`),
      table('Audit entries', ['#', 'At', 'Kind', 'Token', 'Repository', 'Detail'], rows, 'No entry matches.'),
    );
  };
  kind.addEventListener('change', draw);
  for (const input of [repo, token]) input.addEventListener('input', draw);

  button.addEventListener('click', async () => {
    button.disabled = true;
    progress.hidden = false;
    const started = performance.now();
    status.replaceChildren(verdict('wait', 'Verifying…', `0 of ${checkpoint.size} entries.`));
    try {
      entries = await verifyAll(checkpoint, async (done) => {
        progress.value = done;
        status.replaceChildren(verdict('wait', 'Verifying…', `${done} of ${checkpoint.size} entries.`));
        await new Promise((resolve) => setTimeout(resolve));
      });
      const seconds = ((performance.now() - started) / 1000).toFixed(1);
      status.replaceChildren(verdict('ok', 'Verified.', `All ${checkpoint.size} entries rebuild the tree of the checkpoint signed by pinned log key ${checkpoint.origin}, in order (${seconds} s).`));
      status.dataset.seconds = seconds;
      draw();
    } catch (err) {
      status.replaceChildren(verdict('bad', 'Not verified:', err.message));
    } finally {
      button.disabled = false;
    }
  });
  draw();
  main.append(
    h('h2', {}, 'Audit log'),
    status,
    h('div', { class: 'row' }, button, progress),
    h('div', { class: 'filters' }, h('div', { class: 'field' }, h('label', { for: 'audit-kind' }, 'Kind'), kind), h('div', { class: 'field' }, h('label', { for: 'audit-repo' }, 'Repository'), repo), h('div', { class: 'field' }, h('label', { for: 'audit-token' }, 'Token'), token)),
    holder,
  );
}
