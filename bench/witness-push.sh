#!/usr/bin/env bash
# 4 KiB pushes at concurrency 16 with and without a witness, in one sitting:
# a real litewitness (pinned in ../shared/tools/go-tools.sh) cosigning every
# checkpoint of the "with" rounds, alternated ABBA with rounds that have no
# witness, each on a fresh store. Prints loadgen's JSON per round.
#   bench/witness-push.sh [ROUNDS]
# Needs a release build (target/release/amberd) and AMBER_GO_TOOLS_BIN (or
# the default cache). Loopback only; every process it starts is stopped by PID.
set -euo pipefail
rounds=${1:-4}
here=$(cd "$(dirname "$0")/.." && pwd)
amberd="$here/target/release/amberd"
loadgen=${LOADGEN:-$here/../shared/bench/loadgen.py}
tools=${AMBER_GO_TOOLS_BIN:-/var/cache/amber-go-tools/bin}
work=$(mktemp -d /tmp/bench-witness-XXXXXX)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# The witness: its key in an ssh-agent of its own.
name=bench.test/witness
ssh-keygen -q -t ed25519 -N '' -C witness -f "$work/witness_key"
sock="/tmp/bw-$$.sock"
ssh-agent -D -a "$sock" >/dev/null 2>&1 & pids+=($!)
for _ in $(seq 100); do [ -S "$sock" ] && break; sleep 0.05; done
SSH_AUTH_SOCK="$sock" ssh-add -q "$work/witness_key"
fingerprint=$(ssh-keygen -l -E sha256 -f "$work/witness_key.pub" | awk '{print $2}')
vkey=$(python3 - "$name" "$work/witness_key.pub" <<'PY'
import base64, hashlib, sys
name, pub = sys.argv[1], open(sys.argv[2]).read().split()[1]
key = base64.b64decode(pub)[-32:]
kid = hashlib.sha256(name.encode() + b"\n" + b"\x04" + key).digest()[:4]
typed = base64.b64encode(bytes([4]) + key).decode()
print(f"{name}+{kid.hex()}+{typed}")
PY
)
wport=$(free_port)
"$tools/litewitness" -name "$name" -key "$fingerprint" -ssh-agent "$sock" -db "$work/witness.db" \
  -listen "127.0.0.1:$wport" >/dev/null 2>&1 & pids+=($!)
cat > "$work/witnessed.toml" <<EOF
[log]
witness_quorum = 1

[[log.witnesses]]
name = "$name"
vkey = "$vkey"
url = "http://127.0.0.1:$wport"
EOF

round() { # label round
  local dir="$work/$1-$2" port; port=$(free_port)
  local args=(); [ "$1" = witness ] && args=(--config "$work/witnessed.toml")
  local admin; admin=$("$amberd" token create --admin --name bench --data-dir "$dir" "${args[@]}" 2>/dev/null)
  AMBER_LOG=warn "$amberd" --data-dir "$dir" --listen "127.0.0.1:$port" "${args[@]}" >"$work/amberd-$1-$2.log" 2>&1 &
  local pid=$!; pids+=($pid)
  for _ in $(seq 50); do curl -fs "http://127.0.0.1:$port/healthz" >/dev/null && break; sleep 0.1; done
  if [ "$1" = witness ]; then
    local logkey; logkey=$(curl -fs "http://127.0.0.1:$port/v1/keys" | python3 -c \
      'import sys,json; print(next(k["vkey"] for k in json.load(sys.stdin)["keys"] if k["purpose"] == "log"))')
    "$tools/witnessctl" add-log -db "$work/witness.db" -origin "${logkey%%+*}"
    "$tools/witnessctl" add-key -db "$work/witness.db" -origin "${logkey%%+*}" -key "$logkey"
  fi
  local token; token=$(curl -fs -XPOST -H "Authorization: Bearer $admin" \
    -d '{"name":"bench","grants":[{"repos":"bench/*","actions":["push","pull"]}]}' \
    "http://127.0.0.1:$port/v1/tokens" | python3 -c 'import sys,json;print(json.load(sys.stdin)["token"])')
  python3 "$loadgen" small --protocol amber --repo bench/blobs --base "http://127.0.0.1:$port" --token "$token" \
    --count 4000 --size 4096 --concurrency 16 --phases push --server-pid "$pid" --label "$1" --max-seconds 120
  if [ "$1" = witness ]; then
    curl -fs "http://127.0.0.1:$port/v1/log/checkpoint" | grep -c "^— $name " | sed 's/^/cosignatures on the served checkpoint: /' >&2
  fi
  kill "$pid"; wait "$pid" 2>/dev/null || true
}
for r in $(seq "$rounds"); do
  if [ $((r % 2)) -eq 1 ]; then round none "$r"; round witness "$r"; else round witness "$r"; round none "$r"; fi
done
