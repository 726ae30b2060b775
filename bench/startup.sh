#!/usr/bin/env bash
# Startup latency of `warden run` against its peers, in one hyperfine run.
#
#   bench/startup.sh [RUNS]        (default 300 runs per command, 30 warmup)
#
# Installs its peers when missing (Debian: hyperfine, bubblewrap; npm: @openai/codex@0.169.0 via
# scripts/install-codex.sh), keeps Codex's PATH aliases and home in $WARDEN_BENCH_DIR (default
# /var/tmp/warden-bench), builds warden in release mode, and prints hyperfine's table plus each
# median as a ratio of bwrap's. Last, the spawn path of warden-session (a tokio program starting
# `true` through `warden __session`) next to `warden run -- true`, alternating in one driver
# (crates/warden-session/examples/spawn_bench.rs), with and without the audit log.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-300}
bench_dir=${WARDEN_BENCH_DIR:-/var/tmp/warden-bench}

. bench/lib.sh
bench_need hyperfine:hyperfine bwrap:bubblewrap jq:jq
mkdir -p "$bench_dir"
codex_bin=$(scripts/install-codex.sh)
mkdir -p "$bench_dir/pathbin" "$bench_dir/codex-home"
# codex dispatches on argv[0]: `codex sandbox` re-executes itself as codex-linux-sandbox.
ln -sf "$codex_bin" "$bench_dir/pathbin/codex-linux-sandbox"
ln -sf "$codex_bin" "$bench_dir/pathbin/codex"

cargo build --release --locked -q -p warden-cli
cargo build --release --locked -q -p warden-session --example spawn_bench
warden=$PWD/target/x86_64-unknown-linux-gnu/release/warden
spawn_bench=$PWD/target/x86_64-unknown-linux-gnu/release/examples/spawn_bench
work=$(mktemp -d /var/tmp/warden-bench-work.XXXXXX)
trap 'rm -rf "$work"' EXIT
# The workdir is writable in workspace-write, so the audit log lives beside it, not inside it
# (warden refuses a writable root that contains its state directory).
mkdir -p "$work/wd"
cd "$work/wd"

export PATH="$bench_dir/pathbin:$PATH" CODEX_HOME="$bench_dir/codex-home"
par8_warden="for i in 1 2 3 4 5 6 7 8; do $warden run -- true 2>/dev/null & done; wait"
export XDG_STATE_HOME="$work/state"   # the audit log of these runs goes to the temp dir
par8_bwrap="for i in 1 2 3 4 5 6 7 8; do bwrap --unshare-all --die-with-parent --ro-bind / / --dev /dev --proc /proc --tmpfs /tmp true & done; wait"
par32_warden="for i in \$(seq 32); do $warden run -- true 2>/dev/null & done; wait"
par32_bwrap="for i in \$(seq 32); do bwrap --unshare-all --die-with-parent --ro-bind / / --dev /dev --proc /proc --tmpfs /tmp true & done; wait"

echo "machine: $(nproc) cores, $(uname -r), $(id -un); $(date -u +%Y-%m-%dT%H:%MZ)"
hyperfine -N --warmup 30 --runs "$runs" --export-json "$work/startup.json" \
  -n 'true' 'true' \
  -n 'warden offline' "$warden run -p offline -- true" \
  -n 'warden offline --no-audit' "$warden run --no-audit -p offline -- true" \
  -n 'warden workspace-write' "$warden run -p workspace-write -- true" \
  -n 'warden workspace-write --no-audit' "$warden run --no-audit -p workspace-write -- true" \
  -n 'bwrap' 'bwrap --unshare-all --die-with-parent --ro-bind / / --dev /dev --proc /proc --tmpfs /tmp true' \
  -n 'codex sandbox' 'codex sandbox -- true' 2> >(grep -v '^warden: warning' >&2)
hyperfine --warmup 5 --runs "$(( runs / 5 ))" --export-json "$work/parallel.json" \
  -n 'warden x8 parallel' "$par8_warden" \
  -n 'bwrap x8 parallel' "$par8_bwrap" \
  -n 'warden x32 parallel' "$par32_warden" \
  -n 'bwrap x32 parallel' "$par32_bwrap"

echo
echo "median ms, and ratio to bwrap's median:"
jq -s -r '
  (.[0].results + .[1].results) as $r
  | ($r[] | select(.command == "bwrap") | .median) as $b
  | $r[] | "\(.command)\t\(.median * 1000 | . * 100 | round / 100) ms\t\(.median / $b | . * 100 | round / 100)x"' \
  "$work/startup.json" "$work/parallel.json" | column -t -s $'\t'
# For bench/all.sh: each warden row against its bwrap row.
jq -s -r '
  (.[0].results + .[1].results) as $r
  | def med($n): [$r[] | select(.command == $n) | .median][0];
  (["warden offline", "bwrap", "<= 1.0x"], ["warden workspace-write", "bwrap", ""],
   ["warden x8 parallel", "bwrap x8 parallel", ""], ["warden x32 parallel", "bwrap x32 parallel", ""])
  | .[0] as $w | .[1] as $b | .[2] as $goal
  | "summary\t\($w) (audit log on) vs \($b)\t\(med($w) / med($b) | . * 100 | round / 100)x (\(med($w) * 1000 | . * 100 | round / 100) ms)\t\($goal)"' \
  "$work/startup.json" "$work/parallel.json"

echo
echo "spawn path (warden_session::spawn .. wait) next to warden run, alternating in one process:"
"$spawn_bench" "$warden" "$runs"
"$spawn_bench" "$warden" "$runs" -- --no-audit
