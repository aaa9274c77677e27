#!/usr/bin/env python3
"""soak.py - pushers, pullers, retention and reclaim together, for minutes.

Starts its own amberd (on 127.0.0.1, a fresh data directory; with
--s3pg, on moto and PostgreSQL as the tests use them), with retention and
reclaim every 10 s and a 5 s grace (or, with --no-reclaim, retention only:
the baseline), and drives it with pusher and puller threads for --minutes:

  pushers  upload 3 new blobs (4-64 KiB) and bind a new tag to them,
           in one of 4 repositories whose owner policy keeps the last 5 tags
  pullers  pick a live tag, GET it, GET each of its blobs

Counts every 5xx, and every blob a puller could not read while its tag was
still live (re-checked after the failure): both must be 0. Reports the
retention and reclaim runs, the bytes reclaimed, and push latency p50/p99
(one push = 3 blob PUTs + the tag PUT), as one JSON object on stdout.
Traffic goes only to 127.0.0.1; it stops by itself after --minutes.

usage: bench/soak.py --amberd target/release/amberd --minutes 20 [--s3pg] [--no-reclaim]
"""
import argparse
import http.client
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid

import blake3

from local import free_port, wait_for

REPOS = [f"soak/app{i}" for i in range(4)]


class Client:
    def __init__(self, port, token):
        self.port, self.token = port, token
        self.conn = None

    def request(self, method, path, body=None, headers=None):
        for attempt in range(2):
            if self.conn is None:
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
            h = {"Authorization": f"Bearer {self.token}"}
            h.update(headers or {})
            try:
                self.conn.request(method, path, body=body, headers=h)
                r = self.conn.getresponse()
                data = r.read()
                return r.status, data
            except (http.client.HTTPException, OSError):
                self.conn.close()
                self.conn = None
                if attempt == 1:
                    raise
        raise RuntimeError("unreachable")


class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.push_ms = []
        self.pushes = 0
        self.pulls = 0
        self.server_errors = 0
        self.lost_live = 0
        self.other = {}

    def count(self, key):
        with self.lock:
            self.other[key] = self.other.get(key, 0) + 1


def pusher(port, token, stats, until, seed):
    rng = random.Random(seed)
    c = Client(port, token)
    n = 0
    while time.time() < until:
        repo = rng.choice(REPOS)
        files = []
        started = time.perf_counter()
        ok = True
        for i in range(3):
            body = os.urandom(rng.randint(4096, 65536))
            digest = "blake3:" + blake3.blake3(body).hexdigest()
            status, _ = c.request("PUT", f"/v1/repos/{repo}/blobs/{digest}", body)
            if status >= 500:
                with stats.lock:
                    stats.server_errors += 1
            if status not in (200, 201):
                ok = False
                stats.count(f"blob_put_{status}")
                break
            files.append({"path": f"f{i}", "digest": digest, "size": len(body)})
        if not ok:
            continue
        n += 1
        tag = f"b{seed}-{n}-{uuid.uuid4().hex[:6]}"
        status, _ = c.request("PUT", f"/v1/repos/{repo}/tags/{tag}", json.dumps({"files": files}), {"Content-Type": "application/json"})
        elapsed = (time.perf_counter() - started) * 1000
        if status >= 500:
            with stats.lock:
                stats.server_errors += 1
        if status == 201:
            with stats.lock:
                stats.pushes += 1
                stats.push_ms.append(elapsed)
        else:
            stats.count(f"tag_put_{status}")


def puller(port, token, stats, until, seed):
    rng = random.Random(seed)
    c = Client(port, token)
    while time.time() < until:
        repo = rng.choice(REPOS)
        status, data = c.request("GET", f"/v1/repos/{repo}/tags?limit=1000")
        if status >= 500:
            with stats.lock:
                stats.server_errors += 1
            continue
        live = [t for t in json.loads(data)["tags"] if t["state"] == "live"]
        if not live:
            time.sleep(0.05)
            continue
        tag = rng.choice(live)["tag"]
        status, data = c.request("GET", f"/v1/repos/{repo}/tags/{tag}")
        if status >= 500:
            with stats.lock:
                stats.server_errors += 1
        if status != 200:
            stats.count(f"tag_get_{status}")
            continue
        import base64
        payload = json.loads(base64.b64decode(json.loads(data)["payload"]))
        for f in payload["files"]:
            status, body = c.request("GET", f"/v1/repos/{repo}/blobs/{f['digest']}")
            if status >= 500:
                with stats.lock:
                    stats.server_errors += 1
            if status == 200 and blake3.blake3(body).hexdigest() == f["digest"][7:]:
                continue
            # Gone: fine only if the tag expired meanwhile.
            s2, d2 = c.request("GET", f"/v1/repos/{repo}/tags/{tag}")
            if s2 == 200:
                with stats.lock:
                    stats.lost_live += 1
                print(f"LOST: {repo}:{tag} {f['digest']} answered {status}", file=sys.stderr)
            else:
                stats.count("blob_of_expired_tag")
        with stats.lock:
            stats.pulls += 1


def percentile(values, p):
    if not values:
        return None
    values = sorted(values)
    return round(values[min(len(values) - 1, int(len(values) * p))], 2)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--amberd", required=True)
    ap.add_argument("--minutes", type=float, default=20)
    ap.add_argument("--pushers", type=int, default=4)
    ap.add_argument("--pullers", type=int, default=4)
    ap.add_argument("--s3pg", action="store_true")
    ap.add_argument("--no-reclaim", action="store_true")
    args = ap.parse_args()

    data_dir = tempfile.mkdtemp(prefix="amber-soak-")
    extra, env = [], dict(os.environ)
    db = None
    if args.s3pg:
        endpoint = os.environ.get("AMBER_TEST_S3_ENDPOINT", "http://127.0.0.1:5917")
        pg = os.environ.get("AMBER_TEST_POSTGRES", "postgres://postgres@127.0.0.1:5432")
        bucket = "soak-" + uuid.uuid4().hex[:8]
        db = "amber_soak_" + uuid.uuid4().hex[:8]
        subprocess.run(["psql", f"{pg}/postgres", "-qAtc", f"CREATE DATABASE {db}"], check=True)
        import boto3
        boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="test", aws_secret_access_key="test").create_bucket(Bucket=bucket)
        extra = ["--blobs", f"s3://{bucket}/amber", "--s3-path-style", "--meta", f"{pg}/{db}"]
        env.update({"AWS_ENDPOINT_URL": endpoint, "AWS_REGION": "us-east-1", "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test"})
    intervals = ["--retention-interval", "10", "--reclaim-grace", "5", "--scrub-rate", "0"]
    intervals += ["--reclaim-interval", "0" if args.no_reclaim else "10"]
    admin = subprocess.run([args.amberd, "token", "create", "--admin", "--name", "soak", "--data-dir", data_dir] + extra,
                           env=env, check=True, capture_output=True, text=True).stdout.strip()
    port = free_port()
    log = open(os.path.join(data_dir, "amberd.log"), "w")
    server = subprocess.Popen([args.amberd, "--listen", f"127.0.0.1:{port}", "--data-dir", data_dir] + extra + intervals,
                              env=dict(env, AMBER_LOG="info"), stdout=log, stderr=log)
    try:
        wait_for(port)
        admin_client = Client(port, admin)
        status, data = admin_client.request("POST", "/v1/tokens", json.dumps(
            {"name": "soak", "grants": [{"repos": "soak/*", "actions": ["push", "pull"]}]}), {"Content-Type": "application/json"})
        assert status == 201, data
        token = json.loads(data)["token"]
        status, data = admin_client.request("PUT", "/v1/retention/soak/*", json.dumps({"keep_last": 5, "untagged_days": 0}),
                                            {"Content-Type": "application/json"})
        assert status == 200, data
        stats = Stats()
        until = time.time() + args.minutes * 60
        threads = [threading.Thread(target=pusher, args=(port, token, stats, until, i)) for i in range(args.pushers)]
        threads += [threading.Thread(target=puller, args=(port, token, stats, until, 100 + i)) for i in range(args.pullers)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        status, metrics = Client(port, admin).request("GET", "/metrics")
        metrics = metrics.decode()

        def metric(name):
            m = re.search(rf"^{name} (\d+)", metrics, re.M)
            return int(m.group(1)) if m else None
        server.terminate()
        server.wait(timeout=60)
        log.close()
        text = open(os.path.join(data_dir, "amberd.log")).read()
        shutil.copy(os.path.join(data_dir, "amberd.log"), os.path.join(tempfile.gettempdir(), "amber-soak-last.log"))
        result = {
            "backend": "s3+postgres" if args.s3pg else "embedded",
            "reclaim": not args.no_reclaim,
            "minutes": args.minutes,
            "pushes": stats.pushes,
            "pulls": stats.pulls,
            "push_p50_ms": percentile(stats.push_ms, 0.50),
            "push_p99_ms": percentile(stats.push_ms, 0.99),
            "server_errors_5xx": stats.server_errors,
            "blob_lost_for_live_tag": stats.lost_live,
            "retention_runs": text.count("retention run finished"),
            "reclaim_runs": text.count("reclaim run finished"),
            "tags_expired": metric("amber_retention_expired_total"),
            "links_removed": metric("amber_links_removed_total"),
            "bytes_reclaimed": metric("amber_reclaimed_bytes_total"),
            "other": stats.other,
        }
        print(json.dumps(result))
        return 0 if stats.server_errors == 0 and stats.lost_live == 0 else 1
    finally:
        if server.poll() is None:
            server.kill()
        shutil.rmtree(data_dir, ignore_errors=True)
        if db:
            subprocess.run(["psql", f"{pg}/postgres", "-qAtc", f"DROP DATABASE IF EXISTS {db} WITH (FORCE)"])


if __name__ == "__main__":
    sys.exit(main())
