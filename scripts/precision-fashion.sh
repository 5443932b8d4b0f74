#!/usr/bin/env bash
# Fashion-MNIST in each precision: the default `backprop train --data fashion-mnist` run in fp32
# and in bf16 (and tf32), one after the other, on the same device, printing each test accuracy
# and training time; fails when bf16's accuracy is more than 0.5 points below fp32's. On the CPU
# the reduced modes give the GPU's numbers, not its speed: the times say what the CPU's
# reference arithmetic costs, the accuracies what the roundings cost.
#
# usage: scripts/precision-fashion.sh [BUILD_DIR] [backprop train options...]
#   e.g. scripts/precision-fashion.sh build --device cpu
# Needs Debian's dataset-fashion-mnist (scripts/install-deps.sh installs it).
set -euo pipefail
build=${1:-build}
shift || true
bin="$build/backprop"
[ -x "$bin" ] || { echo "precision-fashion: no $bin (build it first)" >&2; exit 2; }
declare -A acc secs
for mode in fp32 bf16 tf32; do
    out=$("$bin" train --data fashion-mnist --quiet --precision "$mode" "$@")
    line=$(grep '^done:' <<<"$out")
    acc[$mode]=$(sed -n 's/.*accuracy \([0-9.]*\)%.*/\1/p' <<<"$line")
    secs[$mode]=$(sed -n 's/.* \([0-9.]*\) s of training.*/\1/p' <<<"$line")
    echo "$mode: test accuracy ${acc[$mode]}%, ${secs[$mode]} s of training ($(grep '^model:' <<<"$out"))"
done
gap=$(awk -v a="${acc[fp32]}" -v b="${acc[bf16]}" 'BEGIN { printf "%.2f", a - b }')
echo "bf16 is $gap points below fp32 (limit 0.5)"
awk -v g="$gap" 'BEGIN { exit !(g <= 0.5) }'
