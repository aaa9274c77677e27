#!/usr/bin/env bash
# Amber next to this machine's limits and the reference OCI registry, in one
# sitting, so ratios compare numbers measured under the same conditions.
#
#   bench/side-by-side.sh            # embedded backends
#   BACKENDS="embedded s3pg" bench/side-by-side.sh
#   FILL_PAGE_CACHE=1 bench/side-by-side.sh   # page cache full first, as on a server that has run a while
#   REGISTRY_BIN=/var/cache/amber-go-tools/bin/registry bench/side-by-side.sh   # against distribution v3.1.2
#
# Amber runs each workload through /v1/ (protocol amber) and through /v2/
# (protocol oci, the very requests the registry gets).
#
# Needs ../shared/bench (limits.sh, peer-registry.sh, loadgen.py), a release
# build, and for s3pg: moto_server and PostgreSQL on 127.0.0.1:5432.
# Everything runs on 127.0.0.1, bounded in count and time; every process it
# starts is stopped by PID on exit. Results: $OUT (default /tmp/amber-bench).
set -euo pipefail
cd "$(dirname "$0")/.."
SHARED="${SHARED:-$(cd ../shared/bench && pwd)}"
OUT="${OUT:-/tmp/amber-bench}"
ROUNDS="${ROUNDS:-3}"
BACKENDS="${BACKENDS:-embedded}"
SIZE_MB="${SIZE_MB:-1024}"
SMALL_COUNT="${SMALL_COUNT:-2000}"
CONC="${CONC:-16}"
mkdir -p "$OUT"
PIDS=()
STORES=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for d in "${STORES[@]}"; do rm -rf "$d"; done
  rm -f "$OUT/page-cache-filler"
}
trap cleanup EXIT

cargo build --release --workspace --quiet
BIN="$PWD/target/release"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# Rows in the shared scripts' format: round, key, value, unit.
emit() {  # emit ROUND NAME < loadgen JSON lines
  python3 -c '
import json, sys
r, name = sys.argv[1], sys.argv[2]
for ln in sys.stdin:
    if not ln.startswith("{"): continue
    d = json.loads(ln)
    if d.get("errors"): print("WARN", name, d["phase"], d["errors"], d.get("first_error", ""), file=sys.stderr)
    k = "%s.%s.%s" % (d["workload"], name, d["phase"])
    def row(key, v, unit):
        if v is not None: print("%s\t%s\t%s\t%s" % (r, key, v, unit))
    if d["workload"] == "large":
        row(k, d["mb_per_s"] / 1000.0, "GB/s")
        if "server_cpu_s" in d:
            row(k + ".server_cpu_s_per_GiB", round(d["server_cpu_s"] * (1 << 30) / d["size"], 3), "cpu-s")
            row(k + ".server_peak_rss_MiB", d["server_peak_rss_mb"], "MiB")
    else:
        row(k + ".ops", d["ops_per_s"], "ops/s"); row(k + ".p50", d["p50_ms"], "ms"); row(k + ".p99", d["p99_ms"], "ms")
        if "server_cpu_us_per_op" in d:
            row(k + ".server_cpu_per_op", d["server_cpu_us_per_op"], "cpu-us")
            row(k + ".server_peak_rss_MiB", d["server_peak_rss_mb"], "MiB")
' "$1" "$2"
}

start_amber() {  # start_amber BACKEND -> sets AMBER_PID AMBER_BASE TOKEN AMBER_DIR MOTO_PID
  local backend="$1" dir port args=()
  dir="$(mktemp -d /tmp/bench-amber.XXXXXX)"; AMBER_DIR="$dir"; MOTO_PID=""; AMBER_DB=""
  if [ "$backend" = s3pg ]; then
    local mport db; mport="$(free_port)"
    moto_server -H 127.0.0.1 -p "$mport" >/dev/null 2>&1 & MOTO_PID=$!; PIDS+=($!)
    until curl -fs -o /dev/null "http://127.0.0.1:$mport/"; do sleep 0.1; done
    export AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench AWS_REGION=us-east-1 AWS_ENDPOINT_URL="http://127.0.0.1:$mport"
    python3 -c "import boto3; boto3.client('s3').create_bucket(Bucket='bench')"
    db="amber_bench_$RANDOM$RANDOM"; AMBER_DB="$db"
    psql postgres://postgres@127.0.0.1:5432/postgres -qc "CREATE DATABASE $db"
    args=(--blobs s3://bench/amber --s3-path-style --meta "postgres://postgres@127.0.0.1:5432/$db")
  fi
  local admin; admin="$("$BIN/amberd" token create --admin --name bench --data-dir "$dir" "${args[@]}" 2>/dev/null)"
  port="$(free_port)"
  AMBER_LOG=warn "$BIN/amberd" --listen "127.0.0.1:$port" --data-dir "$dir" "${args[@]}" >"$OUT/amberd-$backend.log" 2>&1 & AMBER_PID=$!; PIDS+=($!)
  AMBER_BASE="http://127.0.0.1:$port"
  until curl -fs -o /dev/null "$AMBER_BASE/healthz"; do sleep 0.1; done
  TOKEN="$(AMBER_URL=$AMBER_BASE AMBER_TOKEN=$admin "$BIN/amber" token create --name bench --grant 'bench/*=push,pull' 2>/dev/null)"
}

head -c $((SIZE_MB << 20)) /dev/urandom > "$OUT/blob"
# FILL_PAGE_CACHE=1 first fills the page cache with a throwaway file, as on a
# server that has run a while. On a VM whose balloon reports free pages to
# the host, page cache that grows into free memory costs every contender 2-5
# CPU-s per GiB written (BENCHMARKS.md, "Page cache on this VM").
if [ "${FILL_PAGE_CACHE:-0}" = 1 ]; then
  fill_mb=$(( $(awk '/MemAvailable/ {print int($2 / 1024)}' /proc/meminfo) - 6144 ))
  free_mb=$(df -Pm "$OUT" | awk 'NR == 2 {print $4}')
  if [ "$fill_mb" -gt 0 ] && [ "$free_mb" -gt $((fill_mb + 10240)) ]; then
    echo "filling the page cache with $fill_mb MiB" >&2
    head -c $((fill_mb << 20)) /dev/zero > "$OUT/page-cache-filler"
  else
    echo "FILL_PAGE_CACHE: not enough free disk ($free_mb MiB) for $fill_mb MiB; running as is" >&2
  fi
fi
# peer-registry.sh deletes the peers' stored data after every round, which
# hands the page cache of their large blob back. A content-addressed store
# keeps everything, and on this VM writing into page cache that grows into
# untouched memory costs several times the CPU of reusing pages just freed;
# so after each round the stored large blobs are evicted from the page cache
# (not deleted: a new store right after a big delete makes ext4 skip every
# recently deleted inode when it creates files, which dominated small pushes).
evict_large_blobs() {
  python3 - "$AMBER_DIR" <<'PY'
import os, sys
for root, _, files in os.walk(sys.argv[1]):
    for name in files:
        path = os.path.join(root, name)
        if os.path.getsize(path) > (1 << 20):
            fd = os.open(path, os.O_RDONLY)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            os.close(fd)
PY
}
stop_amber() {
  kill "$AMBER_PID"; wait "$AMBER_PID" 2>/dev/null || true
  if [ -n "$MOTO_PID" ]; then kill "$MOTO_PID"; wait "$MOTO_PID" 2>/dev/null || true; fi
  if [ -n "$AMBER_DB" ]; then psql postgres://postgres@127.0.0.1:5432/postgres -qc "DROP DATABASE $AMBER_DB"; fi
  # Deleted on exit, not now: the peers should not run right after a big delete either.
  STORES+=("$AMBER_DIR")
}

for backend in $BACKENDS; do
  RES="$OUT/amber-$backend.tsv"; : > "$RES"
  start_amber "$backend"
  for r in $(seq 1 "$ROUNDS"); do
    python3 "$SHARED/loadgen.py" large --protocol amber --repo bench/blobs --base "$AMBER_BASE" --token "$TOKEN" --label "amber_$backend" \
      --file "$OUT/blob" --unique --server-pid "$AMBER_PID" --max-seconds 300 | emit "$r" "amber_$backend" >> "$RES"
    python3 "$SHARED/loadgen.py" small --protocol amber --repo bench/blobs --base "$AMBER_BASE" --token "$TOKEN" --label "amber_$backend" \
      --count "$SMALL_COUNT" --size 4096 --concurrency "$CONC" --server-pid "$AMBER_PID" --max-seconds 120 | emit "$r" "amber_$backend" >> "$RES"
    # The same through the OCI front door (/v2/), the workload the registry gets.
    python3 "$SHARED/loadgen.py" large --protocol oci --repo bench/oci --base "$AMBER_BASE" --token "$TOKEN" --label "amber_oci_$backend" \
      --file "$OUT/blob" --unique --server-pid "$AMBER_PID" --max-seconds 300 | emit "$r" "amber_oci_$backend" >> "$RES"
    python3 "$SHARED/loadgen.py" small --protocol oci --repo bench/oci --base "$AMBER_BASE" --token "$TOKEN" --label "amber_oci_$backend" \
      --count "$SMALL_COUNT" --size 4096 --concurrency "$CONC" --server-pid "$AMBER_PID" --max-seconds 120 | emit "$r" "amber_oci_$backend" >> "$RES"
    evict_large_blobs
  done
  # The Rust client: small blobs without Python in the way, and a CI-shaped tree.
  AMBER_URL="$AMBER_BASE" AMBER_TOKEN="$TOKEN" "$BIN/amber" bench small --count "$SMALL_COUNT" --concurrency "$CONC" --server-pid "$AMBER_PID" | tee "$OUT/amber-bench-small-$backend.txt"
  AMBER_URL="$AMBER_BASE" AMBER_TOKEN="$TOKEN" "$BIN/amber" bench tree --server-pid "$AMBER_PID" | tee "$OUT/amber-bench-tree-$backend.txt"
  stop_amber
done

ROUNDS="$ROUNDS" SIZE_MB="$SIZE_MB" OUT="$OUT/limits.tsv" bash "$SHARED/limits.sh"
ROUNDS="$ROUNDS" SIZE_MB="$SIZE_MB" SMALL_COUNT="$SMALL_COUNT" CONC="$CONC" OUT="$OUT/peer.tsv" bash "$SHARED/peer-registry.sh"
cat "$OUT"/amber-*.tsv "$OUT/limits.tsv" "$OUT/peer.tsv" > "$OUT/all.tsv"
python3 "$SHARED/summarize.py" "$OUT/all.tsv" --baseline large.nginx.push | tee "$OUT/summary.txt"
