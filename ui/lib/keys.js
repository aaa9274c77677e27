// The keys the console trusts: pinned in localStorage the first time the
// page meets this server (they are public, and survive sign-out), shown
// with their ids to compare with `amberd keys export`. A later change of the
// server's key set is shown as a warning and trusted only when the operator
// says so; until then only the pinned keys verify anything.
import { VerifyError, dsseKeyId, fromBase64, parseCosignerVkey, parseVkey } from './verify.js';

const PINNED = 'amber.pinned-keys';

function load() {
  try {
    return JSON.parse(localStorage.getItem(PINNED));
  } catch {
    return null;
  }
}

const same = (a, b) => a.public_key === b.public_key && (a.purpose ?? 'manifest') === (b.purpose ?? 'manifest');

/** The server's keys, checked (ids recomputed from the bytes). */
async function served() {
  const response = await fetch('/v1/keys', { credentials: 'omit', cache: 'no-store' });
  if (!response.ok) throw new VerifyError(`GET /v1/keys answered ${response.status}`);
  const { keys, witness_policy: witnessPolicy } = await response.json();
  for (const key of keys) {
    const bytes = fromBase64(key.public_key, `key ${key.keyid}`);
    if (bytes.length !== 32) throw new VerifyError(`key ${key.keyid} is not 32 bytes`);
    if ((key.purpose ?? 'manifest') === 'manifest' && dsseKeyId(bytes) !== key.keyid) {
      throw new VerifyError(`key ${key.keyid} does not have the id its bytes give`);
    }
    if (key.purpose === 'log') parseVkey(key.vkey);
  }
  witnessesOf(witnessPolicy ?? null);
  return { keys, witnessPolicy: witnessPolicy ?? null };
}

/** The witnesses a policy names (`witness LABEL VKEY [URL]` lines), parsed. */
function witnessesOf(policy) {
  if (!policy) return [];
  return policy
    .split('\n')
    .map((line) => line.split('#')[0].trim().split(/\s+/))
    .filter((words) => words[0] === 'witness' && words.length >= 3)
    .map((words) => ({ label: words[1], ...parseCosignerVkey(words[2]) }));
}

/**
 * Pins on first use; afterwards answers the pinned set and what the server
 * lists that is not pinned (`added`) or pinned but no longer listed (`gone`).
 */
export async function review() {
  const { keys, witnessPolicy } = await served();
  let pinned = load();
  let first = false;
  if (!pinned) {
    pinned = { pinned_at: new Date().toISOString(), keys, witness_policy: witnessPolicy };
    localStorage.setItem(PINNED, JSON.stringify(pinned));
    first = true;
  }
  const added = keys.filter((k) => !pinned.keys.some((p) => same(p, k)));
  const gone = pinned.keys.filter((p) => !keys.some((k) => same(p, k)));
  return { first, pinned, served: keys, added, gone };
}

/** Trust the server's current set (the operator compared it). */
export async function trustServed() {
  const { keys, witnessPolicy } = await served();
  localStorage.setItem(PINNED, JSON.stringify({ pinned_at: new Date().toISOString(), keys, witness_policy: witnessPolicy }));
}

/** The pinned keys in the form the verifiers take. */
export function trusted() {
  const stored = load();
  const pinned = stored?.keys ?? [];
  return {
    // The witnesses of the policy pinned with the keys (none without one).
    witnesses: witnessesOf(stored?.witness_policy ?? null),
    manifest: pinned
      .filter((k) => (k.purpose ?? 'manifest') === 'manifest')
      .map((k) => {
        const key = fromBase64(k.public_key, 'a pinned key');
        return { keyid: dsseKeyId(key), key };
      }),
    log: pinned.filter((k) => k.purpose === 'log').map((k) => parseVkey(k.vkey)),
  };
}
