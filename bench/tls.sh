#!/usr/bin/env bash
# HTTPS against plain HTTP, in one sitting: two amberd on loopback (one with
# --tls-cert/--tls-key from a CA made here with openssl), the same `amber
# bench small` (4 KiB push, HEAD, GET at concurrency 16) and `amber bench
# large` (1 GiB up and down) against each, alternating which goes first.
#   bench/tls.sh AMBERD AMBER [ROUNDS]
# Loopback only; both servers are stopped by PID; data in /tmp.
set -euo pipefail
amberd=$(realpath "$1") amber=$(realpath "$2") rounds=${3:-2}
work=$(mktemp -d /tmp/bench-tls-XXXXXX)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT
cd "$work"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key -out ca.pem \
  -days 1 -subj /CN=bench-ca 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout server.key -out server.csr \
  -subj /CN=127.0.0.1 2>/dev/null
printf 'subjectAltName=IP:127.0.0.1\n' > san.ext
openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out server.pem -days 1 \
  -extfile san.ext 2>/dev/null
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
start() { # start NAME SCHEME [args...] -> NAME.url NAME.token NAME.pid
  local name=$1 scheme=$2; shift 2
  local port; port=$(free_port)
  local admin; admin=$("$amberd" token create --admin --name bench --data-dir "$work/$name" 2>/dev/null)
  AMBER_LOG=warn "$amberd" --listen "127.0.0.1:$port" --data-dir "$work/$name" --scrub-rate 0 "$@" \
    >"$work/$name.log" 2>&1 &
  pids+=($!); echo $! > "$name.pid"
  local url="$scheme://127.0.0.1:$port"
  until curl -fs --cacert ca.pem -o /dev/null "$url/healthz"; do sleep 0.1; done
  echo "$url" > "$name.url"
  AMBER_URL=$url AMBER_TOKEN=$admin "$amber" --ca-cert ca.pem token create --name bench \
    --grant 'bench/*=push,pull' 2>/dev/null > "$name.token"
}
start plain http
start tls https --tls-cert server.pem --tls-key server.key
run() { # run NAME ROUND
  local url token pid
  url=$(cat "$1.url") token=$(cat "$1.token") pid=$(cat "$1.pid")
  for kind in small large; do
    AMBER_URL=$url AMBER_TOKEN=$token "$amber" --ca-cert ca.pem bench "$kind" --json --server-pid "$pid" \
      --repo "bench/$kind$2" | python3 -c "
import json, sys
for line in sys.stdin:
    d = json.loads(line); d['server'] = '$1'; d['round'] = $2; print(json.dumps(d))"
  done
}
for r in $(seq 1 "$rounds"); do
  if [ $((r % 2)) -eq 1 ]; then run plain "$r"; run tls "$r"; else run tls "$r"; run plain "$r"; fi
done
