#!/usr/bin/env bash
# Audit log append throughput: records/s for fsync never / batch / always, 1 and 4 writers
# (4 writers = 4 processes appending to the same file under flock).
#
#   bench/audit.sh [DIR]     (DIR: where the logs go, default a fresh temp dir on /var/tmp)
#
# Builds crates/warden-audit/examples/append_bench.rs in release mode. Goals (issue 3):
# >= 200,000/s with batch from one writer, >= 1,000/s with always.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet -p warden-audit --example append_bench
bin=target/x86_64-unknown-linux-gnu/release/examples/append_bench
dir=${1:-$(mktemp -d /var/tmp/warden-audit-bench.XXXXXX)}
mkdir -p "$dir"
trap 'rm -rf "$dir"' EXIT

# records per writer: enough for a few seconds per cell
summary=()
declare -A per_writer=([never]=300000 [batch]=300000 [always]=3000)

printf '| fsync | writers | records | records/s |\n| --- | ---: | ---: | ---: |\n'
for mode in never batch always; do
  for writers in 1 4; do
    n=${per_writer[$mode]}
    [ "$writers" = 4 ] && n=$((n / 4))
    log="$dir/$mode-$writers.jsonl"
    rm -f "$log"*
    rate=$("$bin" --fsync "$mode" --writers "$writers" --records "$n" --path "$log")
    printf '| %s | %d | %d | %s |\n' "$mode" "$writers" "$((n * writers))" "$rate"
    summary+=("summary"$'\t'"audit appends/s, fsync=$mode, $writers writer(s)"$'\t'"$rate"$'\t')
  done
done
printf '%s\n' "${summary[@]}"
