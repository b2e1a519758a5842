"""The char-LM exported to ONNX: file sizes, and onnxruntime's inference speed against rnnkit's, interleaved.

    python benchmarks/bench_onnx.py              # a few seconds
    python benchmarks/bench_onnx.py --repeats 20

The model is the default char-LM (``rnnkit train``'s defaults: Embedding 64 -> LSTM 256 -> Linear over the
built-in corpus's vocabulary), randomly initialised (speed and size do not depend on the weights).  Two
workloads, float32:

* **generation**, B = 1: 200 tokens fed one at a time with the state carried (``--with-state`` export),
  time per token; rnnkit steps as :meth:`CharLM.generate` does (embedding row, ``RecurrentLayer.step``,
  the head);
* **batch**, B = 32 x T = 100 tokens in one forward pass (inference, no cache).

Each repeat runs rnnkit and onnxruntime back to back, so both see the same machine load; the table
shows medians and onnxruntime_time / rnnkit_time.  onnxruntime uses its default thread pool and rnnkit
NumPy's BLAS threads.  Also prints the largest difference between the two outputs.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rnnkit import export_onnx  # noqa: E402
from rnnkit.charlm import CharLM, ModelConfig, Vocab  # noqa: E402
from rnnkit.charlm.data import builtin_corpus  # noqa: E402

try:
    import onnxruntime as ort
except ImportError:  # pragma: no cover - the benchmark needs its peer
    sys.exit("bench_onnx.py runs onnxruntime: pip install 'rnnkit[onnx]' (make test installs it)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--tokens", type=int, default=200, help="generation: tokens per repeat")
    args = parser.parse_args()

    vocab = Vocab.from_text(builtin_corpus())
    model = CharLM(ModelConfig(vocab_size=len(vocab)), seed=0)
    net = model.net
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        sizes = {}
        for name, options in (("plain", {}), ("with state", {"with_state": True}),
                              ("with state and lengths", {"with_state": True, "with_lengths": True})):
            path = Path(tmp) / f"{name}.onnx"
            export_onnx(net, path, **options)
            sizes[name] = path.stat().st_size
        weights = sum(v.nbytes for v in net.params.values())
        print(f"char-LM {model.config}: {model.num_parameters():,} parameters, "
              f"{weights / 1e6:.2f} MB of float32 weights")
        for name, size in sizes.items():
            print(f"  ONNX file ({name}): {size / 1e6:.3f} MB")
        sess = ort.InferenceSession(str(Path(tmp) / "with state.onnx"), providers=["CPUExecutionProvider"])

        H, V = model.config.hidden, len(vocab)
        tokens = rng.integers(0, V, (1, args.tokens))

        embed, rnn, head = net["embed"], net["rnn"], net["head"]

        def gen_rnnkit() -> np.ndarray:  # token by token as CharLM.generate runs: RecurrentLayer.step
            state, outs = None, []
            for t in range(args.tokens):
                out, state = rnn.step(embed.params["weight"][tokens[:, t]], state)
                outs.append((out @ head.params["weight"].T + head.params["bias"])[:, None])
            return np.concatenate(outs, axis=1)

        def gen_ort() -> np.ndarray:
            h = c = np.zeros((1, 1, H), np.float32)
            outs = []
            for t in range(args.tokens):
                out, h, c = sess.run(None, {"tokens": tokens[:, t:t + 1], "rnn.h0": h, "rnn.c0": c})
                outs.append(out)
            return np.concatenate(outs, axis=1)

        batch = rng.integers(0, V, (32, 100))
        zeros = np.zeros((1, 32, H), np.float32)

        def batch_rnnkit() -> np.ndarray:
            return net.forward(batch, keep_cache=False)[0]

        def batch_ort() -> np.ndarray:
            return sess.run(["out"], {"tokens": batch, "rnn.h0": zeros, "rnn.c0": zeros})[0]

        worst = max(float(np.abs(gen_rnnkit() - gen_ort()).max()), float(np.abs(batch_rnnkit() - batch_ort()).max()))
        rows = []
        for label, ours, theirs, per in (("generation B=1, per token", gen_rnnkit, gen_ort, args.tokens),
                                         ("batch B=32 x T=100", batch_rnnkit, batch_ort, 1)):
            times: dict[str, list[float]] = {"rnnkit": [], "onnxruntime": []}
            for _ in range(args.repeats):
                for key, fn in (("rnnkit", ours), ("onnxruntime", theirs)):
                    fn()  # untimed: warm caches and thread pools
                    t0 = time.perf_counter()
                    fn()
                    times[key].append((time.perf_counter() - t0) / per)
            ours_t, theirs_t = statistics.median(times["rnnkit"]), statistics.median(times["onnxruntime"])
            rows.append((label, ours_t, theirs_t))
        print(f"\n{'workload':28s} {'rnnkit':>12s} {'onnxruntime':>12s} {'ort/rnnkit':>10s}")
        for label, ours_t, theirs_t in rows:
            print(f"{label:28s} {ours_t * 1e3:10.3f}ms {theirs_t * 1e3:10.3f}ms {theirs_t / ours_t:10.2f}")
        print(f"\nlargest |rnnkit - onnxruntime| over both workloads: {worst:.2e}")


if __name__ == "__main__":
    main()
