#!/usr/bin/env bash
# The CUDA backend on the emulated device (cudaemu/, -DBP_CUDA=EMU), for machines without a GPU:
#   1. Release build (build-emu): every CUDA case of the test suite, cudaemu's own tests and the
#      2-rank data-parallel suite on the emulated NCCL;
#   2. clang AddressSanitizer + UndefinedBehaviorSanitizer (build-emu-asan): a subset;
#   3. a random schedule (CUDAEMU_SCHEDULE=random, the seed printed): a subset.
# Every pass runs in the emulator's default deferred execution (queued work runs only at the next
# synchronisation, so a missing synchronisation or a kernel on another stream fails a case); the
# 2-rank suite alone runs eager (CUDAEMU_EXEC=eager: its ranks synchronise at different points).
# Prints each part's time. Fails on any failure, and on any CUDA case that skips where its CPU
# twin runs (a CUDA case without a CPU twin must never skip). Results on the emulated device are
# never GPU results: scripts/gpu-check.sh is the GPU's check.
#   EMU_SEED=<n>     the random schedule's seed (default: the date, printed)
#   EMU_ONLY=all|full|asan|random   run one part (default all)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
only=${EMU_ONLY:-all}
jobs=$(nproc)
seed=${EMU_SEED:-$(date +%Y%m%d)}
# The emulator runs every kernel on the calling thread; one OpenMP (and OpenBLAS) thread per test
# keeps the parallel ctest jobs from competing with idle-spinning worker threads.
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
bash scripts/install-deps.sh
# PyTorch + safetensors for the checkpoint interop cases, which run on the emulated device too
# (skipped, with the reason, on both backends without them).
bash scripts/python-env.sh >/dev/null || echo "test-emu.sh: no safetensors venv; the PyTorch interop cases will say why they skip"

# The CUDA cases: the parametrised /cuda ones and the suites that exist only for CUDA.
# (/cuda, and /cuda_<fixture> for the PyTorch golden cases.)
cuda_cases='/cuda|CrossDevice|CudaDevice'
# Subsets for the slower passes: everything but the long training runs (convergence and the
# spirals of every precision mode, finite differences of a whole network, 100-step determinism,
# 50-step CPU comparisons in every mode, two threads, resume, schedules), which are nine tenths
# of the full pass's time, and the PyTorch interop cases (PyTorch's side, not the device's).
# The precision cases (PrecisionOps, PrecisionTest but its spirals, CrossDevicePrecision's
# bitwise repeat) are in the subsets.
slow='Convergence|SpiralsReach99Percent|FiniteDifferencesOfLibraryLoss|Determinism|FiftySteps'
slow="$slow|TwoThreads|Resumed|Rows/CrossDevice.TwoCudaRuns|OptimTest.Schedules|PyTorch|TorchOptim"

declare -a summary=()
part_start() {
    echo "== $1"
    start=$SECONDS
}
part_end() {
    summary+=("$1: $((SECONDS - start)) s")
    echo "$1: $((SECONDS - start)) s"
}

# Fails when a CUDA case skipped while its CPU twin ran. $1: a ctest log.
check_skips() {
    local log=$1 dir=$2 bad=0 name twin out
    while read -r name; do
        case $name in
        */cuda*)
            twin=${name/\/cuda/\/cpu}
            out=$(cd "$dir" && ctest -R "^$twin( |\$)" --output-on-failure 2>&1 || true)
            if grep -q '\*\*\*Skipped' <<<"$out"; then
                echo "skipped on both backends (the same reason applies): $name"
            else
                echo "FAIL: $name skipped on the emulated device, but $twin runs"
                bad=1
            fi
            ;;
        *)
            echo "FAIL: $name skipped (a CUDA-only case must run on the emulated device)"
            bad=1
            ;;
        esac
    done < <(sed -n 's/^ *[0-9]*\/[0-9]* Test *#[0-9]*: \([^ ]*\) .*\*\*\*Skipped.*/\1/p' "$log")
    return $bad
}

configure() { # dir, build type, extra cmake arguments...
    local dir=$1 type=$2
    shift 2
    cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE="$type" -DBP_CUDA=EMU -DBP_MPI=ON "$@" >/dev/null
    cmake --build "$dir" -j"$jobs"
}

if [ "$only" = all ] || [ "$only" = full ]; then
    part_start "emulated device, Release: every CUDA case, cudaemu's tests, 2 ranks on NCCL (build-emu)"
    configure build-emu Release
    log=$root/build-emu/emu-ctest.log
    (cd build-emu && ctest --output-on-failure -j"$jobs" --timeout 1800 \
        -R "$cuda_cases|CudaEmu" 2>&1 | tee "$log")
    ran=$(grep -cE '^ *[0-9]+/[0-9]+ Test +#[0-9]+: .*(/cuda|CrossDevice|CudaDevice)' "$log" || true)
    echo "CUDA cases run: $ran"
    check_skips "$log" build-emu
    # The data-parallel suite with one emulated device per rank: ncclAllReduce between the two
    # processes over shared memory.
    (cd build-emu && OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_NUM_THREADS=1 \
        CUDAEMU_EXEC=eager BP_MPI_TEST_DEVICE=cuda timeout 600 mpiexec -n 2 --oversubscribe \
        tests/bp_mpi_tests --gtest_brief=1)
    part_end "full pass"
fi

if [ "$only" = all ] || [ "$only" = asan ]; then
    part_start "emulated device under ASan+UBSan: a subset (build-emu-asan)"
    flags="-fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer"
    CC=clang CXX=clang++ configure build-emu-asan RelWithDebInfo -DCMAKE_C_FLAGS="$flags" \
        -DCMAKE_CXX_FLAGS="$flags" -DCMAKE_EXE_LINKER_FLAGS="$flags" \
        -DCMAKE_SHARED_LINKER_FLAGS="$flags"
    # ASan's fake stacks (detect_stack_use_after_return) make fibers many times slower.
    (cd build-emu-asan &&
        ASAN_OPTIONS="detect_leaks=1:halt_on_error=1:detect_stack_use_after_return=0:check_initialization_order=1" \
        LSAN_OPTIONS="suppressions=$root/tests/sanitizers/lsan.supp:print_suppressions=0" \
        UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1" \
        ctest --output-on-failure -j"$jobs" --timeout 1800 -R "$cuda_cases|CudaEmu" -E "$slow")
    part_end "asan+ubsan pass"
fi

if [ "$only" = all ] || [ "$only" = random ]; then
    part_start "emulated device, random schedule, CUDAEMU_SEED=$seed: a subset (build-emu)"
    [ -d build-emu ] || configure build-emu Release
    (cd build-emu && CUDAEMU_SCHEDULE=random CUDAEMU_SEED=$seed \
        ctest --output-on-failure -j"$jobs" --timeout 1800 -R "$cuda_cases" -E "$slow")
    part_end "random-schedule pass (seed $seed)"
fi

echo "== test-emu.sh: all passed"
printf '  %s\n' "${summary[@]}"
