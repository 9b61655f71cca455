"""Time LazyAdam at the paper's shape: one MePropLinear 784->500, batch 10, k=20 per example,
weight_grad="sparse" (the row-sparse gradient LazyAdam takes), one process, 1 thread.

    OMP_NUM_THREADS=1 python tools/lazy_step_time.py [--steps 2000] [--kernel auto] [--native auto]

Prints the median time of the optimizer step alone and of a whole training step (forward, backward, step),
in microseconds, over --steps steps after 200 warm-up steps (time.perf_counter around each part; the median,
as other processes share the cores).
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from mesimp_lib.lazy import LazyAdam
from mesimp_lib.meprop import MePropLinear


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--kernel", default="auto", choices=("auto", "torch", "fused", "native"))
    ap.add_argument("--native", default="auto", choices=("auto", "yes", "no"), help="LazyAdam(native=...)")
    a = ap.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    layer = MePropLinear(784, 500, k=20, mode="per_example", weight_grad="sparse", kernel=a.kernel)
    opt = LazyAdam(layer.parameters(), native={"auto": None, "yes": True, "no": False}[a.native])
    xs = torch.randn(64, 10, 784)
    t_step, t_all = [], []
    for i in range(200 + a.steps):
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        layer(xs[i % 64]).square().sum().backward()
        t1 = time.perf_counter()
        opt.step()
        t2 = time.perf_counter()
        if i >= 200:
            t_step.append(t2 - t1)
            t_all.append(t2 - t0)
    print(f"kernel={a.kernel} native={a.native} steps={a.steps}: optimizer step {1e6 * statistics.median(t_step):.1f} us, "
          f"whole training step {1e6 * statistics.median(t_all):.1f} us, weight checksum {layer.weight.sum().item():.6f}")


if __name__ == "__main__":
    main()
