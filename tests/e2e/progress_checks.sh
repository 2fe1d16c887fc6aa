#!/usr/bin/env bash
# Progress output in both modes: on a terminal (a pseudo-terminal from util-linux
# `script`) a bar redrawn in place with the ETA; into a file, plain lines every
# log.every_steps and no carriage returns. Exit 77 (a skip) without `script`.
# Under mpirun writing to a file, plain lines too (Note [Progress mode]).
# Usage: progress_checks.sh DTRAIN SOURCE_DIR WORK_DIR MPIEXEC
set -u
dtrain=$1 src=$2 work=$3 mpiexec=$4
rm -rf "$work" && mkdir -p "$work"
failures=0
args=(train "$src/configs/synthetic_mlp.yaml" --set train.max_steps=60 --set log.every_steps=20 --set eval.every_steps=30)

"$dtrain" "${args[@]}" --run-dir "$work/plain" >"$work/plain.out" 2>&1 || { echo "FAILED: the plain run"; failures=$((failures + 1)); }
grep -q $'\r' "$work/plain.out" && { echo "FAILED: carriage returns in plain output"; failures=$((failures + 1)); }
for s in 20 40 60; do
  grep -q "^step $s/60 | epoch [0-9]* | loss [0-9.]* | lr [0-9.e-]* | [0-9]* samples/s | mem " "$work/plain.out" ||
    { echo "FAILED: no plain line for step $s"; failures=$((failures + 1)); }
done
grep -q "^eval  step 30 | test loss" "$work/plain.out" || { echo "FAILED: no eval line"; failures=$((failures + 1)); }

# Under mpirun into a file: lines, although Open MPI gives the ranks a pseudo-terminal.
"$mpiexec" -np 2 --oversubscribe "$dtrain" "${args[@]}" --run-dir "$work/mpi" >"$work/mpi.out" 2>&1 ||
  { echo "FAILED: the mpirun run"; failures=$((failures + 1)); }
grep -q $'\r' "$work/mpi.out" && { echo "FAILED: a progress bar in mpirun's file output"; failures=$((failures + 1)); }
grep -q "^step 40/60 |" "$work/mpi.out" || { echo "FAILED: no plain lines under mpirun"; failures=$((failures + 1)); }

if ! command -v script >/dev/null; then
  echo "SKIP (terminal mode): util-linux 'script' is not installed"
  [ "$failures" = 0 ] && exit 77 || exit 1
fi
printf -v cmd '%q ' "$dtrain" "${args[@]}" --run-dir "$work/tty"
script -qec "$cmd" /dev/null >"$work/tty.out" 2>&1 || { echo "FAILED: the terminal run"; failures=$((failures + 1)); }
grep -q $'\r\033\\[2K\\[#*\\.*\\] *[0-9]*% step [0-9]*/60 | epoch [0-9] | ETA [0-9hms?]* | loss ' "$work/tty.out" ||
  { echo "FAILED: no progress bar on the terminal"; failures=$((failures + 1)); }
grep -q "100% step 60/60" "$work/tty.out" || { echo "FAILED: the bar did not reach 100%"; failures=$((failures + 1)); }
grep -q "eval  step 30 | test loss" "$work/tty.out" || { echo "FAILED: no eval line on the terminal"; failures=$((failures + 1)); }
grep -q "^step 20/60 |" "$work/tty.out" && { echo "FAILED: plain lines on the terminal"; failures=$((failures + 1)); }
echo "progress checks: $failures failure(s)"
[ "$failures" = 0 ]
