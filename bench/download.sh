#!/usr/bin/env bash
# The verified download in one sitting: `b3sum --num-threads 1` of a 1 GiB
# file against amberd serving the same bytes (`GET /v1/.../blobs/...`, every
# byte hashed and checked before the last chunk leaves) and nginx-free plain
# reading (`cat > /dev/null`), alternating, page cache warm for all of them.
#   bench/download.sh AMBERD AMBER [ROUNDS] [SIZE_MB]
# Loopback only; the amberd it starts is stopped by PID; data in /tmp.
set -euo pipefail
amberd=$1 amber=$2 rounds=${3:-5} size_mb=${4:-1024}
SHARED=${SHARED:-$(cd "$(dirname "$0")/../../shared/bench" && pwd)}
work=$(mktemp -d /tmp/bench-dl-XXXXXX)
pid=
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
head -c $((size_mb << 20)) /dev/urandom > "$work/blob"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
admin=$("$amberd" token create --admin --name bench --data-dir "$work/store" 2>/dev/null)
AMBER_LOG=warn "$amberd" --listen "127.0.0.1:$port" --data-dir "$work/store" >"$work/amberd.log" 2>&1 & pid=$!
base=http://127.0.0.1:$port
until curl -fs -o /dev/null "$base/healthz"; do sleep 0.1; done
token=$(AMBER_URL=$base AMBER_TOKEN=$admin "$amber" token create --name bench --grant 'bench/*=push,pull' 2>/dev/null)
digest=$(python3 "$SHARED/loadgen.py" large --protocol amber --repo bench/dl --base "$base" --token "$token" \
  --file "$work/blob" --phases push --max-seconds 300 | python3 -c 'import json,sys; print(json.load(sys.stdin)["digest"])')
cat "$work/blob" > /dev/null
gbps() { python3 -c "print(round($((size_mb << 20)) / $1 / 1e9, 3))"; }
for r in $(seq 1 "$rounds"); do
  t0=$(date +%s.%N); b3sum --num-threads 1 --no-names "$work/blob" >/dev/null; t1=$(date +%s.%N)
  b3=$(python3 -c "print($t1 - $t0)")
  t0=$(date +%s.%N); b3sum --num-threads 1 --no-names < "$work/blob" >/dev/null; t1=$(date +%s.%N)
  b3in=$(python3 -c "print($t1 - $t0)")
  get=$(python3 "$SHARED/loadgen.py" large --protocol amber --repo bench/dl --base "$base" --token "$token" \
    --file "$work/blob" --digest "$digest" --phases get --server-pid "$pid" --max-seconds 300)
  t0=$(date +%s.%N); curl -fsS -H "Authorization: Bearer $token" -o /dev/null "$base/v1/repos/bench/dl/blobs/blake3:$digest"; t1=$(date +%s.%N)
  curl_s=$(python3 -c "print($t1 - $t0)")
  python3 - "$r" "$(gbps "$b3")" "$(gbps "$b3in")" "$(gbps "$curl_s")" "$get" <<'PY'
import json, sys
r, b3, b3in, curl, get = sys.argv[1:]
g = json.loads(get)
amber = g["mb_per_s"] / 1000
print(json.dumps({"round": int(r), "b3sum_1t_GBps": float(b3), "b3sum_1t_stdin_GBps": float(b3in),
                  "amber_get_GBps": amber, "amber_get_curl_GBps": float(curl),
                  "ratio_vs_b3sum_1t": round(amber / float(b3), 3),
                  "server_cpu_s": g.get("server_cpu_s"), "server_peak_rss_MiB": g.get("server_peak_rss_mb")}))
PY
done
