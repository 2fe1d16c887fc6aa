# shellcheck shell=bash
# Shell helpers shared by the benchmark scripts (run_gpu_bench.sh, run_gpt_bench.sh,
# run_gpt_gpu_bench.sh). Sourced; it defines functions and sets nothing else.

# bench_limit DEADLINE WANT [FLOOR]: the time limit, in seconds, of a run that would
# like WANT seconds: WANT, or what is left before DEADLINE (an epoch second; empty:
# none) if less; 0 when fewer than FLOOR (default 20) seconds are left, and then the
# caller does not start the run, so that a stuck or slow run costs a table cell, not
# the GPU machine's time.
bench_limit() {
  local deadline=$1 want=$2 floor=${3:-20} left
  if [ -z "$deadline" ]; then echo "$want"; return; fi
  left=$(( deadline - $(date +%s) ))
  if [ "$left" -lt "$floor" ]; then echo 0
  elif [ "$left" -lt "$want" ]; then echo "$left"
  else echo "$want"; fi
}

# bench_ratio A B: A / B to two decimals, or n/a unless both are positive numbers.
bench_ratio() {
  awk -v a="$1" -v b="$2" 'BEGIN { if (a ~ /^[0-9.]+$/ && b ~ /^[0-9.]+$/ && a + 0 > 0 && b + 0 > 0)
                                     printf "%.2f", a / b; else print "n/a" }'
}

# bench_torch_version PYTHON... [-- MODULE...]: torch.__version__ as PYTHON (a command,
# which may be several words: env VAR=... python3) imports it along with MODULEs; nothing
# when it cannot.
bench_torch_version() {
  local cmd=() modules=(torch)
  while [ $# -gt 0 ] && [ "$1" != -- ]; do cmd+=("$1"); shift; done
  [ $# -gt 0 ] && shift
  modules+=("$@")
  "${cmd[@]}" -c "import $(IFS=,; echo "${modules[*]}"); print(torch.__version__)" 2>/dev/null || true
}

# bench_gpu_name: the first GPU's name as nvidia-smi reports it ("NVIDIA H200"), or
# "unknown" without one.
bench_gpu_name() {
  local name
  name=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1)
  echo "${name:-unknown}"
}
