#!/usr/bin/env bash
# End-to-end checks on a GPU (label gpu). Skipped (exit 77) with the reason where
# this build has no CUDA backend or the machine has no visible GPU.
#  1. GPU training of the MLP and the CNN follows the CPU trajectory: the loss at each
#     of 20 steps within 1e-3 relative (TF32 off, so fp32 GEMMs on both).
#  2. Equivalence on the GPU: global batch 64 as one process (micro 64, NCCL with one
#     rank) and as 1, 2 and 4 ranks of micro 16 sharing the GPU through the MPI
#     communicator (device.share: true): the same loss at each step within 1e-4.
#     With optimizer.shard: true on 2 and 4 ranks: within 1e-6 of the unsharded ranks.
#  3. comm.backend: nccl named explicitly trains on one rank.
#  4. The batch planner on the card: dtrain plan (micro-batch auto) with the card's free
#     memory (cudaMemGetInfo) and with memory.limit 1GiB, the prediction against the
#     probe step's allocator peak (within 10%); then training with global batch auto
#     (every rank's largest micro-batch) for a few steps, its plan.json checked alike.
# Usage: gpu_checks.sh DTRAIN MPIEXEC METRICS_CHECK SOURCE_DIR WORK_DIR HAVE_CUDA [DATA_DIR]
set -u
dtrain=$1 mpiexec=$2 check=$3 src=$4 work=$5 have_cuda=$6
data=${7:-/usr/share/datasets/fashion-mnist}

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
    echo "FAILED to run $name:"; tail -20 "$work/$name.log"; failures=$((failures + 1))
  fi
}
compare() {
  if ! "$check" compare "$@"; then failures=$((failures + 1)); fi
}

for model in mlp cnn; do
  common=(train "$src/configs/fashion_mnist_$model.yaml" --set "data.path=$data" --set train.global_batch=64 --set train.max_steps=20
          --set eval.every_steps=0 --set log.every_steps=5 --set precision.tf32=false)
  run "${model}_cpu" "$dtrain" "${common[@]}" --set train.micro_batch=64 --set device.kind=cpu
  run "${model}_gpu" "$dtrain" "${common[@]}" --set train.micro_batch=64 --set device.kind=cuda
  compare 1e-3 20 "$work/${model}_cpu" "$work/${model}_gpu"
  if [ ! -x "$mpiexec" ]; then
    echo "NOT RUN: no mpirun on this machine, so the ranks sharing the GPU are not checked"
    continue
  fi
  for np in 1 2 4; do
    run "${model}_gpu_np${np}_shared" "$mpiexec" -np "$np" --oversubscribe "$dtrain" "${common[@]}" \
      --set train.micro_batch=16 --set device.kind=cuda --set device.share=true --set comm.backend=mpi
  done
  compare 1e-4 20 "$work/${model}_gpu" "$work/${model}_gpu_np1_shared" "$work/${model}_gpu_np2_shared" \
    "$work/${model}_gpu_np4_shared"
  # Optimizer-state sharding on the device (reduce_scatter_v and all_gather_v on device
  # buffers through MPI): within 1e-6 of the unsharded ranks of the same layout.
  for np in 2 4; do
    run "${model}_gpu_np${np}_shared_shard" "$mpiexec" -np "$np" --oversubscribe "$dtrain" "${common[@]}" \
      --set train.micro_batch=16 --set device.kind=cuda --set device.share=true --set comm.backend=mpi \
      --set optimizer.shard=true
    compare 1e-6 20 "$work/${model}_gpu_np${np}_shared" "$work/${model}_gpu_np${np}_shared_shard"
  done
done
run nccl_one_rank "$dtrain" train "$src/configs/fashion_mnist_mlp.yaml" --set "data.path=$data" --set train.max_steps=50 \
  --set device.kind=cuda --set comm.backend=nccl
grep -q "over nccl" "$work/nccl_one_rank.log" || { echo "FAILED: the NCCL run did not use NCCL"; failures=$((failures + 1)); }

for model in mlp cnn; do
  plan_args=(plan "$src/configs/fashion_mnist_$model.yaml" --set "data.path=$data" --set device.kind=cuda
             --set train.micro_batch=auto)
  for limit in 0 1GiB; do
    "$dtrain" "${plan_args[@]}" --set memory.limit=$limit | tee "$work/plan_${model}_limit_$limit.txt"
    if "$dtrain" "${plan_args[@]}" --set memory.limit=$limit --json >"$work/plan_${model}_limit_$limit.json"; then
      "$check" plan "$work/plan_${model}_limit_$limit.json" || failures=$((failures + 1))
    else
      echo "FAILED: dtrain plan $model (memory.limit $limit)"; failures=$((failures + 1))
    fi
  done
  run "${model}_gpu_global_auto" "$dtrain" train "$src/configs/fashion_mnist_$model.yaml" --set "data.path=$data" \
    --set device.kind=cuda --set train.micro_batch=auto --set train.global_batch=auto --set memory.limit=4GiB \
    --set train.max_steps=3 --set eval.every_steps=0 --set log.every_steps=1
  cat "$work/${model}_gpu_global_auto.log"
  "$check" plan "$work/${model}_gpu_global_auto/plan.json" || failures=$((failures + 1))
done

echo "gpu checks: $failures failure(s); logs in $work"
[ $failures = 0 ]
