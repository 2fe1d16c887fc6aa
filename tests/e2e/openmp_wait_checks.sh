#!/usr/bin/env bash
# dtrain's OpenMP workers spin a bounded time between parallel loops and then sleep
# (Note [OpenMP wait policy], launch/main.cpp), and a user's own choice is kept. What
# the OpenMP runtime really runs with is read from the runtime itself: libgomp prints
# its settings at load with OMP_DISPLAY_ENV=verbose, and dtrain re-executes itself once
# when it sets the spin, so a process's last report is the one it trains with. Checked
# for one process, and for every rank under mpirun with 1, 2 and 4 ranks (each rank
# sets its own).
# Usage: openmp_wait_checks.sh DTRAIN MPIEXEC
set -u
dtrain=$1 mpiexec=$2
failures=0
# libgomp's own spin when neither variable is set: 300000 turns (its estimate, 3 ms).
# ACTIVE is 30000000000 (5 minutes): a spin that never ends inside a step.
libgomp_default=300000

# spins CMD...: the GOMP_SPINCOUNT values in CMD's runtime reports, one a line (the last
# of each process comes last of its own); the run's output kept in $log.
log=$(mktemp)
trap 'rm -f "$log"' EXIT
spins() {
  env -u OMP_WAIT_POLICY -u GOMP_SPINCOUNT OMP_DISPLAY_ENV=verbose "$@" >"$log" 2>&1 || {
    echo "FAIL: '$*' exited $?:"
    tail -5 "$log"
    return 1
  }
  sed -n "s/^ *GOMP_SPINCOUNT = '\([0-9]*\)'.*/\1/p" "$log"
}

check() {  # what expected got
  if [ "$2" = "$3" ]; then
    echo "ok: $1: $3"
  else
    echo "FAIL: $1: expected $2, got '$3'"
    failures=$((failures + 1))
  fi
}

# One process, nothing set: a spin, shorter than libgomp's own default.
own=$(spins "$dtrain" --help | tail -1)
if [ -n "$own" ] && [ "$own" -gt 0 ] && [ "$own" -lt "$libgomp_default" ]; then
  echo "ok: nothing set: dtrain's workers spin $own turns, then sleep"
else
  echo "FAIL: nothing set: expected a spin between 1 and $((libgomp_default - 1)) turns, got '$own'"
  failures=$((failures + 1))
fi
grep -q "Usage\|usage" "$log" || { echo "FAIL: the re-executed dtrain did not print its help"; failures=$((failures + 1)); }

# The user's choice is kept, whichever variable it is in.
check "GOMP_SPINCOUNT=12345 set" 12345 "$(spins env GOMP_SPINCOUNT=12345 "$dtrain" --help | tail -1)"
check "OMP_WAIT_POLICY=PASSIVE set" 0 "$(spins env OMP_WAIT_POLICY=PASSIVE "$dtrain" --help | tail -1)"
check "OMP_WAIT_POLICY=ACTIVE set" 30000000000 "$(spins env OMP_WAIT_POLICY=ACTIVE "$dtrain" --help | tail -1)"

# Each rank under mpirun sets its own: every rank's last report is dtrain's spin. A
# rank that re-executed reports twice (libgomp's default first, then the spin), so
# the reports of np ranks hold exactly np of dtrain's value and np of the default.
for np in 1 2 4; do
  reports=$(spins "$mpiexec" -np "$np" "$dtrain" --help)
  got=$(grep -c -x "$own" <<<"$reports")
  check "mpirun -np $np, ranks reporting dtrain's spin" "$np" "$got"
  check "mpirun -np $np, reports in all" "$((2 * np))" "$(wc -l <<<"$reports" | tr -d ' ')"
done

[ "$failures" = 0 ] && echo "openmp_wait_checks: all passed" || { echo "openmp_wait_checks: $failures failed"; exit 1; }
