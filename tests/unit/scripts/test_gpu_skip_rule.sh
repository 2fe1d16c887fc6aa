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

# gpu-check.sh applies the rule to its unit-test logs and puts the verdict first.
grep -q 'gpu_skip_verdict "\$gpus"' "$1/scripts/gpu-check.sh" || fail "scripts/gpu-check.sh does not apply the rule"

[ "$failures" -eq 0 ] && echo "gpu skip rule: all checks passed"
exit $((failures > 0))
