#!/usr/bin/env bash
# Builds the libFuzzer targets (tests/fuzz/, clang -fsanitize=fuzzer,address,undefined) in
# build-fuzz and runs each for FUZZ_SECONDS (default 60) from its seed corpus
# (tests/fuzz/corpus/<target>/). Any crash, sanitizer report, leak, timeout (-timeout, seconds
# per input), out-of-memory (-rss_limit_mb) or single allocation over -malloc_limit_mb fails
# the script: a file's header claiming 2^40 elements must be refused before allocating.
# New inputs found go to a scratch copy of the corpus, so the committed seeds stay small;
# a failing input is kept as build-fuzz/artifacts/<target>/crash-*. Before fuzzing, each target
# runs its regression inputs (tests/fuzz/regression/<target>/, inputs that once crashed a
# loader; written by tests/fuzz/make_corpus.py) once each.
#   FUZZ_SECONDS   seconds per target (default 60)
#   FUZZ_TARGETS   space-separated subset (default: all)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
seconds=${FUZZ_SECONDS:-60}
targets=${FUZZ_TARGETS:-"idx csv npy checkpoint config layers"}
flags="-fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer"
CC=clang CXX=clang++ cmake -S . -B build-fuzz -DBP_CUDA=OFF -DBP_BUILD_TESTS=OFF \
    -DBP_BUILD_FUZZERS=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DCMAKE_C_FLAGS="$flags" -DCMAKE_CXX_FLAGS="$flags" >/dev/null
cmake --build build-fuzz -j"$(nproc)" --target $(printf 'fuzz_%s ' $targets)

# One OpenMP/OpenBLAS thread: inputs are tiny, and thread start-up would dominate.
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
export ASAN_OPTIONS="detect_leaks=1:halt_on_error=1"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
failed=()
for t in $targets; do
    work=build-fuzz/work/$t art=build-fuzz/artifacts/$t
    rm -rf "$work" && mkdir -p "$work" "$art"
    start=$SECONDS
    regress=("$root/tests/fuzz/regression/$t"/*)
    if [ -e "${regress[0]}" ] && ! build-fuzz/tests/fuzz/fuzz_$t -close_fd_mask=3 \
        -rss_limit_mb=512 -malloc_limit_mb=256 "${regress[@]}" >"$art/regression.log" 2>&1; then
        echo "fuzz_$t: FAILED on a regression input (log: $art/regression.log)"
        grep -E 'ERROR|SUMMARY|Running:|==[0-9]+==' "$art/regression.log" | head -20 || true
        failed+=("$t")
        continue
    fi
    # -close_fd_mask=3: the CLI parsers print usage errors for most inputs; libFuzzer keeps its
    # own and the sanitizers' reports on a duplicate of stderr.
    if build-fuzz/tests/fuzz/fuzz_$t -max_total_time="$seconds" -timeout=10 -rss_limit_mb=512 \
        -malloc_limit_mb=256 -max_len=4096 -close_fd_mask=3 -print_final_stats=1 \
        -artifact_prefix="$art/" "$work" "$root/tests/fuzz/corpus/$t" >"$art/log" 2>&1; then
        echo "fuzz_$t: ok, $(grep -o 'stat::number_of_executed_units: *[0-9]*' "$art/log" |
            grep -o '[0-9]*$') inputs in $((SECONDS - start)) s"
    else
        echo "fuzz_$t: FAILED (log: $art/log)"
        grep -E 'ERROR|SUMMARY|Test unit written|==[0-9]+==' "$art/log" | head -20 || true
        failed+=("$t")
    fi
done
rm -f /dev/shm/bp-fuzz-* 2>/dev/null || true
if [ ${#failed[@]} -ne 0 ]; then
    echo "fuzz: failed: ${failed[*]}" >&2
    exit 1
fi
echo "fuzz: no crash, leak, hang or over-limit allocation in ${seconds} s per target"
