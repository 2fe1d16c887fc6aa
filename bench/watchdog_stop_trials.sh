#!/usr/bin/env bash
# The stop trial of tests/e2e/no_hang_checks.sh, repeated: SIGSTOP of a random rank at
# a random moment of training, TRIALS times (default 50) on 4 ranks and again on 8
# oversubscribed ranks (4 per core on a 2-core machine). Each trial must end every rank
# within the timeout plus 5 s, and the job's first watchdog message must name the
# stopped rank. Too long for CI (about 10 s a trial); the counts go to bench/RESULTS.md.
# Usage: bench/watchdog_stop_trials.sh [TRIALS] [WORK_DIR]   (after scripts/build.sh)
set -uo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
trials=${1:-50}
work=${2:-$root/runs/watchdog_stop_trials}
build=${DTRAIN_BUILD_DIR:-$root/build}
source "$root/scripts/mpi-env.sh"
mpiexec=$(command -v mpirun) || { echo "mpirun not found: run scripts/install-deps.sh" >&2; exit 1; }
[ -x "$build/dtrain" ] || { echo "$build/dtrain not found: run scripts/build.sh" >&2; exit 1; }
status=0
for np in 4 8; do
  echo "## $np ranks, $trials stop trials ($(date -u '+%Y-%m-%d %H:%M UTC'), commit $(git -C "$root" rev-parse --short HEAD))"
  NP=$np KINDS=stop bash "$root/tests/e2e/no_hang_checks.sh" "$build/dtrain" "$mpiexec" "$root" "$work/np$np" \
    "$trials" || status=1
done
exit $status
