"""rnnkit.textbook.optimize against the Dinosaurus exercise's plain NumPy loop, interleaved.

    python benchmarks/bench_textbook.py              # about 20 s
    python benchmarks/bench_textbook.py --seconds 5  # shorter

The setup of the exercise: a tanh RNN with n_a = 50 over a vocabulary of 27 characters, one name
(here 12 characters: the start input and 11 letters) per ``optimize`` call, SGD with lr 0.01 and
clipping at 5.  The peer is the exercise's own code (``tests/dinosaurus_course.py``: ``utils.py``'s
per-step ``rnn_forward`` / ``rnn_backward`` with one-hot inputs, the student's ``clip`` and
``optimize``).  Each block times ``--calls`` calls of one, then of the other (the order alternates
between blocks), each on its own copy of the parameters, so both see the same machine load; the
result is the median over blocks of course_time / rnnkit_time (above 1: rnnkit is faster).
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import dinosaurus_course as course  # noqa: E402

from rnnkit import textbook  # noqa: E402

N_A, VOCAB, NAME_LENGTH = 50, 27, 11


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="approximate total running time")
    parser.add_argument("--calls", type=int, default=200, help="optimize calls per timed block")
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    parameters = {"Wax": rng.standard_normal((N_A, VOCAB)) * 0.01, "Waa": rng.standard_normal((N_A, N_A)) * 0.01,
                  "Wya": rng.standard_normal((VOCAB, N_A)) * 0.01, "b": np.zeros((N_A, 1)),
                  "by": np.zeros((VOCAB, 1))}
    names = [[None, *(int(i) for i in rng.integers(1, VOCAB, NAME_LENGTH))] for _ in range(args.calls)]
    runs = {"course": (course.optimize, copy.deepcopy(parameters)),
            "rnnkit": (textbook.optimize, copy.deepcopy(parameters))}

    def block(name: str) -> float:
        optimize, params = runs[name]
        a_prev = np.zeros((N_A, 1))
        start = time.perf_counter()
        for X in names:
            _, _, a_prev = optimize(X, X[1:] + [0], a_prev, params, 0.01)
        return (time.perf_counter() - start) / len(names)

    for name in runs:  # warm up
        block(name)
    times: dict[str, list[float]] = {"course": [], "rnnkit": []}
    ratios = []
    deadline = time.perf_counter() + args.seconds
    k = 0
    while time.perf_counter() < deadline or k < 3:
        order = ("course", "rnnkit") if k % 2 == 0 else ("rnnkit", "course")
        measured = {name: block(name) for name in order}
        for name, seconds in measured.items():
            times[name].append(seconds)
        ratios.append(measured["course"] / measured["rnnkit"])
        k += 1
    print(f"Dinosaurus optimize (n_a={N_A}, vocab={VOCAB}, {NAME_LENGTH + 1} steps), {k} interleaved blocks "
          f"of {args.calls} calls")
    for name, values in times.items():
        print(f"  {name:7s} median {statistics.median(values) * 1e6:7.1f} us per call")
    print(f"  course_time / rnnkit_time: median {statistics.median(ratios):.2f} "
          f"(blocks: {min(ratios):.2f} .. {max(ratios):.2f})")


if __name__ == "__main__":
    main()
