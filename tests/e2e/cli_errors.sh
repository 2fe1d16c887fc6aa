#!/usr/bin/env bash
# Every kind of bad input to `dtrain train` exits with code 2 and a message that names
# what was wrong (the key with FILE:LINE, the file on disk, the option).
# Usage: cli_errors.sh DTRAIN MPIEXEC SOURCE_DIR WORK_DIR
set -u
dtrain=$1 mpiexec=$2 src=$3 work=$4
rm -rf "$work" && mkdir -p "$work"
failures=0 cases=0

# expect CODE PATTERN... -- COMMAND...: the command exits with CODE and its stderr
# contains every PATTERN (fixed strings).
expect() {
  local code=$1; shift
  local patterns=()
  while [ "$1" != "--" ]; do patterns+=("$1"); shift; done
  shift
  cases=$((cases + 1))
  "$@" >"$work/out" 2>"$work/err"
  local got=$?
  local ok=1
  [ "$got" = "$code" ] || ok=0
  for p in "${patterns[@]}"; do grep -qF -- "$p" "$work/err" || ok=0; done
  if [ $ok = 1 ]; then
    echo "ok: exit $got: $(head -c 300 "$work/err" | tr '\n' ' ')"
  else
    failures=$((failures + 1))
    echo "FAILED: $*"
    echo "  expected exit $code and [${patterns[*]}], got exit $got; stderr:"
    sed 's/^/    /' "$work/err"
  fi
}

cfg() { printf '%s\n' "$2" >"$work/$1.yaml"; echo "$work/$1.yaml"; }
base="data:
  name: synthetic
  train_samples: 512
  test_samples: 64
train:
  max_steps: 2"

c=$(cfg unknown "$base
  globl_batch: 64")
expect 2 "unknown key 'train.globl_batch'" "$c:7" "did you mean 'train.global_batch'" -- "$dtrain" train "$c"

c=$(cfg wrong_type "$base
  micro_batch: sixteen")
expect 2 "'train.micro_batch' expects an integer or auto, got 'sixteen'" "$c:7" -- "$dtrain" train "$c"

c=$(cfg out_of_range "$base
optimizer:
  lr: -1")
expect 2 "'optimizer.lr' = -1 is out of range" "$c:8" -- "$dtrain" train "$c"

c=$(cfg bad_choice "model:
  name: transformer")
expect 2 "'model.name' = 'transformer' is not one of: mlp, cnn" "$c:2" -- "$dtrain" train "$c"

# Recompute is the GPT's (its blocks): asked of the MLP, an error naming the key.
c=$(cfg recompute_mlp "$base
memory:
  recompute: blocks")
expect 2 "memory.recompute is 'blocks' but the mlp has no blocks to recompute" "$c:8" -- "$dtrain" train "$c"
expect 2 "key 'memory.recompute' = 'layers' is not one of: auto, none, blocks" -- "$dtrain" train "$c" \
  --set memory.recompute=layers --run-dir "$work/run"
expect 2 "key 'optimizer.shard' = 'zero3' is not one of: auto, true, false" -- "$dtrain" train "$c" \
  --set optimizer.shard=zero3 --run-dir "$work/run"

c=$(cfg plain "$base")
expect 2 "--set train.epochs=-3" "out of range" -- "$dtrain" train "$c" --set train.epochs=-3 --run-dir "$work/run"
expect 2 "unknown key 'optimizer.learning_rate'" -- "$dtrain" train "$c" --set optimizer.learning_rate=0.1 --run-dir "$work/run"

# A global batch that does not divide: on one process, and on 2 ranks (said once).
c=$(cfg non_dividing "$base
  global_batch: 100
  micro_batch: 16")
expect 2 "$c:7" "train.global_batch = 100 does not divide" "Micro-batches that work on 1 rank(s): 1, 2, 4, 5, 10" -- \
  "$dtrain" train "$c" --run-dir "$work/run"
expect 2 "train.global_batch = 100 does not divide into 2 rank(s)" "1, 2, 5, 10, 25, 50" -- \
  "$mpiexec" -np 2 --oversubscribe "$dtrain" train "$c" --run-dir "$work/run"
[ "$(grep -c 'does not divide' "$work/err")" = 1 ] || { failures=$((failures + 1)); echo "FAILED: the error was printed more than once on 2 ranks"; }

# The batch planner: memory that holds nothing, a global batch below the ranks, a
# limit list of the wrong length, bad sizes and LR scaling without its base.
c=$(cfg planner "$base")
expect 3 "does not fit even at micro-batch 1: it needs about" "raise memory.limit" -- \
  "$dtrain" train "$c" --set memory.limit=2.75MiB --run-dir "$work/run"
expect 3 "the model 'mlp' does not fit on cpu" "parameters, gradients and optimizer state alone" -- \
  "$dtrain" train "$c" --set memory.limit=1MiB --run-dir "$work/run"
expect 2 "train.global_batch = 3 is smaller than the 4 ranks" -- \
  "$mpiexec" -np 4 --oversubscribe "$dtrain" train "$c" --set train.global_batch=3 --run-dir "$work/run"
[ "$(grep -c 'smaller than the 4 ranks' "$work/err")" = 1 ] || { failures=$((failures + 1)); echo "FAILED: the error was printed more than once on 4 ranks"; }
expect 2 "memory.limit_per_rank has 3 entries but the job has 2 rank(s)" -- \
  "$mpiexec" -np 2 --oversubscribe "$dtrain" train "$c" --set "memory.limit_per_rank=[8MiB,8MiB,8MiB]" --run-dir "$work/run"
expect 2 "--set memory.limit=64 parsecs" "unknown unit 'parsecs'" -- "$dtrain" train "$c" --set "memory.limit=64 parsecs"
expect 2 "optimizer.lr_scaling is 'linear' but optimizer.base_batch is not set" -- \
  "$dtrain" train "$c" --set optimizer.lr_scaling=linear
expect 2 "schedule.warmup_steps" "and schedule.warmup_epochs are both set" -- \
  "$dtrain" train "$c" --set schedule.warmup_steps=5 --set schedule.warmup_epochs=1

# Rank discovery: launcher variables that disagree with MPI's view (srun without
# --mpi=pmix; another MPI's launcher), on one process and on 2 ranks (said once).
expect 2 "the launcher's variables (SLURM_PROCID=1, SLURM_NTASKS=2) disagree with MPI" "srun --mpi=pmix" -- \
  env SLURM_NTASKS=2 SLURM_PROCID=1 SLURM_STEP_ID=0 "$dtrain" train "$c" --run-dir "$work/run"
expect 2 "the launcher's variables (PMI_RANK=5) disagree with MPI" -- \
  "$mpiexec" -np 2 --oversubscribe -x PMI_RANK=5 "$dtrain" train "$c" --run-dir "$work/run"
[ "$(grep -c "disagree with MPI" "$work/err")" = 1 ] || { failures=$((failures + 1)); echo "FAILED: the launcher error was not said once on 2 ranks"; }

# comm.backend: nccl under mpirun on ranks without GPUs: the agreed error, said once
# (not a rank-discovery error: NCCL ranks are MPI ranks too).
expect 2 "comm.backend is 'nccl' but 0 of 2 ranks have a GPU" "use comm.backend: auto or mpi" -- \
  "$mpiexec" -np 2 --oversubscribe "$dtrain" train "$c" --set comm.backend=nccl --set device.kind=cpu --run-dir "$work/run"
[ "$(grep -c "comm.backend is 'nccl'" "$work/err")" = 1 ] || { failures=$((failures + 1)); echo "FAILED: the nccl error was not said once on 2 ranks"; }

# Files: a missing config, a missing dataset, a truncated dataset file.
expect 2 "cannot open config file '$work/missing.yaml'" -- "$dtrain" train "$work/missing.yaml"
c=$(cfg fashion "data:
  name: fashion_mnist
  path: $work/no_such_dir")
expect 2 "$work/no_such_dir/train-images-idx3-ubyte.gz" "cannot open" -- "$dtrain" train "$c" --run-dir "$work/run"
if [ -f /usr/share/datasets/fashion-mnist/train-labels-idx1-ubyte.gz ]; then
  mkdir -p "$work/truncated"
  cp /usr/share/datasets/fashion-mnist/*.gz "$work/truncated/"
  head -c 20000 /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz >"$work/truncated/train-images-idx3-ubyte.gz"
  expect 2 "$work/truncated/train-images-idx3-ubyte.gz" "truncated" -- "$dtrain" train "$c" --set "data.path=$work/truncated" --run-dir "$work/run"
else
  echo "note: /usr/share/datasets/fashion-mnist is missing, the truncated-dataset case is not run (install dataset-fashion-mnist)"
fi

# Command line.
expect 2 "unknown option '--epochs'" -- "$dtrain" train "$c" --epochs 3
expect 2 "unknown command 'trian'" -- "$dtrain" trian "$c"
expect 2 "missing CONFIG.yaml" -- "$dtrain" train
expect 2 "missing CONFIG.yaml: dtrain plan" -- "$dtrain" plan
expect 2 "unknown option '--run-dir'; run 'dtrain plan --help'" -- "$dtrain" plan "$c" --run-dir x
# The scaling prediction: bad rank lists and cluster tables, before any planning.
expect 2 "--predict-ranks: '0' is not a rank count" -- "$dtrain" plan "$c" --predict-ranks 8,0
expect 2 "--cluster goes with --predict-ranks" -- "$dtrain" plan "$c" --cluster x.yaml
expect 2 "cannot open cluster table '$work/none.yaml'" -- "$dtrain" plan "$c" --predict-ranks 2 --cluster "$work/none.yaml"
printf 'name: t\nranks_per_node: 2\nintra_node: {latency_us: 5, bandwidth_GBps: 1, source: s}\n' >"$work/cluster.yaml"
expect 2 "$work/cluster.yaml:1: inter_node: missing" -- "$dtrain" plan "$c" --predict-ranks 2 --cluster "$work/cluster.yaml"

# dtrain sample: bad flag values, a path that is not there, a run without a checkpoint,
# a file that is not a checkpoint, and a classifier's checkpoint (named).
c=$(cfg sample_mlp "$base")
expect 2 "missing RUN_DIR: dtrain sample" -- "$dtrain" sample
expect 2 "--tokens -5: expected a number of tokens" -- "$dtrain" sample "$work" --tokens -5
expect 2 "--tokens many" -- "$dtrain" sample "$work" --tokens many
expect 2 "--temperature -1: expected a number >= 0" -- "$dtrain" sample "$work" --temperature -1
expect 2 "--temperature hot" -- "$dtrain" sample "$work" --temperature=hot
expect 2 "--top-k 2.5: expected 0 (all tokens) or a positive number" -- "$dtrain" sample "$work" --top-k 2.5
expect 2 "--seed -1: expected a whole number" -- "$dtrain" sample "$work" --seed -1
expect 2 "--prompt needs a value" -- "$dtrain" sample "$work" --prompt
expect 2 "unknown option '--length'; run 'dtrain sample --help'" -- "$dtrain" sample "$work" --length 3
expect 2 "$work/no_such_run does not exist" -- "$dtrain" sample "$work/no_such_run"
"$dtrain" train "$c" --run-dir "$work/mlp_run" >/dev/null 2>&1
expect 2 "no checkpoint in $work/mlp_run/checkpoints" "checkpoint.every_steps" -- "$dtrain" sample "$work/mlp_run"
expect 2 "$c is not a dtrain checkpoint" -- "$dtrain" sample "$c"
"$dtrain" train "$c" --set checkpoint.every_steps=2 --run-dir "$work/mlp_ckpt_run" >/dev/null 2>&1
expect 2 "holds a 'mlp' model" "cannot generate text" -- "$dtrain" sample "$work/mlp_ckpt_run"

echo "$((cases - failures)) passed, $failures failed"
[ $failures = 0 ]
