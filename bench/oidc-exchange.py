#!/usr/bin/env python3
"""oidc-exchange.py - what trusted publishing costs.

1. Exchanges: a fake OpenID issuer on 127.0.0.1 (an RSA-2048 key made with
   Python's `cryptography`, discovery and JWKS served by http.server; the
   ID tokens are assembled and signed here, by nothing Amber wrote), a
   fresh amberd (embedded backends) trusting it, one publisher; after a
   warm-up, COUNT exchanges of distinct ID tokens at CONCURRENCY over
   persistent connections. Prints exchanges/s, p50 and p99, and amberd's
   peak RSS.
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
import socket
import statistics
import subprocess
import tempfile
import threading
import time

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa


def b64(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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

    def id_token(self):
        self.serial += 1
        now = int(time.time())
        claims = {"iss": self.url, "aud": "amber", "iat": now, "nbf": now, "exp": now + 600,
                  "jti": f"bench-{self.serial}-{os.urandom(4).hex()}",
                  "repository": "bench/blobs", "repository_id": "1", "repository_owner_id": "2",
                  "workflow_ref": "bench/blobs/.github/workflows/bench.yml@refs/heads/main",
                  "ref": "refs/heads/main", "sha": "f" * 40, "event_name": "push", "run_id": str(self.serial),
                  "run_attempt": "1"}
        message = b64(json.dumps({"alg": "RS256", "typ": "JWT", "kid": "bench-1"}).encode()) + "." + \
            b64(json.dumps(claims).encode())
        signature = self.key.sign(message.encode(), padding.PKCS1v15(), hashes.SHA256())
        return message + "." + b64(signature)


def percentile(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * p))]


def exchange(conn, id_token):
    conn.request("POST", "/v1/oidc/token", json.dumps({"id_token": id_token}), {"Content-Type": "application/json"})
    response = conn.getresponse()
    body = response.read()
    assert response.status == 201, (response.status, body)
    return json.loads(body)


def exchanges(port, tokens, concurrency):
    latencies, lock = [], threading.Lock()
    chunks = [tokens[i::concurrency] for i in range(concurrency)]

    def worker(chunk):
        conn = http.client.HTTPConnection("127.0.0.1", port)
        mine = []
        for token in chunk:
            started = time.perf_counter()
            exchange(conn, token)
            mine.append(time.perf_counter() - started)
        with lock:
            latencies.extend(mine)

    started = time.perf_counter()
    threads = [threading.Thread(target=worker, args=(c,)) for c in chunks]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return len(tokens) / (time.perf_counter() - started), latencies


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
    args = ap.parse_args()
    issuer = Issuer()
    data_dir = tempfile.mkdtemp(prefix="amber-oidc-bench-")
    amberd, amber = os.path.join(args.bin, "amberd"), os.path.join(args.bin, "amber")
    config = os.path.join(data_dir, "amber.toml")
    with open(config, "w") as f:
        f.write(f'[[oidc.issuers]]\nname = "bench"\nurl = "{issuer.url}"\nkind = "github"\nallow_insecure_http = true\n')
    server = None
    try:
        admin = subprocess.run([amberd, "token", "create", "--admin", "--name", "b", "--data-dir", data_dir],
                               check=True, capture_output=True, text=True).stdout.strip()
        port = free_port()
        log = open(os.path.join(data_dir, "log"), "w")
        server = subprocess.Popen([amberd, "--listen", f"127.0.0.1:{port}", "--data-dir", data_dir,
                                   "--config", config, "--scrub-rate", "0"], stdout=log, stderr=log)
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.1)
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

        warm = [issuer.id_token() for _ in range(200)]
        exchanges(port, warm, args.concurrency)
        tokens = [issuer.id_token() for _ in range(args.count)]
        rate, latencies = exchanges(port, tokens, args.concurrency)
        ms = [l * 1e3 for l in latencies]
        print(json.dumps({"phase": "exchange", "count": args.count, "concurrency": args.concurrency,
                          "per_s": round(rate), "p50_ms": round(percentile(ms, 0.50), 2),
                          "p99_ms": round(percentile(ms, 0.99), 2), "max_ms": round(max(ms), 2),
                          "peak_rss_mib": round(peak_rss_mib(server.pid), 1)}), flush=True)

        operator = subprocess.run([amber, "token", "create", "--name", "b", "--grant", "bench/*=push,pull"],
                                  env=env, check=True, capture_output=True, text=True).stdout.strip()
        minted = exchange(conn, issuer.id_token())["token"]
        ratios = {"A": [], "B": []}
        for i in range(args.rounds):
            for kind in ("AB" if i % 2 == 0 else "BA"):
                push = push_p99(amber, env, operator if kind == "A" else minted, args.push_count)
                ratios[kind].append(push["p99_ms"])
                print(json.dumps({"phase": "push", "round": i, "token": "operator" if kind == "A" else "minted",
                                  "ops_per_s": round(push["ops_per_s"]), "p50_ms": push["p50_ms"],
                                  "p99_ms": push["p99_ms"]}), flush=True)
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
