// Verifies a Sigstore bundle v0.3 (a DSSE envelope with a public-key hint)
// with sigstore-js (@sigstore/verify), offline: the key comes from a key
// selector built from GET /v1/keys, with no Sigstore log, CT log or
// timestamp authority (the store's own transparency log proves history).
//
// usage: node sigstore_verify.mjs BUNDLE_JSON KEYS_JSON
// Prints the statement's predicateType; exits 1 if it does not verify.
import { readFileSync } from 'node:fs';
import { createPublicKey } from 'node:crypto';
import { bundleFromJSON } from '@sigstore/bundle';
import { Verifier, toSignedEntity, toTrustMaterial } from '@sigstore/verify';

const [bundlePath, keysPath] = process.argv.slice(2);
try {
  const bundle = bundleFromJSON(JSON.parse(readFileSync(bundlePath, 'utf8')));
  const keys = JSON.parse(readFileSync(keysPath, 'utf8')).keys.filter((k) => (k.purpose ?? 'manifest') === 'manifest');
  // The key selector: the hint names a listed key by its securesystemslib id.
  const selector = (hint) => {
    const key = keys.find((k) => k.sslib_keyid === hint);
    if (!key) throw new Error(`no listed key has the hint ${hint}`);
    return { publicKey: createPublicKey(key.public_key_pem), validFor: () => true };
  };
  const root = { certificateAuthorities: [], timestampAuthorities: [], tlogs: [], ctlogs: [] };
  const verifier = new Verifier(toTrustMaterial(root, selector), {
    tlogThreshold: 0,
    ctlogThreshold: 0,
    timestampThreshold: 0,
  });
  verifier.verify(toSignedEntity(bundle));
  const statement = JSON.parse(Buffer.from(bundle.content.dsseEnvelope.payload).toString('utf8'));
  console.log(statement.predicateType);
} catch (e) {
  console.error(`sigstore-js: ${e.message ?? e}`);
  process.exit(1);
}
