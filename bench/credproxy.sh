#!/usr/bin/env bash
# warden's credential proxy vs Codex's `codex responses-api-proxy` vs direct, against the same fake
# Responses upstream (each party its own process, all on 127.0.0.1): time to first SSE byte (p50/p99)
# and throughput of a streamed body (default 100 MB), at concurrency 1 and 64. Prints a Markdown table.
#
# Usage: bench/credproxy.sh [--mb N] [--ttfb-requests N] [--rounds N] [--events N] [--pace-us N] [--only ttfb,mb,sse]
# Also: SSE per-event one-way latency (10,000 stamped events 100 µs apart, direct vs proxied) and
# summary<TAB>measure<TAB>value<TAB>goal lines at the end (bench/all.sh collects them).
# Env: CODEX_BIN (a codex binary; else scripts/install-codex.sh installs @openai/codex@0.169.0),
#      NO_CODEX=1 to skip Codex, WARDEN_BENCH_PROXY_THREADS (proxy runtime workers).
set -euo pipefail
cd "$(dirname "$0")/.."

codex=""
if [[ -z "${NO_CODEX:-}" ]]; then
  if [[ -n "${CODEX_BIN:-}" ]]; then
    codex=$CODEX_BIN
  elif ! codex=$(scripts/install-codex.sh); then
    echo "credproxy.sh: could not install the Codex CLI; running without it" >&2
    codex=""
  fi
fi

cargo build --release -q -p warden-credproxy --example credproxy_bench
bin=target/x86_64-unknown-linux-gnu/release/examples/credproxy_bench
[[ -x $bin ]] || bin=target/release/examples/credproxy_bench

args=("$@")
[[ -n "$codex" ]] && args+=(--codex "$codex")
echo "# $(date -u +%FT%TZ) $(nproc) cores; codex: ${codex:-none}" >&2
exec "$bin" "${args[@]}"
