// Storage (admin): what repositories hold, what waits for reclaim, the
// scrub's progress and the quarantined blobs.
import { get } from '../lib/api.js';
import { bytes, h, table, time } from '../lib/dom.js';
import { runsPanel } from '../lib/runs.js';

const card = (title, value, note) => h('div', { class: 'card' }, h('h3', {}, title), h('p', { class: 'figure' }, value), note ? h('p', { class: 'hint' }, note) : null);

export async function render(main) {
  const [storage, scrub] = await Promise.all([get('/v1/storage'), get('/v1/scrub')]);
  main.append(
    h('h2', {}, 'Storage'),
    h('div', { class: 'cards' },
      card('Linked in repositories', bytes(storage.linked_bytes), `${storage.links} links; a blob linked in two repositories counts twice.`),
      card('Waiting for reclaim', bytes(storage.pending_reclaim_bytes), `${storage.pending_reclaim} blobs no repository links, deleted once their grace passes.`),
      card('Quarantined', String(storage.quarantined), 'Blobs found corrupt or missing, never served.'),
      card('Scrub', scrub.rate ? `${bytes(scrub.rate)}/s` : 'off', `${scrub.verified_blobs} blobs (${bytes(scrub.verified_bytes)}) verified this pass; last full pass ${scrub.last_full_pass ?? 'not yet'}.`)),
    runsPanel(['reclaim', 'scrub', 'fsck']),
    h('h3', {}, 'Quarantined blobs'),
    table('Quarantined blobs', ['Digest', 'Reason', 'Found'], scrub.corrupt.map((c) => [h('code', {}, c.digest), c.reason, time(c.found_at)]), 'None: every blob the scrub read hashed to its digest.'),
    h('p', { class: 'hint' }, scrub.pass_started ? `The pass under way started `: 'No pass under way.', scrub.pass_started ? time(scrub.pass_started) : ''),
  );
}
