#!/usr/bin/env bash
# Every benchmark once, one table at the end.
#
#   bench/all.sh [--quick]      (as root; each script installs its own peers; 20-40 min in all)
#
# Runs each bench/*.sh (but egress-ab.sh, an A/B tool that needs an older binary) in turn, keeps
# each one's whole output in $WARDEN_BENCH_LOGS (default a fresh directory under /var/tmp), and
# prints one table of the headline figures: each script's `summary<TAB>measure<TAB>value<TAB>goal`
# lines, and the lines where a driver states a figure against its goal ("... (goal ...)").
# --quick passes smaller run counts where a script takes one. The figures are for reading, not for
# asserting: nothing here fails on a missed goal, only on a script that failed.
set -uo pipefail
cd "$(dirname "$0")/.."
quick=false
[ "${1:-}" = --quick ] && quick=true
logs=${WARDEN_BENCH_LOGS:-$(mktemp -d /var/tmp/warden-bench-all.XXXXXX)}
mkdir -p "$logs"

# script and its arguments (full / quick)
declare -A full=([startup]=300 [policy]=100 [repo_scan]=100 [audit]="" [egress]="" [credproxy]=""
  [agent]="30 2000" [serve]="2000 10 1000" [codex]=50)
declare -A short=([startup]=60 [policy]=20 [repo_scan]=20 [audit]="" [egress]="" [credproxy]="--mb 20"
  [agent]="5 200" [serve]="200 3 200" [codex]=10)
order=(startup policy repo_scan audit egress credproxy agent serve codex)

echo "bench/all.sh: $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, $(uname -r), load $(cut -d' ' -f1-3 /proc/loadavg); logs in $logs"
declare -A status took
for name in "${order[@]}"; do
  if $quick; then args=${short[$name]}; else args=${full[$name]}; fi
  echo "==> bench/$name.sh $args"
  start=$(date +%s)
  # shellcheck disable=SC2086 # the arguments are words on purpose
  if bash "bench/$name.sh" $args > "$logs/$name.log" 2>&1; then status[$name]=ok; else status[$name]="FAILED ($?)"; fi
  took[$name]=$(( $(date +%s) - start ))
  echo "    ${status[$name]} in ${took[$name]} s"
done

echo
echo "| bench | measure | value | goal |"
echo "| --- | --- | --- | --- |"
failed=0
for name in "${order[@]}"; do
  log="$logs/$name.log"
  rows=0
  while IFS=$'\t' read -r _ measure value goal; do
    echo "| $name | $measure | $value | $goal |"
    rows=$((rows + 1))
  done < <(grep -a $'^summary\t' "$log")
  while IFS= read -r line; do
    line=$(echo "$line" | sed -e 's/^ *//' -e 's/|/\\|/g')
    echo "| $name | $line | | |"
    rows=$((rows + 1))
  done < <(grep -a '(goal' "$log" | grep -av $'^summary\t')
  if [ "${status[$name]}" != ok ]; then
    echo "| $name | ${status[$name]}: see $log | | |"
    failed=$((failed + 1))
  elif [ "$rows" = 0 ]; then
    echo "| $name | (no headline figure; see $log) | | |"
  fi
done
echo
echo "finished $(date -u +%Y-%m-%dT%H:%MZ), load $(cut -d' ' -f1-3 /proc/loadavg)"
[ "$failed" = 0 ]
