#!/bin/bash
# usage: rss-phases.sh LABEL [ENV=VALUE...]: the side-by-side phases (1 GiB and 2 000 4 KiB pushes through /v1/ and /v2/) twice on a fresh release amberd, then its peak and current RSS. BLOB: a 1 GiB file.
set -e
label=$1; shift
dir=$(mktemp -d /tmp/rss.XXXX); B=/work/main/target/release
admin=$($B/amberd token create --admin --name b --data-dir $dir 2>/dev/null)
env "$@" AMBER_LOG=warn $B/amberd --listen 127.0.0.1:7813 --data-dir $dir >/dev/null 2>&1 & pid=$!
until curl -fs -o /dev/null http://127.0.0.1:7813/healthz; do sleep 0.1; done
tok=$(AMBER_URL=http://127.0.0.1:7813 AMBER_TOKEN=$admin $B/amber token create --name b --grant 'bench/*=push,pull' 2>/dev/null)
for r in 1 2; do
python3 /work/shared/bench/loadgen.py large --protocol amber --repo bench/blobs --base http://127.0.0.1:7813 --token $tok --file ${BLOB:-/tmp/amber-bench/blob} --unique --server-pid $pid --max-seconds 120 >/dev/null
python3 /work/shared/bench/loadgen.py small --protocol amber --repo bench/blobs --base http://127.0.0.1:7813 --token $tok --count 2000 --size 4096 --concurrency 16 --server-pid $pid --max-seconds 60 > /dev/null
python3 /work/shared/bench/loadgen.py large --protocol oci --repo bench/oci --base http://127.0.0.1:7813 --token $tok --file ${BLOB:-/tmp/amber-bench/blob} --unique --server-pid $pid --max-seconds 120 >/dev/null
python3 /work/shared/bench/loadgen.py small --protocol oci --repo bench/oci --base http://127.0.0.1:7813 --token $tok --count 2000 --size 4096 --concurrency 16 --server-pid $pid --max-seconds 60 >/dev/null
done
echo "$label peak $(grep VmHWM /proc/$pid/status) now $(grep VmRSS /proc/$pid/status)"
kill $pid; wait $pid 2>/dev/null; rm -rf $dir
