"""PyTorch CPU (oneDNN) twin of bench/fashion_vgg.nn: conv 3x3 32-32 (same padding),
batch norm, relu, max pool 2, conv 64-64, pool, dense 128, 10; softmax cross-entropy,
Adam 1e-3. Uses the peers' harness (../shared/bench/peers): `--mode small
--timed-steps N` times N steps after a warm-up and prints `RESULT {json}`."""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "bench", "peers"))

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import data  # noqa: E402
import harness  # noqa: E402


def block(cin, cout):
    return [nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout, momentum=0.01, eps=1e-3), nn.ReLU()]


def main():
    args = harness.parse_args()
    torch.manual_seed(args.seed)
    x_tr, y_tr, x_te, y_te = data.load()
    X = torch.from_numpy(x_tr).reshape(-1, 1, 28, 28)
    Y = torch.from_numpy(y_tr)
    Xte = torch.from_numpy(x_te).reshape(-1, 1, 28, 28)
    Yte = torch.from_numpy(y_te)
    model = nn.Sequential(
        *block(1, 32), *block(32, 32), nn.MaxPool2d(2),
        *block(32, 64), *block(64, 64), nn.MaxPool2d(2), nn.Flatten(),
        nn.Linear(64 * 7 * 7, 128), nn.ReLU(), nn.Linear(128, 10))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, fused=True)
    last = {}

    def step(idx):
        xb, yb = X[torch.from_numpy(idx)], Y[torch.from_numpy(idx)]
        loss = F.cross_entropy(model(xb), yb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        last["loss"] = loss

    def sync():
        return float(last["loss"].detach())

    def evaluate():
        model.eval()
        with torch.no_grad():
            pred = torch.cat([model(Xte[i:i + 1000]).argmax(1) for i in range(0, len(Xte), 1000)])
        model.train()
        return (pred == Yte).float().mean().item()

    def info():
        return {"torch_version": torch.__version__, "threads": torch.get_num_threads(), "model": "vgg"}

    harness.run("torch-vgg", args, step, sync, evaluate, info)


if __name__ == "__main__":
    main()
