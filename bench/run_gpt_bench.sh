#!/usr/bin/env bash
# The GPT benchmark: dtrain against PyTorch on nanoGPT's CPU recipe for
# character-level Shakespeare, side by side on the same machine.
#
#   bench/run_gpt_bench.sh             # 2000 steps per run, four runs: about 12 minutes
#   ITERS=50 bench/run_gpt_bench.sh    # a quick check of the whole script
#
# (an idle 2-core machine; PyTorch takes about 2.5 minutes for 2000 steps and 15 s
# for the evaluation.)
#
# Builds dtrain if needed (scripts/build.sh), then trains the GPT of
# bench/gpt_shakespeare.yaml (4 layers, 4 heads, width 128, 64-byte windows, global
# batch 12, AdamW lr 1e-3 with betas (0.9, 0.99) and weight decay 0.1 on matrices,
# clip 1.0, warmup 100 then cosine to 1e-4; dropout 0) for ITERS steps in each layout:
#   - dtrain, 1 rank x 2 threads: one process, micro-batch 12
#   - dtrain, 2 ranks x 1 thread: mpirun -np 2 --bind-to none, micro-batch 6 each
#   - PyTorch 1.13, 2 threads: bench/torch_gpt_reference.py under Debian's
#     python3-torch (/usr/bin/python3)
#   - PyTorch 2.x, 2 threads: the same under /opt/torch2-venv/bin/python, if it exists
#     (python3 -m venv /opt/torch2-venv && /opt/torch2-venv/bin/pip install torch numpy)
# and prints a markdown table: tokens/s, the wall time of the ITERS steps, the final
# validation loss (after the last step, the mean over every non-overlapping 65-byte
# window of the last 10% of the text), and each layout's tokens/s over PyTorch 2.x's.
#
# tokens/s: 12 windows x 64 tokens x the steps after the first $BENCH_WARMUP, over the
# time they took (dtrain: samples and time_s of metrics.jsonl, from step BENCH_WARMUP
# to the last; PyTorch: the same window, timed at the end of each step). Wall s: all
# ITERS steps, evaluation excluded (dtrain: time_s of the last step). dtrain's final
# validation loss is the eval_loss of metrics.jsonl's last eval line.
#
# Same data, order and initial weights: the reference reproduces dtrain's window
# offsets, its sampler's permutation and its init from train.seed (see its header),
# so the losses should agree to float32 noise; they are not bit-identical.
#
# Fairness: as bench/run_cpu_bench.sh. dtrain's OpenMP workers spin a bounded time
# between loops (GOMP_SPINCOUNT=30000, launch/main.cpp); PyTorch gets the same
# (BENCH_TORCH_OMP_ENV, bench_lib.sh) and OpenMP/BLAS thread counts equal to its
# threads. Before each run the script waits (up to $BENCH_IDLE_WAIT s)
# for an idle CPU, counts the CPU time that other processes took during the run, and
# reruns a run in which they took more than 5% of the machine (up to $BENCH_RETRIES
# times); a number that stayed disturbed is marked * in the table.
#
# BENCH_PRECISION=bf16 runs every layout in bf16 mixed precision: dtrain with
# precision.compute: bf16, PyTorch under torch.autocast("cpu", torch.bfloat16) with
# fp32 master weights (torch_gpt_reference.py --precision bf16).
#
# Settings (environment): ITERS (2000), BENCH_WARMUP (20), BENCH_RETRIES (1), BENCH_PRECISION (fp32),
# BENCH_IDLE_WAIT (120), BENCH_DATA (/work/shared/data/tinyshakespeare.txt),
# BENCH_LAYOUTS (all four: "dtrain-1x2 dtrain-2x1 torch-1.13 torch-2"),
# BENCH_TORCH2_PYTHON (/opt/torch2-venv/bin/python), BENCH_TORCH_OMP_ENV
# (GOMP_SPINCOUNT=30000), BENCH_OUT (a new temporary folder for run directories and logs),
# DTRAIN_BUILD_DIR (build). A layout that cannot run (no PyTorch 1.13, no venv)
# reads "missing" and the script exits with status 3 after the table; a run that
# fails reads "failed" and the script exits with status 1 after the table. This is
# a benchmark, not part of the test suite.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source-path=SCRIPTDIR source=bench_lib.sh
source "$root/bench/bench_lib.sh"
build=${DTRAIN_BUILD_DIR:-$root/build}
iters=${ITERS:-2000}
warmup=${BENCH_WARMUP:-20}
retries=${BENCH_RETRIES:-1}
idle_wait=${BENCH_IDLE_WAIT:-120}
data=${BENCH_DATA:-/work/shared/data/tinyshakespeare.txt}
layouts=${BENCH_LAYOUTS:-dtrain-1x2 dtrain-2x1 torch-1.13 torch-2}
precision=${BENCH_PRECISION:-fp32}
torch1_python=/usr/bin/python3
py=/usr/bin/python3  # reads the results (standard library only)
torch2_python=${BENCH_TORCH2_PYTHON:-/opt/torch2-venv/bin/python}
config=$root/bench/gpt_shakespeare.yaml
out=${BENCH_OUT:-$(mktemp -d /tmp/dtrain-gpt-bench.XXXXXX)}
mkdir -p "$out"

if ! [ "$iters" -gt "$warmup" ] 2>/dev/null || ! [ "$warmup" -gt 0 ]; then
  echo "run_gpt_bench.sh: need ITERS ($iters) > BENCH_WARMUP ($warmup) > 0" >&2
  exit 2
fi
case $precision in fp32 | bf16) ;; *) echo "run_gpt_bench.sh: BENCH_PRECISION is fp32 or bf16, not '$precision'" >&2; exit 2 ;; esac
if [ ! -r "$data" ]; then
  echo "run_gpt_bench.sh: the text $data is not readable; set BENCH_DATA to a text file" \
    "(tinyshakespeare, 1.1 MB, is what the recipe is for)" >&2
  exit 2
fi
for layout in $layouts; do
  case $layout in dtrain-1x2 | dtrain-2x1 | torch-1.13 | torch-2) ;;
    *) echo "run_gpt_bench.sh: unknown layout '$layout' in BENCH_LAYOUTS" \
         "(known: dtrain-1x2 dtrain-2x1 torch-1.13 torch-2)" >&2; exit 2 ;;
  esac
done
wants() { [[ " $layouts " == *" $1 "* ]]; }
wants_dtrain() { wants dtrain-1x2 || wants dtrain-2x1; }

# ---------------------------------------------------------------- versions
torch_version() {  # python -> "2.5.1" or nothing (the reference needs numpy too)
  bench_torch_version "$1" -- numpy
}
torch1_version=$(torch_version "$torch1_python")
torch1_label="PyTorch 1.13 (missing)"
if [ -n "$torch1_version" ]; then
  deb=$(dpkg-query -W -f='${Version}' python3-torch 2>/dev/null || true)
  torch1_label="PyTorch $torch1_version${deb:+ (Debian python3-torch $deb)}"
elif wants torch-1.13; then
  echo "run_gpt_bench.sh: *** PyTorch 1.13 is MISSING: $torch1_python cannot import torch and numpy;" \
    "apt-get install python3-torch ***" >&2
fi
torch2_version=""
[ -x "$torch2_python" ] && torch2_version=$(torch_version "$torch2_python")
torch2_label="PyTorch 2.x (missing)"
if [ -n "$torch2_version" ]; then
  torch2_label="PyTorch $torch2_version (PyPI, $torch2_python)"
elif wants torch-2; then
  echo "run_gpt_bench.sh: *** PyTorch 2.x is MISSING: $torch2_python cannot import torch and numpy;" \
    "python3 -m venv /opt/torch2-venv && /opt/torch2-venv/bin/pip install torch numpy ***" >&2
fi

dtrain=$build/dtrain
if wants_dtrain; then
  echo "== building dtrain (scripts/build.sh)" >&2
  "$root/scripts/build.sh" >"$out/build.log" 2>&1 || { cat "$out/build.log" >&2; exit 1; }
  # shellcheck source-path=SCRIPTDIR source=../scripts/mpi-env.sh
  source "$root/scripts/mpi-env.sh"
fi

# ---------------------------------------------------------------- machine noise
cores=$(nproc)
# measure CMD...: wait for idle, run, and rerun while disturbed (bench_lib.sh); prints
# CMD's line, its first field (tokens/s) with a * when still disturbed after $retries
# reruns.
measure() { bench_measure "$retries" "$idle_wait" run_gpt_bench.sh "$@"; }

# ---------------------------------------------------------------- the runs
# Each run prints one line: "TOKENS_PER_S WALL_S VAL_LOSS".

# From a dtrain run directory: tokens/s from step $warmup to the last, the last
# step's time_s, the last eval_loss (seq_len from the run's config.yaml, else the
# bench config's).
dtrain_numbers() {
  "$py" "$root/bench/dtrain_metrics.py" "$1" --warmup "$warmup" --config "$config" \
    --format '{tokens_per_s:.0f} {wall_s:.1f} {eval_loss:.4f}'
}

run_dtrain() {  # ranks tag
  local ranks=$1 dir=$out/dtrain-$1x$((2 / $1))-$2
  rm -rf "${dir:?}" "$dir.log"  # a rerun starts afresh, never resumes the run before
  local args=(train "$config" --run-dir "$dir" --set data.path="$data" --set train.max_steps="$iters"
    --set device.kind=cpu --set precision.compute="$precision")
  if [ "$ranks" = 1 ]; then
    "$dtrain" "${args[@]}" --set device.threads=2 --set train.micro_batch=12 >"$dir.log" 2>&1
  else
    mpirun -np 2 --bind-to none "$dtrain" "${args[@]}" --set device.threads=1 \
      --set train.micro_batch=6 >"$dir.log" 2>&1
  fi || { echo "run_gpt_bench.sh: dtrain failed, see $dir.log" >&2; tail -5 "$dir.log" >&2; return 1; }
  dtrain_numbers "$dir" || { echo "run_gpt_bench.sh: see $dir.log" >&2; return 1; }
}

run_torch() {  # python tag
  local log=$out/torch-$2.log
  local env_args=()
  read -r -a env_args <<<"$(bench_torch_omp_env)"
  env "${env_args[@]}" "$1" "$root/bench/torch_gpt_reference.py" --threads 2 --iters "$iters" \
    --warmup "$warmup" --data "$data" --precision "$precision" >"$log" 2>&1 ||
    { echo "run_gpt_bench.sh: PyTorch reference failed, see $log" >&2; tail -5 "$log" >&2; return 1; }
  "$py" -c '
import json, sys
for line in open(sys.argv[1]):
    if line.startswith("RESULT "):
        r = json.loads(line[7:])
        print("%.0f %.1f %.4f" % (r["tokens_per_s"], r["iter_wall_s"], r["final_val_loss"]))
        break
else:
    sys.exit(sys.argv[1] + ": no RESULT line")' "$log"
}

declare -A result label
label[dtrain-1x2]="dtrain, 1 rank x 2 threads"
label[dtrain-2x1]="dtrain, 2 ranks x 1 thread"
label[torch-1.13]="$torch1_label, 2 threads"
label[torch-2]="$torch2_label, 2 threads"
missing=0 failed=0
echo "== $iters steps per run, tokens/s after the first $warmup; logs and run directories in $out" >&2
for layout in $layouts; do
  line="missing - -"
  case $layout in
    dtrain-1x2) cmd=(run_dtrain 1 "$precision-$iters") ;;
    dtrain-2x1) cmd=(run_dtrain 2 "$precision-$iters") ;;
    torch-1.13) cmd=(run_torch "$torch1_python" "1.13-$precision-$iters"); [ -n "$torch1_version" ] || cmd=() ;;
    torch-2) cmd=(run_torch "$torch2_python" "2-$precision-$iters"); [ -n "$torch2_version" ] || cmd=() ;;
  esac
  if [ "${#cmd[@]}" = 0 ]; then
    missing=1
  elif ! line=$(measure "${cmd[@]}"); then
    line="failed - -"
    failed=1
  fi
  result[$layout]=$line
  echo "   ${label[$layout]}: tokens/s, wall s, validation loss: $line" >&2
done

# ---------------------------------------------------------------- the table
read -r base_tokens _ <<<"${result[torch-2]:-missing - -}"
base_tokens=${base_tokens%\*}
echo
echo "dtrain $(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)" \
  "($dtrain, OpenMP: GOMP_SPINCOUNT=${GOMP_SPINCOUNT:-30000}); PyTorch 1.13: $torch1_label; PyTorch 2.x: $torch2_label" \
  "(PyTorch OpenMP: ${BENCH_TORCH_OMP_ENV:-GOMP_SPINCOUNT=30000}); $(lscpu | sed -n 's/^Model name: *//p'), $cores cores;" \
  "$(basename "$data"), $iters steps of 12 x 64 tokens, $precision; tokens/s after the first $warmup steps"
echo
echo "| layout | tokens/s | wall s ($iters steps) | final validation loss | tokens/s / PyTorch 2.x |"
echo "| --- | ---: | ---: | ---: | ---: |"
for layout in $layouts; do
  read -r tokens wall loss <<<"${result[$layout]}"
  ratio=-
  if [[ $tokens =~ ^[0-9] && $base_tokens =~ ^[0-9] ]]; then
    ratio=$(awk -v a="${tokens%\*}" -v b="$base_tokens" 'BEGIN { printf "%.2f", a / b }')
  fi
  echo "| ${label[$layout]} | $tokens | $wall | $loss | $ratio |"
done
echo
for layout in dtrain-1x2 dtrain-2x1; do
  wants "$layout" || continue
  log=$out/dtrain-${layout#dtrain-}-$precision-$iters.log
  [ -f "$log" ] && echo "- ${label[$layout]}: $(grep -m1 'dtrain: done:' "$log" || echo "no summary line in $log")"
done
echo "(run directories and logs: $out)"
if grep -q '\*' <<<"${result[*]}"; then
  echo "WARNING: the runs marked * shared the CPU with other processes even after $retries rerun(s);" \
    "their numbers are low. Rerun on an idle machine."
fi
if [ "$failed" = 1 ]; then
  echo "run_gpt_bench.sh: *** a run FAILED (see above and its log in $out) ***" >&2
  exit 1
fi
if [ "$missing" = 1 ]; then
  echo "run_gpt_bench.sh: *** a layout is MISSING (see above): no full comparison was made ***" >&2
  exit 3
fi
