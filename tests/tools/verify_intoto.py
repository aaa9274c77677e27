"""Verifies Amber's attestations with tools nobody here wrote.

usage: verify_intoto.py ENVELOPES KEYS_JSON
  ENVELOPES: a JSON list of DSSE envelopes, or one per line (.intoto.jsonl)
  KEYS_JSON: what GET /v1/keys answers

For each envelope: securesystemslib verifies it (threshold 1) with an
SSlibKey built from the listed public key (its key id computed by
securesystemslib, not taken from Amber); Python `cryptography` checks the raw
Ed25519 signature over the DSSE PAE; in-toto-attestation's model parses and
validates the statement, and its SLSA models (VSA v1, provenance v1) parse
the predicate strictly (an unknown field fails). Prints one JSON line per
envelope: predicateType, subject, predicate. Exits 1 on the first failure.
"""
import base64
import copy
import json
import sys

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from google.protobuf import json_format
from in_toto_attestation.predicates.provenance.v1 import provenance_pb2
from in_toto_attestation.predicates.vsa.v1 import vsa_pb2
from in_toto_attestation.v1 import statement_pb2
from in_toto_attestation.v1.statement import Statement
from securesystemslib.dsse import Envelope
from securesystemslib.signer import SSlibKey

PREDICATES = {
    "https://slsa.dev/verification_summary/v1": vsa_pb2.VerificationSummary,
    "https://slsa.dev/provenance/v1": provenance_pb2.Provenance,
}


def fail(why):
    print(why, file=sys.stderr)
    sys.exit(1)


text = open(sys.argv[1]).read().strip()
envelopes = json.loads(text) if text.startswith("[") else [json.loads(line) for line in text.splitlines()]
keys = json.load(open(sys.argv[2]))["keys"]
sslib_keys = []
for key in keys:
    if key.get("purpose", "manifest") != "manifest":
        continue
    public = Ed25519PublicKey.from_public_bytes(base64.b64decode(key["public_key"]))
    sslib_keys.append((SSlibKey.from_crypto(public), public))

if not envelopes:
    fail("no envelopes")
for raw in envelopes:
    envelope = Envelope.from_dict(copy.deepcopy(raw))
    try:
        envelope.verify([k for k, _ in sslib_keys], 1)
    except Exception as e:  # securesystemslib raises VerificationError
        fail(f"securesystemslib: {e}")
    pae = envelope.pae()
    checked = False
    for sig in raw["signatures"]:
        for key, public in sslib_keys:
            if key.keyid == sig["keyid"]:
                try:
                    public.verify(base64.b64decode(sig["sig"]), pae)
                except Exception:
                    fail("cryptography: bad signature over the PAE")
                checked = True
    if not checked:
        fail("cryptography: no signature by a listed key")
    if envelope.payload_type != "application/vnd.in-toto+json":
        fail(f"payload type {envelope.payload_type}")
    payload = json.loads(envelope.payload)
    pb = json_format.Parse(json.dumps(payload), statement_pb2.Statement())
    try:
        Statement.copy_from_pb(pb).validate()
    except ValueError as e:
        fail(f"in-toto statement: {e}")
    model = PREDICATES.get(payload["predicateType"])
    if model is None:
        fail(f"unknown predicate type {payload['predicateType']}")
    try:
        json_format.Parse(json.dumps(payload["predicate"]), model())
    except json_format.ParseError as e:
        fail(f"{payload['predicateType']}: {e}")
    print(json.dumps({k: payload[k] for k in ("predicateType", "subject", "predicate")}))
