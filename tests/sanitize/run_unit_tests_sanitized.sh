#!/usr/bin/env bash
# The unit tests under AddressSanitizer and UndefinedBehaviorSanitizer: a CPU-only
# Debug build of the unit test binaries with -fsanitize=address,undefined (any report
# fails), then `ctest -L unit` in it. Leak checking is off: Open MPI's and OpenMP's
# runtimes keep allocations until exit.
# Usage: run_unit_tests_sanitized.sh SOURCE_DIR WORK_DIR
set -u
src=$1 work=$2
flags="-fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer"
if ! cmake -S "$src" -B "$work" -G Ninja -DCMAKE_BUILD_TYPE=Debug -DDTRAIN_CUDA=OFF \
     -DCMAKE_CXX_FLAGS="$flags" -DCMAKE_EXE_LINKER_FLAGS="-fsanitize=address,undefined" >"$work.configure.log" 2>&1; then
  echo "FAILED to configure the sanitizer build:"; tail -20 "$work.configure.log"; exit 1
fi
targets=$(cmake --build "$work" --target help | sed -n 's/^\(dtrain_[a-z]*_tests\):.*/\1/p' | tr '\n' ' ')
# shellcheck disable=SC2086
if ! cmake --build "$work" --target $targets >"$work.build.log" 2>&1; then
  echo "FAILED to build the unit tests with sanitizers:"; tail -30 "$work.build.log"; exit 1
fi
cd "$work" || exit 1
ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
  ctest -L unit --output-on-failure --parallel 2
