#!/usr/bin/env bash
# Checkpoints end to end, under mpirun (DESIGN contract 8 and the resume contract):
#  1. Same world size, the MLP on 1, 2 and 4 ranks and the CNN on 2: a run stopped at step 20 (the stop a
#     signal would ask for, by test hook) exits 4 with a checkpoint; --resume auto
#     continues it, and steps 21-40 have bit for bit the losses of an uninterrupted run.
#     The CNN on 2 ranks also on the asynchronous CPU device (device.kind: cpu-async,
#     a GPU's rules for memory and transfers): stopped, saved and resumed there, it has
#     the CPU run's bits.
#  2. Other world sizes: a checkpoint written on 4 ranks resumes on 2 and on 1 (the
#     planner re-plans k), steps 11-30 within 1e-4 of the 4-rank run.
#  3. A real SIGUSR1 to mpirun: every rank finishes its step, one checkpoint, exit 4;
#     the resumed run matches the uninterrupted one bit for bit after the checkpoint.
#     SIGTERM and SIGINT sent to one rank alone stop every rank alike.
#  4. --resume auto skips a truncated newest checkpoint, says so, and uses the previous.
#  5. A checkpoint of another model, or of another global batch, is refused (exit 2)
#     with what differs.
#  6. A NaN in one rank's gradient at step 5: on_nonfinite stop ends every rank (exit 3)
#     naming step 5; skip drops that update and trains on.
#  7. An unwritable checkpoint.dir: on_error stop ends the run (exit 3) naming the path;
#     continue trains on with a warning.
# Usage: checkpoint_checks.sh DTRAIN MPIEXEC METRICS_CHECK SOURCE_DIR WORK_DIR
set -u
dtrain=$1 mpiexec=$2 check=$3 src=$4 work=$5
rm -rf "$work" && mkdir -p "$work"
failures=0
# shellcheck source=mpi_run_lib.sh
source "$(dirname "$0")/mpi_run_lib.sh"

base() { echo "$src/configs/fashion_mnist_$1.yaml" --set train.max_steps="$2" --set eval.every_steps=0 --set log.every_steps=10; }

# 1. Same world size: bit-exact (the MLP on 1, 2 and 4 ranks, the CNN on 2).
for case in mlp:1 mlp:2 mlp:4 cnn:2; do
  model=${case%:*} np=${case#*:}
  name=${model}_np$np
  run 0 "${name}_full" "$np" $(base $model 40)
  DTRAIN_TEST_STOP_AT_STEP=20 run 4 "${name}_resumed" "$np" $(base $model 40)
  [ -f "$work/${name}_resumed/checkpoints/ckpt-000000020.dtrain" ] || fail "$name: no checkpoint at step 20"
  run 0 "${name}_resumed" "$np" $(base $model 40) --resume auto
  expect_in_log "${name}_resumed" "resuming from $work/${name}_resumed/checkpoints/ckpt-000000020.dtrain (step 20)"
  compare 0 21-40 "$work/${name}_full" "$work/${name}_resumed"
  compare 0 1-40 "$work/${name}_full" "$work/${name}_resumed"
done

DTRAIN_TEST_STOP_AT_STEP=20 run 4 cnn_np2_async 2 $(base cnn 40) --set device.kind=cpu-async
run 0 cnn_np2_async 2 $(base cnn 40) --set device.kind=cpu-async --resume auto
expect_in_log cnn_np2_async "resuming from $work/cnn_np2_async/checkpoints/ckpt-000000020.dtrain (step 20)"
compare 0 1-40 "$work/cnn_np2_full" "$work/cnn_np2_async"

# 2. Saved on 4 ranks, resumed on 2 and 1.
run 0 cnn_np4 4 $(base cnn 30) --set checkpoint.every_steps=10
for np in 2 1; do
  run 0 "cnn_from4_np$np" "$np" $(base cnn 30) --resume "$work/cnn_np4/checkpoints/ckpt-000000010.dtrain"
done
compare 1e-4 11-30 "$work/cnn_np4" "$work/cnn_from4_np2" "$work/cnn_from4_np1"

# 3. A real signal: SIGUSR1 to mpirun, which forwards it to every rank.
"$mpiexec" -np 2 --oversubscribe "$dtrain" train $(base cnn 600) --run-dir "$work/signal" >"$work/signal.log" 2>&1 &
pid=$!
for _ in $(seq 1 300); do  # until the run has taken a few steps (at most 30 s)
  [ "$(grep -c '"kind":"train"' "$work/signal/metrics.jsonl" 2>/dev/null || echo 0)" -ge 5 ] && break
  sleep 0.1
done
kill -USR1 "$pid"
wait "$pid"
code=$?
[ "$code" = 4 ] || fail "SIGUSR1: exit $code, expected 4"
expect_in_log signal "stop requested (a signal) after step"
ckpt=$(ls "$work/signal/checkpoints" 2>/dev/null | tail -1)
if [ -z "$ckpt" ]; then
  fail "SIGUSR1: no checkpoint written"
else
  stopped_at=$((10#$(echo "$ckpt" | sed 's/ckpt-0*\([0-9]*\)\.dtrain/\1/')))
  echo "SIGUSR1 stopped the run after step $stopped_at"
  run 0 signal 2 $(base cnn 600) --resume auto
  run 0 signal_full 2 $(base cnn 600)
  compare 0 "$((stopped_at + 1))-600" "$work/signal_full" "$work/signal"
fi

# 3b. SIGTERM and SIGINT to one rank (as Slurm's scancel or a Ctrl-C would reach it):
# that rank's request reaches every rank with the step's all-reduce; all stop, exit 4.
for sig in TERM INT; do
  "$mpiexec" -np 2 --oversubscribe "$dtrain" train $(base mlp 100000) --set train.epochs=100 \
    --run-dir "$work/sig$sig" >"$work/sig$sig.log" 2>&1 &
  pid=$!
  for _ in $(seq 1 300); do
    [ -s "$work/sig$sig/metrics.jsonl" ] && break
    sleep 0.1
  done
  rank1=""
  for child in $(pgrep -P "$pid"); do
    r=$( { tr '\0' '\n' <"/proc/$child/environ"; } 2>/dev/null | sed -n 's/^OMPI_COMM_WORLD_RANK=//p')
    [ "$r" = 1 ] && rank1=$child
  done
  [ -n "$rank1" ] && kill -"$sig" "$rank1"
  wait "$pid"
  code=$?
  [ "$code" = 4 ] || fail "SIG$sig to rank 1: exit $code, expected 4"
  ls "$work/sig$sig/checkpoints/"ckpt-*.dtrain >/dev/null 2>&1 || fail "SIG$sig to rank 1: no checkpoint"
done

# 4. A truncated newest checkpoint: --resume auto takes the previous one.
run 0 corrupt 2 $(base mlp 30) --set checkpoint.every_steps=10
newest="$work/corrupt/checkpoints/ckpt-000000030.dtrain"
head -c 1000 "$newest" >"$newest.cut" && mv "$newest.cut" "$newest"
run 0 corrupt 2 $(base mlp 40) --resume auto
expect_in_log corrupt "skipping a checkpoint that does not read: checkpoint $newest is truncated"
expect_in_log corrupt "resuming from $work/corrupt/checkpoints/ckpt-000000020.dtrain (step 20)"

# 5. Another model, another global batch: refused with what differs.
run 2 other_model 2 $(base cnn 40) --resume "$work/corrupt/checkpoints/ckpt-000000020.dtrain"
expect_in_log other_model "was written by a different run and cannot resume this one"
expect_in_log other_model "checkpoint: model.name: mlp"
expect_in_log other_model "this run:   model.name: cnn"
run 2 other_batch 2 $(base mlp 40) --set train.global_batch=128 --resume "$work/corrupt/checkpoints/ckpt-000000020.dtrain"
expect_in_log other_batch "train.global_batch = 128 but checkpoint"

# 6. NaN in rank 1's gradient at step 5.
DTRAIN_TEST_NAN_AT_STEP=5 DTRAIN_TEST_NAN_RANK=1 run 3 nan_stop 2 $(base mlp 20)
expect_in_log nan_stop "step 5 has a non-finite gradient"
[ "$(grep -c 'non-finite' "$work/nan_stop.log")" = 1 ] || fail "the non-finite error was not said exactly once"
DTRAIN_TEST_NAN_AT_STEP=5 DTRAIN_TEST_NAN_RANK=1 run 0 nan_skip 2 $(base mlp 20) --set train.on_nonfinite=skip
expect_in_log nan_skip "step 5 has a non-finite gradient (|G|^2 = nan); its update is skipped"
grep '"step":20,' "$work/nan_skip/metrics.jsonl" | grep -q '"loss":[0-9]' || fail "nan_skip: no finite loss at step 20"

# 7. A checkpoint.dir that cannot be written (a file stands where the folder should).
echo "not a folder" >"$work/blocked"
run 3 storage_stop 2 $(base mlp 20) --set checkpoint.every_steps=10 --set checkpoint.dir="$work/blocked/ckpt"
expect_in_log storage_stop "cannot write checkpoint $work/blocked/ckpt/ckpt-000000010.dtrain"
run 0 storage_continue 2 $(base mlp 20) --set checkpoint.every_steps=10 --set checkpoint.dir="$work/blocked/ckpt" \
  --set checkpoint.on_error=continue
expect_in_log storage_continue "(checkpoint.on_error: continue, so training goes on)"

echo "checkpoint checks: $failures failure(s); logs in $work"
[ "$failures" = 0 ]
