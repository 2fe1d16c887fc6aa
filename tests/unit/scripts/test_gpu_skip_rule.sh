#!/usr/bin/env bash
# The GPU check's skip rule (scripts/gpu-skip-rule.sh) on made-up nvidia-smi and gtest
# output, in the form gtest 1.12 writes it. Usage: test_gpu_skip_rule.sh SOURCE_DIR
set -uo pipefail
source "$1/scripts/gpu-skip-rule.sh"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
failures=0
fail() { echo "FAIL: $*"; failures=$((failures + 1)); }

reason="no CUDA device visible (no GPU, or no NVIDIA driver): GPU tests run on a GPU machine via scripts/gpu-check.sh"
# A log with `skips` skipped tests and `runs` passed ones.
gtest_log() {
  local skips=$1 runs=$2 i
  echo "[==========] Running $((skips + runs)) tests from 1 test suite."
  for ((i = 0; i < skips; i++)); do
    printf '[ RUN      ] CudaOps.Skip%d\ntests/gpu/gpu_test.h:29: Skipped\n%s\n[  SKIPPED ] CudaOps.Skip%d (0 ms)\n' \
      "$i" "$reason" "$i"
  done
  for ((i = 0; i < runs; i++)); do
    printf '[ RUN      ] CudaOps.Run%d\n[       OK ] CudaOps.Run%d (3 ms)\n' "$i" "$i"
  done
  echo "[  PASSED  ] $runs tests."
  if [ "$skips" -gt 0 ]; then
    echo "[  SKIPPED ] $skips tests, listed below:"
    for ((i = 0; i < skips; i++)); do echo "[  SKIPPED ] CudaOps.Skip$i"; done
  fi
}
gtest_log 2 3 >"$work/two_skips.txt"
gtest_log 1 0 >"$work/one_skip.txt"
gtest_log 0 4 >"$work/no_skip.txt"
gpu="GPU 0: NVIDIA H200 (UUID: GPU-01234567-89ab-cdef-0123-456789abcdef)"
no_gpu="NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver."

# A GPU is listed and 2 + 1 tests skipped: a failure that counts all three and says why.
if out=$(gpu_skip_verdict "$gpu" "$work/two_skips.txt" "$work/one_skip.txt" "$work/no_skip.txt"); then
  fail "skips on a GPU machine passed"
fi
[[ $out == "FAILED: 3 GPU tests skipped although nvidia-smi lists a GPU"* ]] || fail "verdict line: $out"
[[ $out == *"$reason"* ]] || fail "the skip reason is missing: $out"
[[ $out == *"NVIDIA H200"* ]] || fail "the listed GPU is missing: $out"

# No GPU listed (nvidia-smi fails or is absent): skips are what they should be.
gpu_skip_verdict "$no_gpu" "$work/two_skips.txt" >/dev/null || fail "skips without a GPU failed"
gpu_skip_verdict "" "$work/two_skips.txt" >/dev/null || fail "skips without nvidia-smi failed"
# A GPU listed and nothing skipped: passes, silently.
out=$(gpu_skip_verdict "$gpu" "$work/no_skip.txt") || fail "no skips on a GPU machine failed"
[ -z "$out" ] || fail "a passing verdict printed: $out"
# A log that is missing (the binary did not run) counts no skips, and does not pass
# for a skip either: the binary's own status fails the check.
gpu_skip_verdict "$gpu" "$work/missing.txt" >/dev/null || fail "a missing log counted as a skip"

# The benchmark's gate: a finished run whose failures all name bf16 passes it.
# failed_log NAMES...: a run that failed these tests and finished (FINISHED=0: crashed
# after them, so no summary).
failed_log() {
  local name
  echo "[==========] Running 200 tests from 12 test suites."
  for name in "$@"; do printf '[ RUN      ] %s\n[  FAILED  ] %s (1 ms)\n' "$name" "$name"; done
  [ "${FINISHED:-1}" = 1 ] || return 0
  echo "[==========] 200 tests from 12 test suites ran. (900 ms total)"
  echo "[  PASSED  ] $((200 - $#)) tests."
  echo "[  FAILED  ] $# tests, listed below:"
  for name in "$@"; do echo "[  FAILED  ] $name"; done
}
failed_log "CudaOps/LayerNorm/bf16.Backward" "Bf16Gemm.Epilogue" >"$work/bf16_only.txt"
gpu_failures_only_bf16 "$work/bf16_only.txt" || fail "bf16 failures alone did not pass the gate"
failed_log "CudaOps/LayerNorm/bf16.Backward" "CudaOps/LayerNorm/fp32.Backward" >"$work/mixed.txt"
gpu_failures_only_bf16 "$work/mixed.txt" && fail "an fp32 failure passed the gate"
FINISHED=0 failed_log "Bf16Gemm.Epilogue" >"$work/crashed.txt"
gpu_failures_only_bf16 "$work/crashed.txt" && fail "a run that crashed after a bf16 failure passed the gate"
failed_log >"$work/none_failed.txt"
gpu_failures_only_bf16 "$work/none_failed.txt" && fail "a run with no failure passed as bf16-only"
gpu_failures_only_bf16 "$work/missing.txt" && fail "a missing log passed the gate"
# Many fp32 failures (a CUDA error fails every later test) under pipefail, where a
# pipe into grep -q could report the opposite: the answer is the same every time.
mapfile -t many < <(for i in $(seq 300); do echo "CudaOps.Fp32Case$i"; done)
failed_log "${many[@]}" >"$work/many_fp32.txt"
for _ in $(seq 20); do
  gpu_failures_only_bf16 "$work/many_fp32.txt" && { fail "300 fp32 failures passed the gate"; break; }
done
grep -q 'gpu_failures_only_bf16 "\$logs/\$t.txt"' "$1/scripts/gpu-check.sh" || fail "scripts/gpu-check.sh does not gate on the rule"

# gpu-check.sh applies the rule to its unit-test logs and puts the verdict first.
grep -q 'gpu_skip_verdict "\$gpus"' "$1/scripts/gpu-check.sh" || fail "scripts/gpu-check.sh does not apply the rule"

[ "$failures" -eq 0 ] && echo "gpu skip rule: all checks passed"
exit $((failures > 0))
