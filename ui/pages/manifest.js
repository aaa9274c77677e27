// One manifest, by tag or by digest, verified here: the DSSE signature
// against the pinned manifest keys, the repository, tag and digest it names,
// and (by tag) the log receipt against a checkpoint signed by a pinned log
// key. The page shows details only from the verified payload; a failure is
// shown with its reason, and what the server sent is marked unverified.
import { ApiError, enc, repoPath, request } from '../lib/api.js';
import { bytes, copyable, copyButton, h, table, time, verdict } from '../lib/dom.js';
import { trusted } from '../lib/keys.js';
import { VerifyError, checkAttestation, checkCosignatures, checkManifest, checkReceipt, fromBase64, openEnvelope } from '../lib/verify.js';
import { pusher } from './tags.js';

const reason = (err) => (err instanceof VerifyError || err instanceof ApiError ? err.message : `could not check: ${err.message}`);

function details(manifest, digest, repo, tag) {
  const by = manifest.pushed_by ?? {};
  const ci = by.ci
    ? table('CI run', ['Claim', 'Value'], Object.entries(by.ci).map(([k, v]) => [k, String(v)]))
    : null;
  const reference = tag ? `${repo}:${tag}` : `${repo}@${digest}`;
  return [
    h('h3', {}, 'Pull'),
    copyable(`amber pull ${reference} -o out --key amber-keys.json`, 'Copy command'),
    copyable(digest, 'Copy digest'),
    h('h3', {}, 'Pushed'),
    h('dl', {}, h('dt', {}, 'When'), h('dd', {}, time(manifest.created_at)), h('dt', {}, 'By'), h('dd', {}, pusher(by)), h('dt', {}, 'Token id'), h('dd', {}, h('code', {}, by.token_id ?? ''))),
    ci,
    h('h3', {}, `Files (${manifest.files.length})`),
    table('Files', ['Path', 'Size', 'Digest'], manifest.files.map((f) => [f.path, bytes(f.size), h('span', { class: 'digest' }, h('code', {}, f.digest), copyButton(f.digest, 'Copy digest'))])),
    h('h3', {}, 'Annotations'),
    table('Annotations', ['Key', 'Value'], Object.entries(manifest.annotations ?? {}).map(([k, v]) => [k, v]), 'No annotations.'),
  ];
}

const PROVENANCE = 'https://slsa.dev/provenance/v1';
const VSA = 'https://slsa.dev/verification_summary/v1';

/** The binding's attestations, each verified here: who built it, what the server checked. */
async function provenance(path, keys, binding) {
  const section = h('section', { 'aria-label': 'Provenance' }, h('h3', {}, 'Provenance'));
  try {
    const envelopes = await (await request('GET', `${path}/attestations`)).json();
    const statements = [];
    for (const envelope of envelopes) statements.push((await checkAttestation(envelope, keys, binding)).statement);
    const built = statements.find((s) => s.predicateType === PROVENANCE);
    const summary = statements.find((s) => s.predicateType === VSA);
    if (built) {
      const d = built.predicate.buildDefinition ?? {};
      const run = built.predicate.runDetails ?? {};
      const source = (d.resolvedDependencies ?? [])[0] ?? {};
      section.append(
        verdict('ok', 'SLSA provenance verified.', 'Made by the store from the CI system\'s verified ID token, signed with a pinned key.'),
        table('Build', ['Field', 'Value'], [
          ['Builder', run.builder?.id ?? ''],
          ['Build type', d.buildType ?? ''],
          ['Source', source.uri ?? ''],
          ['Commit', source.digest?.gitCommit ?? ''],
          ['Run', run.metadata?.invocationId ?? ''],
          ...Object.entries(d.externalParameters ?? {}).map(([k, v]) => [`Parameter ${k}`, typeof v === 'string' ? v : JSON.stringify(v)]),
        ]),
      );
    } else {
      section.append(h('p', {}, 'No SLSA provenance: pushed with a stored token, not through trusted publishing.'));
    }
    if (summary) {
      const p = summary.predicate;
      section.append(
        table('Verification summary', ['Field', 'Value'], [
          ['Result', p.verificationResult ?? ''],
          ['Verifier', p.verifier?.id ?? ''],
          ['Verified', p.timeVerified ?? ''],
          ['Policy', p.policy?.uri ?? ''],
          ['Resource', p.resourceUri ?? ''],
        ]),
      );
    }
  } catch (err) {
    section.append(verdict('bad', 'Attestations not verified:', reason(err)));
  }
  return section;
}

async function expired(main, body, keys) {
  try {
    const { payload, keyid } = await openEnvelope(body.tombstone, 'application/vnd.amber.tombstone.v1+json', keys.manifest);
    const tombstone = JSON.parse(new TextDecoder().decode(payload));
    main.append(
      verdict('expired', 'Expired.', `The tag's availability ended; the signed tombstone (key ${keyid}) says why.`),
      table('Tombstone', ['Field', 'Value'], Object.entries(tombstone).map(([k, v]) => [k, typeof v === 'string' ? v : JSON.stringify(v)])),
    );
  } catch (err) {
    main.append(verdict('bad', 'Not verified:', `the tag is reported expired, but its tombstone ${reason(err)}`));
  }
}

export async function render(main, { params }) {
  const [owner, name, kind, ref] = params;
  const repo = `${owner}/${name}`;
  const tag = kind === 'tags' ? ref : undefined;
  main.append(
    h('nav', { 'aria-label': 'Breadcrumb', class: 'crumbs' }, h('a', { href: '#/repos' }, 'Repositories'), ' / ', h('a', { href: `#/repos/${repo}` }, repo), ' / ', tag ?? ref),
    h('h2', {}, tag ? `${repo}:${tag}` : `${repo}@${ref}`),
  );
  const keys = trusted();
  const path = `/v1/repos/${repoPath(repo)}/${kind}/${enc(ref)}`;
  let response;
  try {
    response = await request('GET', path);
  } catch (err) {
    if (err instanceof ApiError && err.code === 'tag_expired' && err.body?.tombstone) return expired(main, err.body, keys);
    throw err;
  }
  const claimed = response.headers.get('Amber-Manifest-Digest');
  const envelope = await response.json();
  let verified;
  try {
    verified = await checkManifest(envelope, keys.manifest, { repository: repo, tag, digest: tag ? claimed ?? undefined : ref });
    main.append(verdict('ok', 'Verified.', `Signed by pinned key ${verified.keyid}; names ${tag ? `${repo}:${tag}` : repo}; digest ${verified.digest}.`));
  } catch (err) {
    main.append(verdict('bad', 'Not verified:', reason(err)));
  }
  if (tag && verified) {
    const receipt = h('div', {}, verdict('wait', 'Checking the log receipt…'));
    main.append(receipt);
    try {
      const text = await (await request('GET', `${path}/receipt`, { accept: 'text/plain' })).text();
      const proof = await checkReceipt(text, keys.log, { repository: repo, tag, digest: verified.digest });
      receipt.replaceChildren(verdict('ok', 'In the log.', `Entry ${proof.index} of the checkpoint of ${proof.checkpoint.size} entries signed by pinned log key ${proof.checkpoint.origin}.`));
      if (keys.witnesses.length) {
        // The receipt's checkpoint is what follows its first blank line.
        const note = text.slice(text.indexOf('\n\n') + 2);
        const cosigned = await checkCosignatures(note, keys.witnesses);
        receipt.append(
          h('h3', {}, 'Witnesses'),
          table('Witness cosignatures', ['Witness', 'Cosignature'], cosigned.map((c) => [
            `${c.label} (${c.name})`,
            c.time ? `cosigned ${c.time.toISOString()}` : 'no valid cosignature',
          ])),
        );
      }
    } catch (err) {
      receipt.replaceChildren(verdict('bad', 'Log receipt not verified:', reason(err)));
    }
  }
  if (verified) {
    main.append(...details(verified.manifest, verified.digest, repo, tag).filter(Boolean));
    if (tag) main.append(await provenance(path, keys.manifest, { repository: repo, tag, digest: verified.digest }));
  } else {
    let raw = '';
    try {
      raw = new TextDecoder().decode(fromBase64(envelope.payload, 'payload'));
    } catch {
      raw = JSON.stringify(envelope);
    }
    main.append(h('h3', {}, 'What the server sent (unverified)'), h('pre', { class: 'unverified' }, raw));
  }
}
