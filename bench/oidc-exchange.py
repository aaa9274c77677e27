#!/usr/bin/env python3
"""oidc-exchange.py - what trusted publishing costs.

1. Exchanges: a fake OpenID issuer on 127.0.0.1 (an RSA-2048 key made with
   Python's `cryptography`, discovery and JWKS served by http.server; the
   ID tokens are assembled and signed here, by nothing Amber wrote), a
   fresh amberd (embedded backends) trusting it, one publisher; after a
   warm-up, COUNT exchanges of distinct ID tokens at CONCURRENCY, driven
   by `amber bench exchange` (a Rust client). Prints exchanges/s, p50 and
   p99, amberd's CPU per exchange and peak RSS; then the same for valid ID
   tokens no publisher trusts (`refused`: every check, nothing written).
2. The cost to a 4 KiB push: `amber bench small` (concurrency 16) with an
   operator-made token (A) and with a minted one (B), in ABBA order on the
   same server; prints each round and the median push p99 ratio B/A.

usage: bench/oidc-exchange.py --bin target/release [--count 4000] [--concurrency 8] [--rounds 4]
"""
import argparse
import base64
import http.client
import http.server
import json
import os
import shutil
import statistics
import subprocess
import tempfile
import threading
import time

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from local import free_port, wait_for


def b64(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class Issuer:
    def __init__(self):
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        numbers = self.key.public_key().public_numbers()
        as_bytes = lambda n: n.to_bytes((n.bit_length() + 7) // 8, "big")
        jwks = {"keys": [{"kty": "RSA", "kid": "bench-1", "use": "sig", "alg": "RS256",
                          "n": b64(as_bytes(numbers.n)), "e": b64(as_bytes(numbers.e))}]}
        documents = {
            "/.well-known/openid-configuration": {"issuer": self.url, "jwks_uri": f"{self.url}/.well-known/jwks"},
            "/.well-known/jwks": jwks,
        }

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                body = json.dumps(documents.get(self.path, {})).encode()
                self.send_response(200 if self.path in documents else 404)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.serial = 0

    def id_token(self, repository_id="1"):
        self.serial += 1
        now = int(time.time())
        claims = {"iss": self.url, "aud": "amber", "iat": now, "nbf": now, "exp": now + 600,
                  "jti": f"bench-{self.serial}-{os.urandom(4).hex()}",
                  "repository": "bench/blobs", "repository_id": repository_id, "repository_owner_id": "2",
                  "workflow_ref": "bench/blobs/.github/workflows/bench.yml@refs/heads/main",
                  "ref": "refs/heads/main", "sha": "f" * 40, "event_name": "push", "run_id": str(self.serial),
                  "run_attempt": "1"}
        message = b64(json.dumps({"alg": "RS256", "typ": "JWT", "kid": "bench-1"}).encode()) + "." + \
            b64(json.dumps(claims).encode())
        signature = self.key.sign(message.encode(), padding.PKCS1v15(), hashes.SHA256())
        return message + "." + b64(signature)


def exchange(conn, id_token):
    conn.request("POST", "/v1/oidc/token", json.dumps({"id_token": id_token}), {"Content-Type": "application/json"})
    response = conn.getresponse()
    body = response.read()
    assert response.status == 201, (response.status, body)
    return json.loads(body)


def exchanges(amber, env, pid, tokens, concurrency, refused=False):
    """`amber bench exchange` (a Rust client, so the client is not what is measured)."""
    with tempfile.NamedTemporaryFile("w", suffix=".jwt") as f:
        f.write("\n".join(tokens))
        f.flush()
        args = [amber, "bench", "exchange", "--id-tokens", f.name, "--concurrency", str(concurrency),
                "--server-pid", str(pid), "--json"] + (["--refused"] if refused else [])
        out = subprocess.run(args, env=env, check=True, capture_output=True, text=True).stdout
    phase = json.loads(out.splitlines()[0])
    assert phase["errors"] == 0, phase
    return phase


def peak_rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0


def push_p99(amber, env, token, count):
    out = subprocess.run([amber, "bench", "small", "--count", str(count), "--concurrency", "16", "--json"],
                         env=dict(env, AMBER_TOKEN=token), check=True, capture_output=True, text=True).stdout
    phases = [json.loads(line) for line in out.splitlines() if line.strip()]
    return next(p for p in phases if p["phase"] == "push")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--count", type=int, default=4000)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--push-count", type=int, default=10000)
    ap.add_argument("--meta", help="metadata URL (postgres://...); default the embedded sled store")
    args = ap.parse_args()
    issuer = Issuer()
    data_dir = tempfile.mkdtemp(prefix="amber-oidc-bench-")
    amberd, amber = os.path.join(args.bin, "amberd"), os.path.join(args.bin, "amber")
    config = os.path.join(data_dir, "amber.toml")
    with open(config, "w") as f:
        f.write(f'[[oidc.issuers]]\nname = "bench"\nurl = "{issuer.url}"\nkind = "github"\nallow_insecure_http = true\n')
    server = None
    try:
        admin = subprocess.run([amberd, "token", "create", "--admin", "--name", "b", "--data-dir", data_dir]
                               + (["--meta", args.meta] if args.meta else []),
                               check=True, capture_output=True, text=True).stdout.strip()
        port = free_port()
        log = open(os.path.join(data_dir, "log"), "w")
        server = subprocess.Popen([amberd, "--listen", f"127.0.0.1:{port}", "--data-dir", data_dir,
                                   "--config", config, "--scrub-rate", "0"] + (["--meta", args.meta] if args.meta else []),
                                  stdout=log, stderr=log)
        wait_for(port)
        env = dict(os.environ, AMBER_URL=f"http://127.0.0.1:{port}", AMBER_TOKEN=admin)
        publisher = {"name": "bench", "issuer": "bench",
                     "github": {"repository": "bench/blobs", "repository_id": "1", "repository_owner_id": "2",
                                "workflow": "bench.yml"},
                     "grants": [{"repos": "bench/*", "actions": ["push", "pull"]}], "token_lifetime": 3600}
        conn = http.client.HTTPConnection("127.0.0.1", port)
        conn.request("POST", "/v1/publishers", json.dumps(publisher), {"Authorization": f"Bearer {admin}"})
        r = conn.getresponse()
        assert r.status == 201, r.read()
        r.read()

        exchanges(amber, env, server.pid, [issuer.id_token() for _ in range(200)], args.concurrency)
        for kind in ("exchange", "refused"):
            tokens = [issuer.id_token("1" if kind == "exchange" else "999") for _ in range(args.count)]
            phase = exchanges(amber, env, server.pid, tokens, args.concurrency, refused=kind == "refused")
            # "refused": the same checks with nothing to write (no publisher trusts these).
            print(json.dumps({"phase": kind, "count": phase["ops"], "concurrency": args.concurrency,
                              "per_s": round(phase["ops_per_s"]), "p50_ms": round(phase["p50_ms"], 2),
                              "p99_ms": round(phase["p99_ms"], 2),
                              "server_cpu_us": round(phase["server_cpu"] or 0),
                              "peak_rss_mib": phase["server_peak_rss_mib"]}), flush=True)

        operator = subprocess.run([amber, "token", "create", "--name", "b", "--grant", "bench/*=push,pull"],
                                  env=env, check=True, capture_output=True, text=True).stdout.strip()
        # A fresh connection: the first has been idle past the header timeout.
        minted = exchange(http.client.HTTPConnection("127.0.0.1", port), issuer.id_token())["token"]
        ratios = {"A": [], "B": []}
        for i in range(args.rounds):
            for kind in ("AB" if i % 2 == 0 else "BA"):
                push = push_p99(amber, env, operator if kind == "A" else minted, args.push_count)
                ratios[kind].append(push["p99_ms"])
                print(json.dumps({"phase": "push", "round": i, "token": "operator" if kind == "A" else "minted",
                                  "ops_per_s": round(push["ops_per_s"]), "p50_ms": push["p50_ms"],
                                  "p99_ms": push["p99_ms"]}), flush=True)
        if not args.rounds:
            return
        print(json.dumps({"push_p99_ratio_minted_over_operator":
                          round(statistics.median(ratios["B"]) / statistics.median(ratios["A"]), 3),
                          "peak_rss_mib": round(peak_rss_mib(server.pid), 1)}), flush=True)
    finally:
        if server:
            server.terminate()
            server.wait(timeout=60)
        issuer.server.shutdown()
        shutil.rmtree(data_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
