"""rnnkit's recurrent layers against torch.nn, timed in one process with the fair harness (_harness.py).

    python benchmarks/bench_layers.py                 # every shape below (several minutes on 2 cores)
    python benchmarks/bench_layers.py --quick         # H = 128 only
    python benchmarks/bench_layers.py --shapes 32x100x256x256 --kinds LSTM

Shapes are B x T x I x H, float32: B=32, T=100, I=H in {128, 256, 512}; B=128, T=50, H=256; and
I=64, H=512.  For each layer it times (a) a forward pass for inference (rnnkit ``keep_cache=False``,
torch ``no_grad``) and (b) a training step (forward + backward to the input, the initial state and
every parameter) and prints ratio = torch_time / rnnkit_time (above 1: rnnkit is faster), medians
of quiet, interleaved blocks.

``floor`` is the time of the same matrix products and nothing else, made the way rnnkit makes them
(:func:`floor_fns`: the input projection a chunk of steps at a time and T per-step ``W_hh h``
products -- for the LSTM, whose steps make their own input projection, T per-step
``[W_ih | W_hh] [x; h]`` products -- with the register-tile kernel split over the threads like the
layer's, and for training T ``W_hhᵀ da`` products plus the three weight/input-gradient GEMMs -- for
the LSTM T ``[W_hh | W_ih]ᵀ da`` products, which make dx too, and the two weight-gradient GEMMs);
``/floor`` is rnnkit's time as a multiple of it.  torch gets ``torch.set_num_threads`` equal to
rnnkit's BLAS threads.  torch is a benchmark peer only, never a dependency of rnnkit.
"""

from __future__ import annotations

import argparse
import functools
import sys
from pathlib import Path

import numba
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _harness import Busy, Harness, footer, header  # noqa: E402

import rnnkit  # noqa: E402
from rnnkit._blas import matmul, run_in_threads  # noqa: E402
from rnnkit._sync import barrier, new_counter  # noqa: E402
from rnnkit._tiles import MIN_COLUMNS, packed_product, tile_gemm  # noqa: E402
from rnnkit.cells import CellSpec, step_pack, step_pack_t  # noqa: E402
from rnnkit.cells._spec import gates_product, gates_product_t  # noqa: E402
from rnnkit.unroll import _CHUNK_COLUMNS, _MIN_PACK_STEPS, _aligned, _project, plan_parts  # noqa: E402

try:
    import torch
except ImportError:  # pragma: no cover - the benchmark needs its peer
    sys.exit("bench_layers.py compares against PyTorch: pip install torch==2.13.0 (make test installs it)")

SHAPES = [(32, 100, 128, 128), (32, 100, 256, 256), (32, 100, 512, 512), (128, 50, 256, 256), (32, 100, 64, 512)]


@numba.njit(nogil=True, cache=True)
def _step_products(G, H, T, B, chunk, w_ih, w_hh, pack, pack_t, xg, xp, xh, h, gate, da, share, dx_share, backward,
                   in_step, sync, parties, u0, u1):  # type: ignore[no-untyped-def]
    """The time loop's matrix products for one part (units u0..u1) and nothing else: the chunked
    input projection and each step's W_hh h, or with ``in_step`` each step's [W_ih | W_hh] [x; h]
    from the part's packed blocks, as the LSTM's steps read them (forward), or each step's W_hhᵀ da
    share, with ``in_step`` its [W_hh | W_ih]ᵀ da share from the packed blocks, as the LSTM's
    backward steps make dh_{t-1} and dx (backward), meeting the other parts at the same per-step
    barrier as the loop."""
    rows = pack.shape[2]
    nb = -(-share.shape[0] // pack_t.shape[2]) if pack_t.shape[2] > 0 else 0   # pack_t's blocks of W_hhᵀ
    for t in range(T):
        if backward and in_step:
            packed_product(pack_t[:nb], da, u0, u1 - u0, G, H, share)
            packed_product(pack_t[nb:], da, u0, u1 - u0, G, H, dx_share)
        elif backward:
            gates_product_t(w_hh, G, H, u0, u1, da, 0.0, share)
        elif in_step:
            for i in range(pack.shape[0]):
                tile_gemm(True, 1.0, pack[i], xh, 0.0, gate[i * rows : (i + 1) * rows])
        else:
            if t % chunk == 0:
                _project(w_ih, G, H, u0, u1, xg, xp, parties > 1)
            gates_product(w_hh, G, H, u0, u1, h, gate)
        if parties > 1:
            barrier(sync, parties, t + 1)


def _noise(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    a = _aligned(shape, np.float32)
    a[...] = rng.standard_normal(shape, dtype=np.float32)
    return a


def floor_fns(cell: CellSpec, B: int, T: int, I: int, H: int, rng: np.random.Generator):  # type: ignore[no-untyped-def]
    """The matrix products of a forward pass and of a training step, alone, made as rnnkit makes them.

    The same products with the same kernels and the same split over threads as the layer: the
    register-tile kernel per step (each thread its units' rows, a barrier per step), the input
    projection a chunk of steps at a time, and the bulk weight- and input-gradient products through
    :func:`rnnkit._blas.matmul`.  The gate arithmetic, the copies and everything else are left out,
    so ``/floor`` is how close the layer comes to its own products.
    """
    f = np.float32
    G = cell.num_gates
    w_ih, w_hh = rng.standard_normal((G * H, I), dtype=f), rng.standard_normal((G * H, H), dtype=f)
    x, hs = rng.standard_normal((I, T * B), dtype=f), rng.standard_normal((H, T * B), dtype=f)
    dA = rng.standard_normal((G * H, T * B), dtype=f)
    parts = plan_parts(cell, H, B, None)
    chunk = max(1, min(T, _CHUNK_COLUMNS // B))
    in_step = cell.pack_shape is not None and T >= _MIN_PACK_STEPS and B >= MIN_COLUMNS
    packs = [np.empty((0, 0, 0), f)] * len(parts)
    packs_t = [np.empty((0, 0, 0), f)] * len(parts)
    if in_step:
        assert cell.pack_shape is not None
        packs = [_aligned(cell.pack_shape(u1 - u0, I + H), f) for _, _, u0, u1 in parts]
        for pack, (_, _, u0, u1) in zip(packs, parts, strict=True):
            step_pack(cell.kind, w_ih, w_hh, u0, u1, pack)
    in_step_t = cell.pack_t_shape is not None and in_step
    if in_step_t:
        assert cell.pack_t_shape is not None
        packs_t = [_aligned(cell.pack_t_shape(u1 - u0, H, I), f) for _, _, u0, u1 in parts]
        for pack, (_, _, u0, u1) in zip(packs_t, parts, strict=True):
            step_pack_t(cell.kind, w_ih, w_hh, u0, u1, pack)
    # The step operands start cache lines, as the loop's own buffers do (a vector load across two
    # lines is slower).
    xh, xg, h, da = (_noise(rng, shape) for shape in ((I + H, B), (I, chunk * B), (H, B), (G * H, B)))
    xp, gates = _aligned((G * H, chunk * B), f), _aligned((len(parts), G * H, B), f)  # gates: one block a thread
    shares, dx_shares = _aligned((len(parts), H, B), f), _aligned((len(parts), I, B), f)

    def products(backward: bool) -> None:
        sync = new_counter()
        run_in_threads([functools.partial(_step_products, G, H, T, B, chunk, w_ih, w_hh, packs[i], packs_t[i], xg, xp,
                                          xh, h, gates[i], da, shares[i], dx_shares[i], backward,
                                          in_step_t if backward else in_step, sync, len(parts), u0, u1)
                        for i, (_, _, u0, u1) in enumerate(parts)])

    def forward() -> None:
        products(False)

    def train() -> None:
        products(False)
        products(True)
        matmul(dA, x.T)
        matmul(dA, hs.T)
        if not in_step_t:  # (else the backward steps made dx)
            matmul(w_ih.T, dA)

    return forward, train


def bench(harness: Harness, kind: str, shape: tuple[int, int, int, int], rng: np.random.Generator) -> list[str]:
    B, T, I, H = shape
    layer = getattr(rnnkit, kind)(I, H, seed=0)
    peer = getattr(torch.nn, kind)(I, H, batch_first=True)
    with torch.no_grad():
        for name, value in layer.params.items():
            getattr(peer, name).copy_(torch.from_numpy(value))
    x = rng.standard_normal((B, T, I), dtype=np.float32)
    d_out = rng.standard_normal((B, T, H), dtype=np.float32)
    xt, d_out_t = torch.from_numpy(x), torch.from_numpy(d_out)

    def rk_forward() -> None:
        layer.forward(x, keep_cache=False)

    def rk_train() -> None:
        _, _, cache = layer.forward(x)
        layer.backward(d_out, None, cache)

    def pt_forward() -> None:
        with torch.no_grad():
            peer(xt)

    def pt_train() -> None:
        xg = xt.detach().requires_grad_(True)
        peer.zero_grad(set_to_none=True)
        out, _ = peer(xg)
        out.backward(d_out_t)

    floor_fwd, floor_train = floor_fns(layer.cell, B, T, I, H, rng)
    cells = [f"{kind:<5} {B:>3}x{T:<3} {I:>3}/{H:<3}"]
    for rk, pt, fl in ((rk_forward, pt_forward, floor_fwd), (rk_train, pt_train, floor_train)):
        try:
            pair = harness.compare(rk, pt)
            floor = harness.time(fl)
            cells.append(f"{pair.ours * 1e3:>8.2f} {pair.peer * 1e3:>8.2f} {pair.ratio:>6.2f} "
                         f"{floor * 1e3:>7.2f} {pair.ours / floor:>6.2f}")
        except Busy as busy:
            cells.append(f"{'(busy: ' + str(busy)[:30] + ')':>40}")
    return cells


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="H=128 only")
    parser.add_argument("--kinds", default="RNN,GRU,LSTM")
    parser.add_argument("--shapes", default=None, help="comma-separated BxTxIxH (default: the five above)")
    parser.add_argument("--pairs", type=int, default=7, help="quiet pairs of blocks per case (default 7)")
    parser.add_argument("--threads", type=int, default=None, help="BLAS/torch threads (default: rnnkit's policy)")
    args = parser.parse_args()
    shapes = [SHAPES[0]] if args.quick else SHAPES
    if args.shapes:
        shapes = [tuple(int(v) for v in s.split("x")) for s in args.shapes.split(",")]  # type: ignore[misc]
    n = rnnkit.set_num_threads(args.threads)
    torch.set_num_threads(n)
    harness = Harness(pairs=args.pairs, min_pairs=max(3, args.pairs - 2))
    rng = np.random.default_rng(0)
    print(header("rnnkit layers vs torch.nn (float32)", f"torch {torch.__version__}, {n} threads each; "
                 "ratio = torch / rnnkit (above 1: rnnkit faster); /floor = rnnkit / GEMM floor"))
    print(f"{'layer B x T  I/H':<20} | {'forward: rnnkit   torch  ratio   floor /floor':<44} | "
          f"{'training step: rnnkit   torch  ratio   floor /floor'}")
    print(f"{'':<20} | {'(ms)':<44} | (ms)")
    for kind in args.kinds.split(","):
        for shape in shapes:
            print(" | ".join(bench(harness, kind, shape, rng)), flush=True)
    print(footer(harness))


if __name__ == "__main__":
    main()
