#!/usr/bin/env bash
# How the start-up of `warden run -- true` grows with the policy: 0, 10 and 100 extra `--deny-read`
# files, and 0, 10 and 100 extra `--writable` directories (each writable root gets the protected
# names' placeholders, created before the run and removed after it), in one hyperfine run; the
# audit log off (`--no-audit`) so that only the policy varies. Everything on the host's disk under
# /var/tmp (not a tmpfs: the sandbox's /tmp and /var/tmp are private, and the disk's costs are the
# ones users pay).
#
#   bench/policy.sh [RUNS]      (default 100 runs per command, 10 warm-ups)
#
# Installs hyperfine and jq when missing; builds warden in release mode; prints hyperfine's table,
# each median as a ratio of the bare run's, and `summary` lines for bench/all.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-100}
. bench/lib.sh
bench_need hyperfine:hyperfine jq:jq
cargo build --release --locked -q -p warden-cli
warden=$PWD/target/x86_64-unknown-linux-gnu/release/warden
work=$(mktemp -d /var/tmp/warden-bench-policy.XXXXXX)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/wd" "$work/roots"
masks10="" masks100="" roots10="" roots100=""
for i in $(seq 1 100); do
  : > "$work/wd/secret$i"
  mkdir "$work/roots/r$i"
  masks100+=" --deny-read $work/wd/secret$i"
  roots100+=" --writable $work/roots/r$i"
  if [ "$i" -le 10 ]; then
    masks10+=" --deny-read $work/wd/secret$i"
    roots10+=" --writable $work/roots/r$i"
  fi
done
cd "$work/wd"
base="$warden run --no-audit -p workspace-write --yes"
echo "machine: $(nproc) cores, $(uname -r), $(id -un); $(date -u +%Y-%m-%dT%H:%MZ); load $(cut -d' ' -f1-3 /proc/loadavg)"
hyperfine -N --warmup 10 --runs "$runs" --export-json "$work/policy.json" \
  -n 'bare' "$base -- true" \
  -n '10 masks' "$base $masks10 -- true" \
  -n '100 masks' "$base $masks100 -- true" \
  -n '10 writable roots' "$base $roots10 -- true" \
  -n '100 writable roots' "$base $roots100 -- true" \
  2> >(grep -v '^warden: warning' >&2)
# Nothing may be left behind on the host by the placeholders.
left=$(find "$work/roots" -mindepth 2 | wc -l)
[ "$left" = 0 ] || { echo "policy.sh: $left placeholder(s) left in $work/roots" >&2; exit 1; }
echo
echo "median ms, and ratio to the bare run's:"
jq -r '.results as $r | ($r[0].median) as $b | $r[] | "\(.command)\t\(.median * 1000 | . * 100 | round / 100) ms\t\(.median / $b | . * 100 | round / 100)x"' \
  "$work/policy.json" | column -t -s $'\t'
jq -r '.results as $r | ($r[0].median) as $b | $r[] | select(.command == "100 masks" or .command == "100 writable roots")
  | "summary\tstart-up with \(.command) vs bare\t\(.median / $b | . * 100 | round / 100)x\t<= \(if .command == "100 masks" then "1.2" else "2" end)x"' \
  "$work/policy.json"
