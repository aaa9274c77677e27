// What the console checks in the browser, trusting only the pinned keys:
// DSSE envelopes (Ed25519 by WebCrypto), C2SP signed notes and checkpoints,
// RFC 6962 inclusion proofs and whole-tree rebuilds (SHA-256), and BLAKE3
// digests. BLAKE3 and the many small SHA-256 hashes of a tree come from
// @noble/hashes, vendored unchanged under vendor/ (see ui/README.md).
import { blake3 } from '../vendor/noble-hashes/blake3.js';
import { sha256 } from '../vendor/noble-hashes/sha2.js';

const utf8 = new TextEncoder();

/** A check that failed, with the reason the page shows. */
export class VerifyError extends Error {}

export const hex = (bytes) => Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');

export function fromBase64(text, what) {
  try {
    return Uint8Array.from(atob(text), (c) => c.charCodeAt(0));
  } catch {
    throw new VerifyError(`${what} is not base64`);
  }
}

function concat(...parts) {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

const equal = (a, b) => a.length === b.length && a.every((x, i) => x === b[i]);

/** `blake3:<hex>` of bytes. */
export const blake3Digest = (bytes) => `blake3:${hex(blake3(bytes))}`;

/** A manifest key's id, from its bytes (never taken from the server). */
export const dsseKeyId = (publicKey) => hex(blake3(publicKey)).slice(0, 32);

/**
 * The same key's id as securesystemslib computes it (the sha256 of its
 * canonical JSON): the `keyid` of attestations' signatures.
 */
export const sslibKeyId = (publicKey) =>
  hex(sha256(utf8.encode(`{"keytype":"ed25519","keyval":{"public":"${hex(publicKey)}"},"scheme":"ed25519"}`)));

async function ed25519Verify(publicKey, signature, message) {
  const key = await crypto.subtle.importKey('raw', publicKey, { name: 'Ed25519' }, false, ['verify']);
  return crypto.subtle.verify({ name: 'Ed25519' }, key, signature, message);
}

/** DSSE's pre-authentication encoding. */
export function pae(type, payload) {
  const t = utf8.encode(type);
  return concat(utf8.encode(`DSSEv1 ${t.length} `), t, utf8.encode(` ${payload.length} `), payload);
}

/**
 * Checks a DSSE envelope against pinned manifest keys (`[{keyid, key}]`);
 * answers its payload bytes and the key that signed it.
 */
export async function openEnvelope(envelope, payloadType, keys) {
  if (!envelope || typeof envelope.payload !== 'string' || !Array.isArray(envelope.signatures)) {
    throw new VerifyError('the answer is not a DSSE envelope');
  }
  if (envelope.payloadType !== payloadType) {
    throw new VerifyError(`payload type is ${JSON.stringify(envelope.payloadType)}, not ${payloadType}`);
  }
  const payload = fromBase64(envelope.payload, 'the payload');
  const message = pae(payloadType, payload);
  const unknown = [];
  for (const signature of envelope.signatures) {
    const key = keys.find((k) => k.keyid === signature.keyid || sslibKeyId(k.key) === signature.keyid);
    if (!key) {
      unknown.push(signature.keyid);
      continue;
    }
    const bytes = fromBase64(signature.sig ?? '', 'the signature');
    if (bytes.length === 64 && (await ed25519Verify(key.key, bytes, message))) return { payload, keyid: key.keyid };
    throw new VerifyError(`the signature by key ${signature.keyid} does not verify: the envelope was altered`);
  }
  throw new VerifyError(
    unknown.length ? `signed only by keys that are not pinned (${unknown.join(', ')})` : 'the envelope has no signature',
  );
}

/** Checks a manifest envelope: pinned signature, repository, tag, digest. */
export async function checkManifest(envelope, keys, { repository, tag, digest }) {
  const { payload, keyid } = await openEnvelope(envelope, 'application/vnd.amber.manifest.v1+json', keys);
  let manifest;
  try {
    manifest = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(payload));
  } catch {
    throw new VerifyError('the signed payload is not JSON');
  }
  if (manifest.schema !== 'amber.manifest.v1') throw new VerifyError(`schema is ${JSON.stringify(manifest.schema)}`);
  if (manifest.repository !== repository) {
    throw new VerifyError(`signed for repository ${manifest.repository}, not ${repository}`);
  }
  if (tag !== undefined && manifest.tag !== tag) throw new VerifyError(`signed for tag ${manifest.tag}, not ${tag}`);
  const actual = blake3Digest(payload);
  if (digest !== undefined && actual !== digest) throw new VerifyError(`the payload's digest is ${actual}, not ${digest}`);
  return { manifest, keyid, digest: actual };
}

/**
 * Checks an attestation: an in-toto Statement v1 signed by a pinned
 * manifest key, whose last subject is the binding `repository:tag` at the
 * manifest `digest` (BLAKE3). Answers the statement.
 */
export async function checkAttestation(envelope, keys, { repository, tag, digest }) {
  const { payload, keyid } = await openEnvelope(envelope, 'application/vnd.in-toto+json', keys);
  let statement;
  try {
    statement = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(payload));
  } catch {
    throw new VerifyError('the signed statement is not JSON');
  }
  if (statement._type !== 'https://in-toto.io/Statement/v1') throw new VerifyError(`_type is ${JSON.stringify(statement._type)}`);
  const last = Array.isArray(statement.subject) ? statement.subject[statement.subject.length - 1] : undefined;
  if (!last || last.name !== `${repository}:${tag}` || `blake3:${last.digest?.blake3}` !== digest) {
    throw new VerifyError(`it is not about ${repository}:${tag} at ${digest}`);
  }
  return { statement, keyid };
}

// C2SP signed notes and checkpoints.

/** A log key from its vkey `<name>+<hex id>+<base64(0x01 || key)>`. */
export function parseVkey(vkey) {
  // The name holds no `+`; the base64 key may.
  const match = /^([^+]+)\+([0-9a-f]{8})\+(.+)$/.exec(String(vkey));
  if (!match) throw new VerifyError(`not a vkey: ${vkey}`);
  const parts = match.slice(1);
  const encoded = fromBase64(parts[2], 'the vkey');
  if (encoded.length !== 33 || encoded[0] !== 1) throw new VerifyError(`not an Ed25519 vkey: ${vkey}`);
  const id = sha256(concat(utf8.encode(`${parts[0]}\n`), encoded)).slice(0, 4);
  if (hex(id) !== parts[1]) throw new VerifyError(`the vkey's id does not match its key: ${vkey}`);
  return { name: parts[0], id, key: encoded.slice(1) };
}

/** A witness's cosigner key from its vkey `<name>+<hex id>+<base64(0x04 || key)>`. */
export function parseCosignerVkey(vkey) {
  const match = /^([^+]+)\+([0-9a-f]{8})\+(.+)$/.exec(String(vkey));
  if (!match) throw new VerifyError(`not a vkey: ${vkey}`);
  const [name, id, encoded] = match.slice(1);
  const bytes = fromBase64(encoded, 'the witness vkey');
  if (bytes.length !== 33 || bytes[0] !== 4) throw new VerifyError(`not an Ed25519 cosigner vkey: ${vkey}`);
  const hash = sha256(concat(utf8.encode(`${name}\n`), bytes)).slice(0, 4);
  if (hex(hash) !== id) throw new VerifyError(`the vkey's id does not match its key: ${vkey}`);
  return { name, id: hash, key: bytes.slice(1) };
}

/**
 * The witnesses' cosignatures (C2SP tlog-cosignature/v1) on a checkpoint
 * note: for each of `witnesses`, the time of its valid cosignature, or null.
 */
export async function checkCosignatures(note, witnesses) {
  const split = note.lastIndexOf('\n\n');
  if (split < 0) throw new VerifyError('the checkpoint is not a signed note');
  const body = note.slice(0, split + 1);
  const lines = note.slice(split + 2).split('\n').filter((l) => l);
  const found = [];
  for (const w of witnesses) {
    let time = null;
    for (const line of lines) {
      const match = /^\u2014 (\S+) (\S+)$/.exec(line);
      if (!match || match[1] !== w.name) continue;
      const blob = fromBase64(match[2], 'a cosignature');
      if (blob.length !== 76 || !equal(blob.slice(0, 4), w.id)) continue;
      const seconds = new DataView(blob.buffer, blob.byteOffset + 4, 8).getBigUint64(0);
      const message = concat(utf8.encode(`cosignature/v1\ntime ${seconds}\n`), utf8.encode(body));
      if (await ed25519Verify(w.key, blob.slice(12), message)) time = new Date(Number(seconds) * 1000);
    }
    found.push({ label: w.label, name: w.name, time });
  }
  return found;
}

/** The text of a note signed by one of `logKeys` (parsed vkeys). */
export async function openNote(note, logKeys) {
  const split = note.lastIndexOf('\n\n');
  if (split < 0 || !note.endsWith('\n')) throw new VerifyError('the checkpoint is not a signed note');
  const text = note.slice(0, split + 1);
  for (const line of note.slice(split + 2, -1).split('\n')) {
    const match = /^\u2014 (\S+) (\S+)$/.exec(line);
    if (!match) throw new VerifyError('the checkpoint has a malformed signature line');
    const blob = fromBase64(match[2], 'a note signature');
    const key = logKeys.find((k) => k.name === match[1] && equal(k.id, blob.slice(0, 4)));
    if (!key || blob.length !== 68) continue;
    if (await ed25519Verify(key.key, blob.slice(4), utf8.encode(text))) return { text, key };
    throw new VerifyError(`the checkpoint's signature by ${key.name} does not verify`);
  }
  throw new VerifyError('the checkpoint is not signed by a pinned log key');
}

/** A checkpoint note opened with the pinned log keys: origin, size, root. */
export async function openCheckpoint(note, logKeys) {
  const { text, key } = await openNote(note, logKeys);
  const [origin, size, root] = text.split('\n');
  if (origin !== key.name) throw new VerifyError(`the checkpoint's origin ${origin} is not its key's name`);
  if (!/^(0|[1-9][0-9]*)$/.test(size ?? '')) throw new VerifyError('the checkpoint size is malformed');
  const hash = fromBase64(root ?? '', 'the checkpoint root');
  if (hash.length !== 32) throw new VerifyError('the checkpoint root is not 32 bytes');
  return { origin, size: Number(size), root: hash };
}

// RFC 6962 / RFC 9162 Merkle trees.

export const leafHash = (entry) => sha256(concat(Uint8Array.of(0), entry));
const nodeHash = (left, right) => sha256(concat(Uint8Array.of(1), left, right));

/** A tree built leaf by leaf, keeping only its frontier. */
export class Tree {
  constructor() {
    this.stack = [];
    this.size = 0;
  }

  push(leaf) {
    let hash = leaf;
    for (let n = this.size; n % 2 === 1; n = Math.floor(n / 2)) hash = nodeHash(this.stack.pop(), hash);
    this.stack.push(hash);
    this.size += 1;
  }

  root() {
    if (this.size === 0) return sha256(new Uint8Array(0));
    let root = this.stack[this.stack.length - 1];
    for (let i = this.stack.length - 2; i >= 0; i -= 1) root = nodeHash(this.stack[i], root);
    return root;
  }
}

/** RFC 9162 2.1.3.2: does `proof` lead leaf `index` to the checkpoint's root? */
export function checkInclusion(checkpoint, index, leaf, proof) {
  if (!(index < checkpoint.size)) throw new VerifyError(`entry ${index} is past the checkpoint (${checkpoint.size})`);
  let fn = index;
  let sn = checkpoint.size - 1;
  let r = leaf;
  for (const p of proof) {
    if (sn === 0) throw new VerifyError('the inclusion proof is too long');
    if (fn % 2 === 1 || fn === sn) {
      r = nodeHash(p, r);
      while (fn % 2 === 0 && fn !== 0) {
        fn = Math.floor(fn / 2);
        sn = Math.floor(sn / 2);
      }
    } else {
      r = nodeHash(r, p);
    }
    fn = Math.floor(fn / 2);
    sn = Math.floor(sn / 2);
  }
  if (sn !== 0 || !equal(r, checkpoint.root)) throw new VerifyError('the inclusion proof does not lead to the signed root');
}

/**
 * Checks a `c2sp.org/tlog-proof@v1` receipt: its checkpoint signed by a
 * pinned log key, its entry in that tree, and the entry the `tag_bound` of
 * exactly this repository, tag and manifest digest.
 */
export async function checkReceipt(text, logKeys, { repository, tag, digest }) {
  const lines = text.split('\n');
  if (lines[0] !== 'c2sp.org/tlog-proof@v1') throw new VerifyError('the receipt is not a tlog-proof');
  const extra = /^extra (\S*)$/.exec(lines[1] ?? '');
  const index = /^index (0|[1-9][0-9]*)$/.exec(lines[2] ?? '');
  if (!extra || !index) throw new VerifyError('the receipt is malformed');
  const proof = [];
  let at = 3;
  for (; at < lines.length && lines[at] !== ''; at += 1) {
    const hash = fromBase64(lines[at], 'a proof hash');
    if (hash.length !== 32) throw new VerifyError('a proof hash is not 32 bytes');
    proof.push(hash);
  }
  const checkpoint = await openCheckpoint(lines.slice(at + 1).join('\n'), logKeys);
  const entry = fromBase64(extra[1], 'the receipt entry');
  checkInclusion(checkpoint, Number(index[1]), leafHash(entry), proof);
  let body;
  try {
    body = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(entry));
  } catch {
    throw new VerifyError('the receipt entry is not JSON');
  }
  const event = body.event ?? {};
  if (event.kind !== 'tag_bound' || event.repository !== repository || event.tag !== tag || event.digest !== digest) {
    throw new VerifyError(
      `the logged entry is ${event.kind} of ${event.repository}:${event.tag} → ${event.digest}, not this tag's binding`,
    );
  }
  return { index: Number(index[1]), checkpoint, entry: body };
}

/** A tile index in tlog-tiles form: `x001/x234/067`. */
export function tileIndex(n) {
  const groups = [];
  let rest = n;
  do {
    groups.unshift(String(rest % 1000).padStart(3, '0'));
    rest = Math.floor(rest / 1000);
  } while (rest > 0);
  return groups.map((g, i) => (i < groups.length - 1 ? `x${g}` : g)).join('/');
}
