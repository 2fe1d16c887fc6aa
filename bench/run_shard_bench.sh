#!/usr/bin/env bash
# Optimizer-state sharding and the planner's levers, measured on this machine
# (bench/RESULTS.md, "More batch from the same memory"). The GPT example
# (configs/gpt_fortunes.yaml) made wider and shorter (n_embd 256, seq_len 32: 3.2M
# parameters, so that AdamW's state is a real share of a rank's memory) at global batch
# 64, on 2 and 4 ranks, with memory.limit set so that the unsharded run needs k = 4:
#   unsharded        optimizer.shard false, memory.recompute none (the reference)
#   sharded, same b  optimizer.shard true at the reference's micro-batch: the cost of
#                    the reduce-scatter and all-gather alone (goal: at most 1.05x)
#   sharded          optimizer.shard true, micro-batch planned: the freed memory
#   auto             both levers on auto: what the planner takes, and why
# Per setting: the predicted per-rank memory by category (plan.json), the allocator's
# peak, the micro-batch and k, and the median step time over steps 5-16.
# Usage: bench/run_shard_bench.sh [BUILD_DIR] [WORK_DIR]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
src=$(dirname "$here")
build=${1:-$src/build}
work=${2:-/tmp/dtrain_shard_bench}
dtrain=$build/dtrain
# shellcheck source=../scripts/mpi-env.sh
source "$src/scripts/mpi-env.sh"
rm -rf "$work" && mkdir -p "$work"
steps=16
common=("$src/configs/gpt_fortunes.yaml" --set model.n_embd=256 --set model.seq_len=32
        --set train.global_batch=64 --set train.max_steps=$steps --set eval.every_steps=0
        --set log.every_steps=4 --set checkpoint.every_steps=0 --set memory.fraction=1.0)

plan_json() {  # plan_json NP ARGS...: dtrain plan --json under mpirun
  local np=$1; shift
  mpirun -np "$np" --oversubscribe "$dtrain" plan "${common[@]}" "$@" --json
}

for np in 2 4; do
  micro=$((64 / (4 * np)))  # the unsharded micro-batch of k = 4
  # The unsharded need at 1 and 2 samples per rank: F + a b. The limit sits half a
  # sample above b = micro, so the planner fits micro and not micro + 1.
  plan_json "$np" --set optimizer.shard=false --set memory.recompute=none --set train.micro_batch=1 >"$work/need1_np$np.json"
  plan_json "$np" --set optimizer.shard=false --set memory.recompute=none --set train.micro_batch=2 >"$work/need2_np$np.json"
  limit=$(python3 - "$work/need1_np$np.json" "$work/need2_np$np.json" "$micro" <<'EOF'
import json, sys
one, two = (json.load(open(p))["ranks"][0]["predicted_peak"] for p in sys.argv[1:3])
b = int(sys.argv[3])
print(int(one + (two - one) * (b - 1) + (two - one) / 2))
EOF
)
  echo "np $np: memory.limit $limit bytes per rank (unsharded micro-batch $micro, k 4)"
  settings=("unsharded:--set optimizer.shard=false --set memory.recompute=none"
            "sharded_same_b:--set optimizer.shard=true --set memory.recompute=none --set train.micro_batch=$micro"
            "sharded:--set optimizer.shard=true --set memory.recompute=none"
            "auto:--set optimizer.shard=auto --set memory.recompute=auto")
  for entry in "${settings[@]}"; do
    name=${entry%%:*}
    read -r -a extra <<<"${entry#*:}"
    mpirun -np "$np" --oversubscribe "$dtrain" train "${common[@]}" --set memory.limit="$limit" "${extra[@]}" \
      --run-dir "$work/${name}_np$np" >"$work/${name}_np$np.log" 2>&1
  done
done

python3 - "$work" <<'EOF'
import json, statistics, sys
work = sys.argv[1]
mib = 1024.0 * 1024.0
def median_step_ms(run):
    lines = [json.loads(l) for l in open(f"{run}/metrics.jsonl") if '"kind":"train"' in l]
    times = [l["time_s"] for l in lines]
    gaps = [b - a for a, b in zip(times[4:], times[5:])]
    return 1e3 * statistics.median(gaps), lines[-1]["mem_peak_mib"]
print("| ranks | setting | micro-batch | k | params MiB | grads MiB | optimizer MiB | activations MiB | peak MiB (rank 0) | step ms (median) | vs unsharded |")
print("| ---: | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
for np in (2, 4):
    base = None
    for name in ("unsharded", "sharded_same_b", "sharded", "auto"):
        run = f"{work}/{name}_np{np}"
        plan = json.load(open(f"{run}/plan.json"))
        r0 = plan["ranks"][0]["predicted"]
        ms, peak = median_step_ms(run)
        base = base or ms
        micro = " + ".join(str(r["micro_batch"]) for r in plan["ranks"])
        label = name.replace("_", " ")
        if name == "auto":
            label += f" (took {plan['levers']['chosen']})"
        print(f"| {np} | {label} | {micro} | {plan['accumulation_steps']} | {r0['params']/mib:.2f} | {r0['grads']/mib:.2f} | "
              f"{r0['optimizer']/mib:.2f} | {r0['activations']/mib:.2f} | {peak:.2f} | {ms:.1f} | {ms/base:.2f}x |")
    print(f"\nnp {np}, auto: {json.load(open(f'{work}/auto_np{np}/plan.json'))['levers']['reason']}\n")
EOF
