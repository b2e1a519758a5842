"""The thread policy on an idle machine and beside a CPU hog: is the default within 1.5x of the best?

    python benchmarks/bench_threads.py

The workload is the char-LM's recurrent training step (LSTM 64 -> 256, B=32, T=64, float32:
forward and backward).  For each condition (idle; one process spinning on a core beside it) it
times 1 thread, every thread count up to the available cores, and the policy's default
(:func:`rnnkit.parallel.default_threads`, evaluated under that condition), median of 15 steps after
3 untimed ones, and prints default / best.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _harness import cpu_name, probe_us  # noqa: E402

import rnnkit  # noqa: E402
from rnnkit import parallel  # noqa: E402

HOG = "while True:\n    pass\n"


def step_ms(layer: rnnkit.LSTM, x: np.ndarray, d_out: np.ndarray, threads: int, steps: int = 15) -> float:
    with rnnkit.threads(threads):
        for _ in range(3):
            _, _, cache = layer.forward(x)
            layer.backward(d_out, None, cache)
        times = []
        for _ in range(steps):
            t0 = time.perf_counter()
            _, _, cache = layer.forward(x)
            layer.backward(d_out, None, cache)
            times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


def main() -> None:
    rng = np.random.default_rng(0)
    layer = rnnkit.LSTM(64, 256, seed=0)
    x = rng.standard_normal((32, 64, 64), dtype=np.float32)
    d_out = rng.standard_normal((32, 64, 256), dtype=np.float32)
    cores = parallel.available_cores()
    counts = list(range(1, cores + 1))
    print("# thread policy: LSTM 64->256 training step, B=32, T=64, float32, median of 15 steps (ms)")
    print(f"CPU: {cpu_name()}, {cores} cores available; quiet-machine probe {probe_us():.1f} us")
    columns = " ".join(f"{f'{n} thr':>9}" for n in counts)
    print(f"{'condition':<14} {columns} {'default':>12} {'default/best':>13}")
    for condition in ("idle", "one CPU hog"):
        hog = subprocess.Popen([sys.executable, "-c", HOG]) if condition != "idle" else None
        try:
            if hog is not None:
                time.sleep(1.0)  # let the hog be scheduled before the policy looks
            default = parallel.default_threads()
            times = {n: step_ms(layer, x, d_out, n) for n in counts}
            t_default = step_ms(layer, x, d_out, default)
        finally:
            if hog is not None:
                hog.kill()
                hog.wait()
        best = min(times.values())
        print(f"{condition:<14} " + " ".join(f"{times[n]:>9.1f}" for n in counts)
              + f" {t_default:>7.1f} ({default})" + f" {t_default / best:>13.2f}", flush=True)
    print(f"quiet-machine probe at end: {probe_us():.1f} us")


if __name__ == "__main__":
    main()
