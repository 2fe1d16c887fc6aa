#!/usr/bin/env bash
# GPU benchmark: Fashion-MNIST MLP and CNN training samples/s on one GPU, dtrain against
# PyTorch eager and torch.compile, same model, batch, optimizer and precision (fp32,
# TF32 off), on the same card in the same run. Run by scripts/gpu-check.sh; prints a
# markdown table for bench/RESULTS.md. Not a test.
#   DTRAIN_BIN   the dtrain binary (default build/dtrain)
#   DTRAIN_DATA  the Fashion-MNIST folder (default /usr/share/datasets/fashion-mnist)
#   STEPS        optimizer steps per run (default 600; the first 50 are not timed)
#   COMPILE_AT   the batch sizes torch.compile runs at (default 512: its compilation
#                takes most of a minute per run, and the device time is short)
#   DEADLINE     the epoch second by which the whole benchmark must have ended (default:
#                none); a run that would start with less than 20 s left is not run, and
#                its cell says so
# Each run has a time limit (dtrain 2 min, PyTorch 3 min with torch.compile's
# compilation, both cut to what is left before DEADLINE), so that a stuck run costs a
# table cell, not the GPU machine's time.
# Last, when time is left, the CNN at batch 512 runs once more on dtrain's side with
# precision.deterministic false (cuDNN's fastest convolution algorithm, deterministic or
# not, where the table's runs take the fastest deterministic one): the nearer match to
# the reference's cudnn.benchmark, which times every algorithm and takes the fastest.
# Its row shares the batch-512 CNN's PyTorch figures; informational, so a lack of time
# leaves it out with a note that is not the "out of time" of the table's own runs.
set -uo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source-path=SCRIPTDIR source=bench_lib.sh
source "$root/bench/bench_lib.sh"
dtrain=${DTRAIN_BIN:-$root/build/dtrain}
data=${DTRAIN_DATA:-/usr/share/datasets/fashion-mnist}
steps=${STEPS:-600}
compile_at=" ${COMPILE_AT:-512} "
warmup=50
work=$(mktemp -d "${TMPDIR:-/tmp}/dtrain-gpu-bench.XXXXXX")
trap 'rm -rf "$work"' EXIT
read -r -a python <<<"${PYTHON:-python3}"  # a command of one or more words
deadline=${DEADLINE:-}

limit() { bench_limit "$deadline" "$1"; }

# dtrain's samples/s training MODEL at BATCH into run directory DIR, with more --set
# arguments after them; "not run (out of time)" when under 20 s are left.
dtrain_run() {
  local model=$1 batch=$2 dir=$3 t
  shift 3
  t=$(limit 120)
  [ "$t" = 0 ] && { echo "not run (out of time)"; return; }
  timeout "$t" "$dtrain" train "$root/configs/fashion_mnist_$model.yaml" --set "data.path=$data" \
    --set device.kind=cuda --set train.global_batch="$batch" --set train.micro_batch="$batch" \
    --set train.max_steps="$steps" --set eval.every_steps=0 --set log.every_steps=100000 \
    --set schedule.warmup_steps=0 --set schedule.decay=none --set precision.tf32=false "$@" \
    --run-dir "$dir" >"$dir.log" 2>&1 || { echo "dtrain failed:" >&2; tail -5 "$dir.log" >&2; }
  dtrain_rate "$dir" 2>/dev/null || echo nan
}

# samples/s of a dtrain run between the end of step $warmup and the last step.
dtrain_rate() {
  "${python[@]}" "$root/bench/dtrain_metrics.py" "$1" --warmup "$warmup" --format '{samples_per_s:.0f}'
}

echo "card: $(bench_gpu_name); torch: $(bench_torch_version "${python[@]}")"
echo
echo "| model | batch | dtrain samples/s | PyTorch eager | PyTorch compile | dtrain / eager | dtrain / compile |"
echo "| --- | --- | --- | --- | --- | --- | --- |"
for model in mlp cnn; do
  for batch in 64 512; do
    run=$work/${model}_$batch
    d=$(dtrain_run "$model" "$batch" "$run")
    [ "$d" = "not run (out of time)" ] && { echo "| $model | $batch | not run (out of time) | | | | |"; continue; }
    rate() {
      local t
      t=$(limit 180)
      [ "$t" = 0 ] && { echo "not run (out of time)"; return; }
      timeout "$t" "${python[@]}" "$root/bench/torch_gpu_reference.py" --model $model --batch $batch --steps "$steps" \
        --warmup $warmup --data "$data" "$@" 2>"$run.torch.err" | sed -n 's/^RESULT //p' |
        "${python[@]}" -c 'import json,sys; print("%.0f" % json.load(sys.stdin)["samples_per_s"])' 2>/dev/null || echo nan
    }
    e=$(rate)
    c="not run"
    [[ "$compile_at" == *" $batch "* ]] && c=$(rate --compile)
    echo "| $model | $batch | $d | $e | $c | $(bench_ratio "$d" "$e") | $(bench_ratio "$d" "$c") |"
    [ "$model $batch" = "cnn 512" ] && cnn_eager=$e cnn_compile=$c
  done
done
if [ -n "${cnn_eager:-}" ] && [ "$(limit 120)" != 0 ]; then
  f=$(dtrain_run cnn 512 "$work/cnn_512_fastest" --set precision.deterministic=false)
  echo "| cnn, precision.deterministic false | 512 | $f | $cnn_eager | $cnn_compile |" \
    "$(bench_ratio "$f" "$cnn_eager") | $(bench_ratio "$f" "$cnn_compile") |"
else
  echo "| cnn, precision.deterministic false | 512 | left out (no time, or the CNN at 512 did not run) | | | | |"
fi
