#!/usr/bin/env bash
# No hangs (DESIGN contract 8): under mpirun -np 4 with comm.timeout_s = 3, one rank
# fails at a random moment of training, in TRIALS trials that cycle through five
# kinds of failure; every trial must end every rank within the timeout plus a few
# seconds (BOUND), with a non-zero exit and a message naming the failed rank:
#   kill     kill -9 of a random rank (mpirun sees it die and names it)
#   stop     SIGSTOP of a random rank: alive but silent (the watchdog names it, from
#            its missing heartbeats)
#   stall    the test hook makes a rank sleep at a random step: alive, heartbeats
#            on, behind (the watchdog names it from its progress)
#   throw    the test hook makes a rank throw at a random step (it reports, and ends
#            the job through MPI_Abort)
#   ckpt     the test hook makes a rank stop inside the checkpoint after a random step
#            (a hung file system): the others wait in the checkpoint's agreement, which
#            the watchdog times too, and name it
# Most of a rank's time on this machine is spent waiting in all-reduces, so most
# faults land while the others are inside a collective. Prints each trial's time.
# Usage: no_hang_checks.sh DTRAIN MPIEXEC SOURCE_DIR WORK_DIR [TRIALS]
set -u
dtrain=$1 mpiexec=$2 src=$3 work=$4 trials=${5:-15}
timeout_s=3
bound=$((timeout_s + 5))
rm -rf "$work" && mkdir -p "$work"
failures=0
kinds=(kill stop stall throw ckpt)
echo "| trial | failure | rank | seconds from the fault to the end of every rank | exit | named |"
echo "| ---: | --- | ---: | ---: | ---: | --- |"
for trial in $(seq 1 "$trials"); do
  kind=${kinds[$(( (trial - 1) % 5 ))]}
  victim=$(( RANDOM % 4 ))
  step=$(( 20 + RANDOM % 200 ))
  log="$work/trial$trial.log"
  envs=()
  [ "$kind" = stall ] && envs=(DTRAIN_TEST_STALL_AT_STEP=$step DTRAIN_TEST_FAULT_RANK=$victim)
  [ "$kind" = throw ] && envs=(DTRAIN_TEST_THROW_AT_STEP=$step DTRAIN_TEST_FAULT_RANK=$victim)
  extra=()
  [ "$kind" = ckpt ] && envs=(DTRAIN_TEST_STALL_IN_CHECKPOINT=1 DTRAIN_TEST_FAULT_RANK=$victim) &&
    extra=(--set checkpoint.every_steps=$step)
  env "${envs[@]}" "$mpiexec" -np 4 --oversubscribe "$dtrain" train "$src/configs/fashion_mnist_cnn.yaml" "${extra[@]}" \
    --set train.max_steps=100000 --set train.epochs=100 --set comm.timeout_s=$timeout_s --set eval.every_steps=0 \
    --set log.every_steps=100000 --run-dir "$work/run$trial" >"$log" 2>&1 &
  mpirun_pid=$!
  # Wait until training runs (the metrics have lines), then a random 0.5 to 2.5 s more.
  for _ in $(seq 1 600); do
    [ -s "$work/run$trial/metrics.jsonl" ] && break
    sleep 0.05
  done
  sleep "$(( RANDOM % 3 )).$(( RANDOM % 10 ))"
  pid=""
  for child in $(pgrep -P "$mpirun_pid"); do
    r=$( { tr '\0' '\n' <"/proc/$child/environ"; } 2>/dev/null | sed -n 's/^OMPI_COMM_WORLD_RANK=//p')
    [ "$r" = "$victim" ] && pid=$child
  done
  hooked=0
  [ "$kind" = stall ] || [ "$kind" = throw ] || [ "$kind" = ckpt ] && hooked=1
  start=$(date +%s.%N)
  case $kind in
    kill) [ -n "$pid" ] && kill -9 "$pid" ;;
    stop) [ -n "$pid" ] && kill -STOP "$pid" ;;
  esac
  # Every rank must end within the bound; a hook fires at its step, up to a few
  # seconds after this point, so its wait is longer and its time is measured below.
  limit=$(( bound + hooked * 20 ))
  for _ in $(seq 1 $(( limit * 20 ))); do
    kill -0 "$mpirun_pid" 2>/dev/null || break
    sleep 0.05
  done
  if kill -0 "$mpirun_pid" 2>/dev/null; then
    echo "FAILED: trial $trial ($kind of rank $victim) still running after ${limit} s: a hang"
    failures=$((failures + 1))
    pkill -9 -P "$mpirun_pid"; kill -9 "$mpirun_pid"
  fi
  wait "$mpirun_pid"
  code=$?
  end=$(date +%s.%N)
  [ -n "$pid" ] && kill -9 "$pid" 2>/dev/null
  # A hook's fault begins when its step does: right after rank 0 wrote the step before
  # it, the last change of the metrics file.
  [ "$hooked" = 1 ] && start=$(date -r "$work/run$trial/metrics.jsonl" +%s.%N)
  seconds=$(awk -v e="$end" -v s="$start" 'BEGIN { printf "%.1f", e - s }')
  named=no
  case $kind in
    kill) grep -qE "rank $victim .*(exited on signal 9|Killed)|process rank $victim" "$log" && named=yes ;;
    stop) grep -q "rank $victim has not been heard from" "$log" && named=yes ;;
    stall|ckpt) grep -q "rank $victim is still at step $step" "$log" && named=yes ;;
    throw) grep -q "on rank $victim of 4: injected failure at step $step" "$log" && named=yes ;;
  esac
  echo "| $trial | $kind | $victim | $seconds | $code | $named |"
  if [ "$code" = 0 ] || [ "$named" = no ]; then
    echo "FAILED: trial $trial ($kind of rank $victim): exit $code, rank named: $named; the log:"
    grep -vE "^(plan|step|eval)" "$log" | head -20
    failures=$((failures + 1))
  fi
  if awk -v e="$end" -v s="$start" -v b="$bound" 'BEGIN { exit !(e - s > b) }'; then
    echo "FAILED: trial $trial took more than ${bound} s"
    failures=$((failures + 1))
  fi
done
echo "no-hang checks: $failures failure(s) in $trials trials (timeout ${timeout_s} s, bound ${bound} s); logs in $work"
[ "$failures" = 0 ]
