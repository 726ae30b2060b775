#!/usr/bin/env bash
# Agent workers: cold start (spawn until `initialize` answered) of the testkit's fake worker and of
# real Codex 0.169.0, bare next to inside warden's sandbox; 8 sandboxed workers started at once;
# a turn through warden-agent's pool next to driving the fake worker's connection directly.
# Alternating in one driver process (crates/warden-agent/examples/agent_bench.rs), release builds.
#
#     bash bench/agent.sh [RUNS] [TURNS]      (defaults 30 and 2000)
#
# Installs Codex from npm (scripts/install-codex.sh) unless $WARDEN_CODEX_BIN names it. The worker
# homes go under /var/tmp (Codex refuses a CODEX_HOME under TMPDIR) and are removed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-30}
turns=${2:-2000}
codex_bin=${WARDEN_CODEX_BIN:-$(bash scripts/install-codex.sh)}
cargo build --release --locked -q -p warden-cli -p warden-testkit --bins
cargo build --release --locked -q -p warden-agent --example agent_bench
rel=$PWD/target/x86_64-unknown-linux-gnu/release
base=$(mktemp -d /var/tmp/warden-agent-bench.XXXXXX)
trap 'rm -rf "$base"' EXIT
echo "agent bench: $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, kernel $(uname -r), $("$codex_bin" --version)"
"$rel/examples/agent_bench" --warden "$rel/warden" --fake "$rel/fake-worker" --codex "$codex_bin" \
  --home-base "$base" --runs "$runs" --turns "$turns"
