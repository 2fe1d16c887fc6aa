#!/usr/bin/env bash
# dtrain sweep end to end on NP ranks, on a problem whose gradient noise scale is known:
# linear regression (configs/synthetic_regression.yaml) with x ~ N(0, I_d), d = 16,
# y = w* . x + sigma eps, sigma = 1, loss 1/2 (w . x - y)^2, w = w* + delta.
#
# The truth. A sample's gradient is g = (x.delta - sigma eps) x, so the mean gradient
# is G = E[x x^T] delta = delta, and with Isserlis' theorem for Gaussian x,
#   E[g g^T] = E[(x.delta)^2 x x^T] + sigma^2 I = (|delta|^2 + sigma^2) I + 2 delta delta^T,
#   Sigma = E[g g^T] - G G^T = (|delta|^2 + sigma^2) I + delta delta^T,
#   B_simple = tr(Sigma) / |G|^2 = d (1 + sigma^2 / |delta|^2) + 1.
# The Hessian is I, so B_simple is also McCandlish's B_noise = tr(H Sigma) / G^T H G.
# The held-out targets are noiseless, so eval_loss = 1/2 |delta|^2. The target
# eval_loss = 1/6 is |delta|^2 = 1/3, where the noise scale is 16 (1 + 3) + 1 = 65; it
# starts at w = 0, |delta|^2 = |w*|^2 (about d = 16), where it is about d + 1 = 17.
# The learning rate: for a quadratic with H = I the step that gains most at batch B is
# eps_opt = B / (B + B_noise) (McCandlish et al., eq. 2.6). The config's lr 0.5 at
# base batch 64 with sqrt scaling is within a factor 1.6 of eps_opt at B_noise = 65
# over the ladder 8..256 (8: 0.18 against 0.11; 256: 1.0 against 0.80), so every run
# trains near its best constant rate, which the model behind the fit assumes.
# What the sweep measures as B_simple: each run that reaches the target measures the
# noise scale at its final weights (Note [Noise scale at the end of a run]), which are
# past the target by at most the last step: at eval_loss L the truth is
# 16 (1 + 1 / (2 L)) + 1, so 65 at 1/6, 97 at 1/10 and 113 at 1/12. The runs of 2 or 3
# large steps stop far past it (eval_loss about 0.05, a noise scale near 180), the runs
# of 4 to 17 steps near it; the sweep's value is the median weighted by steps, which
# the long runs decide (73 is measured). The runs' moving averages, which span the
# whole of these short runs and are weighted towards their start, end at 15 to 33.
# Checks:
# 1. the ladder 8..256: every point reaches the target, the fitted B_crit and the
#    sweep's B_simple are each within a factor 2 of 65, and each point's B_simple within
#    a factor 2 of the truth at its final eval_loss;
# 2. a sweep stopped in the middle (a stop request at step 8, as SIGUSR1 would make:
#    the runs of 2 to 6 steps finish first, batch 16 stops) and run again skips the
#    finished points, resumes batch 16 from its checkpoint and gives the same steps as
#    the sweep that was never stopped;
# 3. a bad --target key and an unplannable batch are errors naming them, before any run;
# 4. on 2 ranks, the same ladder under dtrain launch gives the same steps as under mpirun.
# Usage: sweep_checks.sh DTRAIN MPIEXEC NP SOURCE_DIR WORK_DIR
set -u
dtrain=$1 mpiexec=$2 np=$3 src=$4 work=$5
rm -rf "$work" && mkdir -p "$work"
failures=0
fail() { echo "FAILED: $*"; failures=$((failures + 1)); }
config=$src/configs/synthetic_regression.yaml
# One rank with accumulation: the moving average has its two batch sizes (the
# measurement at the end needs none).
extra=()
[ "$np" = 1 ] && extra=(--set train.micro_batch=4)
sweep() { "$mpiexec" -n "$np" "$dtrain" sweep "$config" --target eval_loss=0.1666667 --max-epochs 2 "${extra[@]}" "$@"; }
num() { grep -o "\"$1\":[-0-9.e+]*" "$2" | head -1 | cut -d: -f2; }

# 1. The ladder.
sweep --batches 8,16,32,64,128,256 --dir "$work/ladder" >"$work/ladder.log" 2>&1 ||
  { cat "$work/ladder.log"; echo "FAILED: the ladder"; exit 1; }
json=$work/ladder/sweep.json
[ "$(grep -c '"reached":true' "$json")" = 6 ] || fail "not every point reached the target ($json)"
b_crit=$(grep -o '"b_crit":{"value":[0-9.e+]*' "$json" | cut -d: -f3)
# The sweep's own value, on its line after the points (each point has a b_simple too).
b_simple=$(grep -o '^ "b_simple":[-0-9.e+]*' "$json" | cut -d: -f2)
[ -n "$b_simple" ] || fail "no sweep-wide b_simple in $json"
echo "B_crit $b_crit, B_simple $b_simple (truth 65 at the target)"
awk -v b="$b_crit" 'BEGIN { exit !(b >= 65 / 2 && b <= 65 * 2) }' || fail "B_crit $b_crit is not within a factor 2 of 65"
awk -v b="$b_simple" 'BEGIN { exit !(b >= 65 / 2 && b <= 65 * 2) }' || fail "B_simple $b_simple is not within a factor 2 of 65"
# Each point's value against the truth where it was measured, from its final eval_loss
# (the held-out loss at the final weights): the measurement, not the median, tracks it.
for b in 8 16 32 64 128 256; do
  point=$work/ladder/$(printf 'b%06d-seed1' "$b")/point.json
  loss=$(num final_metric "$point") value=$(num b_simple "$point")
  truth=$(awk -v l="$loss" 'BEGIN { printf "%.1f", 16 * (1 + 1 / (2 * l)) + 1 }')
  echo "batch $b: eval_loss $loss, B_simple $value at the final weights, truth there $truth"
  awk -v b="$value" -v t="$truth" 'BEGIN { exit !(b >= t / 2 && b <= t * 2) }' ||
    fail "batch $b: B_simple $value is not within a factor 2 of $truth, the truth at eval_loss $loss"
done
grep -q "B_crit is about" "$work/ladder.log" || fail "no verdict in $work/ladder.log"
[ -s "$work/ladder/report.md" ] || fail "no report.md"
if command -v gnuplot >/dev/null; then
  [ "$(head -c 8 "$work/ladder/sweep.png" | od -An -tx1 | tr -d ' \n')" = 89504e470d0a1a0a ] || fail "no sweep.png"
fi

# 2. Stopped and run again.
DTRAIN_TEST_STOP_AT_STEP=8 sweep --batches 256,128,64,32,16,8 --dir "$work/resume" >"$work/stopped.log" 2>&1
code=$?
[ "$code" = 4 ] || { cat "$work/stopped.log"; fail "the stopped sweep exited $code, not 4"; }
finished=$(ls "$work"/resume/*/point.json 2>/dev/null | wc -l)
[ "$finished" = 4 ] || fail "$finished points finished before the stop, not 4"
stamps() { stat -c '%n %Y %s' "$work"/resume/b0000{32,64}-seed1/point.json "$work"/resume/b000{128,256}-seed1/point.json; }
stamps_before=$(stamps)
sleep 1
sweep --batches 256,128,64,32,16,8 --dir "$work/resume" >"$work/rerun.log" 2>&1 ||
  { cat "$work/rerun.log"; fail "the rerun"; }
[ "$(grep -c 'finished before, skipped' "$work/rerun.log")" = 4 ] || fail "the rerun did not skip the 4 finished points"
[ "$(grep -c 'dtrain sweep: point ' "$work/rerun.log")" = 2 ] || fail "the rerun ran other than the 2 unfinished points"
grep -q "resuming from .*b000016-seed1/checkpoints/ckpt-0*8.dtrain (step 8)" "$work/rerun.log" ||
  fail "batch 16 did not resume from its checkpoint at step 8"
stamps_after=$(stamps)
[ "$stamps_after" = "$stamps_before" ] || fail "finished points were written again"
for b in 8 16 32 64 128 256; do
  dir=$(printf 'b%06d-seed1' "$b")
  a=$(num steps "$work/ladder/$dir/point.json") r=$(num steps "$work/resume/$dir/point.json")
  [ -n "$a" ] && [ "$a" = "$r" ] || fail "batch $b: $r steps after the stop and rerun, $a without a stop"
done

# 3. Bad input: an error naming it, and no run started.
sweep --target eval_accuracy=0.9 --batches 8,16 --dir "$work/bad_target" >"$work/bad_target.log" 2>&1
code=$?
[ "$code" = 2 ] || fail "a bad --target key exited $code, not 2"
grep -q "eval_accuracy" "$work/bad_target.log" && grep -q "eval_loss" "$work/bad_target.log" ||
  fail "the bad --target error does not name the key and the keys there are: $(cat "$work/bad_target.log")"
[ ! -e "$work/bad_target" ] || fail "a bad --target started runs in $work/bad_target"
sweep --batches 8,99999 --dir "$work/bad_batch" >"$work/bad_batch.log" 2>&1
code=$?
[ "$code" = 2 ] || fail "an unplannable batch exited $code, not 2"
grep -q "batch 99999" "$work/bad_batch.log" || fail "the error does not name batch 99999: $(cat "$work/bad_batch.log")"
[ ! -e "$work/bad_batch" ] || fail "an unplannable batch list started runs in $work/bad_batch"

# 4. Under dtrain launch (its own launcher, no mpirun) on 2 ranks: the same ladder, the
#    same steps at every point as under mpirun.
if [ "$np" = 2 ]; then
  "$dtrain" launch --nproc 2 -- sweep "$config" --target eval_loss=0.1666667 --max-epochs 2 \
    --batches 8,16,32,64,128,256 --dir "$work/launched" >"$work/launched.log" 2>&1 ||
    { cat "$work/launched.log"; fail "the sweep under dtrain launch"; }
  for b in 8 16 32 64 128 256; do
    dir=$(printf 'b%06d-seed1' "$b")
    a=$(num steps "$work/ladder/$dir/point.json") l=$(num steps "$work/launched/$dir/point.json")
    [ -n "$a" ] && [ "$a" = "$l" ] || fail "batch $b: $l steps under dtrain launch, $a under mpirun"
  done
fi

[ "$failures" = 0 ] && echo "sweep checks passed on $np rank(s)"
exit $((failures > 0))
