#!/usr/bin/env bash
# The CUDA cases on the emulated device's variants (CUDAEMU_VARIANT=1,2,3; cudaemu/README.md
# "Variants"): the device differing from the CPU the ways a GPU may. Builds build-emu as
# scripts/test-emu.sh does (Release, -DBP_CUDA=EMU), runs the variants' own tests (EmuVariant)
# once, then per variant a subset of the CUDA cases (test-emu.sh's selection, /cuda, CrossDevice
# and CudaDevice): every one that runs a GEMM, a plan, a TF32 or bf16 rounding or a math
# function in a few seconds, that is all of them but
#   - the long training runs (convergence, spirals, finite differences of a whole network,
#     schedules, two threads, resume), about two thirds of a full pass's time: they check that
#     training converges, not a tolerance a variant moves, and every one of them passes under
#     each variant (the full passes, `CUDAEMU_VARIANT=v ctest -R '/cuda|CrossDevice|CudaDevice'`,
#     about 10 minutes each on 2 cores, are the issue's record, not CI's);
#   - the determinism and bitwise-repeat cases (the same device twice: a variant changes both
#     runs alike);
#   - the 50-step CPU comparisons of 1, 1000 and 4097 rows (of the rows ones, 7 stays: the
#     same comparison at the size that costs 20 s, not 150), and the PyTorch interop (PyTorch's
#     side, not the device's).
# The 50-step comparisons in each precision mode stay. cudaemu's own tests (CudaEmu*) are left
# out: they pin the default device (variant 0's TF32 rounding, every epilogue offered), which a
# variant changes on purpose.
# Why a subset: a full pass under each of the three variants would add about 30 minutes to
# .ci/run (about 36 today, its limit 60; a full pass took 14 to 22 minutes per variant on 2
# shared cores); this one, 184 cases per variant, took 181-184 s per variant and 9 minutes in
# all with the build (2 cores, -j2, other builds beside it), against about 5 for the 35 precision
# cases it replaced, and the long runs it leaves out exercise the same GEMMs, roundings and math
# functions as the cases it keeps.
#   EMU_VARIANTS="1 2 3"   the variants to run (default all three)
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
jobs=$(nproc)
cmake -S . -B build-emu -DCMAKE_BUILD_TYPE=Release -DBP_CUDA=EMU -DBP_MPI=ON >/dev/null
cmake --build build-emu -j"$jobs"
subset='/cuda|CrossDevice|CudaDevice'
skip='Convergence|SpiralsReach99Percent|FiniteDifferencesOfLibraryLoss|Determinism|TwoThreads'
skip="$skip|Resumed|TwoCudaRuns|OptimTest\.Schedules|PyTorch|TorchOptim|CudaEmu"
skip="$skip|Rows/CrossDevice\.FiftySteps.*/(1|1000|4097)\$"
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
