#!/usr/bin/env bash
# Side-by-side throughput of nnc and JAX on the benchmark MLP (examples/fashion_mlp.nn:
# 784-256-128-10, relu, softmax cross-entropy, Adam 1e-3) on Fashion-MNIST, batch 128 and
# 32, alternating the two programs ROUNDS times so that both see the same machine state.
#
#   apt-get install -y dataset-fashion-mnist
#   python3 -m venv ~/.venvs/peers && ~/.venvs/peers/bin/pip install numpy jax jaxlib optax
#   bash scripts/bench-peers.sh [ROUNDS]        # prints one line per run, then medians
#
# nnc: `nnc train` on the real data; batch 128 is the mean samples/s of epochs 2-3 (as the
# peers' harness), batch 32 is epoch 2 of 2 (epoch 1 is the warm-up). Peers: the scripts
# of ../shared/bench/peers, which print `RESULT {json}` with samples_per_s.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-3}
PEERS=${PEERS:-../shared/bench/peers}
PY=${PY:-$HOME/.venvs/peers/bin/python}
cargo build --release -q -p nnc
NNC=target/release/nnc
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT

nnc_run() { # batch epochs -> samples/s
    local b=$1 e=$2
    $NNC train examples/fashion_mlp.nn --batch "$b" --epochs "$e" --quiet --overwrite --out "$OUT/nnc" >/dev/null
    python3 - "$OUT/nnc/metrics.jsonl" "$e" <<'PY'
import json, sys
recs = [json.loads(l) for l in open(sys.argv[1])]
n = int(sys.argv[2])
timed = recs[1:] if n > 1 else recs
print(round(sum(r["samples_per_s"] for r in timed) / len(timed)))
PY
}

peer_run() { # script batch -> samples/s
    (cd "$PEERS" && "$PY" "$1" --batch "$2" 2>/dev/null) | sed -n 's/^RESULT //p' |
        python3 -c 'import json,sys; print(round(json.load(sys.stdin)["samples_per_s"]))'
}

declare -A R
for r in $(seq "$ROUNDS"); do
    for b in 128 32; do
        e=$([ "$b" = 128 ] && echo 3 || echo 2)
        n=$(nnc_run "$b" "$e"); R[nnc_$b]+="$n "
        j=$(peer_run jax_mlp.py "$b"); R[jax_$b]+="$j "
        echo "round $r batch $b: nnc $n samples/s, jax $j samples/s"
    done
done
median() { tr ' ' '\n' | grep . | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
for b in 128 32; do
    n=$(echo "${R[nnc_$b]}" | median); j=$(echo "${R[jax_$b]}" | median)
    echo "batch $b: nnc $n, jax $j samples/s (median of $ROUNDS): nnc/jax = $(python3 -c "print(round($n/$j, 2))")"
done
