#!/usr/bin/env bash
# `warden codex`'s cost at start: Codex 0.169.0 printing its version bare, through `warden run`
# (the sandbox alone) and through `warden codex` (home preparation, config copy check, prompts,
# credential proxy, the sandbox), side by side in one hyperfine run; prints the ratios.
#
#     bash bench/codex.sh [RUNS]      (default 50)
#
# Installs hyperfine (apt) and Codex (scripts/install-codex.sh) unless present. The project and
# the per-project home go under /var/tmp and are removed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-50}
command -v hyperfine >/dev/null || { apt-get update -qq && apt-get install -y -qq hyperfine jq >/dev/null; }
codex_bin=${WARDEN_CODEX_BIN:-$(bash scripts/install-codex.sh)}
cargo build --release --locked -q -p warden-cli
warden=$PWD/target/x86_64-unknown-linux-gnu/release/warden
base=$(mktemp -d /var/tmp/warden-codex-bench.XXXXXX)
# The audit log lies outside the directory of the project (warden refuses to let a run see it).
trap 'rm -rf "$base"' EXIT
mkdir -p "$base/w/project" "$base/data" "$base/audit"
export XDG_DATA_HOME=$base/data WARDEN_BENCH_KEY=sk-bench-0123456789
cd "$base/w/project"
echo "codex bench: $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, kernel $(uname -r), $("$codex_bin" --version)"
hyperfine -N --warmup 5 --runs "$runs" --export-json "$base/r.json" \
  -n bare "$codex_bin --version" \
  -n 'warden run' "$warden run --no-audit -p workspace-write -- $codex_bin --version" \
  -n 'warden codex' "$warden codex --no-audit --codex-bin $codex_bin --credential-env WARDEN_BENCH_KEY -- --version" \
  -n 'warden codex, audit on' "$warden codex --audit-log $base/audit/audit.jsonl --codex-bin $codex_bin --credential-env WARDEN_BENCH_KEY -- --version" \
  >/dev/null
jq -r '.results as $r | ($r[0].median) as $b | $r[] |
  "\(.command)\tmedian \(.median*1000*100|round/100) ms\t(+\((.median-$b)*1000*100|round/100) ms, \(.median/$b*100|round/100)x bare)"' \
  "$base/r.json" | column -t -s $'\t'
jq -r '.results as $r | ($r[0].median) as $b | $r[] | select(.command == "warden codex")
  | "summary\twarden codex -- --version vs codex --version\t+\((.median - $b) * 1000 | . * 100 | round / 100) ms\t"' "$base/r.json"
