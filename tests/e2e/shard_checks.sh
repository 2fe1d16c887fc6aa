#!/usr/bin/env bash
# Optimizer-state sharding (optimizer.shard) and checkpoints, under mpirun:
#  1. Same world size: a sharded run on 2 ranks stopped at step 20 (the stop a signal
#     would ask for, by test hook) and resumed has bit for bit the losses of an
#     uninterrupted sharded run: the shards gathered into the checkpoint and loaded
#     back are the state itself.
#  2. Other world sizes: a checkpoint of a sharded 4-rank run resumes on 2 ranks
#     (sharded), that one's on 1 rank (nothing to shard) and that one's on 4 ranks again
#     (sharded, re-sharded from the one-rank state): steps 9-32 within 1e-4 of the
#     uninterrupted 4-rank run.
#  3. optimizer.shard: true on one rank shards nothing: a note in the plan, not an
#     error, and the unsharded run's bits.
# Usage: shard_checks.sh DTRAIN MPIEXEC METRICS_CHECK SOURCE_DIR WORK_DIR
set -u
dtrain=$1 mpiexec=$2 check=$3 src=$4 work=$5
rm -rf "$work" && mkdir -p "$work"
failures=0
# shellcheck source=mpi_run_lib.sh
source "$(dirname "$0")/mpi_run_lib.sh"
base() {
  echo "$src/configs/fashion_mnist_mlp.yaml" --set train.max_steps="$1" --set train.micro_batch=8 \
    --set eval.every_steps=0 --set log.every_steps=8
}

# 1. Same world size, bit for bit.
run 0 np2_full 2 $(base 40) --set optimizer.shard=true
DTRAIN_TEST_STOP_AT_STEP=20 run 4 np2_resumed 2 $(base 40) --set optimizer.shard=true
run 0 np2_resumed 2 $(base 40) --set optimizer.shard=true --resume auto
expect_in_log np2_resumed "resuming from $work/np2_resumed/checkpoints/ckpt-000000020.dtrain (step 20)"
expect_in_log np2_resumed "): shard;"
compare 0 1-40 "$work/np2_full" "$work/np2_resumed"

# 2. 4 -> 2 -> 1 -> 4 ranks, each leg stopped by the test hook after 8 more steps.
run 0 np4_full 4 $(base 32) --set optimizer.shard=true
DTRAIN_TEST_STOP_AT_STEP=8 run 4 chain 4 $(base 32) --set optimizer.shard=true
legs="2:16 1:24 4:32"
for leg in $legs; do
  np=${leg%:*} stop=${leg#*:}
  if [ "$stop" = 32 ]; then
    run 0 chain "$np" $(base 32) --set optimizer.shard=true --resume auto
  else
    DTRAIN_TEST_STOP_AT_STEP=$stop run 4 chain "$np" $(base 32) --set optimizer.shard=true --resume auto
  fi
done
expect_in_log chain "resuming from $work/chain/checkpoints/ckpt-000000024.dtrain (step 24)"
compare 1e-4 9-32 "$work/np4_full" "$work/chain"

# 3. One rank: a note, and the same bits as unsharded.
run 0 np1_shard 1 $(base 10) --set optimizer.shard=true
run 0 np1_plain 1 $(base 10) --set optimizer.shard=false
expect_in_log np1_shard "plan: note: optimizer.shard: true on one rank shards nothing"
compare 0 1-10 "$work/np1_plain" "$work/np1_shard"

if [ "$failures" -gt 0 ]; then
  echo "shard_checks: $failures failure(s)"
  exit 1
fi
echo "shard_checks: all passed"
