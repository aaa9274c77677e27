#!/usr/bin/env bash
# A/B: 4 KiB pushes at concurrency 16 through two amberd binaries, in one
# sitting, in ABBA order so that the machine's drift (ext4's inode allocator
# slows as files come and go) falls on both alike.
#   bench/ab-small-push.sh OLD_AMBERD NEW_AMBERD [ROUNDS]
# Loopback only; every server it starts is stopped by PID; data in /tmp/bench-ab-*.
set -euo pipefail
old=$1 new=$2 rounds=${3:-5}
loadgen=${LOADGEN:-$(dirname "$0")/../../shared/bench/loadgen.py}
work=$(mktemp -d /tmp/bench-ab-XXXXXX)
pid=
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
round() { # label binary round
  local dir="$work/$1-$3" port=$((7600 + RANDOM % 300))
  local admin; admin=$("$2" token create --admin --name bench --data-dir "$dir" 2>/dev/null)
  AMBER_LOG=warn "$2" --data-dir "$dir" --listen "127.0.0.1:$port" >/dev/null 2>&1 &
  pid=$!
  for _ in $(seq 50); do curl -fs "http://127.0.0.1:$port/healthz" >/dev/null && break; sleep 0.1; done
  local token; token=$(curl -fs -XPOST -H "Authorization: Bearer $admin" \
    -d '{"name":"bench","grants":[{"repos":"bench/*","actions":["push","pull"]}]}' \
    "http://127.0.0.1:$port/v1/tokens" | python3 -c 'import sys,json;print(json.load(sys.stdin)["token"])')
  python3 "$loadgen" small --protocol amber --repo bench/blobs --base "http://127.0.0.1:$port" --token "$token" \
    --count 4000 --size 4096 --concurrency 16 --phases push --server-pid "$pid" --label "$1" --max-seconds 120
  kill "$pid"; wait "$pid" 2>/dev/null || true; pid=
}
for r in $(seq "$rounds"); do
  if [ $((r % 2)) -eq 1 ]; then
    round old "$old" "$r"; round new "$new" "$r"
  else
    round new "$new" "$r"; round old "$old" "$r"
  fi
done
