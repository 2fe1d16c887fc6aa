# shellcheck shell=bash
# Shell helpers shared by the benchmark scripts (run_cpu_bench.sh, run_gpu_bench.sh,
# run_gpt_bench.sh, run_gpt_gpu_bench.sh). Sourced; it defines functions and sets nothing else.

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

# bench_torch_omp_env: the environment PyTorch's CPU runs get for their OpenMP workers'
# wait between parallel loops, as assignments for env(1): BENCH_TORCH_OMP_ENV, by
# default the bounded spin dtrain sets for itself (GOMP_SPINCOUNT=30000, Note [OpenMP
# wait policy] in launch/main.cpp), so that both wait alike; OMP_WAIT_POLICY=PASSIVE
# measures PyTorch's workers asleep between loops, "none" its runtime's own default.
bench_torch_omp_env() {
  local setting=${BENCH_TORCH_OMP_ENV:-GOMP_SPINCOUNT=30000}
  if [ "$setting" != none ]; then echo "$setting"; fi
}

# bench_gpu_name: the first GPU's name as nvidia-smi reports it ("NVIDIA H200"), or
# "unknown" without one.
bench_gpu_name() {
  local name
  name=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1)
  echo "${name:-unknown}"
}

# ---------------------------------------------------------------- machine noise
# For the CPU benchmarks (run_cpu_bench.sh, run_gpt_bench.sh), which share the machine
# with whatever else runs on it: wait for a quiet moment, measure how much of the
# machine other processes took during a run, and run again while that was over 5%.

# Busy CPU jiffies of the whole machine (user, nice, system, irq, softirq).
bench_busy_jiffies() {
  local f
  read -r -a f </proc/stat
  echo $((f[1] + f[2] + f[3] + f[6] + f[7]))
}

# CPU jiffies of the waited-for descendants (cutime + cstime) of process $1.
bench_children_jiffies() {
  local f
  read -r -a f <"/proc/$1/stat"
  echo $((f[15] + f[16]))
}

# bench_wait_for_idle SECONDS WHO: up to SECONDS s until a second with under 10% CPU
# use; WHO names the script in the note when the machine stays busy.
bench_wait_for_idle() {
  local limit=$1 who=$2 waited=0 b0 b1 hz cores
  hz=$(getconf CLK_TCK)
  cores=$(nproc)
  while [ "$waited" -lt "$limit" ]; do
    b0=$(bench_busy_jiffies); sleep 1; b1=$(bench_busy_jiffies)
    [ $(((b1 - b0) * 100)) -lt $((10 * hz * cores)) ] && return 0
    waited=$((waited + 1))
  done
  echo "$who: the machine stayed busy for ${limit}s; measuring anyway" >&2
}

# bench_measured CMD...: runs CMD (which prints one line) and prints "OTHER% LINE",
# OTHER% being the share of the machine that other processes used meanwhile.
bench_measured() {
  local me=$BASHPID b0 o0 t0 line b1 o1 t1 hz cores  # CMD runs in a child of this (sub)shell
  hz=$(getconf CLK_TCK)
  cores=$(nproc)
  b0=$(bench_busy_jiffies); o0=$(bench_children_jiffies "$me"); t0=$(date +%s%N)
  line=$("$@") || return 1
  b1=$(bench_busy_jiffies); o1=$(bench_children_jiffies "$me"); t1=$(date +%s%N)
  awk -v b=$((b1 - b0)) -v o=$((o1 - o0)) -v ns=$((t1 - t0)) -v hz="$hz" -v n="$cores" -v line="$line" \
    'BEGIN { other = 100 * (b - o) / (ns / 1e9 * hz * n); printf "%.0f %s\n", other < 0 ? 0 : other, line }'
}

# bench_measure RETRIES IDLE_WAIT WHO CMD...: wait for idle (bench_wait_for_idle), run
# CMD, and run it again while other processes took over 5% of the machine, at most
# RETRIES times; prints CMD's line, its first field marked with a * when the last run
# was still disturbed.
bench_measure() {
  local retries=$1 idle_wait=$2 who=$3 try result other first rest
  shift 3
  for try in $(seq 0 "$retries"); do
    bench_wait_for_idle "$idle_wait" "$who"
    result=$(bench_measured "$@") || return 1
    read -r other first rest <<<"$result"
    if [ "$other" -le 5 ]; then
      echo "$first${rest:+ $rest}"
      return 0
    fi
    echo -n "   (other processes took ${other}% of the CPU during that run" >&2
    if [ "$try" -lt "$retries" ]; then echo "; running it again)" >&2; else echo ")" >&2; fi
  done
  echo "$first*${rest:+ $rest}"
}
