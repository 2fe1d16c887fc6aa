#!/usr/bin/env bash
# Resuming the GPT on text (bytes of tinyshakespeare, dropout 0.1) from a checkpoint,
# under mpirun. Dropout masks are a function of (seed, step, site, sample, element)
# (DESIGN contract 9) and the windows of a step a function of (seed, epoch) (contract 3),
# so a resumed run must draw what the uninterrupted one drew:
#  1. Same world size: a run stopped at step 10 (the stop a signal would ask for, by
#     test hook) exits 4 with a checkpoint; --resume auto continues it, and steps 11-20
#     have bit for bit the losses (and the final validation loss) of an uninterrupted
#     run. On 1 rank (micro-batch 24), on 2 (micro 6, k 2), and on 2 on the
#     asynchronous CPU device (device.kind: cpu-async), which must give the CPU's bits.
#  2. Other world sizes: the step-10 checkpoint of a 2-rank run resumes on 1 rank, on
#     3 with different memory limits (the planner re-plans each rank's micro-batch) and
#     on 4; steps 11-20 within 1e-4 of the 2-rank run (float sums in another order).
#  3. Sharded in bf16: see below.
# Usage: gpt_resume_checks.sh DTRAIN MPIEXEC METRICS_CHECK CONFIG TEXT WORK_DIR
set -u
dtrain=$1 mpiexec=$2 check=$3 config=$4 text=$5 work=$6
rm -rf "$work" && mkdir -p "$work"
failures=0
fail() { echo "FAILED: $*"; failures=$((failures + 1)); }
# run EXPECTED_EXIT NAME NP ARGS...: 20 steps of the tiny GPT under mpirun into $work/NAME.
run() {
  local want=$1 name=$2 np=$3; shift 3
  "$mpiexec" -np "$np" --oversubscribe "$dtrain" train "$config" --set data.path="$text" --set train.max_steps=20 \
    --set eval.every_steps=0 "$@" --run-dir "$work/$name" >>"$work/$name.log" 2>&1
  local got=$?
  if [ "$got" != "$want" ]; then fail "$name exited $got, expected $want:"; tail -15 "$work/$name.log"; fi
}
expect_in_log() {  # expect_in_log NAME TEXT
  grep -qF -- "$2" "$work/$1.log" || { fail "$1: the log does not say: $2"; tail -8 "$work/$1.log"; }
}
compare() { "$check" compare "$@" || failures=$((failures + 1)); }

# 1. Same world size: bit-exact.
for case in np1:1:24:cpu np2:2:6:cpu np2_async:2:6:cpu-async; do
  IFS=: read -r name np micro device <<<"$case"
  layout=(--set train.micro_batch="$micro" --set device.kind="$device")
  [ "$device" = cpu ] && run 0 "${name}_full" "$np" "${layout[@]}"
  DTRAIN_TEST_STOP_AT_STEP=10 run 4 "${name}_resumed" "$np" "${layout[@]}"
  ckpt="$work/${name}_resumed/checkpoints/ckpt-000000010.dtrain"
  [ -f "$ckpt" ] || fail "$name: no checkpoint at step 10"
  run 0 "${name}_resumed" "$np" "${layout[@]}" --resume auto
  expect_in_log "${name}_resumed" "resuming from $ckpt (step 10)"
  full=${name%_async}_full
  compare 0 11-20 "$work/$full" "$work/${name}_resumed"
  compare 0 1-20 "$work/$full" "$work/${name}_resumed"
done

# 2. Written on 2 ranks, resumed on 1, 3 (mixed micro-batches) and 4.
run 0 written_np2 2 --set checkpoint.every_steps=10
from="$work/written_np2/checkpoints/ckpt-000000010.dtrain"
run 0 from2_np1 1 --resume "$from"
run 0 from2_np3_mixed 3 --resume "$from" --set "memory.limit_per_rank=[1.5MiB,2MiB,3MiB]" --set memory.recompute=none
"$check" plan "$work/from2_np3_mixed/plan.json" mixed || fail "the 3-rank resume did not plan different micro-batches"
run 0 from2_np4 4 --resume "$from"
for name in from2_np1 from2_np3_mixed from2_np4; do expect_in_log "$name" "resuming from $from (step 10)"; done
compare 1e-4 11-20 "$work/written_np2" "$work/from2_np1" "$work/from2_np3_mixed" "$work/from2_np4"

# 3. Sharded in bf16 (optimizer.shard: true): each rank keeps its range of the fp32
#    master weights and of the AdamW state (Note [Sharded master weights]); the
#    checkpoint gathers them. Stopped at step 10 on 2 ranks and resumed there: bit for
#    bit; the same checkpoint on 1 rank (nothing sharded) and on 4 (re-sharded): steps
#    11-20 within bf16's unit roundoff, 2e-3, of the 2-rank run (another sum order moves
#    the few parameters on a rounding boundary of the bf16 copy).
bf16_shard=(--set precision.compute=bf16 --set optimizer.shard=true)
run 0 bf16_shard_np2_full 2 --set train.micro_batch=6 "${bf16_shard[@]}"
expect_in_log bf16_shard_np2_full "): shard;"
DTRAIN_TEST_STOP_AT_STEP=10 run 4 bf16_shard_np2_resumed 2 --set train.micro_batch=6 "${bf16_shard[@]}"
run 0 bf16_shard_np2_resumed 2 --set train.micro_batch=6 "${bf16_shard[@]}" --resume auto
compare 0 1-20 "$work/bf16_shard_np2_full" "$work/bf16_shard_np2_resumed"
bf16_from="$work/bf16_shard_np2_resumed/checkpoints/ckpt-000000010.dtrain"
run 0 bf16_shard_from2_np1 1 --set train.micro_batch=12 "${bf16_shard[@]}" --resume "$bf16_from"
run 0 bf16_shard_from2_np4 4 --set train.micro_batch=3 "${bf16_shard[@]}" --resume "$bf16_from"
compare 2e-3 11-20 "$work/bf16_shard_np2_full" "$work/bf16_shard_from2_np1" "$work/bf16_shard_from2_np4"

echo "gpt resume checks: $failures failure(s); logs in $work"
[ "$failures" = 0 ]
