#!/usr/bin/env bash
# Prepares, on this machine, what scripts/gpu-check.sh needs on a GPU machine that has no package
# registry and no network (the CUDA toolkit, CMake, ninja, gcc and python3 with torch, but no
# OpenBLAS, GoogleTest, zlib headers, OpenMPI or make). Fills the git-ignored folder .gpu-bundle/:
#
#   prefix.tar.xz   Debian 12 packages unpacked with dpkg -x (apt-get download, Debian's archive
#                   only) and trimmed to what the build links: OpenBLAS's OpenMP build with its
#                   headers, libgfortran5 and libquadmath0 (OpenBLAS needs them), zlib's headers
#                   and library, GoogleTest's sources (the googletest package, /usr/src/googletest)
#   fashion-mnist/  the four IDX files of Debian's dataset-fashion-mnist, when the tree and the
#                   bundle stay within BUNDLE_DATA_LIMIT (else gpu-check.sh generates a set of the
#                   same shape, and says so)
#   manifest.txt    the commit (git rev-parse HEAD), whether the tree had uncommitted changes,
#                   the date, the packages with their versions and sha256, the sizes
#   tree.sha256     a checksum of every file that travels: the tree that reaches the GPU machine
#                   has no .git, so gpu-check.sh checks the tree against this instead
#
# Prints the size of what travels (the tree: tracked and untracked-not-ignored files, plus the
# bundle) against the 64 MiB a call to the GPU machine may carry, and fails when it is over.
# Downloads are cached in .gpu-bundle-cache/ (git-ignored, does not travel).
#
# Usage: bash scripts/gpu-bundle.sh
# Environment (all optional):
#   BUNDLE_DATA=auto|1|0       carry Fashion-MNIST: when it fits (auto, default), always, never
#   BUNDLE_DATA_LIMIT=48       MiB the whole transfer may reach with the data in it (of 64)
set -euo pipefail
cd "$(dirname "$0")/.."
BUNDLE=.gpu-bundle
CACHE=.gpu-bundle-cache
LIMIT_MIB=64
DATA_LIMIT_MIB=${BUNDLE_DATA_LIMIT:-48}
WANT_DATA=${BUNDLE_DATA:-auto}
ARCH=x86_64-linux-gnu
# OpenBLAS on OpenMP, as scripts/install-deps.sh installs here (one thread pool with the
# library's loops); the rest is what it and the build need.
PACKAGES=(libopenblas0-openmp libopenblas-openmp-dev libgfortran5 libquadmath0 zlib1g zlib1g-dev
          googletest)
DATA_PACKAGE=dataset-fashion-mnist

die() {
    echo "gpu-bundle: $*" >&2
    exit 1
}

[ "$(dpkg --print-architecture 2>/dev/null)" = amd64 ] ||
    die "needs a Debian amd64 machine (the GPU machine is x86-64; apt-get download fetches this machine's architecture)"
command -v git >/dev/null && git rev-parse --git-dir >/dev/null 2>&1 ||
    die "run it in a git checkout: the bundle records the commit"

# ---- the Debian packages, cached -------------------------------------------------------------
mkdir -p "$CACHE/debs"
UPDATED=
SUDO=
if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null; then SUDO=sudo; fi
deb_of() { # package -> the cached .deb of its candidate version (downloaded when missing)
    local info ver arch file
    if ! info=$(apt-cache show --no-all-versions "$1" 2>/dev/null) && [ -z "$UPDATED" ]; then
        UPDATED=1 # a fresh machine has no package lists yet
        $SUDO apt-get update -qq || die "apt-get update failed"
        info=$(apt-cache show --no-all-versions "$1" 2>/dev/null) || info=
    fi
    [ -n "$info" ] || die "apt-cache knows no package '$1'"
    ver=$(sed -n 's/^Version: //p' <<<"$info" | head -1)
    arch=$(sed -n 's/^Architecture: //p' <<<"$info" | head -1)
    # apt-get download's name: an epoch's ':' is written %3a
    file="$CACHE/debs/${1}_${ver//:/%3a}_${arch}.deb"
    if [ ! -s "$file" ]; then
        (cd "$CACHE/debs" && apt-get download -q -o APT::Sandbox::User=root "$1" >/dev/null) ||
            die "apt-get download $1 failed"
    fi
    [ -s "$file" ] || die "apt-get download $1 did not leave $file"
    echo "$file"
}

STAGE=$CACHE/stage
rm -rf "$STAGE"
mkdir -p "$STAGE"
PKG_LINES=()
for p in "${PACKAGES[@]}"; do
    deb=$(deb_of "$p")
    dpkg -x "$deb" "$STAGE"
    PKG_LINES+=("$p $(dpkg-deb -f "$deb" Version) $(sha256sum "$deb" | cut -d' ' -f1)")
done

# Only what the build links and includes: no static archives (58 MB for OpenBLAS), no LAPACK or
# reference-BLAS copies, no docs, no GoogleTest tests or samples. zlib-dev's libz.so points at an
# absolute path that would dangle there; the build links libz.so.1 by its full path instead.
rm -rf "$STAGE/usr/share/doc" "$STAGE/usr/share/man" "$STAGE/usr/share/lintian" \
    "$STAGE/usr/share/gcc" "$STAGE"/usr/lib/$ARCH/openblas-openmp/*.a "$STAGE/usr/lib/$ARCH/libz.a" \
    "$STAGE"/usr/lib/$ARCH/openblas-openmp/lib{blas,lapack}.so* "$STAGE/usr/lib/$ARCH/libz.so" \
    "$STAGE"/usr/src/googletest/*/test "$STAGE"/usr/src/googletest/*/docs \
    "$STAGE/usr/src/googletest/googletest/samples"
# One folder for the run time: OpenBLAS and the two libraries it needs (LD_LIBRARY_PATH there).
mkdir -p "$STAGE/runtime"
for l in usr/lib/$ARCH/openblas-openmp/libopenblas.so.0 usr/lib/$ARCH/libgfortran.so.5 \
    usr/lib/$ARCH/libquadmath.so.0; do
    [ -e "$STAGE/$l" ] || die "$l is missing from the unpacked packages"
    ln -s "../$l" "$STAGE/runtime/$(basename "$l")"
done
for f in usr/include/$ARCH/openblas-openmp/cblas.h usr/include/zlib.h lib/$ARCH/libz.so.1 \
    usr/src/googletest/CMakeLists.txt usr/lib/$ARCH/openblas-openmp/libopenblas.so; do
    [ -e "$STAGE/$f" ] || die "$f is missing from the unpacked packages"
done

rm -rf "$BUNDLE"
mkdir -p "$BUNDLE"
# xz: a fifth of the unpacked size; gpu-check.sh unpacks it with python3's tarfile (xz itself may
# be missing there).
tar -C "$STAGE" -cJf "$BUNDLE/prefix.tar.xz" .

# ---- sizes: the tree that travels, the bundle, and the data if it fits ----------------------
travelling_files() { # tracked and untracked-not-ignored files that exist, NUL-separated
    git ls-files -z --cached --others --exclude-standard | while IFS= read -r -d '' f; do
        [ -e "$f" ] || [ -L "$f" ] && printf '%s\0' "$f"
    done
}
bytes_of() { # NUL-separated paths on stdin -> their total size
    xargs -0 -r stat -c %s -- | awk '{s += $1} END {print s + 0}'
}
TREE_BYTES=$(travelling_files | bytes_of)
PREFIX_BYTES=$(stat -c %s "$BUNDLE/prefix.tar.xz")
mib() { awk -v b="$1" 'BEGIN {printf "%.1f", b / 1048576}'; }

DATA=none
DATA_BYTES=0
if [ "$WANT_DATA" != 0 ]; then
    deb=$(deb_of "$DATA_PACKAGE")
    rm -rf "$CACHE/data"
    mkdir -p "$CACHE/data"
    dpkg -x "$deb" "$CACHE/data"
    src=$CACHE/data/usr/share/datasets/fashion-mnist
    DATA_BYTES=$(find "$src" -name '*.gz' -print0 | bytes_of)
    total=$((TREE_BYTES + PREFIX_BYTES + DATA_BYTES + 65536))
    if [ "$WANT_DATA" = 1 ] || [ "$total" -le $((DATA_LIMIT_MIB * 1048576)) ]; then
        mkdir -p "$BUNDLE/fashion-mnist"
        cp "$src"/*.gz "$BUNDLE/fashion-mnist/"
        DATA="fashion-mnist ($DATA_PACKAGE $(dpkg-deb -f "$deb" Version))"
    else
        echo "gpu-bundle: Fashion-MNIST left out: with it the transfer would be $(mib "$total") MiB, over BUNDLE_DATA_LIMIT=$DATA_LIMIT_MIB MiB"
        DATA_BYTES=0
    fi
fi

# ---- what the tree was: the commit, and a checksum of every travelling file -----------------
travelling_files | xargs -0 -r sha256sum -- >"$BUNDLE/tree.sha256"
DIRTY=0
CHANGES=$(git status --porcelain --untracked-files=normal | grep -v -e ' \.gpu-bundle' || true)
[ -z "$CHANGES" ] || DIRTY=1
{
    echo "commit=$(git rev-parse HEAD)"
    echo "commit_short=$(git rev-parse --short HEAD)"
    echo "dirty=$DIRTY"
    echo "date=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "data=$DATA"
    echo "tree_files=$(wc -l <"$BUNDLE/tree.sha256")"
    for l in "${PKG_LINES[@]}"; do echo "package=$l"; done
    [ -z "$CHANGES" ] || printf '%s\n' "$CHANGES" | sed 's/^/change=/'
} >"$BUNDLE/manifest.txt"

BUNDLE_BYTES=$(find "$BUNDLE" -type f -print0 | bytes_of)
TOTAL=$((TREE_BYTES + BUNDLE_BYTES))
printf 'gpu-bundle: commit %s%s\n' "$(git rev-parse --short HEAD)" \
    "$([ $DIRTY = 1 ] && echo ' with uncommitted changes (listed in the manifest)')"
printf '  tree that travels   %6s MiB (%s files)\n' "$(mib "$TREE_BYTES")" \
    "$(wc -l <"$BUNDLE/tree.sha256")"
printf '  prefix.tar.xz       %6s MiB (%s)\n' "$(mib "$PREFIX_BYTES")" "${PACKAGES[*]}"
printf '  fashion-mnist       %6s MiB (%s)\n' "$(mib "$DATA_BYTES")" "$DATA"
printf '  total               %6s MiB of the %d MiB a call carries\n' "$(mib "$TOTAL")" "$LIMIT_MIB"
[ "$TOTAL" -le $((LIMIT_MIB * 1048576)) ] || die "over the $LIMIT_MIB MiB limit"
echo "gpu-bundle: ready; on the GPU machine, with .gpu-bundle carried: bash scripts/gpu-check.sh"
