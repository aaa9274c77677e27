#!/bin/bash
# usage: rss-phases.sh LABEL [ENV=VALUE...]: the side-by-side phases (1 GiB and 2 000 4 KiB pushes through /v1/ and /v2/) twice on a fresh release amberd, then its peak and current RSS. BLOB: a 1 GiB file.
set -e
label=$1; shift
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
base=http://127.0.0.1:$port
shared=$(cd "$(dirname "$0")/../../shared/bench" && pwd)
dir=$(mktemp -d /tmp/rss.XXXX); B="$(cd "$(dirname "$0")/.." && pwd)/target/release"
admin=$($B/amberd token create --admin --name b --data-dir $dir 2>/dev/null)
env "$@" AMBER_LOG=warn $B/amberd --listen 127.0.0.1:$port --data-dir $dir >/dev/null 2>&1 & pid=$!
until curl -fs -o /dev/null $base/healthz; do sleep 0.1; done
tok=$(AMBER_URL=$base AMBER_TOKEN=$admin $B/amber token create --name b --grant 'bench/*=push,pull' 2>/dev/null)
for r in 1 2; do
python3 $shared/loadgen.py large --protocol amber --repo bench/blobs --base $base --token $tok --file ${BLOB:-/tmp/amber-bench/blob} --unique --server-pid $pid --max-seconds 120 >/dev/null
python3 $shared/loadgen.py small --protocol amber --repo bench/blobs --base $base --token $tok --count 2000 --size 4096 --concurrency 16 --server-pid $pid --max-seconds 60 > /dev/null
python3 $shared/loadgen.py large --protocol oci --repo bench/oci --base $base --token $tok --file ${BLOB:-/tmp/amber-bench/blob} --unique --server-pid $pid --max-seconds 120 >/dev/null
python3 $shared/loadgen.py small --protocol oci --repo bench/oci --base $base --token $tok --count 2000 --size 4096 --concurrency 16 --server-pid $pid --max-seconds 60 >/dev/null
done
echo "$label peak $(grep VmHWM /proc/$pid/status) now $(grep VmRSS /proc/$pid/status)"
kill $pid; wait $pid 2>/dev/null; rm -rf $dir
