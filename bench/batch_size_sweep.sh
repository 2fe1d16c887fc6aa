#!/usr/bin/env bash
# Does a larger batch help? The question dtrain was founded on, measured: the default
# CNN on Fashion-MNIST trained at several global batches, the same samples in all
# (BENCH_EPOCHS epochs), the learning rate scaled with the square root of the batch
# from 0.05 at 64 (optimizer.lr_scaling: sqrt) after half an epoch of warmup, cosine
# decay. For each batch it reports the optimizer steps and the epochs until the test
# accuracy first reaches BENCH_TARGET (evaluated 8 times per epoch), the final
# accuracy, and the gradient noise scale B_simple dtrain estimated after one epoch and
# at the end (it grows as the loss falls). Steps
# that fall in proportion to the batch mean a bigger batch (more memory) pays; epochs
# that grow mean it no longer does.
#
#   bench/batch_size_sweep.sh            # about 10 minutes on an idle 2-core machine
#   bench/batch_size_sweep.sh --table DIR   # the table again from the runs in DIR
#
# Settings (environment): BENCH_BATCHES ("32 64 128 256 512 1024"), BENCH_EPOCHS (3),
# BENCH_TARGET (0.88), BENCH_NP (2 ranks), BENCH_OUT (a new temporary folder).
# This is a benchmark, not part of the test suite.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${DTRAIN_BUILD_DIR:-$root/build}
batches=${BENCH_BATCHES:-32 64 128 256 512 1024}
epochs=${BENCH_EPOCHS:-3}
target=${BENCH_TARGET:-0.88}
np=${BENCH_NP:-2}
out=${BENCH_OUT:-$(mktemp -d /tmp/dtrain-sweep.XXXXXX)}
[ -x "$build/dtrain" ] || "$root/scripts/build.sh"
# shellcheck source=../scripts/mpi-env.sh
source "$root/scripts/mpi-env.sh"

train_samples=60000
# One table row from run directory $1 of global batch $2 that took $3 seconds.
row() {
  local run=$1 g=$2 wall=$3
  local steps_per_epoch=$((train_samples / g))
  # The first eval line at or above the target; the last eval and train lines.
  awk -v target="$target" -v spe="$steps_per_epoch" -v g="$g" -v wall="$wall" '
    function num(key,   m) { if (match($0, "\"" key "\":[-0-9.eE+]+")) return substr($0, RSTART + length(key) + 3, RLENGTH - length(key) - 3); return "" }
    /"kind":"eval"/ { acc = num("eval_accuracy"); step = num("step"); last = acc; if (reach == "" && acc + 0 >= target) reach = step }
    /"kind":"train"/ {
      lr = num("lr") + 0; if (lr > peak) peak = lr
      b = num("noise_scale"); if (b != "") noise = b
      if (num("step") + 0 == spe) at_epoch = b
    }
    END {
      printf "| %d | %.4g | %s | %s | %.4f | %s | %s | %s |\n", g, peak, (reach == "" ? "not reached" : reach),
             (reach == "" ? "-" : sprintf("%.2f", reach / spe)), last,
             (at_epoch == "" ? "-" : sprintf("%.0f", at_epoch)), (noise == "" ? "-" : sprintf("%.0f", noise)), wall
    }' "$run/metrics.jsonl"
}

header() {
  echo "| global batch | peak lr | steps to $target | epochs to $target | final test accuracy | B_simple after 1 epoch | B_simple at the end | wall s |"
  echo "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
}

if [ "${1:-}" = "--table" ]; then
  header
  for g in $batches; do row "$2/g$g" "$g" "$(cat "$2/g$g.wall" 2>/dev/null || echo -)"; done
  exit 0
fi

header
for g in $batches; do
  steps_per_epoch=$((train_samples / g))
  every=$(( steps_per_epoch / 8 > 0 ? steps_per_epoch / 8 : 1 ))
  run="$out/g$g"
  start=$(date +%s)
  mpirun -np "$np" --oversubscribe --bind-to none "$build/dtrain" train "$root/configs/fashion_mnist_cnn.yaml" \
    --set train.global_batch="$g" --set train.epochs="$epochs" --set optimizer.lr_scaling=sqrt \
    --set optimizer.base_batch=64 --set schedule.warmup_steps=0 --set schedule.warmup_epochs=0.5 \
    --set eval.every_steps="$every" --set log.every_steps=100000 --run-dir "$run" >"$run.log" 2>&1
  wall=$(( $(date +%s) - start ))
  echo "$wall" >"$run.wall"
  row "$run" "$g" "$wall"
done
echo
echo "runs in $out"
