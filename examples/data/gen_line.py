"""Writes line.csv for examples/line.nn: 200 points on y = 3x + 2 with Gaussian noise.

Deterministic (fixed seed, Python's own generator), so rerunning it reproduces the
committed file byte for byte: python3 examples/data/gen_line.py
"""

import os
import random

rng = random.Random(20240601)
rows = []
for _ in range(200):
    x = rng.uniform(-1.0, 1.0)
    y = 3.0 * x + 2.0 + rng.gauss(0.0, 0.05)
    rows.append(f"{x:.4f},{y:.4f}")

path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "line.csv")
with open(path, "w", newline="\n") as f:
    f.write("x,y\n")
    f.write("\n".join(rows) + "\n")
