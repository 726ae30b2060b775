#!/usr/bin/env bash
# Start-up cost of the repository search (issue 9): `warden run -p workspace-write -- true` in an
# empty workdir against one holding a 50,000-file tree (500 directories of 100 files, 3 levels,
# two nested repositories), warm page cache, with the default bounds (the listings cached beside
# the audit log), without that cache (`--no-audit`), and with the search off
# (`repo_scan = { max_depth = 0 }`: only the root's own entries).
#
#   bench/repo_scan.sh [RUNS]      (default 100 runs per command, 10 warm-ups)
#
# Installs hyperfine and jq when missing; builds warden in release mode; prints hyperfine's table
# and each median as a ratio of the empty workdir's.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-100}
. bench/lib.sh
bench_need hyperfine:hyperfine jq:jq
cargo build --release --locked -q -p warden-cli
warden=$PWD/target/x86_64-unknown-linux-gnu/release/warden
work=$(mktemp -d /var/tmp/warden-bench-repos.XXXXXX)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/empty" "$work/tree" "$work/state"
for a in $(seq 1 10); do
  for b in $(seq 1 50); do
    d="$work/tree/a$a/b$b"
    mkdir -p "$d"
    (cd "$d" && touch $(seq -f 'f%g' 1 100))
  done
done
git -C "$work/tree" init -q
git -C "$work/tree/a1/b1" init -q
git -C "$work/tree/a2/b2" init -q
files=$(find "$work/tree" -type f -not -path '*/.git/*' | wc -l)
# Listings younger than 2 s are not cached (their ctime could still change unseen): let them age.
sleep 3
printf '[filesystem]\nrepo_scan = { max_depth = 0 }\n' > "$work/off.toml"
export XDG_STATE_HOME="$work/state"
echo "machine: $(nproc) cores, $(uname -r), $(id -un); $(date -u +%Y-%m-%dT%H:%MZ); tree: $files files"
"$warden" explain -p workspace-write -C "$work/tree" | grep -A3 '^repositories'
hyperfine -N --warmup 10 --runs "$runs" --export-json "$work/repos.json" \
  -n 'empty workdir' "$warden run -p workspace-write -C $work/empty -- true" \
  -n '50k-file tree' "$warden run -p workspace-write -C $work/tree -- true" \
  -n '50k-file tree, no cache (--no-audit)' "$warden run --no-audit -p workspace-write -C $work/tree -- true" \
  -n '50k-file tree, search off' "$warden run -p workspace-write --config $work/off.toml -C $work/tree -- true" \
  2> >(grep -v '^warden: warning' >&2)
echo
echo "median ms, and ratio to the empty workdir's:"
jq -r '.results as $r | ($r[0].median) as $b | $r[] | "\(.command)\t\(.median * 1000 | . * 100 | round / 100) ms\t\(.median / $b | . * 100 | round / 100)x"' \
  "$work/repos.json" | column -t -s $'\t'
jq -r '.results as $r | ($r[0].median) as $b | $r[1]
  | "summary\tstart-up in a 50k-file tree (cached listings) vs an empty workdir\t\(.median / $b | . * 100 | round / 100)x\t<= 1.5x"' \
  "$work/repos.json"
