#!/usr/bin/env bash
# One command for a GPU machine (no network needed): build Release with CUDA, run the whole
# test suite, the data-parallel suite with one MPI rank per GPU (NCCL), run compute-sanitizer's memcheck and racecheck over the CUDA cases, run the
# benchmarks in quick mode when a benchmark binary exists, and write a short markdown report to
# benchmarks/results/gpu-check-<date>-<short commit>.md. Exits non-zero when any part fails.
# Budget: about 8 minutes on an H100 (each sanitizer run has its own time limit).
#
# Usage: scripts/gpu-check.sh            (from anywhere; works in the repository root)
# Environment (all optional):
#   BUILD_DIR=build-gpu                  build folder
#   JOBS=<cores>                         parallel build jobs
#   SANITIZER_TIMEOUT=150                seconds per compute-sanitizer tool
#   SANITIZER_FILTER='*cuda*'            gtest filter for the sanitizer runs
#   RACECHECK_FILTER=$SANITIZER_FILTER   gtest filter for racecheck alone (it is the slow one)
#   BENCH_CMD='...'                      benchmark command to run instead of the one found
set -u -o pipefail

cd "$(dirname "$0")/.." || exit 2
ROOT=$(pwd)
BUILD_DIR=${BUILD_DIR:-build-gpu}
JOBS=${JOBS:-$(nproc 2>/dev/null || echo 4)}
SANITIZER_TIMEOUT=${SANITIZER_TIMEOUT:-150}
SANITIZER_FILTER=${SANITIZER_FILTER:-*cuda*}
RACECHECK_FILTER=${RACECHECK_FILTER:-$SANITIZER_FILTER}
LOGS="$BUILD_DIR/gpu-check-logs"
TESTS="$BUILD_DIR/tests/bp_tests"
mkdir -p "$LOGS" benchmarks/results

export PATH="$PATH:/usr/local/cuda/bin"

# ---- what is being checked, and where ------------------------------------------------------
DATE=$(date -u +%Y-%m-%d)
STAMP=$(date -u +%Y-%m-%dT%H:%M:%SZ)
COMMIT=$(git rev-parse --short HEAD 2>/dev/null || echo nocommit)
if [ -n "$(git status --porcelain --untracked-files=no 2>/dev/null)" ]; then
    COMMIT_NOTE="$COMMIT (with uncommitted changes)"
else
    COMMIT_NOTE="$COMMIT"
fi
if command -v nvidia-smi >/dev/null 2>&1; then
    GPU=$(nvidia-smi --query-gpu=index,name,driver_version,memory.total --format=csv,noheader \
        2>/dev/null | sed 's/^/  - /')
    [ -n "$GPU" ] || GPU="  - nvidia-smi found no GPU"
else
    GPU="  - nvidia-smi not found"
fi
NVCC=$(nvcc --version 2>/dev/null | sed -n 's/.*release \([0-9.]*\).*/\1/p')
REPORT="benchmarks/results/gpu-check-$DATE-$COMMIT.md"

# ---- parts: each records a status (PASS, FAIL, SKIP), seconds and a one-line note ----------
declare -a PART_NAMES=() PART_STATUS=() PART_SECONDS=() PART_NOTES=()
FAILED=0

record() { # name status seconds note
    PART_NAMES+=("$1")
    PART_STATUS+=("$2")
    PART_SECONDS+=("$3")
    PART_NOTES+=("$4")
    [ "$2" = FAIL ] && FAILED=1
    printf '%-10s %-4s %5ss  %s\n' "$1" "$2" "$3" "$4"
}

# Runs "$@" with its output in $LOGS/<name>.log; sets RC and SECS.
run_logged() {
    local name=$1
    shift
    local start=$SECONDS
    "$@" >"$LOGS/$name.log" 2>&1
    RC=$?
    SECS=$((SECONDS - start))
}

# Counts from a gtest log: passed, failed, skipped, and how many CUDA cases skipped.
gtest_counts() {
    local log=$1
    local passed failed skipped
    passed=$(sed -n 's/^\[  PASSED  \] \([0-9]*\) test.*/\1/p' "$log" | tail -1)
    failed=$(sed -n 's/^\[  FAILED  \] \([0-9]*\) test.*/\1/p' "$log" | tail -1)
    skipped=$(sed -n 's/^\[  SKIPPED \] \([0-9]*\) test.*/\1/p' "$log" | tail -1)
    echo "${passed:-0} passed, ${failed:-0} failed, ${skipped:-0} skipped" \
        "($(cuda_skips "$log") of them CUDA cases)"
}

# On a GPU machine every CUDA case must run: a skip means the backend did not open. Counts the
# inline lines ("... (0 ms)"), not their repeat in gtest's closing list.
cuda_skips() {
    grep -cE '^\[  SKIPPED \] .*cuda.* \([0-9]+ ms\)$' "$1"
}

# ---- configure and build -------------------------------------------------------------------
# -lineinfo: compute-sanitizer then names the source line of an error (no change to the code).
run_logged configure cmake -S . -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=Release -DBP_CUDA=ON \
    -DCMAKE_CUDA_FLAGS=-lineinfo
if [ $RC -eq 0 ]; then
    record configure PASS $SECS "Release, -DBP_CUDA=ON, -lineinfo, nvcc ${NVCC:-?}"
    run_logged build cmake --build "$BUILD_DIR" -j "$JOBS"
    if [ $RC -eq 0 ]; then
        record build PASS $SECS "$JOBS jobs"
    else
        record build FAIL $SECS "see $LOGS/build.log: $(grep -m1 -iE 'error' "$LOGS/build.log")"
    fi
else
    record configure FAIL $SECS "see $LOGS/configure.log: $(grep -m1 -E 'Error|error' \
        "$LOGS/configure.log")"
    record build SKIP 0 "not configured"
fi

# ---- the whole test suite ------------------------------------------------------------------
if [ -x "$TESTS" ]; then
    run_logged tests "$TESTS" --gtest_color=no
    COUNTS=$(gtest_counts "$LOGS/tests.log")
    if [ $RC -ne 0 ]; then
        record tests FAIL $SECS "$COUNTS; failing: $(grep '^\[  FAILED  \] [A-Z]' \
            "$LOGS/tests.log" | sed 's/^\[  FAILED  \] //; s/,.*//' | head -5 | tr '\n' ' ')"
    elif [ "$(cuda_skips "$LOGS/tests.log")" -gt 0 ]; then
        record tests FAIL $SECS "$COUNTS; first reason: $(grep -m1 -A1 'Skipped' \
            "$LOGS/tests.log" | tail -1)"
    else
        record tests PASS $SECS "$COUNTS"
    fi
else
    record tests SKIP 0 "no test binary ($TESTS)"
fi

# ---- data-parallel on the GPUs: the MPI suite with one rank per GPU --------------------------
# With NCCL in the build (BP_NCCL=AUTO finds it in the toolkit) this runs ncclAllReduce on each
# GPU's stream; a build with MPI but no NCCL runs the host-staged sum instead. Tests that need 2
# ranks skip (with the reason) on a 1-GPU machine.
MPI_TESTS="$BUILD_DIR/tests/bp_mpi_tests"
MPIEXEC=$(command -v mpiexec || command -v mpirun || true)
NGPU=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU')
NCCL=$(sed -n 's/.*backprop: .*MPI \([A-Z]*\), NCCL \([A-Z]*\).*/MPI \1, NCCL \2/p' \
    "$LOGS/configure.log" | tail -1)
if [ ! -x "$MPI_TESTS" ]; then
    record nccl SKIP 0 "no MPI in this build (${NCCL:-not configured}; needs libopenmpi-dev)"
elif [ -z "$MPIEXEC" ]; then
    record nccl SKIP 0 "no mpiexec on PATH"
elif [ "${NGPU:-0}" -lt 1 ]; then
    record nccl SKIP 0 "nvidia-smi lists no GPU"
else
    run_logged nccl env OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 \
        BP_MPI_TEST_DEVICE=cuda timeout 300 "$MPIEXEC" --oversubscribe -np "$NGPU" "$MPI_TESTS" \
        --gtest_color=no
    COUNTS=$(gtest_counts "$LOGS/nccl.log")
    if [ $RC -eq 0 ]; then
        record nccl PASS $SECS "$NGPU rank(s), one per GPU, $NCCL: $COUNTS (rank 0's count)"
    else
        record nccl FAIL $SECS "$NGPU rank(s), $NCCL, exit $RC: $COUNTS"
    fi
fi

# ---- compute-sanitizer over the CUDA cases -------------------------------------------------
SANITIZER=$(command -v compute-sanitizer || true)
sanitize() { # tool filter
    local tool=$1 filter=$2
    if [ ! -x "$TESTS" ]; then
        record "$tool" SKIP 0 "no test binary"
        return
    fi
    if [ -z "$SANITIZER" ]; then
        record "$tool" SKIP 0 "compute-sanitizer not found"
        return
    fi
    local extra=()
    [ "$tool" = memcheck ] && extra=(--leak-check full)
    # API errors are not reported: the library checks every status itself, and tests provoke
    # some on purpose (out of memory); memory and race errors in kernels are what is sought.
    run_logged "$tool" timeout "$SANITIZER_TIMEOUT" "$SANITIZER" --tool "$tool" \
        --error-exitcode 99 --report-api-errors no "${extra[@]}" "$TESTS" --gtest_color=no \
        --gtest_filter="$filter"
    local summary counts
    summary=$(grep -m1 'ERROR SUMMARY' "$LOGS/$tool.log" | sed 's/^=* *//')
    counts=$(gtest_counts "$LOGS/$tool.log")
    if [ $RC -eq 124 ]; then
        record "$tool" FAIL $SECS "timed out after ${SANITIZER_TIMEOUT}s (filter $filter)"
    elif [ $RC -eq 99 ]; then
        record "$tool" FAIL $SECS "${summary:-errors found}; $counts"
    elif [ $RC -ne 0 ]; then
        record "$tool" FAIL $SECS "tests failed under $tool (exit $RC); $counts"
    elif [ "$(cuda_skips "$LOGS/$tool.log")" -gt 0 ]; then
        record "$tool" FAIL $SECS "CUDA cases skipped: nothing was checked; $counts"
    else
        record "$tool" PASS $SECS "${summary:-no summary}; $counts"
    fi
}
sanitize memcheck "$SANITIZER_FILTER"
sanitize racecheck "$RACECHECK_FILTER"

# ---- benchmarks, quick mode ----------------------------------------------------------------
find_bench() {
    local b
    for b in "$BUILD_DIR/benchmarks/bp_bench" "$BUILD_DIR/bp_bench"; do
        if [ -x "$b" ]; then
            echo "$b --quick"
            return
        fi
    done
    if [ -x "$BUILD_DIR/backprop" ] && "$BUILD_DIR/backprop" bench --help >/dev/null 2>&1; then
        echo "$BUILD_DIR/backprop bench --quick --device cuda"
    fi
}
BENCH=${BENCH_CMD:-$(find_bench)}
if [ -z "$BENCH" ]; then
    record bench SKIP 0 "no benchmark binary in $BUILD_DIR (looked for bp_bench, backprop bench)"
else
    # shellcheck disable=SC2086 # the command is a word list on purpose
    run_logged bench timeout 180 $BENCH
    if [ $RC -eq 0 ]; then
        record bench PASS $SECS "$BENCH"
    else
        record bench FAIL $SECS "$BENCH exited $RC"
    fi
fi

# ---- the report ----------------------------------------------------------------------------
{
    echo "# GPU check $DATE, commit $COMMIT"
    echo
    echo "- Date: $STAMP"
    echo "- Commit: $COMMIT_NOTE"
    echo "- GPU (index, name, driver, memory):"
    echo "$GPU"
    echo "- nvcc: ${NVCC:-not found}; host: $(uname -sm), $JOBS build jobs"
    echo "- Result: $([ $FAILED -eq 0 ] && echo PASS || echo FAIL)"
    echo
    echo "| part | result | seconds | notes |"
    echo "| --- | --- | ---: | --- |"
    for i in "${!PART_NAMES[@]}"; do
        note=${PART_NOTES[$i]//|/\\|}
        echo "| ${PART_NAMES[$i]} | ${PART_STATUS[$i]} | ${PART_SECONDS[$i]} | $note |"
    done
    if [ -f "$LOGS/bench.log" ]; then
        echo
        echo "## Benchmarks (quick mode, last 40 lines)"
        echo
        echo '```'
        tail -n 40 "$LOGS/bench.log"
        echo '```'
    fi
    if [ $FAILED -ne 0 ]; then
        echo
        echo "## Failures"
        for i in "${!PART_NAMES[@]}"; do
            [ "${PART_STATUS[$i]}" = FAIL ] || continue
            name=${PART_NAMES[$i]}
            echo
            echo "### $name (last 30 lines of $LOGS/$name.log)"
            echo
            echo '```'
            [ -f "$LOGS/$name.log" ] && tail -n 30 "$LOGS/$name.log"
            echo '```'
        done
    fi
} >"$REPORT"

echo
echo "report: $ROOT/$REPORT"
exit $FAILED
