# shellcheck shell=bash
# Helpers of the end-to-end scripts that train under mpirun (checkpoint_checks.sh,
# shard_checks.sh). Sourced after the script has set dtrain, mpiexec, check (the
# metrics_check binary), work (its folder) and failures=0.

fail() { echo "FAILED: $*"; failures=$((failures + 1)); }
# run EXPECTED_EXIT NAME NP ARGS...: dtrain train under mpirun into $work/NAME, its
# output in $work/NAME.log (a run into the same NAME again replaces the log).
run() {
  local want=$1 name=$2 np=$3; shift 3
  "$mpiexec" -np "$np" --oversubscribe "$dtrain" train "$@" --run-dir "$work/$name" >"$work/$name.log" 2>&1
  local got=$?
  if [ "$got" != "$want" ]; then fail "$name exited $got, expected $want:"; tail -15 "$work/$name.log"; fi
}
expect_in_log() {  # expect_in_log NAME TEXT
  grep -qF -- "$2" "$work/$1.log" || { fail "$1: the log does not say: $2"; tail -8 "$work/$1.log"; }
}
compare() { "$check" compare "$@" || failures=$((failures + 1)); }
