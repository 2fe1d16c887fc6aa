#!/usr/bin/env bash
# bench/run_gpt_gpu_bench.sh (gpu-check's GPT benchmark) end to end on the CPU, as its
# header says a smoke run goes: a tiny GPT with device.kind cpu, PyTorch hidden (python3
# -S imports no site packages, so the PyTorch rows say why they did not run, as on a
# machine without it). Checks that both dtrain rows (the default and the one with
# precision.deterministic false and precision.gemm_autotune true) have figures, that
# each has its goal lines, that the second run really ran with those settings (its
# run directory's config), and that the plan gave a capacity.
# Usage: gpt_gpu_bench_checks.sh ROOT DTRAIN WORKDIR
set -uo pipefail
root=$1 dtrain=$2 work=$3
fail() { echo "FAIL: $*"; exit 1; }
rm -rf "$work" && mkdir -p "$work" || fail "cannot make $work"

cat >"$work/tiny.yaml" <<'EOF'
model:
  name: gpt
  n_layer: 2
  n_head: 2
  n_embd: 32
  seq_len: 16
  vocab: 512
  dropout: 0.0
data:
  name: tokens
  train_files: train.bin
  val_files: val.bin
train:
  global_batch: 4
  micro_batch: 4
  max_steps: 8
  seed: 1
optimizer:
  name: adamw
  lr: 0.001
eval:
  every_steps: 0
  batch: 4
log:
  every_steps: 2
checkpoint:
  every_steps: 0
device:
  kind: cpu
precision:
  compute: bf16
memory:
  limit: 64MiB   # the plan's probe step at the capacity stays small on a CI machine
EOF

out=$(GPT_CONFIG="$work/tiny.yaml" GPT_STEPS=8 GPT_WARMUP=2 PYTHON="python3 -S" DTRAIN_BIN="$dtrain" \
      GPT_BENCH_LOGS="$work/logs" DTRAIN_COMMIT=smoke DEADLINE=$(( $(date +%s) + 240 )) \
      bash "$root/bench/run_gpt_gpu_bench.sh" 2>&1)
rc=$?
echo "$out"
[ "$rc" -eq 0 ] || fail "run_gpt_gpu_bench.sh exited $rc"

fast="dtrain smoke, precision.deterministic false, precision.gemm_autotune true"
row() { grep -F "| $1 |" <<<"$out" | head -1; }
# A row with figures: its tokens/s cell is a number with thousands separators.
for label in "dtrain smoke" "$fast"; do
  r=$(row "$label")
  [ -n "$r" ] || fail "no table row for '$label'"
  tokens=$(awk -F'|' '{ gsub(/[ ,]/, "", $3); print $3 }' <<<"$r")
  awk -v t="$tokens" 'BEGIN { exit !(t ~ /^[0-9]+$/ && t + 0 > 0) }' || fail "row '$label' has no tokens/s: $r"
  grep -qF "goal: $label tokens/s >= 1.1 x torch.compile: n/a" <<<"$out" || fail "no speed goal line for '$label'"
  grep -qF "goal: $label MFU >= 50%:" <<<"$out" || fail "no MFU goal line for '$label'"
done
grep -qE '^\| PyTorch .* torch\.compile \| not run: python3 -S cannot import torch' <<<"$out" ||
  fail "the torch.compile row does not say why it did not run"
grep -qE '^\| dtrain smoke \| [0-9,]+ \| .* \| [0-9]+ \(planner, probe step at it\)' <<<"$out" ||
  fail "the default row has no capacity from the plan"
[ -f "$work/logs/dtrain_fast.log" ] || fail "the second dtrain run's log was not kept"
grep -qE '^ *deterministic: false' "$work/logs/dtrain_fast_config.yaml" 2>/dev/null &&
  grep -qE '^ *gemm_autotune: true' "$work/logs/dtrain_fast_config.yaml" ||
  fail "the second dtrain run's config (dtrain_fast_config.yaml) lacks deterministic: false and gemm_autotune: true"
grep -qE '^ *deterministic: true' "$work/logs/dtrain_config.yaml" 2>/dev/null ||
  fail "the default dtrain run's config (dtrain_config.yaml) lacks deterministic: true"
grep -q "precision.deterministic false, precision.gemm_autotune true): ok" <<<"$out" ||
  fail "the second dtrain run did not report ok"
echo "gpt_gpu_bench checks passed"
