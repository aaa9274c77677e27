#!/usr/bin/env python3
"""scrub-get.py - what the scrub costs a 4 KiB GET, at its default rate.

For each round, in ABBA order: a fresh amberd (127.0.0.1, embedded
backends) holding SEED_MIB of 8 MiB blobs, so that a scrub pass lasts well
beyond the measurement, with the scrub off (A) or at its default rate (B);
then `amber bench small` (4 KiB blobs, concurrency 16) and its GET phase's
p50/p99. Prints one JSON line per round and the median p99 ratio B/A.

usage: bench/scrub-get.py --bin target/release [--rounds 4] [--seed-mib 1024] [--count 20000]
"""
import argparse
import http.client
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import blake3

from local import free_port, wait_for


def round_once(args, scrub_on):
    data_dir = tempfile.mkdtemp(prefix="amber-scrub-get-")
    amberd, amber = os.path.join(args.bin, "amberd"), os.path.join(args.bin, "amber")
    try:
        admin = subprocess.run([amberd, "token", "create", "--admin", "--name", "b", "--data-dir", data_dir],
                               check=True, capture_output=True, text=True).stdout.strip()
        port = free_port()
        flags = [] if scrub_on else ["--scrub-rate", "0"]
        log = open(os.path.join(data_dir, "log"), "w")
        server = subprocess.Popen([amberd, "--listen", f"127.0.0.1:{port}", "--data-dir", data_dir] + flags,
                                  stdout=log, stderr=log)
        wait_for(port)
        env = dict(os.environ, AMBER_URL=f"http://127.0.0.1:{port}", AMBER_TOKEN=admin)
        token = subprocess.run([amber, "token", "create", "--name", "b", "--grant", "bench/*=push,pull"],
                               env=env, check=True, capture_output=True, text=True).stdout.strip()
        conn = http.client.HTTPConnection("127.0.0.1", port)
        for i in range(args.seed_mib // 8):
            body = os.urandom(8 << 20)
            digest = "blake3:" + blake3.blake3(body).hexdigest()
            conn.request("PUT", f"/v1/repos/bench/seed/blobs/{digest}", body, {"Authorization": f"Bearer {token}"})
            r = conn.getresponse()
            r.read()
            assert r.status == 201, r.status
        # The scrub has just begun its pass over the seed (a pass at 32 MiB/s
        # of 1 GiB takes 32 s) when the measurement starts.
        out = subprocess.run([amber, "bench", "small", "--count", str(args.count), "--concurrency", "16",
                              "--server-pid", str(server.pid), "--json"],
                             env=dict(env, AMBER_TOKEN=token), check=True, capture_output=True, text=True).stdout
        phases = [json.loads(line) for line in out.splitlines() if line.strip()]
        get = next(p for p in phases if p["phase"] == "get")
        server.terminate()
        server.wait(timeout=60)
        log.close()
        return {"scrub": scrub_on, "get_ops_per_s": round(get["ops_per_s"]), "get_p50_ms": get["p50_ms"],
                "get_p99_ms": get["p99_ms"], "get_seconds": round(get["seconds"], 1)}
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--seed-mib", type=int, default=1024)
    ap.add_argument("--count", type=int, default=20000)
    args = ap.parse_args()
    results = []
    for i in range(args.rounds):
        # ABBA: off, on, on, off, ...
        for scrub_on in ([False, True] if i % 2 == 0 else [True, False]):
            r = round_once(args, scrub_on)
            print(json.dumps(r), flush=True)
            results.append(r)
    off = [r["get_p99_ms"] for r in results if not r["scrub"]]
    on = [r["get_p99_ms"] for r in results if r["scrub"]]
    print(json.dumps({"median_p99_off_ms": statistics.median(off), "median_p99_on_ms": statistics.median(on),
                      "ratio": round(statistics.median(on) / statistics.median(off), 3)}))


if __name__ == "__main__":
    sys.exit(main())
