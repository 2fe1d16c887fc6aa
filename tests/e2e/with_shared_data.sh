#!/usr/bin/env bash
# Runs a test that needs a data file from outside the repository (the shared data
# folder, DTRAIN_SHARED_DATA in tests/e2e/CMakeLists.txt), or skips it saying why.
# Usage: with_shared_data.sh NAME PATH WHERE -- COMMAND ARGS...
#   NAME   the file the test needs (tinyshakespeare.txt)
#   PATH   where configure time found it, "" when it did not
#   WHERE  the folders configure time looked in, for the message
# Exit: COMMAND's exit code, or 77 (the tests' SKIP_RETURN_CODE) without the file.
set -u
name=$1 path=$2 where=$3
shift 3
[ "${1-}" = -- ] && shift
fix="put $name in one of them (or configure with -DDTRAIN_SHARED_DATA=FOLDER) and re-run cmake"
if [ -z "$path" ]; then
  echo "SKIP: this test needs $name, which the repository does not ship, and configure time" \
       "did not find it in: $where; $fix"
  exit 77
fi
if [ ! -r "$path" ]; then
  echo "SKIP: this test needs $name, which the repository does not ship; configure time chose" \
       "$path but it cannot be read (the folders searched: $where); $fix"
  exit 77
fi
exec "$@"
