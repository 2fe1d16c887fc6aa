#!/usr/bin/env bash
# dtrain launch forwards signals: SIGUSR1 to the launcher reaches every rank (through
# mpirun), which stop with a checkpoint, and the launcher returns their exit code 4.
# Usage: launch_signal_check.sh DTRAIN SOURCE_DIR WORK_DIR
set -u
dtrain=$1 src=$2 work=$3
rm -rf "$work" && mkdir -p "$work"
"$dtrain" launch --nproc 2 -- train "$src/configs/fashion_mnist_cnn.yaml" --set train.max_steps=2000 \
  --set eval.every_steps=0 --run-dir "$work/run" >"$work/run.log" 2>&1 &
pid=$!
for _ in $(seq 1 300); do
  [ -s "$work/run/metrics.jsonl" ] && break
  sleep 0.1
done
sleep 0.5
kill -USR1 "$pid"
wait "$pid"
code=$?
ckpt=$(ls "$work/run/checkpoints" 2>/dev/null | head -1)
echo "dtrain launch exited $code; checkpoint: ${ckpt:-none}"
[ "$code" = 4 ] && [ -n "$ckpt" ] || { grep -v "^plan\|^step" "$work/run.log" | tail -10; exit 1; }
