"""What the compiled kernels cost on the first run, and on later runs (numba's on-disk cache).

    python benchmarks/bench_compile.py

Each run is a fresh process that builds an RNN, an LSTM and a GRU (float32) and runs one forward
and backward pass of each, plus one char-LM-sized LSTM training step; the first run uses an empty
cache directory (``NUMBA_CACHE_DIR``), so it compiles everything; the second and third load it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WORK = """
import numpy as np, rnnkit
x = np.random.default_rng(0).standard_normal((4, 6, 8), dtype=np.float32)
for layer in (rnnkit.RNN(8, 16), rnnkit.LSTM(8, 16), rnnkit.GRU(8, 16)):
    out, _, cache = layer.forward(x)
    layer.backward(np.ones_like(out), None, cache)
"""


def run(cache_dir: str) -> float:
    env = {**os.environ, "NUMBA_CACHE_DIR": cache_dir, "PYTHONPATH": str(ROOT)}
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", WORK], env=env, check=True)
    return time.perf_counter() - t0


def main() -> None:
    baseline_env = {**os.environ, "PYTHONPATH": str(ROOT)}
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import numpy, numba, rnnkit.layers"], env=baseline_env, check=True)
    imports = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as cache:
        times = [run(cache) for _ in range(3)]
    print("# compile cost of rnnkit's kernels (RNN, LSTM, GRU: forward + backward, float32), one process each")
    print(f"import numpy + numba + rnnkit.layers: {imports:.2f} s")
    print(f"first run (empty cache, compiles): {times[0]:.2f} s")
    print(f"later runs (cache loaded): {times[1]:.2f} s, {times[2]:.2f} s")


if __name__ == "__main__":
    main()
