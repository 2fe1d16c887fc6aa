#!/usr/bin/env bash
# The GPT on a GPU against the CPU, in fp32 (label gpu): the end-to-end half of the
# fp32 checks that scripts/gpu-check.sh requires before the GPT GPU benchmark (the op
# tests of tests/gpu/test_transformer_ops.cpp and test_cuda_ops.cpp are the other).
# Skipped (exit 77) with the reason where this build has no CUDA backend or the
# machine has no visible GPU.
#  1. Text: tests/e2e/gpt_tiny.yaml (2 layers, 2 heads, width 32, 32-token windows,
#     dropout 0.1, AdamW with clipping) on the bytes of the repository's README.md,
#     20 steps of global batch 24, on the CPU and on the GPU (TF32 off, so fp32 GEMMs
#     on both): the loss at every step, and the validation loss at steps 10 and 20,
#     within 1e-3 relative. Dropout's masks are a hash of the sample and the element
#     (kernels/dropout_hash.h), the same on both devices.
#  (3. below: the same in bf16, and one host wait per step.)
#  2. Token shards at the benchmark's vocabulary: the same model on llm.c shards of
#     random tokens below 50257 (bench/gen_token_shard.py) with model.vocab 50304, 10
#     steps, compared alike: the embedding, the tied head and the cross-entropy at
#     GPT-2's vocabulary, and the uint16 token path onto the GPU.
# Usage: gpu_gpt_checks.sh DTRAIN METRICS_CHECK SOURCE_DIR WORK_DIR HAVE_CUDA
#   (PYTHON: the python3 that runs the shard generator; standard library only)
set -u
dtrain=$1 check=$2 src=$3 work=$4 have_cuda=$5
read -r -a python <<<"${PYTHON:-python3}"

if [ "$have_cuda" != "ON" ]; then
  echo "SKIP: this dtrain was built without the CUDA backend (no nvcc at configure time)"
  exit 77
fi
if ! command -v nvidia-smi >/dev/null || ! nvidia-smi -L >/dev/null 2>&1; then
  echo "SKIP: no visible NVIDIA GPU (nvidia-smi -L fails): GPU checks run on a GPU machine via scripts/gpu-check.sh"
  exit 77
fi
rm -rf "$work" && mkdir -p "$work"
failures=0
run() {  # run NAME ARGS...: one training run into $work/NAME, its log beside it (2 min at most)
  local name=$1; shift
  if ! timeout 120 "$@" --run-dir "$work/$name" >"$work/$name.log" 2>&1; then
    echo "FAILED to run $name:"; tail -n 20 "$work/$name.log"; failures=$((failures + 1))
  fi
}
compare() {
  if ! "$check" compare "$@"; then failures=$((failures + 1)); fi
}

text=(train "$src/tests/e2e/gpt_tiny.yaml" --set "data.path=$src/README.md" --set train.global_batch=24
      --set train.micro_batch=24 --set train.max_steps=20 --set eval.every_steps=10 --set log.every_steps=5
      --set precision.tf32=false --set precision.compute=fp32)
run gpt_text_cpu "$dtrain" "${text[@]}" --set device.kind=cpu
run gpt_text_gpu "$dtrain" "${text[@]}" --set device.kind=cuda
compare 1e-3 20 "$work/gpt_text_cpu" "$work/gpt_text_gpu"

if "${python[@]}" "$src/bench/gen_token_shard.py" "$work/train.bin" --tokens 65536 --vocab 50257 --seed 1 &&
   "${python[@]}" "$src/bench/gen_token_shard.py" "$work/val.bin" --tokens 1025 --vocab 50257 --seed 2; then
  tokens=(train "$src/tests/e2e/gpt_tiny.yaml" --set data.name=tokens --set "data.train_files=$work/train.bin"
          --set "data.val_files=$work/val.bin" --set model.vocab=50304 --set train.global_batch=24
          --set train.micro_batch=24 --set train.max_steps=10 --set eval.every_steps=5 --set log.every_steps=5
          --set precision.tf32=false --set precision.compute=fp32)
  run gpt_tokens_cpu "$dtrain" "${tokens[@]}" --set device.kind=cpu
  run gpt_tokens_gpu "$dtrain" "${tokens[@]}" --set device.kind=cuda
  compare 1e-3 10 "$work/gpt_tokens_cpu" "$work/gpt_tokens_gpu"
else
  echo "FAILED: cannot write the token shards with ${python[*]} (bench/gen_token_shard.py)"
  failures=$((failures + 1))
fi

# 3. bf16 (precision.compute: bf16) on the GPU against the CPU's bf16, the oracle (Note
#    [bf16 storage]): run 1's text, 20 steps. The backends sum their GEMMs in other
#    orders, so a stored bf16 value may differ by one bf16 ulp wherever its fp32 value
#    lay near a rounding boundary, in every tensor (not only in the parameters, as
#    between layouts, which agree within 2e-3), and the GPU's GELU linear and its
#    backward are cuBLASLt's evaluation of GELU (Note [cuBLASLt GELU]: absolute error
#    in |v|, so more than an ulp in GELU's negative tail): the losses are held to
#    1e-2, five times bf16's unit roundoff. And the GPU step waits for the device once (the
#    loss's read-back): host_syncs at most 1 on every step.
run gpt_bf16_cpu "$dtrain" "${text[@]}" --set precision.compute=bf16 --set device.kind=cpu
run gpt_bf16_gpu "$dtrain" "${text[@]}" --set precision.compute=bf16 --set device.kind=cuda --set log.every_steps=1
compare 1e-2 20 "$work/gpt_bf16_cpu" "$work/gpt_bf16_gpu"
if ! "$check" host-syncs 1 20 "$work/gpt_bf16_gpu"; then failures=$((failures + 1)); fi

echo "gpu gpt checks: $failures failure(s); logs in $work"
[ $failures = 0 ]
