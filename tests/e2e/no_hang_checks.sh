#!/usr/bin/env bash
# No hangs (DESIGN contract 8): under mpirun -np NP (default 4) with comm.timeout_s = 3,
# one rank fails at a random moment of training, in TRIALS trials that cycle through
# the kinds of failure in KINDS (default all five); every trial must end every rank
# within the timeout plus a few seconds (BOUND), with a non-zero exit and a message
# naming the failed rank. For the failures the watchdog reports (stop, stall, ckpt)
# the first watchdog message of the job must name it: the first rank to time out ends
# the job, and a user reads that message first.
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
# faults land while the others are inside a collective.
# Prints each trial's time, and, in the column "others", how many other ranks that
# first message calls silent (a live rank wrongly blamed; reported, not failed: see
# bench/watchdog_stop_trials.sh, which counts them over many trials).
# Usage: [NP=4] [KINDS="kill stop stall throw ckpt"] no_hang_checks.sh DTRAIN MPIEXEC SOURCE_DIR WORK_DIR [TRIALS]
set -u
dtrain=$1 mpiexec=$2 src=$3 work=$4 trials=${5:-15}
np=${NP:-4}
read -r -a kinds <<<"${KINDS:-kill stop stall throw ckpt}"
timeout_s=3
bound=$((timeout_s + 5))
rm -rf "$work" && mkdir -p "$work"
failures=0 unnamed=0 blamed=0
echo "| trial | failure | rank | seconds from the fault to the end of every rank | exit | named | others |"
echo "| ---: | --- | ---: | ---: | ---: | --- | ---: |"
for trial in $(seq 1 "$trials"); do
  kind=${kinds[$(( (trial - 1) % ${#kinds[@]} ))]}
  victim=$(( RANDOM % np ))
  step=$(( 20 + RANDOM % 200 ))
  log="$work/trial$trial.log"
  envs=()
  [ "$kind" = stall ] && envs=(DTRAIN_TEST_STALL_AT_STEP=$step DTRAIN_TEST_FAULT_RANK=$victim)
  [ "$kind" = throw ] && envs=(DTRAIN_TEST_THROW_AT_STEP=$step DTRAIN_TEST_FAULT_RANK=$victim)
  extra=()
  [ "$kind" = ckpt ] && envs=(DTRAIN_TEST_STALL_IN_CHECKPOINT=1 DTRAIN_TEST_FAULT_RANK=$victim) &&
    extra=(--set checkpoint.every_steps=$step)
  env ${envs[@]+"${envs[@]}"} "$mpiexec" -np "$np" --oversubscribe "$dtrain" train "$src/configs/fashion_mnist_cnn.yaml" ${extra[@]+"${extra[@]}"} \
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
  # A hook fires at its step, which a loaded machine may reach long after this point:
  # first wait for the job to reach it (the metrics line of the step before, or of the
  # checkpoint's step), for as long as the job makes progress: a job whose metrics stay
  # unchanged for the bound has stopped before the fault, and is caught below. From
  # there, as for the other kinds, every rank must end within the bound (the time is
  # measured from the step's line, below).
  if [ "$hooked" = 1 ]; then
    [ "$kind" = ckpt ] && reach=$step || reach=$(( step - 1 ))
    last_change=$(date +%s)
    last_size=0
    while kill -0 "$mpirun_pid" 2>/dev/null; do
      grep -q "\"step\":$reach," "$work/run$trial/metrics.jsonl" 2>/dev/null && break
      size=$(stat -c %s "$work/run$trial/metrics.jsonl" 2>/dev/null || echo 0)
      [ "$size" != "$last_size" ] && last_size=$size && last_change=$(date +%s)
      [ $(( $(date +%s) - last_change )) -gt "$bound" ] && break
      sleep 0.05
    done
  fi
  limit=$(( bound + hooked * 5 ))
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
  named=no others=0
  first=$(grep -m1 "dtrain: no progress:" "$log")
  case $kind in
    kill) grep -qE "rank $victim .*(exited on signal 9|Killed)|process rank $victim" "$log" && named=yes ;;
    # Stopped after its last heartbeat said it was behind, and less than three
    # heartbeat periods before the first timeout: then it is named as behind.
    stop) grep -qE "rank $victim (on [^ ]+ )?(has not been heard from|is still at step)" <<<"$first" && named=yes ;;
    stall|ckpt) grep -qE "rank $victim (on [^ ]+ )?is still at step $step" <<<"$first" && named=yes ;;
    throw) grep -q "on rank $victim of $np: injected failure at step $step" "$log" && named=yes ;;
  esac
  others=$(grep -oE "rank [0-9]+ (on [^ ]+ )?has not been heard from" <<<"$first" | grep -vc "rank $victim ")
  blamed=$((blamed + others))
  echo "| $trial | $kind | $victim | $seconds | $code | $named | $others |"
  [ "$named" = no ] && unnamed=$((unnamed + 1))
  if [ "$code" = 0 ] || [ "$named" = no ]; then
    echo "FAILED: trial $trial ($kind of rank $victim): exit $code, rank named: $named; the log:"
    grep -vE "^(plan|step|eval)" "$log" | head -20
    [ -n "$first" ] && echo "the first watchdog message: $first"
    failures=$((failures + 1))
  fi
  if awk -v e="$end" -v s="$start" -v b="$bound" 'BEGIN { exit !(e - s > b) }'; then
    echo "FAILED: trial $trial took more than ${bound} s"
    failures=$((failures + 1))
  fi
done
echo "no-hang checks: $failures failure(s), $unnamed unnamed, $blamed other rank(s) called silent, in $trials trials on $np ranks (timeout ${timeout_s} s, bound ${bound} s); logs in $work"
[ "$failures" = 0 ]
