#!/usr/bin/env bash
# Where the CNN's GPU step goes at the batch where dtrain trails PyTorch eager
# (bench/run_gpu_bench.sh's run: Fashion-MNIST CNN, fp32, TF32 off; batch 512 was
# 0.71x eager on an H100, bench/RESULTS.md). Two views, each cheap:
#   1. a traced dtrain run (log.trace): bench/device_timeline_report.py says how long
#      the device ran each step and how long it sat idle between steps, i.e. whether
#      the host (the batch, the loss read-back) keeps the device waiting;
#   2. ncu times every kernel of PROFILE_STEPS steps one at a time (clock control off,
#      as bench/profile_gpt_kernels.sh), and bench/kernel_profile_report.py sums them
#      by kernel name: which kernels to make faster.
# Run by scripts/gpu-check.sh after the benchmarks when time is left; not a test.
#
# Environment:
#   DTRAIN_BIN     the dtrain binary (default build/dtrain)
#   DTRAIN_DATA    the Fashion-MNIST folder (default /usr/share/datasets/fashion-mnist)
#   PYTHON         the Python that runs the reports (default python3)
#   NCU            the ncu binary (default: ncu on the PATH, else the newest under
#                  /opt/nvidia/nsight-compute and /usr/local/cuda)
#   CNN_BATCH      the batch (default 512)
#   CNN_DEVICE     device.kind (default cuda; cpu-async tries the script without a GPU)
#   TRACE_STEPS    steps of the traced run (default 40)
#   PROFILE_STEPS  steps under ncu (default 3)
#   PROFILE_LOGS   a folder to keep the trace, ncu's CSV and the reports in (default: none)
# Exit status: 0 with both reports, 2 when ncu is missing (the timeline is reported),
# 1 when a run failed.
set -uo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
dtrain=${DTRAIN_BIN:-$root/build/dtrain}
data=${DTRAIN_DATA:-/usr/share/datasets/fashion-mnist}
read -r -a python <<<"${PYTHON:-python3}"
batch=${CNN_BATCH:-512}
keep=${PROFILE_LOGS:-}
work=$(mktemp -d "${TMPDIR:-/tmp}/dtrain-cnn-profile.XXXXXX") || exit 1
trap 'rm -rf "$work"' EXIT
trap 'exit 143' TERM INT
[ -n "$keep" ] && mkdir -p "$keep"
# The benchmark's settings (bench/run_gpu_bench.sh); each view adds its step count.
cnn=(train "$root/configs/fashion_mnist_cnn.yaml" --set "data.path=$data" --set device.kind="${CNN_DEVICE:-cuda}"
     --set train.global_batch="$batch" --set train.micro_batch="$batch" --set eval.every_steps=0
     --set log.every_steps=100000 --set schedule.warmup_steps=0 --set schedule.decay=none
     --set precision.tf32=false)

echo "== the device timeline, CNN batch $batch, ${TRACE_STEPS:-40} steps"
"$dtrain" "${cnn[@]}" --set train.max_steps="${TRACE_STEPS:-40}" --set log.trace=true --run-dir "$work/trace" \
  >"$work/trace.log" 2>&1 ||
  { echo "profile_cnn_kernels.sh: the traced run failed:"; tail -5 "$work/trace.log"; exit 1; }
"${python[@]}" "$root/bench/device_timeline_report.py" "$work/trace" >"$work/timeline.txt"
tail -4 "$work/timeline.txt"
[ -n "$keep" ] && cp "$work/timeline.txt" "$work/trace/trace/rank-0.json" "$keep/" 2>/dev/null

ncu=${NCU:-$(command -v ncu || ls -d /opt/nvidia/nsight-compute/*/ncu /usr/local/cuda/bin/ncu 2>/dev/null | sort -V | tail -1)}
if [ -z "$ncu" ] || [ ! -x "$ncu" ]; then
  echo "profile_cnn_kernels.sh: no ncu found (set NCU)"
  exit 2
fi
steps=${PROFILE_STEPS:-3}
echo "== kernels under ncu, CNN batch $batch, $steps steps"
"$ncu" --clock-control none --metrics gpu__time_duration.sum --csv --page raw --print-units base \
  --kernel-name-base function --log-file "$work/ncu.csv" \
  "$dtrain" "${cnn[@]}" --set train.max_steps="$steps" --run-dir "$work/ncu-run" >"$work/ncu-run.log" 2>&1
rc=$?
[ -n "$keep" ] && cp "$work/ncu.csv" "$work/ncu-run.log" "$keep/" 2>/dev/null
if [ "$rc" -ne 0 ]; then
  echo "profile_cnn_kernels.sh: ncu or dtrain failed (exit $rc); the ends of their output:"
  tail -n 8 "$work/ncu-run.log" "$work/ncu.csv"
  exit 1
fi
"${python[@]}" "$root/bench/kernel_profile_report.py" "$work/ncu.csv" --steps "$steps" --top 20 | tee "$work/report.txt"
[ -n "$keep" ] && cp "$work/report.txt" "$keep/"
exit "${PIPESTATUS[0]}"
