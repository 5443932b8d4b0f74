#!/usr/bin/env bash
# The CUDA cases on the emulated device's variants (CUDAEMU_VARIANT=1,2,3; cudaemu/README.md
# "Variants"): the device differing from the CPU the ways a GPU may. Builds build-emu as
# scripts/test-emu.sh does (Release, -DBP_CUDA=EMU), then per variant runs a subset: the cases
# that compare the CUDA device with the CPU or with the float64 reference at a tolerance (the
# precision ops, the precision modes' network cases, the 50-step CPU comparisons of one row
# count and of each mode) and the refused-plan cases; the variants' own test (EmuVariant) once.
# Left out: the long training runs (convergence, spirals), determinism and bitwise-repeat cases
# (the same device twice: a variant changes both runs alike), the PyTorch interop, bad input
# and memory cases, which no variant's arithmetic touches. Prints each variant's time.
#   EMU_VARIANTS="1 2 3"   the variants to run (default all three)
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
jobs=$(nproc)
cmake -S . -B build-emu -DCMAKE_BUILD_TYPE=Release -DBP_CUDA=EMU -DBP_MPI=ON >/dev/null
cmake --build build-emu -j"$jobs"
subset='Precision(Ops|Test)\..*/cuda|CrossDevicePrecision\.FiftySteps|Rows/CrossDevice\.FiftySteps.*/7$'
skip='Spirals|PyTorch'
declare -a summary=()
start=$SECONDS
(cd build-emu && ctest --output-on-failure -R 'EmuVariant')
summary+=("variants' own test: $((SECONDS - start)) s")
status=0
for v in ${EMU_VARIANTS:-1 2 3}; do
    echo "== CUDAEMU_VARIANT=$v"
    start=$SECONDS
    (cd build-emu && CUDAEMU_VARIANT=$v ctest --output-on-failure -j"$jobs" --timeout 600 \
        -R "$subset" -E "$skip") || status=1
    summary+=("variant $v: $((SECONDS - start)) s")
done
printf '  %s\n' "${summary[@]}"
[ $status = 0 ] && echo "== test-emu-variants.sh: all passed" || echo "== test-emu-variants.sh: FAILED"
exit $status
