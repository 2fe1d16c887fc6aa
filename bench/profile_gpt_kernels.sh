#!/usr/bin/env bash
# Where the GPT's GPU step spends its time, kernel by kernel: Nsight Compute (ncu)
# times every kernel of a short dtrain run of bench/gpt2_124m.yaml (train.max_steps
# PROFILE_STEPS, default 1, then one evaluation batch of one window), and
# bench/kernel_profile_report.py sums the times by kernel name and prints the largest.
# Run by scripts/gpu-check.sh after the GPT benchmark; not a test.
#
# ncu runs the kernels one at a time with its clock control off (the device's
# METHOD.md: leave the clocks alone), so the figures are each kernel's own time,
# without overlap or the host's gaps: they say which kernels to make faster, not the
# step time (the benchmark measures that).
#
# Environment:
#   DTRAIN_BIN      the dtrain binary (default build/dtrain)
#   PYTHON          the Python that writes the token shards and the report (python3)
#   NCU             the ncu binary (default: ncu on the PATH, else the newest under
#                   /opt/nvidia/nsight-compute and /usr/local/cuda)
#   PROFILE_STEPS   optimizer steps to profile (default 1)
#   PROFILE_LAUNCHES  at most this many launches are timed (default 4000: a whole step
#                   of GPT-2 124M and its evaluation), the rest run unprofiled
#   PROFILE_MICRO_BATCH  the micro-batch (default: the config's)
#   PROFILE_LOGS    a folder to keep ncu's CSV and the report in (default: none kept)
# Exit status: 0 with a report, 2 when ncu is missing, 1 when the run or ncu failed.
set -uo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
dtrain=${DTRAIN_BIN:-$root/build/dtrain}
read -r -a python <<<"${PYTHON:-python3}"
config=${GPT_CONFIG:-$root/bench/gpt2_124m.yaml}
steps=${PROFILE_STEPS:-1}
keep=${PROFILE_LOGS:-}
ncu=${NCU:-$(command -v ncu || ls -d /opt/nvidia/nsight-compute/*/ncu /usr/local/cuda/bin/ncu 2>/dev/null | sort -V | tail -1)}
if [ -z "$ncu" ] || [ ! -x "$ncu" ]; then
  echo "profile_gpt_kernels.sh: no ncu found (set NCU)"
  exit 2
fi
work=$(mktemp -d "${TMPDIR:-/tmp}/dtrain-gpt-profile.XXXXXX") || exit 1
trap 'rm -rf "$work"' EXIT
trap 'exit 143' TERM INT

"${python[@]}" "$root/bench/gen_token_shard.py" "$work/train.bin" --tokens $((1 << 20)) --seed 1 &&
  "${python[@]}" "$root/bench/gen_token_shard.py" "$work/val.bin" --tokens 1025 --seed 2 || {
  echo "profile_gpt_kernels.sh: cannot write the token shards in $work"; exit 1; }
args=(--set "data.train_files=$work/train.bin" --set "data.val_files=$work/val.bin" --set "train.max_steps=$steps"
      --set eval.batch=1)
[ -n "${PROFILE_MICRO_BATCH:-}" ] && args+=(--set "train.micro_batch=$PROFILE_MICRO_BATCH"
                                           --set "train.global_batch=$PROFILE_MICRO_BATCH")
echo "ncu: $ncu; dtrain: $dtrain; $steps steps of $config"
"$ncu" --clock-control none --metrics gpu__time_duration.sum --csv --page raw --print-units base \
  --kernel-name-base function --launch-count "${PROFILE_LAUNCHES:-4000}" --log-file "$work/ncu.csv" \
  "$dtrain" train "$config" "${args[@]}" --run-dir "$work/run" >"$work/dtrain.log" 2>&1
rc=$?
[ -n "$keep" ] && { mkdir -p "$keep"; cp "$work/ncu.csv" "$work/dtrain.log" "$keep/" 2>/dev/null; }
if [ "$rc" -ne 0 ]; then
  echo "profile_gpt_kernels.sh: ncu or dtrain failed (exit $rc); the ends of their output:"
  tail -n 8 "$work/dtrain.log" "$work/ncu.csv"
  exit 1
fi
"${python[@]}" "$root/bench/kernel_profile_report.py" "$work/ncu.csv" --steps "$steps" | tee "$work/report.txt"
[ -n "$keep" ] && cp "$work/report.txt" "$keep/"
exit "${PIPESTATUS[0]}"
