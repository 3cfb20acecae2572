#!/usr/bin/env bash
# Side-by-side step throughput of nnc and PyTorch (eager, oneDNN) on the LeNet of
# ../shared/bench/peers/fashion_lenet.nn (conv 5×5 6 same, pool 2, conv 5×5 16 valid,
# pool 2, dense 120-84-10, Adam 1e-3), batch 128 and 32, alternating the two programs
# ROUNDS times so that both see the same machine state; prints one line per run, then
# the medians and their ratio.
#
#   python3 -m venv ~/.venvs/peers && ~/.venvs/peers/bin/pip install numpy torch
#   apt-get install -y dataset-fashion-mnist      # PyTorch's harness reads the real data
#   bash scripts/bench-lenet.sh [ROUNDS]
#
# nnc: `nnc bench --json` (steady steps on synthetic data after a warm-up); PyTorch:
# torch_lenet.py --mode small (steps on Fashion-MNIST after a warm-up, the batch gather
# inside the timed region). Both use the machine's two cores.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-3}
PEERS=${PEERS:-../shared/bench/peers}
PY=${PY:-$HOME/.venvs/peers/bin/python}
cargo build --release -q -p nnc
NNC=target/release/nnc

nnc_run() { # batch steps -> samples/s
    $NNC bench "$PEERS/fashion_lenet.nn" --batch "$1" --steps "$2" --warmup 30 --json |
        python3 -c 'import json,sys; print(round(json.load(sys.stdin)["samples_per_s"]))'
}

torch_run() { # batch steps -> samples/s
    (cd "$PEERS" && "$PY" torch_lenet.py --batch "$1" --mode small --warmup-steps 30 \
        --timed-steps "$2" 2>/dev/null) | sed -n 's/^RESULT //p' |
        python3 -c 'import json,sys; print(round(json.load(sys.stdin)["samples_per_s"]))'
}

declare -A R
for r in $(seq "$ROUNDS"); do
    for b in 128 32; do
        steps=$([ "$b" = 128 ] && echo 200 || echo 600)
        n=$(nnc_run "$b" "$steps"); R[nnc_$b]+="$n "
        t=$(torch_run "$b" "$steps"); R[torch_$b]+="$t "
        echo "round $r batch $b: nnc $n samples/s, torch $t samples/s"
    done
done
median() { tr ' ' '\n' | grep . | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
for b in 128 32; do
    n=$(echo "${R[nnc_$b]}" | median); t=$(echo "${R[torch_$b]}" | median)
    echo "batch $b: nnc $n, torch $t samples/s (median of $ROUNDS): nnc/torch = $(python3 -c "print(round($n/$t, 2))")"
done
