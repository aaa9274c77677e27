#!/usr/bin/env python3
"""Scale: what the store's costs do as it fills (issue 33, design/scale.md).

    python3 bench/scale.py [--backend sled|postgres] [--blobs N] [--repos R] [--tag-every K] [--out DIR]

Boots a release `amberd` on 127.0.0.1 (sled in a fresh directory, or
PostgreSQL + S3 through moto: `AMBER_TEST_POSTGRES`, `AMBER_TEST_S3_ENDPOINT`,
a fresh database and bucket), then, one phase after another, bounded in
count and time, and stops everything it started:

1. fill: N distinct 1 KiB blobs over R repositories, a tag bound every K
   blobs of a repository (its last K blobs); the push rate of each tenth;
2. metadata bytes per blob (sled's directory; PostgreSQL's database size),
   RSS after the fill;
3. listings: `GET /v1/repos` (first page and a page deep in), a repository's
   tags, the audit log's first page, `GET /v1/storage`: 200 each, p50/p99,
   and the repositories' counters against the bench's own count;
4. restart to ready (SIGTERM, start, `/readyz` 200);
5. `POST /v1/fsck/run`: blobs a second;
6. retention, as runs: keep the last tag of each repository (expiries a
   second), then unlink what no live tag references (unlinks a second);
   metadata size after; then reclaim with no grace (deletions a second);
7. memory after a burst: RSS idle, 60 s of 4 KiB pushes at concurrency
   64, RSS at once and a minute later.

Prints one line per figure and writes them as JSON to OUT/scale-BACKEND.json.
"""

import argparse
import concurrent.futures
import hashlib
import http.client
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target", "release")

try:
    import blake3  # type: ignore
except ImportError:  # pragma: no cover
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "blake3"], check=True)
    import blake3  # type: ignore


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def du_bytes(path):
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            try:
                total += os.stat(os.path.join(root, name)).st_blocks * 512
            except FileNotFoundError:
                pass
    return total


class Client:
    """One keep-alive connection per thread."""

    def __init__(self, port, token):
        self.port, self.token = port, token
        self.local = threading.local()

    def request(self, method, path, body=None, headers=None, timeout=120):
        for attempt in range(3):
            conn = getattr(self.local, "conn", None)
            if conn is None:
                conn = self.local.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
            h = {"Authorization": f"Bearer {self.token}"}
            h.update(headers or {})
            try:
                conn.request(method, path, body=body, headers=h)
                response = conn.getresponse()
                data = response.read()
                return response.status, data
            except (ConnectionError, http.client.HTTPException, OSError):
                conn.close()
                self.local.conn = None
                if attempt == 2:
                    raise
                time.sleep(0.2)

    def json(self, method, path, body=None):
        data = None if body is None else json.dumps(body).encode()
        status, out = self.request(method, path, data, {"Content-Type": "application/json"} if data else None)
        return status, (json.loads(out) if out else None)


class Server:
    def __init__(self, backend, workdir):
        self.backend, self.workdir = backend, workdir
        self.port = free_port()
        self.data = os.path.join(workdir, "data")
        self.args = [os.path.join(BIN, "amberd"), "--listen", f"127.0.0.1:{self.port}", "--data-dir", self.data]
        self.env = dict(os.environ, AMBER_LOG="warn", AMBER_SCRUB_RATE="0", AMBER_RETENTION_INTERVAL="0",
                        AMBER_RECLAIM_INTERVAL="0", AMBER_RECLAIM_GRACE="0")
        self.proc = None
        if backend == "postgres":
            pg = os.environ.get("AMBER_TEST_POSTGRES", "postgres://postgres@127.0.0.1:5432")
            s3 = os.environ.get("AMBER_TEST_S3_ENDPOINT", "http://127.0.0.1:5917")
            name = f"amber_scale_{os.getpid()}"
            subprocess.run(["psql", pg, "-qc", f"CREATE DATABASE {name}"], check=True)
            self.database = f"{pg}/{name}"
            bucket = name.replace("_", "-")
            self.env.update(AMBER_META=self.database, AMBER_BLOBS=f"s3://{bucket}/amber", AMBER_S3_PATH_STYLE="true",
                            AWS_ENDPOINT_URL=s3, AWS_REGION="us-east-1", AWS_ACCESS_KEY_ID="test",
                            AWS_SECRET_ACCESS_KEY="test")
            subprocess.run([sys.executable, "-c", f"import boto3; boto3.client('s3', endpoint_url='{s3}', "
                            f"region_name='us-east-1', aws_access_key_id='t', aws_secret_access_key='t')"
                            f".create_bucket(Bucket='{bucket}')"], check=True)
        self.admin = subprocess.run([os.path.join(BIN, "amberd"), "token", "create", "--admin", "--name", "scale",
                                     "--data-dir", self.data], env=self.env, check=True, capture_output=True,
                                    text=True).stdout.strip()

    def start(self):
        started = time.monotonic()
        self.proc = subprocess.Popen(self.args, env=self.env, stdout=subprocess.DEVNULL, stderr=open(
            os.path.join(self.workdir, "amberd.log"), "a"))
        deadline = started + 120
        while time.monotonic() < deadline:
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=1)
                conn.request("GET", "/readyz")
                if conn.getresponse().status == 200:
                    return time.monotonic() - started
            except OSError:
                pass
            if self.proc.poll() is not None:
                raise SystemExit(f"amberd exited: see {self.workdir}/amberd.log")
            time.sleep(0.02)
        raise SystemExit("amberd did not become ready in 120 s")

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def meta_bytes(self):
        if self.backend == "sled":
            return du_bytes(os.path.join(self.data, "meta"))
        out = subprocess.run(["psql", self.database, "-tAc", "SELECT pg_database_size(current_database())"],
                             check=True, capture_output=True, text=True).stdout
        return int(out.strip())

    def drop(self):
        if self.backend == "postgres":
            pg, name = self.database.rsplit("/", 1)
            subprocess.run(["psql", pg, "-qc", f"DROP DATABASE IF EXISTS {name}"], check=False)


def blob_bytes(i, size=1024):
    seed = hashlib.sha256(i.to_bytes(8, "big")).digest()
    return (seed * (size // len(seed) + 1))[:size]


def percentile(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * p / 100))]


def run_to_end(client, path, limit=3600):
    status, run = client.json("POST", path)
    if status != 202:
        raise SystemExit(f"{path}: {status} {run}")
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        _, run = client.json("GET", f"/v1/runs/{run['id']}")
        if run["state"] != "running":
            if run["state"] != "done":
                raise SystemExit(f"{path}: {run}")
            return run
        time.sleep(0.5)
    raise SystemExit(f"{path}: still running after {limit} s")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--backend", choices=["sled", "postgres"], default="sled")
    parser.add_argument("--blobs", type=int, default=1_000_000)
    parser.add_argument("--repos", type=int, default=1000)
    parser.add_argument("--tag-every", type=int, default=10)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--burst-seconds", type=int, default=60)
    parser.add_argument("--out", default="/tmp/amber-scale")
    parser.add_argument("--max-seconds", type=int, default=7200, help="the fill stops here, whatever its count")
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    workdir = tempfile.mkdtemp(prefix="amber-scale-", dir="/tmp")
    server = Server(args.backend, workdir)
    results = {"backend": args.backend, "blobs": args.blobs, "repos": args.repos, "tag_every": args.tag_every}

    def say(key, value, unit=""):
        results[key] = value
        print(f"{key:42} {value}{(' ' + unit) if unit else ''}", flush=True)

    try:
        server.start()
        admin = Client(server.port, server.admin)
        repos = [f"s{r // 100:02d}/r{r % 100:02d}" for r in range(args.repos)]
        owners = sorted({r.split("/")[0] for r in repos})
        grants = [{"repos": f"{owner}/*", "actions": ["push", "pull"]} for owner in owners]
        status, made = admin.json("POST", "/v1/tokens", {"name": "scale", "grants": grants})
        if status not in (200, 201):
            raise SystemExit(f"token: {status} {made}")
        client = Client(server.port, made["token"])
        # What the bench pushed: per repository blobs, bytes, tags.
        counted = {r: {"blobs": 0, "bytes": 0, "tags": 0} for r in repos}
        recent = {r: [] for r in repos}
        lock = threading.Lock()
        tenth = max(1, args.blobs // 10)
        rates = []

        def push(i):
            repo = repos[i % len(repos)]
            data = blob_bytes(i)
            digest = "blake3:" + blake3.blake3(data).hexdigest()
            status, _ = client.request("PUT", f"/v1/repos/{repo}/blobs/{digest}", data)
            if status not in (200, 201):
                raise RuntimeError(f"push {i}: {status}")
            with lock:
                counted[repo]["blobs"] += 1
                counted[repo]["bytes"] += len(data)
                recent[repo].append({"path": f"f{i}", "digest": digest, "size": len(data)})
                files = None
                if len(recent[repo]) >= args.tag_every:
                    files, recent[repo] = recent[repo], []
            if files:
                status, body = client.json("PUT", f"/v1/repos/{repo}/tags/t{i}", {"files": files})
                if status != 201:
                    raise RuntimeError(f"tag {i}: {status} {body}")
                with lock:
                    counted[repo]["tags"] += 1

        fill_started = time.monotonic()
        done = 0
        with concurrent.futures.ThreadPoolExecutor(args.concurrency) as pool:
            while done < args.blobs and time.monotonic() - fill_started < args.max_seconds:
                n = min(tenth, args.blobs - done)
                t0 = time.monotonic()
                list(pool.map(push, range(done, done + n)))
                rates.append(n / (time.monotonic() - t0))
                done += n
                print(f"  filled {done} ({rates[-1]:.0f} blobs/s)", flush=True)
        say("filled_blobs", done)
        say("fill_seconds", round(time.monotonic() - fill_started, 1), "s")
        say("push_rate_first_tenth", round(rates[0]), "blobs/s")
        say("push_rate_last_tenth", round(rates[-1]), "blobs/s")
        say("push_rate_ratio_last_first", round(rates[-1] / rates[0], 3))
        tags = sum(c["tags"] for c in counted.values())
        say("tags", tags)
        time.sleep(5)
        meta = server.meta_bytes()
        say("metadata_bytes", meta)
        say("metadata_bytes_per_blob", round(meta / done), "B")
        say("rss_after_fill_mib", round(rss_kib(server.proc.pid) / 1024, 1), "MiB")

        # Listings.
        deep = urllib.parse.quote(repos[len(repos) // 2])
        probes = {
            "repos_first_page": "/v1/repos?limit=100",
            "repos_deep_page": f"/v1/repos?limit=100&after={deep}",
            "tags_of_a_repository": (f"/v1/repos/{repos[7]}/tags?limit=100", client),
            "audit_first_page": "/v1/audit?limit=100",
            "storage": "/v1/storage",
        }
        for name, path in probes.items():
            path, by = path if isinstance(path, tuple) else (path, admin)
            times = []
            for _ in range(200):
                t0 = time.monotonic()
                status, _ = by.request("GET", path)
                times.append((time.monotonic() - t0) * 1000)
                if status != 200:
                    raise SystemExit(f"{path}: {status}")
            say(f"{name}_p50_ms", round(statistics.median(times), 2), "ms")
            say(f"{name}_p99_ms", round(percentile(times, 99), 2), "ms")
        listed, after, wrong = [], None, 0
        while True:
            path = "/v1/repos?limit=1000" + (f"&after={urllib.parse.quote(after)}" if after else "")
            _, page = admin.json("GET", path)
            listed.extend(page["repositories"])
            after = page["next"]
            if not after:
                break
        for entry in listed:
            c = counted.get(entry["name"])
            if c is None or (entry["blobs"], entry["bytes"], entry["tags"]) != (c["blobs"], c["bytes"], c["tags"]):
                wrong += 1
        say("repositories_listed", len(listed))
        say("repositories_unlike_the_recount", wrong + sum(1 for r in repos if counted[r]["blobs"]) - len(listed))

        # Restart to ready; between, where sled's bytes go.
        server.stop()
        if args.backend == "sled":
            example = os.path.join(BIN, "examples", "sled-bytes")
            if os.path.exists(example):
                out = subprocess.run([example, os.path.join(server.data, "meta")], capture_output=True, text=True)
                print(out.stdout, end="", flush=True)
                results["sled_trees"] = out.stdout
        say("restart_to_ready_s", round(server.start(), 3), "s")
        admin.local = threading.local()

        # fsck, live.
        run = run_to_end(admin, "/v1/fsck/run")
        linked = run["report"]["linked"]
        say("fsck_blobs", linked)
        say("fsck_faults", len(run["report"]["faults"]))
        say("fsck_blobs_per_s", round(linked / max(run["progress"]["elapsed_seconds"], 0.001)), "blobs/s")

        # Retention: expiries, then unlinks, then reclaim.
        before = server.meta_bytes()
        for owner in owners:
            status, body = admin.json("PUT", f"/v1/retention/{owner}/*", {"keep_last": 1})
            if status != 200:
                raise SystemExit(f"policy: {status} {body}")
        run = run_to_end(admin, "/v1/retention/run", limit=7200)
        expired = len(run["report"]["expire"])
        say("expired", expired)
        say("expiries_per_s", round(expired / max(run["progress"]["elapsed_seconds"], 0.001)), "/s")
        for owner in owners:
            admin.json("PUT", f"/v1/retention/{owner}/*", {"keep_last": 1, "untagged_days": 0})
        time.sleep(1.1)
        run = run_to_end(admin, "/v1/retention/run", limit=7200)
        unlinked = len(run["report"]["unlink"])
        say("unlinked", unlinked)
        say("unlinks_per_s", round(unlinked / max(run["progress"]["elapsed_seconds"], 0.001)), "/s")
        time.sleep(5)
        after_retention = server.meta_bytes()
        say("metadata_bytes_after_retention", after_retention)
        say("metadata_growth_per_expiry_or_unlink", round((after_retention - before) / max(1, expired + unlinked)), "B")
        run = run_to_end(admin, "/v1/reclaim/run", limit=7200)
        deleted = run["report"]["deleted"]
        say("reclaimed", deleted)
        say("reclaim_deletions_per_s", round(deleted / max(run["progress"]["elapsed_seconds"], 0.001)), "/s")

        # Memory after a burst.
        time.sleep(10)
        idle = rss_kib(server.proc.pid)
        say("rss_idle_mib", round(idle / 1024, 1), "MiB")
        stop_at = time.monotonic() + args.burst_seconds
        counter = iter(range(10**12, 10**13))
        counter_lock = threading.Lock()
        pushed = [0]

        def burst(_):
            while time.monotonic() < stop_at:
                with counter_lock:
                    i = next(counter)
                data = blob_bytes(i, 4096)
                digest = "blake3:" + blake3.blake3(data).hexdigest()
                status, _ = client.request("PUT", f"/v1/repos/{repos[i % len(repos)]}/blobs/{digest}", data)
                if status in (200, 201):
                    with counter_lock:
                        pushed[0] += 1

        with concurrent.futures.ThreadPoolExecutor(64) as pool:
            list(pool.map(burst, range(64)))
        say("burst_pushes", pushed[0])
        say("rss_after_burst_mib", round(rss_kib(server.proc.pid) / 1024, 1), "MiB")
        time.sleep(60)
        later = rss_kib(server.proc.pid)
        say("rss_a_minute_after_burst_mib", round(later / 1024, 1), "MiB")
        say("rss_above_idle_after_a_minute_mib", round((later - idle) / 1024, 1), "MiB")
    finally:
        server.stop()
        server.drop()
        shutil.rmtree(workdir, ignore_errors=True)
        with open(os.path.join(args.out, f"scale-{args.backend}.json"), "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
