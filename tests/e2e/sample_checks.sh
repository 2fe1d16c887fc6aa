#!/usr/bin/env bash
# dtrain sample: a tiny GPT trained for 30 steps on a few KB of text this script
# writes, then sampled from its run directory. The same seed gives the same text, another
# seed other text, the output is the prompt and exactly --tokens bytes, temperature 0
# ignores the seed, and the end-of-training sample is what `dtrain sample` gives with
# the run's seed.
# Usage: sample_checks.sh DTRAIN WORK_DIR
set -u
dtrain=$1 work=$2
rm -rf "$work" && mkdir -p "$work"
failures=0
fail() { echo "FAILED: $*"; failures=$((failures + 1)); }

# About 8 KB of text with a little structure: numbered lines of a few sentences.
for i in $(seq 1 160); do
  case $((i % 4)) in
    0) echo "$i. the quick brown fox jumps over the lazy dog." ;;
    1) echo "$i. a stitch in time saves nine." ;;
    2) echo "$i. all that glitters is not gold." ;;
    3) echo "$i. the early bird catches the worm." ;;
  esac
done >"$work/corpus.txt"

cat >"$work/tiny_gpt.yaml" <<EOF
model: {name: gpt, n_layer: 2, n_head: 2, n_embd: 32, seq_len: 32}
data: {name: text, path: $work/corpus.txt}
train: {global_batch: 16, max_steps: 30, seed: 1}
optimizer: {name: adamw, lr: 0.003, clip_grad_norm: 1.0, weight_decay: 0.1}
checkpoint: {every_steps: 30}
log: {every_steps: 10}
device: {kind: cpu}
EOF
run=$work/run
"$dtrain" train "$work/tiny_gpt.yaml" --run-dir "$run" >"$work/train.log" 2>&1 ||
  { cat "$work/train.log"; echo "FAILED: training the tiny GPT"; exit 1; }
grep -q "dtrain: a sample (100 bytes after a newline, temperature 1, seed 1):" "$work/train.log" ||
  fail "no end-of-training sample in $work/train.log"

sample() { "$dtrain" sample "$run" "$@" 2>>"$work/sample.err"; }
sample --seed 3 --tokens 64 >"$work/a1.txt" || fail "dtrain sample --seed 3 exited $?: $(cat "$work/sample.err")"
sample --seed 3 --tokens 64 >"$work/a2.txt" || fail "dtrain sample --seed 3 (again) exited $?"
sample --seed 4 --tokens 64 >"$work/b.txt" || fail "dtrain sample --seed 4 exited $?"
# The default prompt is one newline; the output is the prompt, then the tokens.
for f in a1 a2 b; do
  [ "$(stat -c %s "$work/$f.txt")" = 65 ] || fail "$f.txt holds $(stat -c %s "$work/$f.txt") bytes, not 1 + 64"
  [ "$(head -c 1 "$work/$f.txt" | od -An -tx1 | tr -d ' ')" = 0a ] || fail "$f.txt does not start with the prompt"
done
cmp -s "$work/a1.txt" "$work/a2.txt" || fail "the same seed gave different text: $(cat "$work/a1.txt") / $(cat "$work/a2.txt")"
cmp -s "$work/a1.txt" "$work/b.txt" && fail "seeds 3 and 4 gave the same text: $(cat "$work/a1.txt")"
grep -q "from $run/checkpoints/ckpt-000000030.dtrain (step 30" "$work/sample.err" ||
  fail "stderr does not name the checkpoint: $(cat "$work/sample.err")"

# The defaults (200 tokens), a prompt of its own, greedy decoding that ignores the seed.
sample >"$work/default.txt" || fail "dtrain sample with the defaults exited $?"
[ "$(stat -c %s "$work/default.txt")" = 201 ] || fail "the default gave $(stat -c %s "$work/default.txt") bytes, not 1 + 200"
sample --prompt "the " --tokens 20 --temperature 0 --seed 1 >"$work/g1.txt" || fail "greedy sample exited $?"
sample --prompt "the " --tokens 20 --temperature 0 --seed 9 >"$work/g2.txt" || fail "greedy sample exited $?"
[ "$(head -c 4 "$work/g1.txt")" = "the " ] && [ "$(stat -c %s "$work/g1.txt")" = 24 ] ||
  fail "the greedy sample is not the prompt and 20 bytes: '$(cat "$work/g1.txt")'"
cmp -s "$work/g1.txt" "$work/g2.txt" || fail "temperature 0 depends on the seed"
sample --top-k 1 --seed 5 --tokens 20 --prompt "the " >"$work/k1.txt" || fail "top-k 1 sample exited $?"
cmp -s "$work/g1.txt" "$work/k1.txt" || fail "top-k 1 differs from temperature 0: '$(cat "$work/k1.txt")'"

# The end of training printed 100 bytes from a newline with train.seed: dtrain sample
# with that seed on the checkpoint written at the same step gives the same bytes.
sample --seed 1 --tokens 100 | tail -c +2 >"$work/summary_again.txt"
tail -c 101 "$work/train.log" | head -c 100 >"$work/summary.txt"
cmp -s "$work/summary.txt" "$work/summary_again.txt" ||
  fail "the end-of-training sample differs from dtrain sample --seed 1: '$(cat "$work/summary.txt")' / '$(cat "$work/summary_again.txt")'"

echo "sample checks: $failures failure(s)"
[ "$failures" = 0 ]
