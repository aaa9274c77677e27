#!/usr/bin/env bash
# 1 GiB through `amber push`: one PUT (the file is smaller than --part-size)
# against 4 parallel resumable parts (--part-size 256 MiB --parallel 4), in
# one sitting, alternating which goes first. Each push is to a fresh amberd
# (so nothing is deduplicated); reported per push: wall time, MiB/s, the
# server's CPU (user + system) per GiB and its peak RSS.
#   [FILL_PAGE_CACHE=1] [SLOW_LINK=1] bench/parallel-push.sh AMBERD AMBER [ROUNDS] [fs|s3]
# SLOW_LINK=1 pushes through bench/slow-link.py (each TCP connection held to
# 25 MiB/s, 20 ms added each way: a long link's per-stream limit).
# s3: blobs in moto (AMBER_BENCH_S3, default http://127.0.0.1:5917, started
# by the caller) and metadata in PostgreSQL on 127.0.0.1:5432 (a database
# made and dropped per push). Loopback only; every server it starts is
# stopped by PID; data in /tmp/bench-pp-*.
set -euo pipefail
amberd=$1 amber=$2 rounds=${3:-3} backend=${4:-fs}
work=$(mktemp -d /tmp/bench-pp-XXXXXX)
pid= proxy=
cleanup() {
  [ -n "$pid" ] && kill "$pid" 2>/dev/null || true
  [ -n "$proxy" ] && kill "$proxy" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
head -c $((1 << 30)) /dev/urandom > "$work/image.bin"
# FILL_PAGE_CACHE=1 fills the page cache first with a throwaway file, as on
# a server that has run a while (on this VM page cache that grows into free
# memory costs 2-5 CPU-s per GiB written: BENCHMARKS.md).
if [ "${FILL_PAGE_CACHE:-0}" = 1 ]; then
  fill_mb=$(( $(awk '/MemAvailable/ {print int($2 / 1024)}' /proc/meminfo) - 6144 ))
  [ "$fill_mb" -gt 0 ] && head -c $((fill_mb << 20)) /dev/zero > "$work/page-cache-filler"
fi
# CLIENT_TIME=1: the client's own CPU (user + system) per push, too.
client=("$amber")
if [ "${CLIENT_TIME:-0}" = 1 ]; then
  client=(/usr/bin/time -f '{"client_cpu_s": %U + %S}' "$amber")
fi
ticks=$(getconf CLK_TCK)
bucket() { # create|delete NAME
  python3 - "$@" <<'PY'
import os, sys, boto3
s3 = boto3.resource("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"], aws_access_key_id="test",
                    aws_secret_access_key="test", region_name="us-east-1")
if sys.argv[1] == "create":
    s3.create_bucket(Bucket=sys.argv[2])
else:
    bucket = s3.Bucket(sys.argv[2])
    bucket.objects.all().delete()
    bucket.delete()
PY
}
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
push() { # mode round
  local dir="$work/$1-$2" port=$((7600 + RANDOM % 300)) args=()
  if [ "$backend" = s3 ]; then
    local db="bench_pp_$1_$2"
    psql -q -h 127.0.0.1 -U postgres -c "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db" postgres
    export AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_REGION=us-east-1 AWS_ENDPOINT_URL=${AMBER_BENCH_S3:-http://127.0.0.1:5917}
    bucket create "${db//_/-}"
    args=(--blobs "s3://${db//_/-}/amber" --s3-path-style --meta "postgres://postgres@127.0.0.1:5432/$db")
  fi
  local admin; admin=$("$amberd" token create --admin --name bench --data-dir "$dir" "${args[@]}" 2>/dev/null)
  AMBER_LOG=warn "$amberd" --data-dir "$dir" --listen "127.0.0.1:$port" --max-blob-size $((2 << 30)) "${args[@]}" >/dev/null 2>&1 &
  pid=$!
  for _ in $(seq 100); do curl -fs "http://127.0.0.1:$port/healthz" >/dev/null && break; sleep 0.1; done
  local token; token=$(curl -fs -XPOST -H "Authorization: Bearer $admin" \
    -d '{"name":"bench","grants":[{"repos":"bench/*","actions":["push","pull"]}]}' \
    "http://127.0.0.1:$port/v1/tokens" | python3 -c 'import sys,json;print(json.load(sys.stdin)["token"])')
  local flags=(--part-size $((2 << 30)))
  [ "$1" = parallel ] && flags=(--part-size $((256 << 20)) --parallel 4)
  local url="http://127.0.0.1:$port"
  if [ "${SLOW_LINK:-0}" = 1 ]; then
    local lport=$((port + 1000))
    python3 "$(dirname "$0")/slow-link.py" "$lport" "$port" --max-seconds 600 & proxy=$!
    for _ in $(seq 100); do curl -fs "http://127.0.0.1:$lport/healthz" >/dev/null && break; sleep 0.1; done
    url="http://127.0.0.1:$lport"
  fi
  local before; before=$(cpu_ticks "$pid")
  local start; start=$(date +%s.%N)
  AMBER_URL="$url" AMBER_TOKEN=$token "${client[@]}" push "bench/image:$2" "$work/image.bin" "${flags[@]}" --json >/dev/null
  local end; end=$(date +%s.%N)
  local after; after=$(cpu_ticks "$pid")
  local rss; rss=$(awk '/VmHWM/{print $2}' "/proc/$pid/status")
  python3 -c "import json,sys; w=$end-$start; print(json.dumps({'mode':'$1','round':$2,'backend':'$backend','slow_link':${SLOW_LINK:-0},'seconds':round(w,3),'mib_per_s':round(1024/w,1),'server_cpu_s_per_gib':round(($after-$before)/$ticks,3),'server_peak_rss_mib':round($rss/1024,1)}))"
  kill "$pid"; wait "$pid" 2>/dev/null || true; pid=
  if [ -n "$proxy" ]; then kill "$proxy"; wait "$proxy" 2>/dev/null || true; proxy=; fi
  if [ "$backend" = s3 ]; then
    psql -q -h 127.0.0.1 -U postgres -c "DROP DATABASE IF EXISTS bench_pp_$1_$2" postgres
    bucket delete "bench-pp-$1-$2" # moto keeps objects in memory
  fi
}
for r in $(seq "$rounds"); do
  if [ $((r % 2)) -eq 1 ]; then push single "$r"; push parallel "$r"; else push parallel "$r"; push single "$r"; fi
done
