#!/usr/bin/env bash
# Installs a configured and built backprop to a prefix, moves the prefix, then builds
# examples/consumer against the moved copy four ways (CMake and pkg-config, shared and static)
# and runs each. Then it runs them again with every CUDA, NCCL and MPI library of this machine
# hidden (in a private mount namespace, each library file replaced by an empty one, and
# LD_LIBRARY_PATH pointing at an empty folder): a CPU-only program must not need them.
#
#   scripts/test-install.sh BUILD_DIR [--cuda]
#
# --cuda: the build has the CUDA backend; each consumer must also find and load the module
# from the moved prefix (it opens "cuda": on a machine without a GPU that fails with "no CUDA
# device", never with a module that is missing).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
build=${1:?usage: scripts/test-install.sh BUILD_DIR [--cuda]}
cuda=${2:-}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# Every run path (RUNPATH or RPATH) of every ELF file under a folder (the programs and shared
# objects: executable or named *.so*): absolute or $ORIGIN-relative entries only, none empty
# (the loader reads an empty entry as the current folder, a relative one against it) and none
# naming the build or source folder (the build tree reaches its own libraries by $ORIGIN, and an
# installed copy must not reach back into it).
check_run_paths() {
    local dir=$1 bad=0 f line values entry build_abs root_abs
    build_abs=$(cd "$build" && pwd -P)
    root_abs=$(pwd -P)
    while IFS= read -r -d '' f; do
        [ "$(head -c4 "$f" | od -An -c | tr -d ' ')" = '177ELF' ] || continue
        while IFS= read -r line; do
            values=${line#*[}
            values=${values%]}
            while IFS= read -r entry; do
                case $entry in
                '$ORIGIN'* | '${ORIGIN}'*) ;;
                "$build_abs" | "$build_abs"/* | "$root_abs" | "$root_abs"/*)
                    echo "test-install: $f: run path [$values] names the build tree ('$entry')" >&2
                    bad=1 ;;
                /*) ;;
                *) echo "test-install: $f: run path [$values] has an empty or relative entry" \
                    "'$entry' (read against the current folder)" >&2
                    bad=1 ;;
                esac
            done < <(awk -F: '{for (i = 1; i <= NF; i++) print $i; if (NF == 0) print ""}' \
                <<<"$values")
        done < <(readelf -d "$f" 2>/dev/null | grep -E '\((RUNPATH|RPATH)\)')
    done < <(find "$dir" -type f \( -perm -u+x -o -name '*.so*' \) -print0)
    [ $bad -eq 0 ] || exit 1
    echo "test-install: every run path under $dir is absolute or \$ORIGIN-relative"
}
check_run_paths "$build"

cmake --install "$build" --prefix "$tmp/prefix" >/dev/null
mv "$tmp/prefix" "$tmp/moved"
prefix=$tmp/moved
check_run_paths "$prefix"
echo "== the installed command: nothing planted in the folder it runs in is opened (strace)"
python3 tests/cli/test_cli_modules.py "$prefix/bin/backprop"
pcdir=$(dirname "$(find "$prefix" -name backprop.pc | head -1)")
[ -d "$pcdir" ] || { echo "test-install: no backprop.pc under $prefix" >&2; exit 1; }

echo "== consumers against the moved prefix $prefix"
for mode in shared static; do
    static=OFF
    [ $mode = static ] && static=ON
    cmake -S examples/consumer -B "$tmp/cmake-$mode" -DCMAKE_PREFIX_PATH="$prefix" \
        -DCONSUMER_STATIC=$static -DCMAKE_BUILD_TYPE=Release >/dev/null
    cmake --build "$tmp/cmake-$mode" >/dev/null
    cp "$tmp/cmake-$mode/consumer" "$tmp/cmake-$mode.bin"
done
export PKG_CONFIG_PATH=$pcdir
libdir=$(pkg-config --variable=libdir backprop)
# shellcheck disable=SC2046 # pkg-config prints a word list
cc -O2 examples/consumer/consumer.c -o "$tmp/pkgconfig-shared.bin" \
    $(pkg-config --cflags --libs backprop) -Wl,-rpath,"$libdir"
# shellcheck disable=SC2046
cc -O2 examples/consumer/consumer.c -o "$tmp/pkgconfig-static.bin" \
    $(pkg-config --static --cflags --libs backprop-static)

bins=(cmake-shared cmake-static pkgconfig-shared pkgconfig-static)
for b in "${bins[@]}"; do
    exe=$tmp/$b.bin
    # What each program needs: never a CUDA, NCCL or MPI library, nor libstdc++ (the core is C).
    if readelf -d "$exe" | grep -E 'NEEDED.*(cuda|cublas|nccl|mpi|open-rte|open-pal|stdc\+\+)'; then
        echo "test-install: $b links a library a CPU-only program must not need" >&2
        exit 1
    fi
    case $b in *static) readelf -d "$exe" | grep -q 'NEEDED.*libbackprop' &&
        { echo "test-install: $b is not linked statically" >&2; exit 1; } ;; esac
    echo "-- $b"
    "$exe" $cuda
done
if [ -n "$cuda" ]; then
    # The installed command finds its module in ../lib/backprop, from the moved prefix too.
    printf 'a,b,label\n0,1,0\n1,0,1\n1,1,0\n0,0,1\n' >"$tmp/tiny.csv"
    out=$("$prefix/bin/backprop" train --train "$tmp/tiny.csv" --device cuda --epochs 1 \
        --quiet 2>&1 || true)
    echo "-- backprop train --device cuda: $out"
    case $out in *module*) echo "test-install: the installed backprop did not load its CUDA module" >&2
        exit 1 ;; esac
fi
if readelf -d "$prefix"/lib*/libbackprop.so | grep -E 'NEEDED.*(cuda|cublas|nccl|mpi|stdc\+\+)'; then
    echo "test-install: libbackprop.so links a library a CPU-only program must not need" >&2
    exit 1
fi

echo "== the same consumers with CUDA, NCCL and MPI hidden"
hidden=()
for lib in libcudart.so libcublas.so libcublasLt.so libnccl.so libmpi.so libopen-rte.so \
    libopen-pal.so; do
    while read -r path; do
        real=$(readlink -f "$path")
        [ -f "$real" ] && hidden+=("$real")
    done < <(ldconfig -p | awk -v l="$lib" 'index($1, l) == 1 {print $NF}')
done
if [ -d /usr/local/cuda/lib64 ]; then
    for f in /usr/local/cuda/lib64/lib{cudart,cublas,cublasLt,nccl}.so*; do
        [ -e "$f" ] && hidden+=("$(readlink -f "$f")")
    done
fi
mapfile -t hidden < <(printf '%s\n' "${hidden[@]}" | sort -u)
echo "hiding ${#hidden[@]} files: ${hidden[*]:-none}"
mkdir "$tmp/empty"
# In the namespace every hidden file reads as empty, which the loader refuses.
cat >"$tmp/hide.sh" <<'EOF'
set -eu
list=$1
shift
while read -r f; do [ -n "$f" ] && mount --bind /dev/null "$f"; done <"$list"
exec "$@"
EOF
printf '%s\n' "${hidden[@]}" >"$tmp/hidden.txt"
run_hidden() {
    if [ "$(id -u)" -eq 0 ] && unshare -m true 2>/dev/null; then
        LD_LIBRARY_PATH=$tmp/empty unshare -m sh "$tmp/hide.sh" "$tmp/hidden.txt" "$@"
    else
        echo "test-install: cannot make a mount namespace here (needs root); checked NEEDED only"
        return 0
    fi
}
if [ ${#hidden[@]} -gt 0 ] && [ -f "$build/libbackprop_cuda.so" ]; then
    # The proof that the hiding works: the CUDA module itself cannot load there.
    if run_hidden "$tmp/cmake-shared.bin" --cuda >"$tmp/hidden-cuda.log" 2>&1; then
        echo "test-install: the CUDA module still loads with its libraries hidden" >&2
        cat "$tmp/hidden-cuda.log" >&2
        exit 1
    fi
    grep -m1 'cannot be loaded' "$tmp/hidden-cuda.log"
fi
for b in "${bins[@]}"; do
    echo "-- $b (hidden)"
    run_hidden "$tmp/$b.bin"
done
echo "test-install: all consumers built and ran from the moved prefix"
