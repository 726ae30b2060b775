#!/usr/bin/env bash
# warden serve (issue 12): the gateway's overhead on a fake-worker turn next to driving the pool
# directly; requests per second through an in-process gateway and through the real `warden serve`
# (fake workers in warden's sandbox); 1,000 concurrent SSE streams against
# `warden serve --workers 4 --worker-concurrency 256` with the gateway's RSS; client disconnect to
# `turn/interrupt` at the worker. One driver process (crates/warden-gateway/examples/serve_bench.rs),
# release builds; the testkit's fake worker stands in for Codex, nothing talks to a model.
#
#     bash bench/serve.sh [TURNS] [SECS] [STREAMS] [DRIVER OPTION]...   (defaults 2000, 10 and 1000)
#
# Driver options: --conns N (64), --rps-workers N (2), --rps-concurrency M (4), --stream-deltas N
# (10), --delta-ms N (200), --tries N (20), --only overhead|rps|streams|disconnect.
# Installs nothing. Raises the soft open-files limit (the driver and warden serve hold one socket
# per stream). The slow fake worker's wrapper goes under target/ (the sandbox hides /tmp and
# /var/tmp from workers), the workers' homes under /var/tmp; both are removed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
turns=${1:-2000}
secs=${2:-10}
streams=${3:-1000}
shift $(($# < 3 ? $# : 3))
cargo build --release --locked -q -p warden-cli -p warden-testkit --bins
cargo build --release --locked -q -p warden-gateway --example serve_bench
rel=$PWD/target/x86_64-unknown-linux-gnu/release
need=$((streams + 512))
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt "$need" ]; then
  ulimit -n "$need" 2>/dev/null || ulimit -n "$(ulimit -Hn)"
fi
scratch=$(mktemp -d "$PWD/target/serve-bench.XXXXXX")
homes=$(mktemp -d /var/tmp/warden-serve-bench.XXXXXX)
trap 'rm -rf "$scratch" "$homes"' EXIT
cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)
echo "serve bench: $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores ($cpu), kernel $(uname -r), open files $(ulimit -n), load $(cut -d' ' -f1-3 /proc/loadavg)"
"$rel/examples/serve_bench" --warden "$rel/warden" --fake "$rel/fake-worker" --scratch "$scratch" \
  --home-base "$homes" --turns "$turns" --secs "$secs" --streams "$streams" "$@"
echo "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg) (other work on the machine skews every figure)"
