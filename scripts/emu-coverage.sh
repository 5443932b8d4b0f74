#!/usr/bin/env bash
# Which lines of the CUDA backend (src/cuda/*.c, kernels/*.cu) the emulated device runs: builds
# the EMU configuration with gcov instrumentation (build-emu-cov), runs every CUDA case and the
# 2-rank suite on the emulated NCCL, then prints, per file, the lines run (a line of a template
# counts as run when any instantiation ran it) and lists the lines never run. Lines run here ran
# on the emulator, not on a GPU.
#   --report-only   summarise an existing build-emu-cov without building or running
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
b=$root/build-emu-cov
if [ "${1:-}" != --report-only ]; then
    f=--coverage
    cmake -S . -B "$b" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DBP_CUDA=EMU -DBP_MPI=ON \
        -DCMAKE_C_FLAGS="$f" -DCMAKE_CXX_FLAGS="$f" -DCMAKE_EXE_LINKER_FLAGS="$f" \
        -DCMAKE_SHARED_LINKER_FLAGS="$f" -DCMAKE_MODULE_LINKER_FLAGS="$f" >/dev/null
    cmake --build "$b" -j"$(nproc)" >/dev/null
    find "$b" -name '*.gcda' -delete
    export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
    (cd "$b" && ctest -j"$(nproc)" --timeout 1800 -R '/cuda|CrossDevice|CudaDevice' | tail -3)
    (cd "$b" && OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 \
        CUDAEMU_EXEC=eager BP_MPI_TEST_DEVICE=cuda timeout 900 mpiexec -n 2 --oversubscribe \
        tests/bp_mpi_tests --gtest_brief=1 | tail -1)
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
objs=$b/CMakeFiles/backprop_cuda.dir
[ -d "$objs" ] || { echo "emu-coverage: no $objs (run without --report-only)" >&2; exit 2; }
(cd "$work" && find "$objs" -name '*.gcda' -print0 |
    xargs -0 -I{} sh -c 'gcov -p -o "$(dirname "$1")" "$1" >/dev/null 2>&1' _ {})
python3 - "$work" "$root" <<'PY'
import glob, os, re, sys
work, root = sys.argv[1], sys.argv[2]
want = re.compile(re.escape(root) + r"/(src/cuda/[^/]+\.c|kernels/[^/]+\.cu)$")
total = run = 0
never = []
for path in sorted(glob.glob(os.path.join(work, "*.gcov"))):
    name = os.path.basename(path)[:-5].replace("#", "/")
    m = want.search(name)
    if not m:
        continue
    hit, text = {}, {}
    for line in open(path, errors="replace"):
        g = re.match(r"\s*([^:]+):\s*(\d+):(.*)", line)
        if not g or g.group(1).strip() == "-" or int(g.group(2)) == 0:
            continue
        n, count = int(g.group(2)), g.group(1).strip()
        hit[n] = hit.get(n, False) or not count.startswith(("#####", "====="))
        text[n] = g.group(3).strip()
    ran = sum(hit.values())
    total, run = total + len(hit), run + ran
    print("%-26s %4d of %4d lines run on the emulated device" % (m.group(1), ran, len(hit)))
    never += ["  %s:%d  %s" % (m.group(1), n, text[n][:90]) for n in sorted(hit) if not hit[n]]
print("all: %d of %d lines (%.1f%%)" % (run, total, 100.0 * run / max(total, 1)))
print("never run:")
print("\n".join(never))
PY
