#!/usr/bin/env bash
# The console's figures: first load of /ui/ and the in-browser verification
# of an audit log of N entries (headless Chromium through Playwright).
#   bench/console-audit.sh target/release/amberd 100000
# Fills the log with N token creations (each one audit entry) over HTTP on
# 127.0.0.1, then runs tests/tools/console-bench.mjs. Needs `npm ci --prefix
# tests/tools` and /usr/bin/chromium.
set -euo pipefail
amberd=$(realpath "$1")
entries=${2:-100000}
here=$(cd "$(dirname "$0")/.." && pwd)
dir=$(mktemp -d)
trap 'kill "$pid" 2>/dev/null || true; rm -rf "$dir"' EXIT
admin=$("$amberd" token create --admin --name bench --data-dir "$dir" 2>/dev/null)
port=$((20000 + RANDOM % 20000))
"$amberd" --listen "127.0.0.1:$port" --data-dir "$dir" >"$dir/log" 2>&1 &
pid=$!
for _ in $(seq 100); do curl -fs -o /dev/null "http://127.0.0.1:$port/healthz" && break; sleep 0.1; done
started=$(date +%s)
python3 - "$port" "$admin" "$entries" <<'PY'
import http.client, json, sys, threading
port, admin, total = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
def fill(count):
    conn = http.client.HTTPConnection("127.0.0.1", port)
    body = json.dumps({"name": "filler", "grants": [{"repos": "acme/web", "actions": ["pull"]}], "expires_in": 3600})
    for _ in range(count):
        conn.request("POST", "/v1/tokens", body, {"Authorization": f"Bearer {admin}", "Content-Type": "application/json"})
        response = conn.getresponse()
        response.read()
        assert response.status == 201, response.status
threads = [threading.Thread(target=fill, args=(total // 8 + (1 if i < total % 8 else 0),)) for i in range(8)]
for t in threads: t.start()
for t in threads: t.join()
PY
echo "filled $entries entries in $(( $(date +%s) - started )) s"
# The checkpoint covers them all within --log-interval.
sleep 1
AMBER_URL="http://127.0.0.1:$port" AMBER_ADMIN="$admin" node "$here/tests/tools/console-bench.mjs"
echo "amberd peak RSS: $(grep VmHWM /proc/$pid/status | awk '{print $2}') KiB"
