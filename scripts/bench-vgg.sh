#!/usr/bin/env bash
# Side-by-side step throughput of nnc and PyTorch (eager, oneDNN) on the small VGG of
# bench/fashion_vgg.nn (conv 3×3 32-32 with batch norm, pool, 64-64, pool, dense 128, 10;
# Adam 1e-3; its twin bench/torch_vgg.py), batch 128, alternating the two programs ROUNDS
# times so that both see the same machine state; prints one line per round, then the
# medians and their ratio.
#
#   python3 -m venv ~/.venvs/peers && ~/.venvs/peers/bin/pip install numpy torch
#   apt-get install -y dataset-fashion-mnist      # PyTorch's harness reads the real data
#   bash scripts/bench-vgg.sh [ROUNDS]
#
# nnc: `nnc bench --json` (steady steps on synthetic data after a warm-up); PyTorch:
# torch_vgg.py --mode small (steps on Fashion-MNIST after a warm-up). Both use the
# machine's two cores.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-3}
PY=${PY:-$HOME/.venvs/peers/bin/python}
STEPS=${STEPS:-30}
cargo build --release -q -p nnc
NNC=target/release/nnc
ns=() ts=()
for r in $(seq "$ROUNDS"); do
    n=$($NNC bench bench/fashion_vgg.nn --batch 128 --steps "$STEPS" --warmup 5 --json |
        python3 -c 'import json,sys; print(round(json.load(sys.stdin)["samples_per_s"]))')
    t=$("$PY" bench/torch_vgg.py --batch 128 --mode small --warmup-steps 5 \
        --timed-steps "$STEPS" 2>/dev/null | sed -n 's/^RESULT //p' |
        python3 -c 'import json,sys; print(round(json.load(sys.stdin)["samples_per_s"]))')
    ns+=("$n") ts+=("$t")
    echo "round $r: nnc $n samples/s, torch $t samples/s"
done
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
n=$(median "${ns[@]}") t=$(median "${ts[@]}")
echo "VGG batch 128: nnc $n, torch $t samples/s (median of $ROUNDS): nnc/torch = $(python3 -c "print(round($n/$t, 2))")"
