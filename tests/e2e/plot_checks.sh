#!/usr/bin/env bash
# dtrain plot: a PNG and an SVG from finished runs' metrics (two runs overlaid), the
# panels of a language model's run (validation loss and bits per byte, no accuracy),
# and a clear error for a folder that is not a run. Exit 77 (a skip) without gnuplot.
# Usage: plot_checks.sh DTRAIN SOURCE_DIR WORK_DIR
set -u
dtrain=$1 src=$2 work=$3
if ! command -v gnuplot >/dev/null; then
  echo "SKIP: gnuplot is not installed (scripts/install-deps.sh installs gnuplot-nox)"
  exit 77
fi
rm -rf "$work" && mkdir -p "$work"
failures=0
for seed in 1 2; do
  "$dtrain" train "$src/configs/synthetic_mlp.yaml" --set train.max_steps=40 --set eval.every_steps=10 \
    --set train.seed=$seed --run-dir "$work/run$seed" >"$work/run$seed.log" 2>&1 || { echo "FAILED: run $seed"; exit 1; }
done
"$dtrain" plot "$work/run1" "$work/run2" --out "$work/both.png" || failures=$((failures + 1))
[ "$(head -c 8 "$work/both.png" | od -An -tx1 | tr -d ' \n')" = 89504e470d0a1a0a ] ||
  { echo "FAILED: $work/both.png is not a PNG"; failures=$((failures + 1)); }
[ "$(stat -c %s "$work/both.png")" -gt 20000 ] || { echo "FAILED: the PNG is nearly empty"; failures=$((failures + 1)); }
"$dtrain" plot "$work/run1" --out "$work/one.svg" || failures=$((failures + 1))
grep -q "<svg" "$work/one.svg" && grep -q "test accuracy" "$work/one.svg" && grep -q "test loss" "$work/one.svg" ||
  { echo "FAILED: $work/one.svg is not the SVG plot"; failures=$((failures + 1)); }
grep -q "bits per byte" "$work/one.svg" && { echo "FAILED: a classifier's plot has a bits-per-byte panel"; failures=$((failures + 1)); }

# A tiny GPT on a few KB of text: its evaluations have a loss and bits per byte.
for i in $(seq 1 150); do echo "line $i: the quick brown fox jumps over the lazy dog"; done >"$work/corpus.txt"
cat >"$work/text.yaml" <<EOF
model: {name: gpt, n_layer: 1, n_head: 2, n_embd: 16, seq_len: 16}
data: {name: text, path: $work/corpus.txt}
train: {global_batch: 8, max_steps: 20}
optimizer: {name: adamw, lr: 0.003}
eval: {every_steps: 5}
EOF
"$dtrain" train "$work/text.yaml" --run-dir "$work/text" >"$work/text.log" 2>&1 ||
  { cat "$work/text.log"; echo "FAILED: the text run"; exit 1; }
"$dtrain" plot "$work/text" --out "$work/text.svg" || failures=$((failures + 1))
grep -q "validation loss" "$work/text.svg" && grep -q "validation bits per byte" "$work/text.svg" ||
  { echo "FAILED: $work/text.svg lacks the validation loss or bits per byte"; failures=$((failures + 1)); }
grep -q "test accuracy" "$work/text.svg" && { echo "FAILED: a text run's plot has an accuracy panel"; failures=$((failures + 1)); }
"$dtrain" plot "$work/not_a_run" --out "$work/x.png" 2>"$work/err.txt"
code=$?
[ "$code" = 2 ] && grep -q "cannot read $work/not_a_run/metrics.jsonl" "$work/err.txt" ||
  { echo "FAILED: a missing run gave exit $code: $(cat "$work/err.txt")"; failures=$((failures + 1)); }
echo "plot checks: $failures failure(s)"
[ "$failures" = 0 ]
