"""rnnkit's recurrent layers against torch.nn, timed in the same process, interleaved.

    python benchmarks/bench_layers.py            # the full table (a few minutes on 2 cores)
    python benchmarks/bench_layers.py --quick    # H = 128 only, fewer repeats

For RNN, LSTM and GRU with B=32, T=100, I=H in {128, 256, 512}, float32, it times (a) a forward
pass for inference (rnnkit ``keep_cache=False``, torch ``no_grad``) and (b) a training step
(forward + backward to the input, the initial state and every parameter).  Each repeat runs rnnkit
and torch back to back (each timed call right after an untimed one of the same library), so both
see the same machine load; the table shows medians and the ratio
torch_time / rnnkit_time (above 1: rnnkit is faster).  The last columns give rnnkit's achieved
GFLOP/s (matrix-product FLOPs only) next to the ceiling: one plain NumPy product of the same
total size, ``(G*H, H) @ (H, T*B)``.

BLAS threads are left at their defaults for NumPy; torch gets ``torch.set_num_threads(2)``.
torch is a benchmark peer only, never a dependency of rnnkit.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import rnnkit  # noqa: E402

try:
    import torch
except ImportError:  # pragma: no cover - the benchmark needs its peer
    sys.exit("bench_layers.py compares against PyTorch: pip install torch==2.13.0 (make test installs it)")

B, T = 32, 100
KINDS = {"RNN": 1, "GRU": 3, "LSTM": 4}  # gates per cell


def _time(fn, repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return times


def bench(kind: str, H: int, repeats: int, rng: np.random.Generator) -> dict[str, float]:
    I = H
    layer = getattr(rnnkit, kind)(I, H, seed=0)
    peer = getattr(torch.nn, kind)(I, H, batch_first=True)
    with torch.no_grad():
        for name, value in layer.params.items():
            getattr(peer, name).copy_(torch.from_numpy(value))

    x = rng.standard_normal((B, T, I), dtype=np.float32)
    d_out = rng.standard_normal((B, T, H), dtype=np.float32)
    xt = torch.from_numpy(x)
    d_out_t = torch.from_numpy(d_out)

    def rk_forward():
        layer.forward(x, keep_cache=False)

    def rk_train():
        _, _, cache = layer.forward(x)
        layer.backward(d_out, None, cache)

    def pt_forward():
        with torch.no_grad():
            peer(xt)

    def pt_train():
        xg = xt.detach().requires_grad_(True)
        peer.zero_grad(set_to_none=True)
        out, _ = peer(xg)
        out.backward(d_out_t)

    res = {}
    for what, rk, pt in (("fwd", rk_forward, pt_forward), ("train", rk_train, pt_train)):
        rk_t, pt_t = [], []
        for _ in range(repeats):  # interleaved, so both see the same machine load
            # Each timed call follows an untimed one of the same library: after the other library ran,
            # the first call pays for waking its thread pool (BLAS / OpenMP) and refilling caches, a cost
            # that depends on the order of the calls, not on either library.
            rk()
            rk_t += _time(rk, 1)
            pt()
            pt_t += _time(pt, 1)
        res[f"{what}_rk"] = statistics.median(rk_t)
        res[f"{what}_pt"] = statistics.median(pt_t)

    # Matrix-product FLOPs: forward 2*T*B*GH*(I+H); backward twice that (dW_ih, dx, dW_hh, dh).
    GH = KINDS[kind] * H
    fwd_flops = 2.0 * T * B * GH * (I + H)
    res["fwd_gflops"] = fwd_flops / res["fwd_rk"] / 1e9
    res["train_gflops"] = 3 * fwd_flops / res["train_rk"] / 1e9
    w = rng.standard_normal((GH, H), dtype=np.float32)
    m = rng.standard_normal((H, T * B), dtype=np.float32)
    w @ m
    res["ceiling_gflops"] = 2.0 * GH * H * T * B / statistics.median(_time(lambda: w @ m, 5)) / 1e9
    return res


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="H=128 only, 5 repeats")
    parser.add_argument("--repeats", type=int, default=None, help="timed repeats per case (default 11; quick 5)")
    parser.add_argument("--kinds", default="RNN,GRU,LSTM")
    parser.add_argument("--sizes", default=None, help="comma-separated H values (default 128,256,512)")
    args = parser.parse_args()
    sizes = [128] if args.quick else [128, 256, 512]
    if args.sizes:
        sizes = [int(s) for s in args.sizes.split(",")]
    repeats = args.repeats or (5 if args.quick else 11)
    torch.set_num_threads(2)
    rng = np.random.default_rng(0)

    print(f"rnnkit {rnnkit.__version__}, numpy {np.__version__}, torch {torch.__version__}, "
          f"python {platform.python_version()}, {platform.machine()}, "
          f"torch threads {torch.get_num_threads()}; B={B}, T={T}, I=H, float32, median of {repeats}")
    print("ratio = torch_time / rnnkit_time (above 1: rnnkit faster)")
    header = (f"{'layer':<5} {'H':>4} | {'fwd rnnkit':>10} {'fwd torch':>10} {'ratio':>6} | "
              f"{'train rnnkit':>12} {'train torch':>11} {'ratio':>6} | {'GFLOP/s fwd':>11} "
              f"{'train':>6} {'ceiling':>7}")
    print(header)
    print("-" * len(header))
    for kind in args.kinds.split(","):
        for H in sizes:
            r = bench(kind, H, repeats, rng)
            print(f"{kind:<5} {H:>4} | {r['fwd_rk'] * 1e3:>8.2f}ms {r['fwd_pt'] * 1e3:>8.2f}ms "
                  f"{r['fwd_pt'] / r['fwd_rk']:>6.2f} | {r['train_rk'] * 1e3:>10.2f}ms "
                  f"{r['train_pt'] * 1e3:>9.2f}ms {r['train_pt'] / r['train_rk']:>6.2f} | "
                  f"{r['fwd_gflops']:>11.1f} {r['train_gflops']:>6.1f} {r['ceiling_gflops']:>7.1f}",
                  flush=True)


if __name__ == "__main__":
    main()
