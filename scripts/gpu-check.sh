#!/usr/bin/env bash
# The GPU check: one command on a GPU machine that has no network and no package registry.
# Prepare it here with `bash scripts/gpu-bundle.sh` (it fills .gpu-bundle/: OpenBLAS, zlib and
# GoogleTest from Debian's archive, Fashion-MNIST, the commit); carry .gpu-bundle with the
# working tree; there, `bash scripts/gpu-check.sh`. Without a bundle it builds from the
# machine's own packages (a Debian machine after scripts/install-deps.sh).
#
# Parts, in this order, each under its own cap (seconds), all inside one budget:
#   setup      unpack the bundle, check the tree against it, note the GPU, driver, nvcc, tools
#   build      GoogleTest from the bundle's sources, then backprop: Release, -DBP_CUDA=ON, Ninja,
#              CMAKE_CUDA_ARCHITECTURES=90, -lineinfo, BP_WERROR=OFF (another toolchain's new
#              warnings must not stop the only run); the test binary must list its cases
#   probe      what only the hardware can say (tests/gpu/gpu_probe.c, into probe.txt): the TF32
#              rounding the GPU gives GEMM operands (nearest-even, truncation or half-away, at a
#              1x1x1 and a 64x64x256 GEMM), and cuBLASLt's log of the algorithm and epilogue it
#              chose for each GEMM of a ReLU/GELU model in fp32, tf32 and bf16, with the
#              library's line for any plan it composed instead
#   tests      the whole gtest suite on the GPU
#   memcheck, racecheck, initcheck, synccheck
#              compute-sanitizer over a subset chosen to fit: every op on CUDA, the cross-device
#              runs, the CUDA device cases, one short training (SANITIZER_CASES)
#   bench      backprop bench --device cuda --quick: S, M, L and XL in fp32, tf32 and bf16, each
#              training row beside the rate of its own GEMM shapes in that precision, measured
#              in the same run, and the GEMM sweep in each precision; then the training rows
#              again with --no-graphs (each op queued, no CUDA graph), with each row's launches,
#              host waits and graph use per step (bp_device_get_counters)
#   fashion    the README's default training (backprop train --data fashion-mnist) on cuda:
#              time and test accuracy (the bundle's files, else a generated set of that shape)
#   torch      PyTorch on the same GPU for S, M, L, XL: fp32, TF32, bf16 autocast
#              (benchmarks/peer/torch_mlp_cuda.py with the machine's python3), beside ours
#   nccl       the MPI suite with one rank per GPU, when MPI is there (the bundle carries none)
#
# The budget (GPU_CHECK_BUDGET, 420 s: 7 minutes) is the whole run's. A part starts only when
# its cap (plus 5 s to stop it) fits in what is left; otherwise it is SKIP with the numbers, so
# nothing is ever killed by the budget. A part that reaches its own cap is stopped and is FAIL,
# saying so.
#
# Accounting: a CUDA case is one whose name matches /cuda|crossdevice/ case-insensitively, or
# one that skipped because the CUDA backend did not open. On the GPU every CUDA case must run
# and pass, or the part fails; other skips (root-only, locale) are listed in the report and do
# not count against it. The PyTorch interop case uses this machine's python3 (BP_TORCH_PYTHON).
#
# Output: the report (markdown: date, GPU, driver, nvcc, commit, every part) and the log tails
# go to $OUT when it is set (else the report to benchmarks/results/, the logs stay in
# $BUILD_DIR/gpu-check/), rewritten after every part, so a kill leaves what was done. With OUT
# set, at most seven files land there: the report, gpu-check-logs.txt (each part's last
# lines), tests.log (the whole suite's output), probe.txt (the probe's whole output),
# bench.json, bench-nographs.json, torch.json. The last lines printed are the summary table. Exit status: 0 when no part
# failed, 1 otherwise.
#
# Dry run: GPU_CHECK_DRYRUN=1 (scripts/gpu-dryrun.sh sets it, in a chroot without a GPU) runs
# every part on the CPU with small settings; every CUDA case must then skip for the one reason
# "no CUDA device", the sanitizer parts run their subset without the tool, and the report is
# titled DRY RUN: none of it is a GPU result. It never writes to benchmarks/results/.
#
# Environment (all optional):
#   OUT                        where the report and logs go (the GPU machine's returned folder)
#   BUILD_DIR=build-gpu        build folder
#   JOBS=<cores>               parallel build jobs
#   GPU_CHECK_BUDGET=420       seconds for the whole check
#   GPU_CHECK_CAP_SCALE=1      multiplies every cap and the default budget (a slow machine)
#   SANITIZER_CASES=<regex>    case-insensitive regex over full case names for the sanitizers
#   GPU_CHECK_MPI=OFF          BP_MPI for the build (AUTO or ON where the machine has MPI)
#   BP_TESTS, BP_CLI, BP_MPI_TESTS, BP_GPU_PROBE   the binaries, when the build puts them elsewhere
set -u -o pipefail

cd "$(dirname "$0")/.." || exit 2
ROOT=$(pwd)
T0=$SECONDS
DRY=${GPU_CHECK_DRYRUN:-0}
SCALE=${GPU_CHECK_CAP_SCALE:-1}
BUDGET=${GPU_CHECK_BUDGET:-$((420 * SCALE))}
RESERVE=8 # seconds kept for the last report
BUILD_DIR=${BUILD_DIR:-build-gpu}
case $BUILD_DIR in /*) ;; *) BUILD_DIR=$ROOT/$BUILD_DIR ;; esac
JOBS=${JOBS:-$(nproc 2>/dev/null || echo 4)}
BUNDLE=$ROOT/.gpu-bundle
PREFIX=$BUILD_DIR/bundle-prefix
STATE=$BUILD_DIR/gpu-check
TOOLS=$ROOT/scripts/gpucheck.py
BP_TESTS=${BP_TESTS:-$BUILD_DIR/tests/bp_tests}
BP_CLI=${BP_CLI:-$BUILD_DIR/backprop}
BP_MPI_TESTS=${BP_MPI_TESTS:-$BUILD_DIR/tests/bp_mpi_tests}
BP_GPU_PROBE=${BP_GPU_PROBE:-$BUILD_DIR/tests/bp_gpu_probe}
CUDA_MODULE=$BUILD_DIR/libbackprop_cuda.so
# MPI stays off unless asked for: an unknown MPI found on that machine must not be able to
# break the one build the window has.
MPI=${GPU_CHECK_MPI:-OFF}
SANITIZER_CASES=${SANITIZER_CASES:-'^Backends/OpsTest\..*/cuda$|^Rows/CrossDevice\.|^CudaDevice\.|^Torch/GoldenTest\.FiveStepsMatchTorch/cuda_adamw_clipnorm_ce$'}
if [ "$DRY" = 1 ]; then DEVICE=cpu; MODE=dry; else DEVICE=cuda; MODE=gpu; fi
export PATH="$PATH:/usr/local/cuda/bin"
PY=$(command -v python3 || true)
[ -n "$PY" ] && PY=$(cd "$(dirname "$PY")" && pwd)/$(basename "$PY")

rm -rf "$STATE"
mkdir -p "$STATE"
: >"$STATE/parts.tsv"

# ---- where the results go ------------------------------------------------------------------
DATE=$(date -u +%Y-%m-%dT%H:%M:%SZ)
if [ -f "$BUNDLE/manifest.txt" ]; then
    COMMIT=$(sed -n 's/^commit=//p' "$BUNDLE/manifest.txt")
    COMMIT_SHORT=$(sed -n 's/^commit_short=//p' "$BUNDLE/manifest.txt")
    DIRTY=$(sed -n 's/^dirty=//p' "$BUNDLE/manifest.txt")
    COMMIT_FROM="from .gpu-bundle/manifest.txt, bundled $(sed -n 's/^date=//p' "$BUNDLE/manifest.txt")"
elif COMMIT=$(git rev-parse HEAD 2>/dev/null); then
    COMMIT_SHORT=$(git rev-parse --short HEAD)
    DIRTY=0
    [ -z "$(git status --porcelain --untracked-files=no 2>/dev/null)" ] || DIRTY=1
    COMMIT_FROM="from git"
else
    COMMIT=unknown COMMIT_SHORT=nocommit DIRTY='?' COMMIT_FROM="no bundle and no .git"
fi
COMMIT_NOTE="$COMMIT ($COMMIT_FROM)"
[ "$DIRTY" = 1 ] && COMMIT_NOTE="$COMMIT with uncommitted changes ($COMMIT_FROM)"
if [ -n "${OUT:-}" ]; then
    DEST=$OUT
elif [ "$DRY" = 1 ]; then
    DEST=$STATE # a dry run never writes to benchmarks/results
else
    DEST=$ROOT/benchmarks/results
fi
mkdir -p "$DEST"
NAME=gpu-check-${DATE:0:10}-$COMMIT_SHORT.md
[ "$DRY" = 1 ] && NAME=gpu-check-dryrun-${DATE:0:10}-$COMMIT_SHORT.md
REPORT=$DEST/$NAME
TAILS=
[ -n "${OUT:-}" ] && TAILS=$OUT/gpu-check-logs.txt

# ---- the report, rewritten after every part ------------------------------------------------
declare -A META=([date]=$DATE [commit_short]=$COMMIT_SHORT [commit_note]=$COMMIT_NOTE
    [dry]=$DRY [budget]="$BUDGET s for the whole check, caps x$SCALE")
write_meta() {
    local k
    for k in "${!META[@]}"; do printf '%s=%s\n' "$k" "${META[$k]}"; done >"$STATE/meta.txt"
}
write_report() {
    write_meta
    if [ -z "$PY" ] || ! "$PY" "$TOOLS" report "$STATE" "$REPORT" $TAILS 2>"$STATE/report.err"; then
        # No python (or it failed): the summary alone, so that something comes back.
        {
            echo "# GPU check ${DATE:0:10}, commit $COMMIT_SHORT$([ "$DRY" = 1 ] && echo ' (DRY RUN without a GPU)')"
            echo
            echo "- Commit: $COMMIT_NOTE"
            echo "- The full report could not be written: $(head -c 300 "$STATE/report.err" 2>/dev/null)"
            echo
            echo "| part | result | seconds | note |"
            echo "| --- | --- | --- | --- |"
            sed 's/|/\\|/g; s/\t/ | /g; s/^/| /; s/$/ |/' "$STATE/parts.tsv"
        } >"$REPORT"
    fi
    if [ -n "${OUT:-}" ]; then
        local f
        for f in tests.log probe.txt bench.json bench-nographs.json torch.json; do
            [ -f "$STATE/$f" ] && cp "$STATE/$f" "$OUT/$f"
        done
    fi
}

FAILED=0
record() { # name status seconds note
    local note=${4//$'\t'/ }
    note=${note//$'\n'/ }
    printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$note" >>"$STATE/parts.tsv"
    [ "$2" = FAIL ] && FAILED=1
    printf '%-10s %-4s %5ss  %s\n' "$1" "$2" "$3" "$note"
    write_report
}

# part_begin NAME CAP: starts a part when its cap fits in what is left of the budget; else
# records it SKIP with the numbers and returns 1.
part_begin() {
    local cap=$(($2 * SCALE))
    local left=$((BUDGET - (SECONDS - T0) - RESERVE))
    if [ $((cap + 5)) -gt "$left" ]; then
        record "$1" SKIP 0 "its cap of ${cap}s (+5 s to stop it) does not fit in the ${left}s left of the ${BUDGET}s budget"
        return 1
    fi
    PART=$1
    PART_T0=$SECONDS
    PART_CAP=$cap
    PART_END=$((SECONDS + cap))
    LOG=$STATE/$1.log
    TIMED_OUT=0
    : >"$LOG"
}
part_end() { # status note
    local note=$2 status=$1
    if [ "$TIMED_OUT" = 1 ]; then
        status=FAIL
        note="stopped at its cap of ${PART_CAP}s; $note"
    fi
    record "$PART" "$status" $((SECONDS - PART_T0)) "$note"
}
# step CMD...: runs CMD, its output appended to the part's log, with what is left of the cap.
step() {
    local left=$((PART_END - SECONDS))
    if [ "$left" -le 0 ]; then
        RC=124
        TIMED_OUT=1
        return
    fi
    printf '$ %s\n' "$*" >>"$LOG"
    timeout -k 5 "$left" "$@" >>"$LOG" 2>&1
    RC=$?
    # timeout's own statuses, when the cap was reached (a 137 before it is another SIGKILL).
    if { [ $RC -eq 124 ] || [ $RC -eq 137 ]; } && [ "$SECONDS" -ge "$PART_END" ]; then
        TIMED_OUT=1
    fi
}
first_error() { grep -m1 -iE "$2" "$1" | cut -c1-200; }

write_meta
echo "gpu-check: $([ "$DRY" = 1 ] && echo 'DRY RUN, no GPU; ')budget ${BUDGET}s; report: $REPORT"

# ---- setup: the bundle, the tree, the machine ------------------------------------------------
setup() {
    part_begin setup 30 || return
    local notes=() ok=1
    if [ -f "$BUNDLE/prefix.tar.xz" ]; then
        step "${PY:-python3}" "$TOOLS" unpack "$BUNDLE/prefix.tar.xz" "$PREFIX"
        if [ $RC -ne 0 ]; then
            ok=0
            notes+=("unpacking the bundle failed: $(tail -1 "$LOG")")
        fi
        # What travelled must be what was bundled: the tree has no .git to say so.
        local bad
        bad=$(cd "$ROOT" && sha256sum -c --quiet "$BUNDLE/tree.sha256" 2>/dev/null | grep -c ': FAILED' || true)
        if [ "$bad" -gt 0 ]; then
            META[tree]="$bad files differ from the bundled tree: $(cd "$ROOT" && sha256sum -c --quiet "$BUNDLE/tree.sha256" 2>/dev/null | cut -d: -f1 | head -5 | tr '\n' ' ')"
            notes+=("$bad files differ from the bundle's checksums")
        else
            META[tree]="all $(wc -l <"$BUNDLE/tree.sha256") files match the bundle's checksums"
        fi
        META[bundle]="$(sed -n 's/^package=\([^ ]* [^ ]*\).*/\1/p' "$BUNDLE/manifest.txt" | tr '\n' ',' | sed 's/,$//; s/,/, /g'); data: $(sed -n 's/^data=//p' "$BUNDLE/manifest.txt")"
        RUNTIME=$PREFIX/runtime
        export LD_LIBRARY_PATH=$RUNTIME${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
        local missing
        missing=$(ldd "$RUNTIME/libopenblas.so.0" 2>&1 | grep 'not found' | head -3 | tr '\n' ' ')
        if [ -n "$missing" ]; then
            ok=0
            notes+=("the bundle's OpenBLAS does not load: $missing")
        fi
        notes+=("bundle unpacked")
    else
        META[bundle]="none: the build uses this machine's packages"
        notes+=("no .gpu-bundle: using this machine's packages (run scripts/gpu-bundle.sh where apt works, and carry .gpu-bundle)")
    fi
    NVCC=$(command -v nvcc || true)
    [ -n "$NVCC" ] || { ok=0; notes+=("nvcc not found"); }
    # The toolkit's libraries, for binaries whose run path lacks them (the CLI, linked as C,
    # gets no entry for libcudart) on a machine whose ld.so.conf does not list them.
    local d
    for d in "${NVCC%/bin/nvcc}/lib64" "${NVCC%/bin/nvcc}/targets/x86_64-linux/lib"; do
        if [ -n "$NVCC" ] && compgen -G "$d/libcudart.so.*" >/dev/null; then
            export LD_LIBRARY_PATH=${LD_LIBRARY_PATH:+$LD_LIBRARY_PATH:}$d
            break
        fi
    done
    META[nvcc]=$("${NVCC:-nvcc}" --version 2>/dev/null | sed -n 's/.*release \([0-9.]*\), \(V[0-9.]*\).*/\1 (\2)/p')
    META[nvcc]="${META[nvcc]:-not found} at ${NVCC:-?}"
    if command -v nvidia-smi >/dev/null 2>&1; then
        META[gpu]=$(nvidia-smi --query-gpu=index,name,driver_version,memory.total,compute_cap \
            --format=csv,noheader 2>/dev/null | tr '\n' ';' | sed 's/;$//')
        META[cuda_driver]=$(nvidia-smi 2>/dev/null | sed -n 's/.*CUDA Version: *\([0-9.]*\).*/\1/p' | head -1)
        NGPU=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU')
    else
        META[gpu]="nvidia-smi not found"
        NGPU=0
    fi
    [ -n "${META[gpu]}" ] || META[gpu]="nvidia-smi lists no GPU"
    META[host]="$(uname -srm), $(nproc) cores, $(ldd --version 2>/dev/null | head -1 | sed 's/^ldd //'), $JOBS build jobs"
    META[tools]="cmake $(cmake --version 2>/dev/null | sed -n '1s/cmake version //p'), ninja $(ninja --version 2>/dev/null), gcc $(gcc -dumpfullversion 2>/dev/null)"
    for t in cmake ninja gcc g++; do command -v $t >/dev/null || { ok=0; notes+=("$t not found"); }; done
    if [ -n "$PY" ]; then
        META[python]="$PY: $(env -u LD_LIBRARY_PATH "$PY" -c 'import sys, torch
try:
    import safetensors; s = safetensors.__version__
except ImportError:
    s = "missing"
print("Python %s, torch %s (CUDA %s, GPU visible: %s), safetensors %s" % (sys.version.split()[0],
      torch.__version__, torch.version.cuda, torch.cuda.is_available(), s))' 2>&1 | tail -1)"
    else
        META[python]="python3 not found"
        ok=0
        notes+=("python3 not found")
    fi
    if [ "$DRY" != 1 ] && [ "${NGPU:-0}" -lt 1 ]; then notes+=("no GPU listed by nvidia-smi"); fi
    notes+=("${META[gpu]}" "nvcc ${META[nvcc]%% at *}")
    local joined
    joined=$(printf '%s; ' "${notes[@]}")
    part_end "$([ $ok = 1 ] && echo PASS || echo FAIL)" "${joined%; }"
}

# ---- build ------------------------------------------------------------------------------------
BUILT=0
build() {
    part_begin build 150 || return
    local cmake_args=() t gtest_s=0 conf_s=0 build_s=0
    if [ -d "$PREFIX/usr/src/googletest" ]; then
        t=$SECONDS
        local gsrc=$PREFIX/usr/src/googletest gbuild=$BUILD_DIR/googletest gprefix=$BUILD_DIR/googletest-install
        step cmake -S "$gsrc" -B "$gbuild" -G Ninja -DCMAKE_BUILD_TYPE=Release \
            -DCMAKE_INSTALL_PREFIX="$gprefix" -DBUILD_GMOCK=ON -DINSTALL_GTEST=ON \
            -DCMAKE_POSITION_INDEPENDENT_CODE=ON -DCMAKE_POLICY_VERSION_MINIMUM=3.5
        [ $RC -eq 0 ] && step cmake --build "$gbuild" -j "$JOBS" --target install
        gtest_s=$((SECONDS - t))
        if [ $RC -ne 0 ]; then
            part_end FAIL "GoogleTest from the bundle did not build: $(first_error "$LOG" 'error|fatal')"
            return
        fi
        local L=$PREFIX/usr/lib/x86_64-linux-gnu
        cmake_args+=(-DGTest_DIR="$gprefix/lib/cmake/GTest"
            -DBP_OPENBLAS_OPENMP="$L/openblas-openmp/libopenblas.so"
            -DBP_OPENBLAS_OPENMP_INCLUDE="$PREFIX/usr/include/x86_64-linux-gnu/openblas-openmp"
            -DZLIB_INCLUDE_DIR="$PREFIX/usr/include"
            -DZLIB_LIBRARY="$PREFIX/lib/x86_64-linux-gnu/libz.so.1")
    fi
    t=$SECONDS
    # The real CUDA backend (not the emulated one), for this GPU only.
    step cmake -S "$ROOT" -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=Release -DBP_CUDA=ON \
        -DCMAKE_CUDA_COMPILER="${NVCC:-nvcc}" -DCMAKE_CUDA_ARCHITECTURES=90 \
        -DCMAKE_CUDA_FLAGS=-lineinfo -DBP_WERROR=OFF -DBP_MPI="$MPI" "${cmake_args[@]}"
    conf_s=$((SECONDS - t))
    if [ $RC -ne 0 ]; then
        part_end FAIL "configure failed after ${conf_s}s: $(first_error "$LOG" 'CMake Error|error')"
        return
    fi
    META[configured]=$(grep -m1 'backprop: CUDA backend' "$LOG" | sed 's/^-- //')
    t=$SECONDS
    step cmake --build "$BUILD_DIR" -j "$JOBS"
    build_s=$((SECONDS - t))
    if [ $RC -ne 0 ]; then
        part_end FAIL "build failed after ${build_s}s: $(first_error "$LOG" 'error')"
        return
    fi
    # The binaries load here (bundle libraries, CUDA runtime) and the suite lists its cases.
    [ -f "$CUDA_MODULE" ] && export BP_CUDA_MODULE=$CUDA_MODULE
    step "$BP_TESTS" --gtest_list_tests
    if [ $RC -ne 0 ]; then
        part_end FAIL "$BP_TESTS does not start: $(tail -2 "$LOG" | tr '\n' ' ')"
        return
    fi
    "$BP_TESTS" --gtest_list_tests >"$STATE/list.txt" 2>&1
    "$PY" "$TOOLS" cases "$STATE/list.txt" >"$STATE/cases.txt"
    BUILT=1
    local warnings
    warnings=$(grep -c -E 'warning[: ]' "$LOG")
    part_end PASS "GoogleTest ${gtest_s}s, configure ${conf_s}s, build ${build_s}s; Ninja, sm_90, -lineinfo, BP_WERROR=OFF, $JOBS jobs; ${META[configured]#backprop: }; $warnings warning lines; $(wc -l <"$STATE/cases.txt") cases listed"
}

# Our binaries' environment: the bundle's libraries (exported), the CUDA module when the build
# has one, and this machine's python3 for the PyTorch interop case, started without our
# LD_LIBRARY_PATH so that torch loads its own CUDA libraries, not the toolkit's.
run_env() {
    local py=$STATE/torch-python
    if [ ! -x "$py" ]; then
        printf '#!/bin/sh
unset LD_LIBRARY_PATH
exec "%s" "$@"
' "${PY:-python3}" >"$py"
        chmod +x "$py"
    fi
    RUN_ENV=(env BP_TORCH_PYTHON="$py")
    [ -f "$CUDA_MODULE" ] && RUN_ENV+=(BP_CUDA_MODULE="$CUDA_MODULE")
}

# ---- the probe: TF32 rounding, cuBLASLt's choices -------------------------------------------
probe() {
    part_begin probe 30 || return
    if [ $BUILT != 1 ] || [ ! -x "$BP_GPU_PROBE" ]; then
        part_end SKIP "not built (see the build part; $BP_GPU_PROBE)"
        return
    fi
    run_env
    step "${RUN_ENV[@]}" "$BP_GPU_PROBE" "$DEVICE"
    cp "$LOG" "$STATE/probe.txt"
    local tf32 lines
    tf32=$(grep '^tf32 ' "$LOG" | sed 's/ (probes.*//' | paste -sd ';' | sed 's/;/; /g')
    lines=$(grep -c '^  \[' "$LOG")
    local what="${tf32:-no TF32 line}; $lines cuBLASLt log lines (probe.txt)"
    [ "$DRY" = 1 ] && what="dry run on the CPU, not the GPU's rounding: $what"
    if [ $RC -eq 0 ]; then
        part_end PASS "$what"
    else
        part_end FAIL "bp_gpu_probe exited $RC: $(grep -m1 FAILED "$LOG" | cut -c1-200); $what"
    fi
}

# ---- the whole suite ------------------------------------------------------------------------
tests() {
    part_begin tests 100 || return
    if [ $BUILT != 1 ]; then
        part_end SKIP "not built (see the build part)"
        return
    fi
    run_env
    step "${RUN_ENV[@]}" "$BP_TESTS" --gtest_color=no
    local r
    r=$("$PY" "$TOOLS" tally "$LOG" "$STATE/cases.txt" "$MODE" "$STATE/tests.json" "$RC")
    part_end "${r%%$'\t'*}" "${r#*$'\t'}"
}

# ---- compute-sanitizer over the subset ------------------------------------------------------
SANITIZER=$(command -v compute-sanitizer || true)
[ -n "$SANITIZER" ] || [ ! -x /usr/local/cuda/compute-sanitizer/compute-sanitizer ] ||
    SANITIZER=/usr/local/cuda/compute-sanitizer/compute-sanitizer
sanitize() { # tool cap
    local tool=$1
    part_begin "$tool" "$2" || return
    if [ $BUILT != 1 ]; then
        part_end SKIP "not built (see the build part)"
        return
    fi
    "$PY" "$TOOLS" select "$STATE/cases.txt" "$SANITIZER_CASES" >"$STATE/$tool.cases"
    local n filter kinds
    n=$(grep -c . "$STATE/$tool.cases")
    if [ "$n" -eq 0 ]; then
        part_end FAIL "SANITIZER_CASES matched no case"
        return
    fi
    kinds="ops $(grep -ci '^Backends/OpsTest\.' "$STATE/$tool.cases"), cross-device $(grep -ci 'CrossDevice\.' "$STATE/$tool.cases"), device $(grep -ci '^CudaDevice\.' "$STATE/$tool.cases"), training $(grep -ci 'GoldenTest\.' "$STATE/$tool.cases")"
    filter=$(paste -sd: "$STATE/$tool.cases")
    run_env
    if [ "$DRY" = 1 ]; then
        # No GPU: the selection runs without the tool, to show that it picks and runs cases.
        step "${RUN_ENV[@]}" "$BP_TESTS" --gtest_color=no --gtest_filter="$filter"
        local r
        r=$("$PY" "$TOOLS" tally "$LOG" "$STATE/$tool.cases" dry "$STATE/$tool.json" "$RC")
        if [ "${r%%$'\t'*}" = PASS ]; then
            part_end SKIP "dry run, no GPU: $tool not run; its $n cases ($kinds) ran without it: ${r#*$'\t'}"
        else
            part_end FAIL "dry run: the $n selected cases ($kinds) did not run cleanly: ${r#*$'\t'}"
        fi
        return
    fi
    if [ -z "$SANITIZER" ]; then
        part_end SKIP "compute-sanitizer not found (PATH, /usr/local/cuda/compute-sanitizer)"
        return
    fi
    local extra=()
    [ "$tool" = memcheck ] && extra=(--leak-check full)
    # API errors are not reported: the library checks every status itself and the tests
    # provoke some on purpose (out of memory); kernel memory, race, init and sync errors are
    # what is sought.
    step "${RUN_ENV[@]}" "$SANITIZER" --tool "$tool" --error-exitcode 99 --report-api-errors no \
        --print-limit 50 "${extra[@]}" "$BP_TESTS" --gtest_color=no --gtest_filter="$filter"
    local rc=$RC summary status r
    summary=$("$PY" "$TOOLS" sanitizer "$LOG")
    r=$("$PY" "$TOOLS" tally "$LOG" "$STATE/$tool.cases" gpu "$STATE/$tool.json" "$rc")
    status=${r%%$'\t'*}
    if [ "${summary%%$'\t'*}" = UNSUPPORTED ]; then
        part_end SKIP "compute-sanitizer refuses this device: ${summary#*$'\t'}"
        return
    fi
    if [ $rc -eq 99 ]; then
        part_end FAIL "$n cases ($kinds): ${summary#*$'\t'}; ${r#*$'\t'}"
    else
        part_end "$status" "$n cases ($kinds): ${summary#*$'\t'}; ${r#*$'\t'}"
    fi
}

# ---- benchmarks -----------------------------------------------------------------------------
bench() {
    part_begin bench 120 || return
    if [ $BUILT != 1 ]; then
        part_end SKIP "not built (see the build part)"
        return
    fi
    run_env
    local args=(bench --device "$DEVICE" --quick --json "$STATE/bench.json")
    [ "$DRY" = 1 ] && args+=(--config 'tiny,S,XL')
    step "${RUN_ENV[@]}" "$BP_CLI" "${args[@]}"
    if [ $RC -ne 0 ]; then
        part_end FAIL "backprop ${args[*]} exited $RC: $(tail -1 "$LOG")"
        return
    fi
    # The same training rows queued op by op (no CUDA graph), beside the graphed ones above
    local eager=(bench --device "$DEVICE" --quick --only train --no-limits --no-graphs
        --json "$STATE/bench-nographs.json")
    [ "$DRY" = 1 ] && eager+=(--config 'tiny,S')
    step "${RUN_ENV[@]}" "$BP_CLI" "${eager[@]}"
    if [ $RC -eq 0 ]; then
        part_end PASS "$([ "$DRY" = 1 ] && echo 'dry run on the CPU, not GPU figures: ')$("$PY" "$TOOLS" note-bench "$STATE/bench.json" "$STATE/bench-nographs.json")"
    else
        part_end FAIL "backprop ${eager[*]} exited $RC: $(tail -1 "$LOG")"
    fi
}

fashion() {
    part_begin fashion 45 || return
    if [ $BUILT != 1 ]; then
        part_end SKIP "not built (see the build part)"
        return
    fi
    local dir data
    if [ -f "$BUNDLE/fashion-mnist/train-images-idx3-ubyte.gz" ]; then
        dir=$BUNDLE/fashion-mnist
        data="Fashion-MNIST, the bundle's files ($(sed -n 's/^data=//p' "$BUNDLE/manifest.txt"))"
    elif [ -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]; then
        dir=/usr/share/datasets/fashion-mnist
        data="Fashion-MNIST, this machine's $dir"
    else
        dir=$STATE/fashion-generated
        step "$PY" "$TOOLS" fashion-data "$dir"
        data="GENERATED data of Fashion-MNIST's shape (60000 + 10000 images of 28x28, 10 classes; the real files did not travel): the time is this run's, the accuracy says nothing about Fashion-MNIST"
    fi
    run_env
    local args=(train --data fashion-mnist --data-dir "$dir" --device "$DEVICE")
    [ "$DRY" = 1 ] && args+=(--epochs 1)
    step "${RUN_ENV[@]}" "$BP_CLI" "${args[@]}"
    local done_line
    done_line=$(grep -m1 '^done:' "$LOG")
    {
        echo "command=backprop ${args[*]}"
        echo "data=$data"
        echo "done=${done_line:-no done: line (exit $RC)}"
    } >"$STATE/fashion.txt"
    local what="README defaults on $DEVICE"
    [ "$DRY" = 1 ] && what="dry run: 1 epoch on the CPU, not a GPU result"
    if [ $RC -eq 0 ] && [ -n "$done_line" ]; then
        part_end PASS "$what; ${done_line#done: }; ${data%%(*}"
    else
        part_end FAIL "backprop ${args[*]} exited $RC: $(tail -1 "$LOG")"
    fi
}

peer() {
    part_begin torch 90 || return
    local args=(--json "$STATE/torch.json" --device "$DEVICE")
    if [ "$DRY" = 1 ]; then
        args+=(--config 'tiny,S' --repeats 2 --warmup 1 --min-sample 0.01)
    else
        args+=(--config 'S,M,L,XL' --repeats 3 --warmup 2 --min-sample 0.05)
    fi
    # PyTorch as the machine has it: without the bundle's libraries on its path.
    step env -u LD_LIBRARY_PATH PYTHONUNBUFFERED=1 "$PY" "$ROOT/benchmarks/peer/torch_mlp_cuda.py" "${args[@]}"
    if [ $RC -eq 0 ]; then
        part_end PASS "$([ "$DRY" = 1 ] && echo 'dry run on the CPU, not GPU figures: ')$("$PY" "$TOOLS" note-torch "$STATE/torch.json")"
    else
        part_end FAIL "torch_mlp_cuda.py exited $RC: $(tail -1 "$LOG")"
    fi
}

# ---- data-parallel on the GPUs --------------------------------------------------------------
nccl() {
    local mpiexec
    mpiexec=$(command -v mpiexec || command -v mpirun || true)
    if [ ! -x "$BP_MPI_TESTS" ]; then
        if [ "$MPI" = OFF ]; then
            record nccl SKIP 0 "no MPI: the machine has none and the bundle carries none. OpenMPI would fit the transfer (about 8.5 MiB of .debs with what it needs), but this machine has ${NGPU:-0} GPU(s) and NCCL takes one GPU per rank: only 1 rank could run, whose all-reduce is a local copy. Needs 2+ GPUs and MPI (GPU_CHECK_MPI=AUTO)"
        else
            record nccl SKIP 0 "no $BP_MPI_TESTS: the build found no MPI (BP_MPI=$MPI; ${META[configured]:-not configured})"
        fi
        return
    fi
    if [ -z "$mpiexec" ]; then
        record nccl SKIP 0 "no mpiexec on PATH"
        return
    fi
    part_begin nccl 60 || return
    run_env
    local np=${NGPU:-1}
    [ "$np" -ge 1 ] || np=1
    step "${RUN_ENV[@]}" OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 \
        BP_MPI_TEST_DEVICE="$DEVICE" "$mpiexec" --oversubscribe -np "$np" "$BP_MPI_TESTS" --gtest_color=no
    if [ $RC -eq 0 ]; then
        part_end PASS "$np rank(s), ${META[configured]#backprop: }"
    else
        part_end FAIL "$np rank(s), exit $RC: $(tail -1 "$LOG")"
    fi
}

setup
build
probe
tests
sanitize memcheck 60
sanitize racecheck 60
sanitize initcheck 40
sanitize synccheck 40
bench
fashion
peer
nccl

# ---- the end: the report, then the summary table as the last lines --------------------------
META[finished]=1
META[budget]="$BUDGET s for the whole check, caps x$SCALE; used $((SECONDS - T0)) s"
write_report
echo
echo "report: $REPORT$([ -n "$TAILS" ] && echo "; log tails: $TAILS")"
echo
printf '%-10s %-6s %7s  %s\n' part result seconds note
while IFS=$'\t' read -r name status secs note; do
    printf '%-10s %-6s %7s  %s\n' "$name" "$status" "$secs" "$note"
done <"$STATE/parts.tsv"
printf '%-10s %-6s %7s  %s\n' total "$([ $FAILED -eq 0 ] && echo PASS || echo FAIL)" \
    $((SECONDS - T0)) "$([ "$DRY" = 1 ] && echo 'DRY RUN without a GPU: no GPU result; ')budget ${BUDGET}s, commit $COMMIT_SHORT"
exit $FAILED
