#!/usr/bin/env bash
# Proves scripts/gpu-check.sh here, before a GPU is spent: runs it in a Debian 12 chroot that
# holds only what the GPU machine holds (gcc, g++, CMake, ninja, python3 with torch and
# safetensors; no OpenBLAS, GoogleTest, zlib headers, OpenMPI or make), with this machine's CUDA
# toolkit bind-mounted read-only at /usr/local/cuda, a copy of the tree that travels (tracked and
# untracked-not-ignored files, no .git) plus .gpu-bundle/, and OUT set. There is no GPU in it, so
# gpu-check.sh runs in its dry-run mode: every CUDA case must skip for the one reason "no CUDA
# device", every other part runs on the CPU with small settings to prove its plumbing, and the
# report says on every line that nothing in it is a GPU result.
#
# Usage (as root; debootstrap, chroot and bind mounts need it):
#   bash scripts/gpu-dryrun.sh            prepares the bundle and the chroot (cached), runs the check
#   bash scripts/gpu-dryrun.sh --prepare  only makes (or checks) the chroot
# Environment (all optional):
#   DRYRUN_DIR=.gpu-dryrun               cache: the chroot (root/), its downloads; git-ignored
#   DRYRUN_OUT=$DRYRUN_DIR/out           where the report and logs land (the chroot's $OUT)
#   DRYRUN_MIRROR=http://deb.debian.org/debian
#   DRYRUN_REBUILD=1                     make the chroot anew
#   GPU_CHECK_CAP_SCALE=4                multiplies gpu-check.sh's caps and budget: they are sized
#                                        for 16 cores, and a build on 2 takes about 4 times longer
# Exit status: gpu-check.sh's (0: every part PASS or SKIP with its reason), 2 when the
# environment could not be prepared.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
DIR=${DRYRUN_DIR:-$ROOT/.gpu-dryrun}
CHROOT=$DIR/root
OUT_HOST=${DRYRUN_OUT:-$DIR/out}
MIRROR=${DRYRUN_MIRROR:-http://deb.debian.org/debian}
CUDA_HOST=$(readlink -f /usr/local/cuda)
# What the GPU machine has, as Debian packages; python3-venv makes the venv that holds
# safetensors (that machine's python3 is such a venv, /opt/torch/.venv).
PACKAGES=gcc,g++,cmake,ninja-build,python3,python3-numpy,python3-torch,python3-venv,ca-certificates
SAFETENSORS=0.4.5 # reads torch's dtypes with getattr: works with Debian's torch 1.13

die() {
    echo "gpu-dryrun: $*" >&2
    exit 2
}

[ "$(id -u)" -eq 0 ] || die "needs root (debootstrap, chroot, mount)"
[ -x "$CUDA_HOST/bin/nvcc" ] || die "no CUDA toolkit at /usr/local/cuda (nvcc not found)"

# ---- the chroot, made once ------------------------------------------------------------------
make_chroot() {
    command -v debootstrap >/dev/null || {
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap
    }
    local tmp=$DIR/root.tmp
    mkdir -p "$DIR"
    # A finished debootstrap is kept (marked) so that a later step's failure does not redo it.
    if [ ! -e "$tmp/.debootstrap-done" ]; then
        rm -rf "$tmp"
        echo "gpu-dryrun: debootstrap bookworm (minbase + $PACKAGES) into $tmp"
        debootstrap --variant=minbase --include="$PACKAGES" bookworm "$tmp" "$MIRROR" \
            >"$DIR/debootstrap.log" 2>&1 || die "debootstrap failed: see $DIR/debootstrap.log"
        touch "$tmp/.debootstrap-done"
    fi
    # That machine's python3 is a venv with torch and safetensors; here the venv sees Debian's
    # torch, and safetensors' wheel is fetched by this machine's pip (its proxy and certificates
    # apply) and installed from the file.
    mkdir -p "$DIR/wheels"
    local pip=(python3 -m pip)
    if ! python3 -m pip --version >/dev/null 2>&1; then # Debian's python3 has no pip; a venv has
        python3 -m venv "$DIR/pip-venv" || die "python3 -m venv failed (install python3-venv)"
        pip=("$DIR/pip-venv/bin/pip")
    fi
    "${pip[@]}" download --quiet --no-deps --only-binary=:all: --implementation cp \
        --python-version 3.11 --platform manylinux2014_x86_64 -d "$DIR/wheels" \
        "safetensors==$SAFETENSORS" >>"$DIR/debootstrap.log" 2>&1 ||
        die "pip download safetensors==$SAFETENSORS failed: see $DIR/debootstrap.log"
    rm -rf "$tmp/tmp/wheels"
    cp -r "$DIR/wheels" "$tmp/tmp/wheels"
    chroot "$tmp" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root sh -c "
        python3 -m venv --system-site-packages /opt/torch/.venv &&
        /opt/torch/.venv/bin/pip install --quiet --disable-pip-version-check --no-index \
            --find-links /tmp/wheels safetensors==$SAFETENSORS" >>"$DIR/debootstrap.log" 2>&1 ||
        die "the venv with safetensors failed: see $DIR/debootstrap.log"
    rm -rf "$tmp/tmp/wheels"
    chroot "$tmp" dpkg-query -W -f='${Package} ${Version}\n' >"$DIR/packages.txt"
    mkdir -p "$tmp/usr/local/cuda" "$tmp/out" "$tmp/work"
    mv "$tmp" "$CHROOT"
}

# Whatever the bundle must bring must be missing here, or the dry run proves nothing.
check_stripped() {
    local bad=()
    for f in usr/include/cblas.h usr/include/zlib.h usr/include/gtest/gtest.h \
        usr/src/googletest usr/include/x86_64-linux-gnu/mpi.h usr/bin/make usr/bin/mpirun \
        usr/bin/mpicc; do
        [ -e "$CHROOT/$f" ] && bad+=("/$f")
    done
    if compgen -G "$CHROOT/usr/lib/x86_64-linux-gnu/libopenblas*" >/dev/null ||
        compgen -G "$CHROOT/usr/lib/x86_64-linux-gnu/openblas*" >/dev/null; then
        bad+=(OpenBLAS)
    fi
    [ ${#bad[@]} -eq 0 ] || die "the chroot has what the GPU machine lacks: ${bad[*]}"
    chroot "$CHROOT" /opt/torch/.venv/bin/python3 -c 'import torch, safetensors.torch' ||
        die "the chroot's python3 cannot import torch and safetensors"
}

# Mounts left by a run that was killed: undo them before anything is removed under the chroot.
unmount_stale() {
    local m
    for m in $(awk -v r="$CHROOT/" 'index($2, r) == 1 {print $2}' /proc/mounts | sort -r); do
        umount -l "$m" || die "cannot unmount $m"
    done
}
unmount_stale
if [ -n "${DRYRUN_REBUILD:-}" ]; then rm -rf "$CHROOT"; fi
[ -d "$CHROOT" ] || make_chroot
check_stripped
if [ "${1:-}" = --prepare ]; then
    echo "gpu-dryrun: chroot ready at $CHROOT"
    exit 0
fi

# ---- the bundle, then the tree that travels -------------------------------------------------
bash scripts/gpu-bundle.sh
TREE=$CHROOT/work/tree
rm -rf "$TREE"
mkdir -p "$TREE"
# Tracked and untracked-not-ignored files: what a call to the GPU machine sends, plus the bundle
# it carries. No .git: the commit comes from the bundle.
git ls-files -z --cached --others --exclude-standard | while IFS= read -r -d '' f; do
    [ -e "$f" ] && printf '%s\0' "$f"
done | tar --null -T - -cf - | tar -xf - -C "$TREE"
cp -a .gpu-bundle "$TREE/.gpu-bundle"

# ---- mounts, undone on every exit -----------------------------------------------------------
MOUNTS=()
cleanup() {
    local i
    for ((i = ${#MOUNTS[@]} - 1; i >= 0; i--)); do umount -l "${MOUNTS[$i]}" 2>/dev/null || true; done
}
trap cleanup EXIT
mount -t proc proc "$CHROOT/proc" && MOUNTS+=("$CHROOT/proc")
mount --bind /dev "$CHROOT/dev" && MOUNTS+=("$CHROOT/dev")
mount --bind "$CUDA_HOST" "$CHROOT/usr/local/cuda" && MOUNTS+=("$CHROOT/usr/local/cuda")
mount -o remount,bind,ro "$CHROOT/usr/local/cuda"
rm -rf "$OUT_HOST"
mkdir -p "$OUT_HOST"
mount --bind "$OUT_HOST" "$CHROOT/out" && MOUNTS+=("$CHROOT/out")

# ---- the check, as the GPU machine would run it ---------------------------------------------
set +e
chroot "$CHROOT" /usr/bin/env -i HOME=/root LANG=C.UTF-8 TERM=dumb \
    PATH=/opt/torch/.venv/bin:/usr/local/cuda/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    OUT=/out GPU_CHECK_DRYRUN=1 ${GPU_CHECK_BUDGET:+GPU_CHECK_BUDGET=$GPU_CHECK_BUDGET} \
    GPU_CHECK_CAP_SCALE="${GPU_CHECK_CAP_SCALE:-4}" \
    bash -c 'cd /work/tree && bash scripts/gpu-check.sh'
rc=$?
set -e
echo
echo "gpu-dryrun: gpu-check.sh exited $rc; report and logs in $OUT_HOST:"
ls -la "$OUT_HOST"
report=$(ls "$OUT_HOST"/gpu-check-dryrun-*.md 2>/dev/null | head -1)
if [ -z "$report" ] || [[ "$(head -1 "$report")" != *"DRY RUN"* ]]; then
    echo "gpu-dryrun: no report titled DRY RUN under $OUT_HOST" >&2
    exit 1
fi
exit $rc
