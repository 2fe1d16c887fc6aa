#!/usr/bin/env bash
# The GPT GPU benchmark: GPT-2 124M (bench/gpt2_124m.yaml: 12 layers, 12 heads, n_embd
# 768, seq_len 1024, vocab 50257 padded to 50304) in bf16 with fp32 master weights and
# AdamW, micro-batch 16, on random tokens, dtrain against PyTorch eager and
# torch.compile (bench/torch_gpt_gpu_reference.py: the same shape, micro-batch,
# precision by bf16 autocast, AdamW(fused=True)) on the same card in the same run.
# Run by scripts/gpu-check.sh after the GPT's fp32 checks against the CPU passed; it
# prints the report of bench/gpt_gpu_report.py last: tokens/s, median step time, MFU
# (Note [GPT MFU] there), peak memory, the largest micro-batch of each in the same
# memory budget, the goal lines (PASS/MISS: tokens/s >= 1.1x torch.compile's, MFU >=
# 50%) and a markdown table for bench/RESULTS.md. Not a test.
#
# The runs, in this order, each with a time limit (cut to what is left before
# DEADLINE; a run with under 20 s left is not started, and its cell says
# "not run (out of time)"):
#   1. two llm.c shards of random tokens in [0, 50257) (bench/gen_token_shard.py;
#      a smaller model.vocab, a smoke run's, bounds them instead):
#      train 2^21 tokens (2047 windows: more than any micro-batch the planner may
#      choose), validation 8 windows (one evaluation batch after the last step)
#   2. dtrain train, GPT_STEPS steps at the config's micro-batch             60 s
#   3. dtrain plan with micro_batch and global_batch auto: dtrain's capacity in
#      memory.fraction of the free memory, checked by a probe step at it      60 s
#   4. PyTorch torch.compile, the same steps (the compilation inside the warm-up) 150 s
#   5. dtrain train again with its two speed levers that cost bit-for-bit repeats:
#      precision.deterministic false (cuDNN's attention backward sums dQ by atomics,
#      as PyTorch's flash attention does by default) and precision.gemm_autotune true
#      (Note [GEMM autotuning]); a row of its own beside the default one, left out
#      (not a failure) with under 40 s left                                    60 s
#   6. PyTorch eager, the same steps; then its largest micro-batch in the same budget
#      as dtrain's plan (doubling until out of memory, then bisection, for at most
#      GPT_CAPACITY_S, less when less time is left)                           90 s
# torch.compile and the second dtrain row run before eager because the goal compares
# them: when time runs short, the capacity search is what shrinks first.
# tokens/s counts the steps after the first GPT_WARMUP (dtrain: metrics.jsonl via
# bench/dtrain_metrics.py; PyTorch: synchronised at both ends of the same window).
#
# Exit status: 1 when dtrain's training run or its plan failed or ran out of time (the
# table says which; the PyTorch runs still run), else 0, whatever the goals say.
#
# Environment:
#   DTRAIN_BIN      the dtrain binary (default build/dtrain)
#   PYTHON          the Python with PyTorch, a command of one or more words (default
#                   python3; gpu-check.sh passes env LD_LIBRARY_PATH=... python3)
#   GPT_CONFIG      the dtrain config (default bench/gpt2_124m.yaml; a copy with a tiny
#                   shape and device.kind cpu makes a smoke run on a CPU machine)
#   GPT_STEPS       optimizer steps per run (default 35), GPT_WARMUP untimed steps
#                   of them (default 5)
#   GPT_CAPACITY_S  the bound of PyTorch's capacity search (default 30; 0: none)
#   DEADLINE        the epoch second by which the whole benchmark must have ended
#   GPT_BENCH_LOGS  a folder to keep the logs, run directory files and the report in
#                   (default: none kept); the temporary folder is removed on exit
#   DTRAIN_COMMIT   the commit the table names (default: git rev-parse of this tree)
set -uo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source-path=SCRIPTDIR source=bench_lib.sh
source "$root/bench/bench_lib.sh"
dtrain=${DTRAIN_BIN:-$root/build/dtrain}
read -r -a python <<<"${PYTHON:-python3}"
config=${GPT_CONFIG:-$root/bench/gpt2_124m.yaml}
steps=${GPT_STEPS:-35}
warmup=${GPT_WARMUP:-5}
capacity_s=${GPT_CAPACITY_S:-30}
deadline=${DEADLINE:-}
keep=${GPT_BENCH_LOGS:-}
work=$(mktemp -d "${TMPDIR:-/tmp}/dtrain-gpt-gpu-bench.XXXXXX") || exit 1
trap 'rm -rf "$work"' EXIT
trap 'exit 143' TERM INT  # still removes the folder

if ! [ "$steps" -gt "$warmup" ] 2>/dev/null || ! [ "$warmup" -gt 0 ]; then
  echo "run_gpt_gpu_bench.sh: need GPT_STEPS ($steps) > GPT_WARMUP ($warmup) > 0" >&2
  exit 2
fi
# The device both sides run on: the config's device.kind (cuda, or cpu for a smoke run).
device=$(sed -n '/^device:/,/^[^ ]/s/^ *kind: *\([a-z0-9-]*\).*/\1/p' "$config" | head -1)
[ "$device" = cpu ] || device=cuda
limit() { bench_limit "$deadline" "$1"; }
status=0

# run NAME SECONDS CMD...: CMD with its stdout in $work/NAME.out and its stderr in
# $work/NAME.err, limited to SECONDS (cut to what is left); prints "ok", "not run (out
# of time)", "out of time (N s)" or "failed (exit N)".
run() {
  local name=$1 want=$2 t rc
  shift 2
  t=$(limit "$want")
  if [ "$t" = 0 ]; then echo "not run (out of time)"; return; fi
  timeout "$t" "$@" >"$work/$name.out" 2>"$work/$name.err"
  rc=$?
  case $rc in
    0) echo ok ;;
    124) echo "out of time ($t s)" ;;
    *) echo "failed (exit $rc)" ;;
  esac
}
# tail_of NAME STATUS: the end of a run's output, when it did not go well.
tail_of() {
  case $2 in ok | "not run"* | "left out"*) return ;; esac
  echo "--- $1 ($2), the end of its output:"
  tail -n 15 "$work/$1.out" "$work/$1.err" 2>/dev/null
}

card=$(bench_gpu_name)
[ "$device" = cpu ] && card=cpu
torch_version=$(bench_torch_version "${python[@]}")
echo "card: $card; torch: ${torch_version:-missing}; dtrain: $dtrain; config: $config; $steps steps, $warmup untimed"

# 1. the shards, their tokens in [0, 50257), GPT-2's vocabulary, or in the config's
#    smaller one (a smoke run's tiny model)
vocab=$(sed -n '/^model:/,/^[^ ]/s/^ *vocab: *\([0-9]*\).*/\1/p' "$config" | head -1)
token_vocab=50257
[ -n "$vocab" ] && [ "$vocab" -lt "$token_vocab" ] && token_vocab=$vocab
if ! "${python[@]}" "$root/bench/gen_token_shard.py" "$work/train.bin" --tokens $((1 << 21)) --vocab "$token_vocab" \
       --seed 1 ||
   ! "${python[@]}" "$root/bench/gen_token_shard.py" "$work/val.bin" --tokens $((8 * 1024 + 1)) --vocab "$token_vocab" \
       --seed 2; then
  echo "run_gpt_gpu_bench.sh: cannot write the token shards in $work"
  exit 1
fi
data=(--set "data.train_files=$work/train.bin" --set "data.val_files=$work/val.bin" --set "device.kind=$device")

# 2. dtrain training, traced: the device row (Note [Device timeline]) shows whether the
#    host queued each step ahead of the device. Its cost is a few CUDA events a step
#    and the host spans the trace writer's thread writes, microseconds against a step
#    of tens of milliseconds.
dtrain_status=$(run dtrain 60 "$dtrain" train "$config" "${data[@]}" --set "train.max_steps=$steps" \
  --set log.trace=true --run-dir "$work/dtrain")
echo "dtrain train: $dtrain_status"; tail_of dtrain "$dtrain_status"
[ "$dtrain_status" = ok ] || status=1
grep -hE '^dtrain: (throughput|done)' "$work/dtrain.out" "$work/dtrain.err" 2>/dev/null
[ "$dtrain_status" = ok ] && "${python[@]}" "$root/bench/device_timeline_report.py" "$work/dtrain" | tail -4

# 3. dtrain's capacity
plan_status=$(run plan 60 "$dtrain" plan "$config" "${data[@]}" --set train.micro_batch=auto \
  --set train.global_batch=auto --json)
echo "dtrain plan (micro_batch auto): $plan_status"; tail_of plan "$plan_status"
[ "$plan_status" = ok ] || status=1
budget=$("${python[@]}" -c 'import json, sys; print(json.load(open(sys.argv[1]))["ranks"][0]["budget"])' \
  "$work/plan.out" 2>/dev/null || echo 0)

# 4. PyTorch torch.compile (and 6. eager, below)
torch_args=(--config "$config" --device "$device" --steps "$steps" --warmup "$warmup" --train-file "$work/train.bin")
if [ -z "$torch_version" ]; then
  compile_status="not run: ${python[*]} cannot import torch"
  eager_status=$compile_status
else
  compile_status=$(run compile 150 "${python[@]}" "$root/bench/torch_gpt_gpu_reference.py" "${torch_args[@]}" --compile)
  echo "PyTorch $torch_version torch.compile: $compile_status"; tail_of compile "$compile_status"
fi

# 5. dtrain with the levers that trade bit-for-bit repeats for speed. Informational
#    beside the default row: its failure is reported in its row, not in the exit status.
fast_levers=(--set precision.deterministic=false --set precision.gemm_autotune=true)
fast_settings="precision.deterministic false, precision.gemm_autotune true"
if [ "$(bench_limit "$deadline" 60 40)" = 0 ]; then
  fast_status="left out: under 40 s left"
else
  fast_status=$(run dtrain_fast 60 "$dtrain" train "$config" "${data[@]}" --set "train.max_steps=$steps" \
    "${fast_levers[@]}" --run-dir "$work/dtrain_fast")
fi
echo "dtrain train ($fast_settings): $fast_status"; tail_of dtrain_fast "$fast_status"
grep -hE '^dtrain: (throughput|done)' "$work/dtrain_fast.out" "$work/dtrain_fast.err" 2>/dev/null

# 6. PyTorch eager
if [ -n "$torch_version" ]; then
  # The search gets what the run's limit leaves beyond the timed steps (about 40 s).
  t=$(limit 90)
  search=$(( t - 40 < capacity_s ? t - 40 : capacity_s ))
  [ "$search" -lt 0 ] && search=0
  [ "$device" = cpu ] && search=0
  eager_status=$(run eager 90 "${python[@]}" "$root/bench/torch_gpt_gpu_reference.py" "${torch_args[@]}" \
    --capacity-search-s "$search" --memory-budget "$budget")
  echo "PyTorch $torch_version eager: $eager_status"; tail_of eager "$eager_status"
fi

echo
"${python[@]}" "$root/bench/gpt_gpu_report.py" --config "$config" --warmup "$warmup" \
  --dtrain-run "$work/dtrain" --dtrain-status "$dtrain_status" \
  --dtrain-fast-run "$work/dtrain_fast" --dtrain-fast-status "$fast_status" --dtrain-fast-settings "$fast_settings" \
  --plan "$work/plan.out" --plan-status "$plan_status" \
  --eager "$work/eager.out" --eager-status "$eager_status" --compile "$work/compile.out" \
  --compile-status "$compile_status" --torch-version "$torch_version" --card "$card" --date "$(date -u +%Y-%m-%d)" \
  --commit "${DTRAIN_COMMIT:-$(git -C "$root" rev-parse --short HEAD 2>/dev/null)}" | tee "$work/report.txt"
[ "${PIPESTATUS[0]}" = 0 ] || { echo "run_gpt_gpu_bench.sh: the report failed"; status=1; }

if [ -n "$keep" ]; then
  mkdir -p "$keep"
  for f in dtrain dtrain_fast plan eager compile; do
    [ -f "$work/$f.out" ] && cat "$work/$f.out" "$work/$f.err" >"$keep/$f.log" 2>/dev/null
  done
  cp "$work/report.txt" "$keep/"
  [ -f "$work/plan.out" ] && cp "$work/plan.out" "$keep/plan_auto.json"
  [ -f "$work/dtrain/trace/rank-0.json" ] && cp "$work/dtrain/trace/rank-0.json" "$keep/dtrain_trace.json"
  for f in metrics.jsonl plan.json config.yaml; do
    [ -f "$work/dtrain/$f" ] && cp "$work/dtrain/$f" "$keep/dtrain_$f"
    [ -f "$work/dtrain_fast/$f" ] && cp "$work/dtrain_fast/$f" "$keep/dtrain_fast_$f"
  done
fi
[ "$status" = 0 ] || echo "run_gpt_gpu_bench.sh: dtrain's GPT run FAILED (train: $dtrain_status; plan: $plan_status)"
exit "$status"
