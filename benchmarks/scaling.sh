#!/usr/bin/env bash
# Data-parallel scaling on one machine: for configs M and L, runs, alternating within each round,
#   (a) 1 rank  x 2 OpenMP threads   (the single-process baseline on both cores)
#   (b) 1 rank  x 1 OpenMP thread    (one core)
#   (c) 2 ranks x 1 OpenMP thread    (data-parallel over MPI, one core each)
# then prints a markdown table of medians over the rounds. Builds nothing: build bp_scaling first
#   cmake -S . -B build -DBP_MPI=ON && cmake --build build --target bp_scaling
#
# usage: benchmarks/scaling.sh [BUILD_DIR (default build)] [ROUNDS (default 3)]
# env:   STEPS_M, STEPS_L (steps per sample; default 20, 4), REPEATS (samples per run, default 5),
#        WARMUP (default 2), MPIRUN_FLAGS (default "--oversubscribe --bind-to none").
#
# --bind-to none: for -np <= 2 OpenMPI binds each rank to one core, which would put (a)'s two
# threads on one core. The ratios are paired within a round (the load changes between rounds);
# the table gives the median of the per-round ratios.
set -euo pipefail

build=${1:-build}
rounds=${2:-3}
steps_m=${STEPS_M:-20}
steps_l=${STEPS_L:-4}
repeats=${REPEATS:-5}
warmup=${WARMUP:-2}
mpirun_flags=${MPIRUN_FLAGS:---oversubscribe --bind-to none}

bin=$build/benchmarks/bp_scaling
if [[ ! -x $bin ]]; then
  echo "scaling.sh: $bin not found; build it first:" >&2
  echo "  cmake -S . -B $build -DBP_MPI=ON && cmake --build $build --target bp_scaling" >&2
  exit 1
fi
if ! [[ $rounds =~ ^[1-9][0-9]*$ ]]; then
  echo "scaling.sh: ROUNDS must be a positive integer, not '$rounds'" >&2
  exit 2
fi

# OpenMPI refuses root (containers) unless told.
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

echo "# bp_scaling on $(hostname), $(date -u +%Y-%m-%dT%H:%M:%SZ)"
echo "# $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
echo "# $(mpirun --version 2>&1 | head -1); flags: $mpirun_flags"
echo "# rounds $rounds; steps per sample M $steps_m, L $steps_l; samples $repeats; warm-up $warmup"
echo "# load at start: $(uptime)"

# setup name -> ranks and threads per rank
declare -A ranks=([a]=1 [b]=1 [c]=2) threads=([a]=2 [b]=1 [c]=1)
declare -A label=([a]="(a) 1 rank x 2 threads" [b]="(b) 1 rank x 1 thread"
  [c]="(c) 2 ranks x 1 thread")
setups=(a b c)

# CPU ticks so far: the whole machine's busy time (steal included: the hypervisor gave the
# core to another VM), and this shell's waited-for children's (the runs).
cpu_ticks() {
  local machine ours
  machine=$(awk '/^cpu /{print $2 + $3 + $4 + $7 + $8 + $9}' /proc/stat)
  ours=$(awk '{print $16 + $17}' "/proc/$$/stat")
  echo "$machine $ours"
}
ncpu=$(nproc)
hz=$(getconf CLK_TCK)

# One run; its JSON line goes to $work/CONFIG-SETUP.jsonl (one line per round), and the share
# of the machine that others used meanwhile to $work/CONFIG-SETUP.others. uptime's load average
# counts our own threads, so this is the better sign of a disturbed run.
run_one() {
  local config=$1 setup=$2 round=$3 steps m0 o0 m1 o1 t0 t1 others
  steps=$([[ $config == L ]] && echo "$steps_l" || echo "$steps_m")
  printf '[round %d] %-24s ' "$round" "${label[$setup]}:"
  read -r m0 o0 < <(cpu_ticks)
  t0=$(date +%s.%N)
  # shellcheck disable=SC2086  # mpirun_flags is a list of flags
  OMP_NUM_THREADS=${threads[$setup]} OPENBLAS_NUM_THREADS=${threads[$setup]} \
    mpirun $mpirun_flags -x OMP_NUM_THREADS -x OPENBLAS_NUM_THREADS -np "${ranks[$setup]}" \
    "$bin" --config "$config" --steps "$steps" --warmup "$warmup" --repeats "$repeats" \
    --json "$work/$config-$setup.jsonl" | grep -v '^bp_scaling:'
  t1=$(date +%s.%N)
  read -r m1 o1 < <(cpu_ticks)
  others=$(awk -v m="$((m1 - m0))" -v o="$((o1 - o0))" -v t="$t1" -v s="$t0" -v n="$ncpu" \
    -v hz="$hz" 'BEGIN { v = (m - o) / ((t - s) * n * hz); print v < 0 ? 0 : v }')
  echo "$others" >>"$work/$config-$setup.others"
  printf '[round %d] %-24s  others used %.0f%% of the machine during this run\n' "$round" "" \
    "$(awk -v v="$others" 'BEGIN { print 100 * v }')"
}

for ((r = 1; r <= rounds; ++r)); do
  for config in M L; do
    # Rotate the order each round, so that no setup always runs first (after the other config).
    for ((k = 0; k < 3; ++k)); do
      run_one "$config" "${setups[(k + r - 1) % 3]}" "$r"
    done
  done
done

echo "# load at end: $(uptime)"
echo

# A numeric field of a flat JSON line, as bp_scaling writes it.
field() { sed -E "s/.*\"$1\": ([-0-9.e+]+).*/\1/"; }

# Medians over the rounds: samples/s, the paired ratios to (a) and (b), the all-reduce shares.
# Each row's columns: the round's samples/s for a, b, c; the all-reduce shares of a and b (one
# rank: the call's overhead only); c's shares, the max and the min over ranks; the share of the
# machine others used during a, b and c.
table_rows() {
  local config=$1
  paste \
    <(field samples_per_s <"$work/$config-a.jsonl") \
    <(field samples_per_s <"$work/$config-b.jsonl") \
    <(field samples_per_s <"$work/$config-c.jsonl") \
    <(field allreduce_share <"$work/$config-a.jsonl") \
    <(field allreduce_share <"$work/$config-b.jsonl") \
    <(field allreduce_share <"$work/$config-c.jsonl") \
    <(field allreduce_share_min_rank <"$work/$config-c.jsonl") \
    "$work/$config-a.others" "$work/$config-b.others" "$work/$config-c.others" |
    awk -v config="$config" '
      function median(v, n,    i, j, t) {
        for (i = 2; i <= n; ++i)
          for (j = i; j > 1 && v[j - 1] > v[j]; --j) { t = v[j]; v[j] = v[j - 1]; v[j - 1] = t }
        return n % 2 ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2
      }
      {
        n++
        a[n] = $1; b[n] = $2; c[n] = $3
        share_a[n] = $4; share_b[n] = $5; share[n] = $6; share_min[n] = $7
        oa[n] = $8; ob[n] = $9; oc[n] = $10
        ba[n] = $2 / $1; ca[n] = $3 / $1; cb[n] = $3 / $2
      }
      END {
        printf "| %s | (a) 1 rank x 2 threads | %.0f | 1 | %.2f | %.2f%% (1 rank) | %.0f%% |\n", \
          config, median(a, n), 1 / median(ba, n), 100 * median(share_a, n), 100 * median(oa, n)
        printf "| %s | (b) 1 rank x 1 thread | %.0f | %.2f | 1 | %.2f%% (1 rank) | %.0f%% |\n", \
          config, median(b, n), median(ba, n), 100 * median(share_b, n), 100 * median(ob, n)
        printf "| %s | (c) 2 ranks x 1 thread | %.0f | %.2f | %.2f | %.1f%% (min rank %.1f%%) " \
          "| %.0f%% |\n", config, median(c, n), median(ca, n), median(cb, n), \
          100 * median(share, n), 100 * median(share_min, n), 100 * median(oc, n)
      }'
}

echo "Medians over $rounds rounds (ratios: median of the per-round ratios, same round only;"
echo "others' CPU: the share of the machine's $ncpu CPUs that other processes used during the run)."
echo
echo "| config | setup | samples/s | vs (a) | vs (b) | all-reduce share of step | others' CPU |"
echo "|---|---|---:|---:|---:|---:|---:|"
table_rows M
table_rows L
