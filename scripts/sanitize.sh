#!/usr/bin/env bash
# Runs the test suite under the sanitizers; any report fails (exit non-zero):
#   1. clang AddressSanitizer + UndefinedBehaviorSanitizer (build-asan): the whole ctest suite,
#      leak checking on (off for the 2-rank MPI tests, see below). -fno-sanitize-recover=all makes every UB report fatal.
#   2. clang ThreadSanitizer (build-tsan): the tests that start threads (the batch loader's
#      prefetch thread, determinism, two models on two threads).
#   3. valgrind memcheck: a 1-epoch CPU training run of the CLI on a tiny CSV, and the example
#      trainer (examples/train_mlp.c: data on standard input, evaluation, the plateau schedule,
#      a checkpoint handle, model freed before its optimizer) to its early stop (Release build,
#      build-valgrind), leaks included.
# Suppressions live in tests/sanitizers/, each commented with why.
#   SANITIZE_ONLY=asan|tsan|valgrind   run one part
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
only=${SANITIZE_ONLY:-all}
jobs=$(nproc)

configure() { # dir, sanitizer flags, build type
    local dir=$1 flags=$2 type=$3
    CC=clang CXX=clang++ cmake -S . -B "$dir" -DBP_CUDA=OFF -DCMAKE_BUILD_TYPE="$type" \
        -DCMAKE_C_FLAGS="$flags" -DCMAKE_CXX_FLAGS="$flags" \
        -DCMAKE_EXE_LINKER_FLAGS="$flags" -DCMAKE_SHARED_LINKER_FLAGS="$flags" \
        -DCMAKE_MODULE_LINKER_FLAGS="$flags" >/dev/null
    cmake --build "$dir" -j"$jobs"
}

if [ "$only" = all ] || [ "$only" = asan ]; then
    echo "== AddressSanitizer + UndefinedBehaviorSanitizer: the whole test suite (build-asan)"
    start=$SECONDS
    configure build-asan \
        "-fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer" \
        RelWithDebInfo
    # halt_on_error: the first report ends the process with a non-zero status, so ctest (and
    # the CLI tests, which check exit statuses) fail on it.
    export ASAN_OPTIONS="detect_leaks=1:halt_on_error=1:abort_on_error=0:strict_string_checks=1:detect_stack_use_after_return=1:check_initialization_order=1"
    export LSAN_OPTIONS="suppressions=$root/tests/sanitizers/lsan.supp:print_suppressions=0"
    export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
    (cd build-asan && ctest --output-on-failure -j1 --timeout 1200 -E mpi)
    # The MPI tests (2 ranks): OpenMPI's plugins keep allocations at exit that LeakSanitizer
    # cannot attribute (their frames are in unloaded modules), so leak checking is off for
    # them; every other ASan and UBSan check stays on.
    (cd build-asan && ASAN_OPTIONS="${ASAN_OPTIONS/detect_leaks=1/detect_leaks=0}" \
        ctest --output-on-failure -j1 --timeout 1200 -R mpi)
    unset ASAN_OPTIONS LSAN_OPTIONS UBSAN_OPTIONS
    echo "asan+ubsan: $((SECONDS - start)) s"
fi

if [ "$only" = all ] || [ "$only" = tsan ]; then
    echo "== ThreadSanitizer: the threaded tests (build-tsan)"
    start=$SECONDS
    configure build-tsan "-fsanitize=thread -fno-omit-frame-pointer" RelWithDebInfo
    # libgomp is not built with TSan, so its barriers are invisible to it and every OpenMP
    # parallel region would be reported as a race. One OpenMP thread keeps those regions on
    # the calling thread; the threads under test here are the library's own (the loader's
    # prefetch thread) and the test's std::threads, which TSan sees fully.
    export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
    export TSAN_OPTIONS="halt_on_error=1:second_deadlock_stack=1:suppressions=$root/tests/sanitizers/tsan.supp"
    (cd build-tsan && ctest --output-on-failure -j1 --timeout 1200 \
        -R '(^|/)(Loader|Determinism|Concurrency)\.')
    unset TSAN_OPTIONS OMP_NUM_THREADS OPENBLAS_NUM_THREADS
    echo "tsan: $((SECONDS - start)) s"
fi

if [ "$only" = all ] || [ "$only" = valgrind ]; then
    echo "== valgrind memcheck: a 1-epoch CPU training run of the CLI (build-valgrind)"
    start=$SECONDS
    # gcc and DWARF 4: valgrind 3.19 cannot read clang 14's DWARF 5 (strx/addrx forms).
    CC=gcc CXX=g++ cmake -S . -B build-valgrind -DBP_CUDA=OFF -DBP_BUILD_TESTS=OFF \
        -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_C_FLAGS=-gdwarf-4 >/dev/null
    cmake --build build-valgrind -j"$jobs" --target backprop_cli train_mlp
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    python3 - "$tmp/tiny.csv" <<'PY'
import random, sys
rng = random.Random(7)
with open(sys.argv[1], "w") as f:
    f.write("a,b,c,label\n")
    for i in range(96):
        k = i % 3
        f.write("%.4f,%.4f,%.4f,%d\n" % (k + rng.gauss(0, .5), -k + rng.gauss(0, .5), rng.random(), k))
PY
    # One OpenMP/OpenBLAS thread: valgrind serialises threads anyway, and the pools' threads
    # are still alive at exit, where memcheck would report their stacks as "possibly lost".
    OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 valgrind --error-exitcode=1 --leak-check=full \
        --errors-for-leak-kinds=definite,indirect --show-leak-kinds=definite,indirect \
        --suppressions="$root/tests/sanitizers/valgrind.supp" --quiet \
        build-valgrind/backprop train --train "$tmp/tiny.csv" --hidden 8 --epochs 1 --batch 16 \
        --device cpu --save "$tmp/tiny.st" --quiet
    OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 valgrind --error-exitcode=1 --leak-check=full \
        --errors-for-leak-kinds=definite,indirect --show-leak-kinds=definite,indirect \
        --suppressions="$root/tests/sanitizers/valgrind.supp" --quiet \
        build-valgrind/backprop info "$tmp/tiny.st" --dump-weights >/dev/null
    python3 -c "import sys; sys.path.insert(0, 'tests'); import example_trainer as e; \
open(sys.argv[1], 'w').write(e.blobs(600, 1)); open(sys.argv[2], 'w').write(e.blobs(300, 2))" \
        "$tmp/train.csv" "$tmp/test.csv"
    OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 valgrind --error-exitcode=1 --leak-check=full \
        --errors-for-leak-kinds=definite,indirect --show-leak-kinds=definite,indirect \
        --suppressions="$root/tests/sanitizers/valgrind.supp" --quiet \
        build-valgrind/train_mlp - "$tmp/test.csv" "$tmp/best.st" cpu < "$tmp/train.csv" >/dev/null
    echo "valgrind: $((SECONDS - start)) s"
fi
echo "sanitize: no reports"
