#!/usr/bin/env bash
# The CPU benchmark: dtrain against PyTorch on the same machine, side by side.
#
#   bench/run_cpu_bench.sh            # 3 to 4 minutes on an idle 2-core machine
#
# Builds dtrain if needed (scripts/build.sh), then trains the MLP and the CNN of
# configs/fashion_mnist_{mlp,cnn}.yaml (SGD, Nesterov momentum 0.9, lr 0.05, global
# batch 64) in two layouts:
#   - 1 rank : one plain process with 2 threads, one micro-batch of 64 per step
#   - 2 ranks: two processes with 1 thread each and micro-batch 32 (dtrain under
#              mpirun; PyTorch with torch.distributed gloo + DistributedDataParallel)
# with dtrain and with bench/torch_reference.py (run by $BENCH_TORCH_PYTHON: Debian's
# python3-torch under /usr/bin/python3 by default), and prints a markdown table of
# steady-state training samples/s: 64 x the steps after the first $BENCH_WARMUP, over
# the time they took (dtrain: the time_s of metrics.jsonl; PyTorch: the same window,
# timed the same way). Each number is the median of $BENCH_REPEATS runs, and dtrain and
# PyTorch runs alternate so that slow phases of a noisy VM hit both.
#
# Fairness: dtrain's OpenMP workers spin a bounded time between parallel loops and then
# sleep (GOMP_SPINCOUNT=30000, which it sets for itself: Note [OpenMP wait policy],
# launch/main.cpp); PyTorch gets the same here (BENCH_TORCH_OMP_ENV, bench_lib.sh:
# OMP_WAIT_POLICY=PASSIVE or "none" measure it otherwise), and torch_reference.py gives
# each rank OMP and OpenBLAS thread counts equal to its threads. The 2-rank runs of both
# are unbound (mpirun --bind-to none).
#
# The machine must be otherwise idle. Before each run the script waits (up to
# $BENCH_IDLE_WAIT s) for the CPU to be idle; it then counts the CPU time that other
# processes took during the run, and repeats a run in which they took more than 5% of
# the machine (up to $BENCH_RETRIES times). A number that stayed disturbed is marked
# with * in the table.
#
# Settings (environment): BENCH_MLP_STEPS (1000), BENCH_CNN_STEPS (300), BENCH_WARMUP
# (20), BENCH_REPEATS (3), BENCH_RETRIES (3), BENCH_IDLE_WAIT (120), BENCH_OUT (a new
# temporary folder for run directories and logs), BENCH_TORCH_OMP_ENV (GOMP_SPINCOUNT=30000),
# BENCH_TORCH_PYTHON (/usr/bin/python3: the Python whose torch is measured; point it at
# a virtual environment's, e.g. /opt/torch2-venv/bin/python, to measure PyPI's PyTorch
# beside Debian's).
#
# PyTorch is optional: without it the script says so loudly, prints dtrain's numbers,
# and exits with status 3. This is a benchmark, not part of the test suite.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${DTRAIN_BUILD_DIR:-$root/build}
mlp_steps=${BENCH_MLP_STEPS:-1000}
cnn_steps=${BENCH_CNN_STEPS:-300}
warmup=${BENCH_WARMUP:-20}
repeats=${BENCH_REPEATS:-3}
retries=${BENCH_RETRIES:-3}
idle_wait=${BENCH_IDLE_WAIT:-120}
out=${BENCH_OUT:-$(mktemp -d /tmp/dtrain-bench.XXXXXX)}
torch_python=${BENCH_TORCH_PYTHON:-/usr/bin/python3}
mkdir -p "$out"

for n in "$mlp_steps" "$cnn_steps"; do
  if [ "$n" -le "$warmup" ]; then
    echo "run_cpu_bench.sh: steps ($n) must exceed BENCH_WARMUP ($warmup)" >&2
    exit 2
  fi
done

have_torch=1
if ! torch_version=$("$torch_python" -c 'import torch; print(torch.__version__)' 2>/dev/null); then
  have_torch=0
  torch_version=missing
  cat >&2 <<EOF
run_cpu_bench.sh: *** PyTorch is MISSING: $torch_python cannot import torch. ***
  Install Debian's build with:  apt-get install python3-torch
  (or set BENCH_TORCH_PYTHON to a Python that has torch)
  Running dtrain only; the PyTorch column will read "missing".
EOF
fi

echo "== building dtrain (scripts/build.sh)" >&2
"$root/scripts/build.sh" >"$out/build.log" 2>&1 || { cat "$out/build.log" >&2; exit 1; }
dtrain=$build/dtrain

# shellcheck source-path=SCRIPTDIR source=../scripts/mpi-env.sh
source "$root/scripts/mpi-env.sh"
# shellcheck source-path=SCRIPTDIR source=bench_lib.sh
source "$root/bench/bench_lib.sh"

# ---------------------------------------------------------------- machine noise
cores=$(nproc)
# measure CMD...: wait for idle, run, and rerun while disturbed (bench_lib.sh); prints
# the number CMD prints, with a * when still disturbed after $retries reruns.
measure() { bench_measure "$retries" "$idle_wait" run_cpu_bench.sh "$@"; }

# ---------------------------------------------------------------- the runs
# samples/s from a run's metrics.jsonl: train lines from step $warmup to the last.
metrics_rate() {
  awk -v w="$warmup" '
    /"kind":"train"/ {
      match($0, /"step":[^,}]*/);    step = substr($0, RSTART + 7, RLENGTH - 7) + 0
      match($0, /"samples":[^,}]*/); smp = substr($0, RSTART + 10, RLENGTH - 10) + 0
      match($0, /"time_s":[^,}]*/);  t = substr($0, RSTART + 9, RLENGTH - 9) + 0
      if (step == w) { s0 = smp; t0 = t; have = 1 }
      last_s = smp; last_t = t
    }
    END {
      if (!have || last_t <= t0) { print "no steps after the warm-up in " FILENAME > "/dev/stderr"; exit 1 }
      printf "%.1f\n", (last_s - s0) / (last_t - t0)
    }' "$1"
}

run_dtrain() {  # model ranks steps tag -> prints samples/s
  local model=$1 ranks=$2 steps=$3 dir=$out/dtrain-$1-$2-$4
  local args=(train "$root/configs/fashion_mnist_$model.yaml" --run-dir "$dir"
    --set train.max_steps="$steps" --set eval.every_steps=0 --set log.every_steps="$steps"
    --set schedule.warmup_steps=0 --set schedule.decay=none)
  if [ "$ranks" = 1 ]; then
    "$dtrain" "${args[@]}" --set device.threads=2 --set train.micro_batch=64 >"$dir.log" 2>&1
  else
    mpirun -np "$ranks" --bind-to none "$dtrain" "${args[@]}" --set device.threads=1 \
      --set train.micro_batch=32 >"$dir.log" 2>&1
  fi || { echo "run_cpu_bench.sh: dtrain failed, see $dir.log" >&2; tail -5 "$dir.log" >&2; return 1; }
  metrics_rate "$dir/metrics.jsonl"
}

run_torch() {  # model ranks steps tag -> prints samples/s
  local log=$out/torch-$1-$2-$4.log threads=$((2 / $2))
  local env_args=()
  read -r -a env_args <<<"$(bench_torch_omp_env)"
  env "${env_args[@]}" "$torch_python" "$root/bench/torch_reference.py" --model "$1" --ranks "$2" \
    --threads "$threads" --steps "$3" --warmup "$warmup" >"$log" 2>&1 ||
    { echo "run_cpu_bench.sh: PyTorch reference failed, see $log" >&2; tail -5 "$log" >&2; return 1; }
  sed -n 's/^RESULT .*"samples_per_s": \([0-9.]*\).*/\1/p' "$log"
}

median() {  # of the numbers on stdin; a trailing * (disturbed) carries over to the median
  local star=""
  local values
  values=$(tr ' ' '\n' | grep -v '^$')
  grep -q '\*' <<<"$values" && star="*"
  tr -d '*' <<<"$values" | sort -g |
    awk -v star="$star" '{ v[NR] = $1 } END { m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2; printf "%.0f%s\n", m, star }'
}

cases=("mlp 1" "mlp 2" "cnn 1" "cnn 2")
declare -A dtrain_runs torch_runs
echo "== measuring: $repeats repeats, MLP $mlp_steps steps, CNN $cnn_steps steps, first $warmup excluded; logs in $out" >&2
for rep in $(seq 1 "$repeats"); do
  for c in "${cases[@]}"; do
    read -r model ranks <<<"$c"
    steps=$mlp_steps
    [ "$model" = cnn ] && steps=$cnn_steps
    d=$(measure run_dtrain "$model" "$ranks" "$steps" "r$rep")
    dtrain_runs[$c]+="$d "
    t=missing
    if [ "$have_torch" = 1 ]; then
      t=$(measure run_torch "$model" "$ranks" "$steps" "r$rep")
      torch_runs[$c]+="$t "
    fi
    echo "   repeat $rep: $model, $ranks rank(s): dtrain $d, PyTorch $t samples/s" >&2
  done
done

echo
echo "dtrain $(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown), PyTorch $torch_version ($torch_python)" \
  "(PyTorch OpenMP: ${BENCH_TORCH_OMP_ENV:-GOMP_SPINCOUNT=30000}), $(lscpu | sed -n 's/^Model name: *//p'), $cores cores;" \
  "median of $repeats, training samples/s after the first $warmup steps (MLP $mlp_steps, CNN $cnn_steps steps)"
echo
echo "| model | ranks | threads/rank | dtrain samples/s | PyTorch samples/s | dtrain/PyTorch |"
echo "| --- | ---: | ---: | ---: | ---: | ---: |"
for c in "${cases[@]}"; do
  read -r model ranks <<<"$c"
  d=$(median <<<"${dtrain_runs[$c]}")
  t=missing ratio=-
  if [ "$have_torch" = 1 ]; then
    t=$(median <<<"${torch_runs[$c]}")
    ratio=$(awk -v a="${d%\*}" -v b="${t%\*}" 'BEGIN { printf "%.2f", a / b }')
  fi
  echo "| $model | $ranks | $((2 / ranks)) | $d | $t | $ratio |"
done
echo
echo "Every run (samples/s, in order):"
for c in "${cases[@]}"; do
  read -r model ranks <<<"$c"
  echo "- $model, $ranks rank(s): dtrain ${dtrain_runs[$c]}| PyTorch ${torch_runs[$c]:-missing}"
done
echo "(run directories and logs: $out)"
disturbed=$(echo "${dtrain_runs[*]} ${torch_runs[*]:-}" | tr ' ' '\n' | grep -c '\*' || true)
if [ "$disturbed" -gt 0 ]; then
  echo "WARNING: $disturbed run(s), marked *, shared the CPU with other processes even after" \
    "$retries reruns; their numbers are low. Rerun on an idle machine."
fi
if [ "$have_torch" = 0 ]; then
  echo "run_cpu_bench.sh: *** PyTorch is MISSING (apt-get install python3-torch): no comparison was made ***" >&2
  exit 3
fi
