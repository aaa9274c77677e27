"""Verifies an Amber DSSE envelope with Python's `cryptography` (Ed25519) and
prints the BLAKE3 of the payload: independent of Amber's own code.

usage: verify_dsse.py ENVELOPE_JSON KEYS_JSON  (KEYS_JSON as GET /v1/keys answers)
Exits 1 if no signature verifies with a listed key."""
import base64
import json
import sys

import blake3
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

envelope = json.load(open(sys.argv[1]))
keys = json.load(open(sys.argv[2]))["keys"]
payload = base64.b64decode(envelope["payload"])
ptype = envelope["payloadType"].encode()
pae = b"DSSEv1 %d %s %d %s" % (len(ptype), ptype, len(payload), payload)
verified = False
for sig in envelope["signatures"]:
    for key in keys:
        if key["keyid"] != sig["keyid"]:
            continue
        public = Ed25519PublicKey.from_public_bytes(base64.b64decode(key["public_key"]))
        try:
            public.verify(base64.b64decode(sig["sig"]), pae)
            verified = True
        except InvalidSignature:
            print("bad signature by", sig["keyid"], file=sys.stderr)
            sys.exit(1)
if not verified:
    print("no signature by a listed key", file=sys.stderr)
    sys.exit(1)
print(blake3.blake3(payload).hexdigest())
