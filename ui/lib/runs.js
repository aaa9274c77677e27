// Runs (admin): retention, reclaim, scrub passes and fsck, started here and
// followed while they go (`GET /v1/runs`, every 2 s while one runs and the
// panel is on screen). A second start while one of its kind goes is refused
// by the server, which names the run under way.
import { api, get } from './api.js';
import { error, h, table, time } from './dom.js';

const LABEL = { retention: 'Run retention now', reclaim: 'Run reclaim now', scrub: 'Run a scrub pass now', fsck: 'Check the store (fsck)' };
const POLL_MS = 2000;

function progressOf(run) {
  const p = run.progress;
  const of = p.planned === null || p.planned === undefined ? '' : ` of ${p.planned}`;
  const text = `${p.done}${of} ${p.unit}, ${p.rate}/s, ${Math.round(p.elapsed_seconds)} s`;
  const bar = run.state === 'running'
    ? h('progress', { max: p.planned || 1, ...(p.planned ? { value: p.done } : {}), 'aria-label': `${run.kind} progress` })
    : null;
  return h('span', {}, bar, ' ', text);
}

function outcome(run) {
  if (run.state === 'failed') return h('span', { class: 'error' }, run.error ?? 'failed');
  if (run.state !== 'done') return 'running';
  const r = run.report ?? {};
  switch (run.kind) {
    case 'retention': return `expired ${r.expire?.length ?? 0} tag(s), unlinked ${r.unlink?.length ?? 0} blob(s)`;
    case 'reclaim': return `deleted ${r.deleted} blob(s); ${r.pending} wait for the grace`;
    case 'scrub': return `verified ${r.verified_blobs} blob(s), quarantined ${r.quarantined}`;
    case 'fsck': return r.faults?.length ? h('span', { class: 'error' }, `${r.faults.length} fault(s): ${r.faults.join('; ')}`) : `no fault in ${r.linked} linked blob(s)`;
    default: return 'done';
  }
}

/** A panel of the runs of `kinds`, with a start button for each. */
export function runsPanel(kinds) {
  const body = h('div', { class: 'runs' });
  const problem = h('div', {});
  const panel = h('section', { 'aria-label': 'Runs' }, h('h3', {}, 'Runs'), problem, h('p', {}, ...kinds.map((kind) => {
    const button = h('button', { type: 'button', 'data-run': kind }, LABEL[kind]);
    button.addEventListener('click', async () => {
      problem.replaceChildren();
      try {
        await api('POST', `/v1/${kind}/run`);
      } catch (err) {
        problem.replaceChildren(error(err));
      }
      refresh();
    });
    return button;
  })), body);
  let timer = null;
  async function refresh() {
    clearTimeout(timer);
    if (!panel.isConnected && timer !== null) return;
    let runs = [];
    try {
      const lists = await Promise.all(kinds.map((kind) => get(`/v1/runs?kind=${kind}&limit=5`)));
      runs = lists.flatMap((l) => l.runs).sort((a, b) => (a.id < b.id ? 1 : -1));
    } catch (err) {
      body.replaceChildren(error(err));
      return;
    }
    body.replaceChildren(table('Recent runs', ['Kind', 'State', 'Started', 'By', 'Progress', 'Outcome'],
      runs.map((r) => [r.kind, r.state, time(r.started_at), r.started_by, progressOf(r), outcome(r)]),
      'No run yet.'));
    if (runs.some((r) => r.state === 'running')) timer = setTimeout(refresh, POLL_MS);
    else timer = 0;
  }
  refresh();
  return panel;
}
