#!/usr/bin/env bash
# bench/fusion_ablation, run as gpu-check runs it but on cpu-async (no GPU here) and on
# a small GPT-2-shaped model: it prints one line per variant (all fused, all fused
# with the GEMMs autotuned, all fused with the non-deterministic attention backward,
# each of CudaFusions' five switches off, all off, all fused again), each with a
# positive step time; and, as no switch applies on the CPU and every variant starts
# from the same parameters, the same first loss in all ten, near ln(vocab), an
# untrained GPT's loss (GPT-2's initialisation, std 0.02, leaves the logits near
# zero), the same last loss, below the first (AdamW's steps on one batch lower its
# loss), and the same positive memory peak. Its usage errors exit 2.
# Usage: fusion_ablation_checks.sh FUSION_ABLATION ROOT
set -uo pipefail
bench=$1 root=$2
fail() { echo "FAIL: $*"; exit 1; }

out=$(FUSION_ABLATION_DEVICE=cpu-async "$bench" "$root/bench/gpt2_124m.yaml" 2 model.n_layer=2 model.n_embd=64 \
      model.n_head=2 model.seq_len=32 model.vocab=512 train.micro_batch=2 train.global_batch=2 2>&1)
rc=$?
echo "$out"
[ "$rc" -eq 0 ] || fail "exit $rc"
lines=$(grep -c '^fusion_ablation .* step .* ms .* first loss' <<<"$out")
[ "$lines" -eq 10 ] || fail "$lines variant lines, want 10"
for v in "all fused" "gelu_epilogue off" "gelu_backward off" "bias_gradient off" "layernorm_backward off" \
         "optimizer_spans off" "all off" "gemm_autotune on" \
         "deterministic off" "all fused, again"; do
  grep -q "^fusion_ablation $v " <<<"$out" || fail "no line for '$v'"
done
losses=$(sed -n 's/.*first loss \([^ ]*\) .*/\1/p' <<<"$out" | sort -u)
[ "$(wc -l <<<"$losses")" -eq 1 ] || fail "the variants' first losses differ on cpu-async: $losses"
awk -v l="$losses" 'BEGIN { d = l - log(512); exit !(d < 0.1 && d > -0.1) }' ||
  fail "first loss $losses is not within 0.1 of ln 512 = 6.238"
last=$(sed -n 's/.*last loss \([^ ]*\) .*/\1/p' <<<"$out" | sort -u)
[ "$(wc -l <<<"$last")" -eq 1 ] || fail "the variants' last losses differ on cpu-async: $last"
awk -v f="$losses" -v l="$last" 'BEGIN { exit !(l < f) }' || fail "last loss $last is not below the first, $losses"
sed -n 's/.* step *\([^ ]*\) ms.*/\1/p' <<<"$out" | awk '!($1 > 0) { bad = 1 } END { exit bad }' ||
  fail "a step time is not a positive number"
# The same steps on the same device hold the same buffers: one positive peak for all.
peaks=$(sed -n 's/.*, peak \([^ ]*\) MiB (workspaces \([^ ]*\) MiB)$/\1 \2/p' <<<"$out" | sort -u)
[ "$(grep -c . <<<"$peaks")" -eq 1 ] || fail "the variants' memory peaks differ on cpu-async, or are missing: $peaks"
awk '!($1 > 0) { bad = 1 } END { exit bad }' <<<"$peaks" || fail "the memory peak is not positive: $peaks"

FUSION_ABLATION_DEVICE=tpu "$bench" "$root/bench/gpt2_124m.yaml" >/dev/null 2>&1
[ $? -eq 2 ] || fail "an unknown FUSION_ABLATION_DEVICE did not exit 2"
"$bench" >/dev/null 2>&1
[ $? -eq 2 ] || fail "no arguments did not exit 2"
FUSION_ABLATION_DEVICE=cpu-async "$bench" "$root/bench/gpt2_124m.yaml" 1 train.micro_batch=auto >/dev/null 2>&1
[ $? -eq 2 ] || fail "micro_batch auto did not exit 2"
echo "fusion_ablation checks passed"
