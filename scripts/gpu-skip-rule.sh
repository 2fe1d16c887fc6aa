# shellcheck shell=bash
# How the GPU check reads the GPU tests' gtest logs, sourced by scripts/gpu-check.sh
# and tested on its own (tests/unit/scripts/test_gpu_skip_rule.sh). The skip rule: on
# a machine where nvidia-smi lists a GPU, a GPU test that skipped is a failure. The GPU
# tests skip when dtrain sees no device, so a skip there means dtrain failed to see the
# GPU that is present (a driver, library path or build problem), and the check would
# otherwise pass without having tested anything.

# gpu_tests_skipped LOG: how many tests the gtest output LOG reports as skipped (the
# per-test "[  SKIPPED ] Suite.Name (N ms)" lines, not the summary's list).
gpu_tests_skipped() {
  grep -cE '^\[  SKIPPED \] [^ ]+ \([0-9]+ ms\)$' "$1" 2>/dev/null || true
}

# gpu_skip_reasons LOG...: the distinct skip messages (the line after "file:line:
# Skipped"), joined with " | ".
gpu_skip_reasons() {
  awk 'after { print; after = 0 } /: Skipped$/ { after = 1 }' "$@" 2>/dev/null | awk '!seen[$0]++' |
    paste -sd'|' - | sed 's/|/ | /g'
}

# gpu_skip_verdict GPU_LIST LOG...: GPU_LIST is the output of `nvidia-smi -L`. When it
# names a GPU ("GPU 0: ...") and any LOG has a skipped test, prints the failure line
# and returns 1; otherwise prints nothing and returns 0.
gpu_skip_verdict() {
  local gpus=$1; shift
  local first_gpu skipped=0 log n
  first_gpu=$(printf '%s\n' "$gpus" | grep -m1 -E '^GPU [0-9]+:' || true)
  [ -n "$first_gpu" ] || return 0
  for log in "$@"; do
    n=$(gpu_tests_skipped "$log")
    skipped=$((skipped + ${n:-0}))
  done
  [ "$skipped" -gt 0 ] || return 0
  echo "FAILED: $skipped GPU tests skipped although nvidia-smi lists a GPU ($first_gpu): $(gpu_skip_reasons "$@")"
  return 1
}

# gpu_failures_only_bf16 LOG: returns 0 when the gtest output LOG is of a run that
# finished (gtest's "[==========] N tests from M test suites ran." line) and failed
# only tests whose names say bf16, at least one; else 1. The GPT benchmark's gate
# (gpu-check.sh) lets such a run through: the fp32 checks it rests on all ran and
# passed. A run that crashed after a bf16 failure has not run them, so it does not
# pass. One awk pass over the file: no pipe whose reader quits early (under pipefail a
# writer killed by SIGPIPE would turn the answer around).
gpu_failures_only_bf16() {
  awk '/^\[==========\] [0-9]+ tests? from [0-9]+ test suites? ran\./ { finished = 1 }
       /^\[  FAILED  \] [A-Za-z]/ { failed++; if (tolower($0) !~ /bf16/) other = 1 }
       END { exit !(finished && failed > 0 && !other) }' "$1" 2>/dev/null
}
