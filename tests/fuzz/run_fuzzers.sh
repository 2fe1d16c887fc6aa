#!/usr/bin/env bash
# Builds the libFuzzer targets (tests/fuzz, clang with ASan and UBSan) and runs each
# for SECONDS from a seed corpus: the shipped configs, small IDX files, and a real
# checkpoint that DTRAIN writes here. A crash, a sanitizer report or an exception
# other than the reader's own error fails the test, and the input that did it is
# kept in WORK/crashes. Exit 77 (a skip, with the reason) where clang or libFuzzer is
# missing.
# Usage: run_fuzzers.sh SOURCE_DIR WORK_DIR SECONDS DTRAIN
set -u
src=$1 work=$2 seconds=$3 dtrain=$4
if ! command -v clang++ >/dev/null; then
  echo "SKIP: clang++ is not installed (scripts/install-deps.sh --test installs clang and libclang-rt-dev)"
  exit 77
fi
mkdir -p "$work"
if ! cmake -S "$src/tests/fuzz" -B "$work/build" -G Ninja -DCMAKE_CXX_COMPILER=clang++ >"$work/configure.log" 2>&1 ||
   ! cmake --build "$work/build" >"$work/build.log" 2>&1; then
  if grep -q "fuzzer" "$work/build.log" 2>/dev/null && grep -qi "cannot find\|not found" "$work/build.log"; then
    echo "SKIP: clang has no libFuzzer runtime here (install libclang-rt-dev)"; tail -5 "$work/build.log"; exit 77
  fi
  echo "FAILED to build the fuzz targets:"; tail -30 "$work/configure.log" "$work/build.log" 2>/dev/null; exit 1
fi

# Seeds.
rm -rf "$work/seeds" "$work/crashes" && mkdir -p "$work/seeds/config" "$work/seeds/idx" "$work/seeds/checkpoint" "$work/crashes"
cp "$src"/configs/*.yaml "$work/seeds/config/"
# IDX: 2 unsigned-byte images of 2x2, plain and gzip; and labels.
printf '\x00\x00\x08\x03\x00\x00\x00\x02\x00\x00\x00\x02\x00\x00\x00\x02\x01\x02\x03\x04\x05\x06\x07\x08' >"$work/seeds/idx/images"
gzip -c "$work/seeds/idx/images" >"$work/seeds/idx/images.gz"
printf '\x00\x00\x08\x01\x00\x00\x00\x03\x01\x02\x03' >"$work/seeds/idx/labels"
printf 'model:\n  name: mlp\n  hidden: [4]\ndata:\n  name: synthetic\n  train_samples: 64\n  test_samples: 16\ntrain:\n  global_batch: 16\n  micro_batch: 16\n  max_steps: 1\ncheckpoint:\n  every_steps: 1\n' >"$work/tiny.yaml"
if "$dtrain" train "$work/tiny.yaml" --run-dir "$work/tiny_run" >"$work/tiny_run.log" 2>&1; then
  cp "$work"/tiny_run/checkpoints/*.dtrain "$work/seeds/checkpoint/"
else
  echo "note: no seed checkpoint (dtrain failed: $(tail -1 "$work/tiny_run.log")); fuzzing the checkpoint reader from nothing"
fi

failures=0
for target in config idx_reader checkpoint; do
  seeds=$work/seeds/${target%_reader}
  corpus=$work/corpus/$target
  mkdir -p "$corpus"
  echo "fuzz_$target: ${seconds} s from $(ls "$seeds" | wc -l) seed(s)"
  if ! TMPDIR=$work ASAN_OPTIONS=detect_leaks=0 "$work/build/fuzz_$target" -max_total_time="$seconds" -timeout=10 \
       -rss_limit_mb=2048 -artifact_prefix="$work/crashes/${target}-" -print_final_stats=1 "$corpus" "$seeds" \
       >"$work/$target.log" 2>&1; then
    echo "FAILED: fuzz_$target found a crash:"; grep -E "ERROR|SUMMARY|terminate|what\(\)|runtime error" "$work/$target.log" | head -10
    ls "$work/crashes" | sed 's/^/  input: /'
    failures=$((failures + 1))
  else
    grep -E "stat::number_of_executed_units|stat::new_units_added" "$work/$target.log" | sed 's/^/  /'
  fi
done
echo "fuzzing: $failures target(s) failed; logs in $work"
[ "$failures" = 0 ]
