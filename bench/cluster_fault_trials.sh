#!/usr/bin/env bash
# The faults of tests/cluster/cluster_fault.sh, repeated: node1's link cut, 30% of its
# packets lost, its ranks killed, TRIALS times each (default 5) on the namespace
# cluster of 2 nodes x 2 ranks, comm.timeout_s = 3. Prints each trial, then the table
# of bench/RESULTS.md ("Faults across nodes"): per fault, the trials whose ranks all
# ended within the bound (timeout + 5 s) and whose launcher ended within its own (7 s
# more), the seconds from the fault to the last rank's end and to the launcher's
# (min / median / max), and the message seen. Needs root (network namespaces).
# Usage: bench/cluster_fault_trials.sh [TRIALS] [WORK_DIR]   (after scripts/build.sh)
set -uo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
trials=${1:-5}
work=${2:-$root/runs/cluster_fault_trials}
build=${DTRAIN_BUILD_DIR:-$root/build}
mpiexec=$(command -v mpirun) || { echo "mpirun not found: run scripts/install-deps.sh" >&2; exit 1; }
[ -x "$build/dtrain" ] || { echo "$build/dtrain not found: run scripts/build.sh" >&2; exit 1; }
status=0
echo "# $trials trials of each fault ($(date -u '+%Y-%m-%d %H:%M UTC'), commit $(git -C "$root" rev-parse --short HEAD))"
for kind in cut loss kill; do
  bash "$root/tests/cluster/cluster_fault.sh" "$build/dtrain" "$mpiexec" "$root" "$work/$kind" "$kind" "$trials" |
    grep -v '^cluster: '
  code=${PIPESTATUS[0]}
  [ "$code" = 0 ] || [ "$code" = 77 ] || status=1
done

# min / median / max of a column of numbers ("-": none).
spread() {
  sort -n | awk '{ v[NR] = $1 } END {
    if (NR == 0) { print "-"; exit }
    m = NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
    printf "%.1f / %.1f / %.1f", v[1], m, v[NR] }'
}
echo
echo "| fault | trials | within the bounds | s from the fault to the last rank's end (min / median / max) | s to the launcher's end (min / median / max) | exit codes | message seen |"
echo "| --- | ---: | ---: | --- | --- | --- | --- |"
for kind in cut loss kill; do
  tsv="$work/$kind/trials.tsv"
  if [ ! -f "$tsv" ] || [ "$(wc -l <"$tsv")" -le 1 ]; then echo "| $kind | 0 | skipped | - | - | - | - |"; continue; fi
  rows=$(tail -n +2 "$tsv")
  n=$(wc -l <<<"$rows")
  within=$(awk -F'\t' '$9 == "yes" && $10 == "yes" && $11 ~ /^yes/' <<<"$rows" | wc -l)
  ranks=$(awk -F'\t' '$6 != "-" { print $6 }' <<<"$rows" | spread)
  all=$(awk -F'\t' '$7 != "-" { print $7 }' <<<"$rows" | spread)
  codes=$(awk -F'\t' '{ print $3 }' <<<"$rows" | sort | uniq -c | awk '{ printf "%s%s x %s", (NR > 1 ? ", " : ""), $1, $2 }')
  # The messages, with the rank and PID left out, and how often each was seen.
  messages=$(awk -F'\t' '{ print $12 }' <<<"$rows" | sed -E 's/rank [0-9]+/rank N/; s/PID [0-9]+/PID P/' |
             sort | uniq -c | awk '{ c = $1; $1 = ""; printf "%s%s x \"%s\"", (NR > 1 ? "; " : ""), c, substr($0, 2) }')
  echo "| $kind | $n | $within | $ranks | $all | $codes | $messages |"
done
exit $status
