#!/usr/bin/env bash
# The GPU check, in two halves, for a machine with an NVIDIA GPU but no Rust or LLVM
# (the project's device machine: CUDA driver, no toolchain, no network).
#
#   bash scripts/gpu-check.sh prepare   # here: builds everything into .gpu/ (ignored by git)
#   bash scripts/gpu-check.sh run       # there, from the repository root: runs the checks
#
# `prepare` builds the release `nnc` and the `cpu_target` test binary with the `cuda`
# feature, and packs them with LLVM 19's shared library (xz-compressed: the library is
# 129 MB, the device tool carries 64 MiB). `run` unpacks, then:
#   1. every example's compiled train and eval steps on the GPU against the interpreter
#      (the `cpu_target` test `every_example_steps_like_the_interpreter_on_the_gpu`);
#   2. `nnc build --target cuda --emit ptx` of the MNIST example;
#   3. two epochs of `nnc train examples/mnist_mlp.nn --target cuda` (accuracy, samples/s;
#      the data resident on the GPU, steps replayed as a CUDA graph), then on the CPU, the
#      two loss curves compared (within 1 %); then again on the GPU with
#      `NNC_CUDA_GRAPHS=0` (every launch direct): the same losses to 1e-6;
#   4. one epoch of LeNet (convolutions) on the GPU and on the CPU, losses compared;
#   5. `nnc bench examples/mnist_mlp.nn --target cuda` (per-step and resident epochs).
# Fashion-MNIST is not on the device machine (no network, no apt), so only MNIST trains.
# Everything is logged to $OUT/gpu-check.log when OUT is set (the device tool's output
# folder), else to .gpu/gpu-check.log.
set -uo pipefail
cd "$(dirname "$0")/.."
GPU=.gpu

prepare() {
    set -e
    grep -qx '/.gpu/' .git/info/exclude 2>/dev/null || echo '/.gpu/' >>.git/info/exclude
    rm -rf "$GPU" && mkdir -p "$GPU/lib"
    cargo build --release --features cuda -p nnc
    local test_bin
    test_bin=$(cargo test --release --features cuda -p nnc --test cpu_target --no-run \
        --message-format=json 2>/dev/null |
        python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] == "cpu_target":
        print(m["executable"])' | tail -1)
    cp target/release/nnc "$GPU/nnc"
    cp "$test_bin" "$GPU/cpu_target"
    strip "$GPU/nnc" "$GPU/cpu_target"
    local llvm
    llvm=$(ldd "$GPU/nnc" | awk '/libLLVM/ {print $3}')
    xz -T0 -6 -c "$llvm" >"$GPU/lib/$(basename "$llvm").xz"
    # The test binary finds the examples through the absolute path it was built at.
    pwd >"$GPU/built_at"
    du -sh "$GPU"/* "$GPU/lib"/*
    echo "prepared: carry .gpu and run \`bash scripts/gpu-check.sh run\` on the GPU machine"
}

# compare A.jsonl B.jsonl TOL: the train losses of every epoch agree within TOL (relative).
compare() {
    python3 - "$1" "$2" "$3" <<'PY'
import json, sys
a, b = ([json.loads(l) for l in open(p)] for p in sys.argv[1:3])
tol = float(sys.argv[3])
worst = max(abs(x["train_loss"] - y["train_loss"]) / abs(y["train_loss"]) for x, y in zip(a, b))
print(f"{sys.argv[1]} vs {sys.argv[2]}: largest relative train-loss difference {worst:.2e}")
sys.exit(0 if len(a) == len(b) > 0 and worst <= tol else 1)
PY
}

run() {
    local log="${OUT:-$GPU}/gpu-check.log"
    exec > >(tee "$log") 2>&1
    for f in "$GPU"/lib/*.xz; do xz -dc "$f" >"${f%.xz}"; done
    export LD_LIBRARY_PATH="$PWD/$GPU/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    local built_at
    built_at=$(cat "$GPU/built_at")
    if [ "$built_at" != "$PWD" ] && [ ! -e "$built_at" ]; then
        mkdir -p "$(dirname "$built_at")" && ln -s "$PWD" "$built_at"
    fi
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv || true
    local status=0
    echo "== 1. every example on the GPU against the interpreter"
    "$GPU/cpu_target" --exact every_example_steps_like_the_interpreter_on_the_gpu \
        --nocapture 2>&1 | tee "$GPU/test.out" || status=1
    # The test skips (and passes) without a GPU: here that is a failure.
    if grep -q '^skipped:' "$GPU/test.out"; then status=1; fi
    echo "== 2. PTX of the MNIST example"
    "$GPU/nnc" build examples/mnist_mlp.nn --target cuda --emit ptx --gpu-arch sm_90 |
        grep -c '^\.visible \.entry' || status=1
    echo "== 3. training MNIST on the GPU"
    "$GPU/nnc" train examples/mnist_mlp.nn --target cuda --epochs 2 --out /tmp/gpu-mnist ||
        status=1
    echo "== 3b. the same on the CPU: loss curves compared"
    if "$GPU/nnc" train examples/mnist_mlp.nn --target cpu --epochs 2 --quiet --out /tmp/cpu-mnist; then
        python3 - /tmp/gpu-mnist/metrics.jsonl /tmp/cpu-mnist/metrics.jsonl <<'PY' || status=1
import json, sys
gpu, cpu = ([json.loads(l) for l in open(p)] for p in sys.argv[1:3])
worst = 0.0
for g, c in zip(gpu, cpu):
    rel = abs(g["train_loss"] - c["train_loss"]) / abs(c["train_loss"])
    worst = max(worst, rel)
    print(f"epoch {g['epoch']}: train loss gpu {g['train_loss']:.6f} cpu {c['train_loss']:.6f}; "
          f"samples/s gpu {g['samples_per_s']:.0f} cpu {c['samples_per_s']:.0f}")
print(f"largest relative loss difference {worst:.2e}")
sys.exit(0 if len(gpu) == len(cpu) == 2 and worst <= 1e-2 else 1)
PY
    else
        status=1
    fi
    echo "== 3c. graphs off: every launch direct, the same losses"
    if NNC_CUDA_GRAPHS=0 "$GPU/nnc" train examples/mnist_mlp.nn --target cuda --epochs 2 --quiet --out /tmp/gpu-mnist-direct; then
        compare /tmp/gpu-mnist/metrics.jsonl /tmp/gpu-mnist-direct/metrics.jsonl 1e-6 || status=1
    else
        status=1
    fi
    echo "== 4. LeNet on the GPU and on the CPU"
    if "$GPU/nnc" train examples/lenet.nn --target cuda --epochs 1 --out /tmp/gpu-lenet &&
        "$GPU/nnc" train examples/lenet.nn --target cpu --epochs 1 --quiet --out /tmp/cpu-lenet; then
        compare /tmp/gpu-lenet/metrics.jsonl /tmp/cpu-lenet/metrics.jsonl 2e-2 || status=1
    else
        status=1
    fi
    echo "== 5. benchmark"
    "$GPU/nnc" bench examples/mnist_mlp.nn --target cuda --steps 200 || status=1
    echo "== gpu-check: $([ $status = 0 ] && echo passed || echo FAILED)"
    return $status
}

case "${1:-}" in
prepare) prepare ;;
run) run ;;
*)
    echo "usage: bash scripts/gpu-check.sh prepare|run" >&2
    exit 2
    ;;
esac
