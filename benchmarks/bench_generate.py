"""Generation, one character at a time (B = 1): rnnkit's CharLM.generate against the same loop in torch.

    python benchmarks/bench_generate.py             # 200 characters per call, the default model
    python benchmarks/bench_generate.py --threads 1

Both sides hold the char-LM's default model with the *same weights* and run the same loop: feed one
id, carry the state, take the logits, draw the next id (greedy, so both produce the same text,
which is checked).  rnnkit's loop is :meth:`rnnkit.charlm.model.CharLM.generate` (validation,
layers, sampling and all); torch's is ``nn.Embedding`` -> ``nn.LSTM`` -> ``nn.Linear`` under
``no_grad`` with the argmax taken in torch.  Timed with the fair harness (_harness.py): ratio =
torch time / rnnkit time, above 1 when rnnkit is faster.  Also reported: priming with 1 MB of text
(read in chunks of ``PRIME_CHUNK`` steps without caches), its time and the peak memory it added.
torch is a benchmark peer only, never a dependency of rnnkit.
"""

from __future__ import annotations

import argparse
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _harness import Busy, Harness, footer, header  # noqa: E402

import rnnkit  # noqa: E402
from rnnkit.charlm.model import PRIME_CHUNK, CharLM  # noqa: E402
from rnnkit.charlm.train import TrainConfig  # noqa: E402

try:
    import torch
except ImportError:  # pragma: no cover - the benchmark needs its peer
    sys.exit("bench_generate.py compares against PyTorch: pip install torch==2.13.0 (make test installs it)")

VOCAB = 96


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, default=200, help="characters generated per call (default 200)")
    parser.add_argument("--threads", type=int, default=2, help="threads for both sides (default 2)")
    parser.add_argument("--pairs", type=int, default=9, help="quiet pairs of blocks (default 9)")
    args = parser.parse_args()
    rnnkit.set_num_threads(args.threads)
    torch.set_num_threads(args.threads)

    config = TrainConfig()
    model = CharLM(config.model_config(VOCAB), seed=0)
    embed = torch.nn.Embedding(VOCAB, config.embed_dim)
    lstm = torch.nn.LSTM(config.embed_dim, config.hidden, batch_first=True)
    head = torch.nn.Linear(config.hidden, VOCAB)
    peers = {"embed": embed, "rnn": lstm, "head": head}
    with torch.no_grad():
        for name, value in model.state_dict().items():
            block, _, param = name.partition(".")
            getattr(peers[block], param).copy_(torch.from_numpy(value))
    prime = np.array([1, 2, 3], np.int64)

    def ours() -> list[int]:
        return list(model.generate(prime, args.tokens, rng=np.random.default_rng(0), temperature=0.0))

    def theirs() -> list[int]:
        ids, state = [], None
        with torch.no_grad():
            x = torch.from_numpy(prime)[None]
            for _ in range(args.tokens):
                out, state = lstm(embed(x), state)
                token = int(torch.argmax(head(out[0, -1])))
                ids.append(token)
                x = torch.tensor([[token]])
        return ids

    same = ours() == theirs()
    harness = Harness(pairs=args.pairs, calls=3, min_pairs=max(3, args.pairs - 2))
    print(header("generation, B = 1 (rnnkit CharLM.generate vs the same loop in torch, same weights)",
                 f"torch {torch.__version__}; {args.threads} thread(s) each; {config.cell} {config.hidden}, "
                 f"embed {config.embed_dim}, vocab {VOCAB}; {args.tokens} characters per call, greedy"))
    try:
        pair = harness.compare(ours, theirs)
        per_char = 1e6 / args.tokens
        print(f"rnnkit {pair.ours * per_char:7.1f} us/char   torch {pair.peer * per_char:7.1f} us/char"
              f"   ratio torch/rnnkit {pair.ratio:.2f}   same ids: {same}")
    except Busy as busy:
        print(f"not reported: the machine was busy ({busy})")

    long_prime = np.random.default_rng(1).integers(0, VOCAB, 1 << 20)
    tracemalloc.start()
    t0 = time.perf_counter()
    next(model.generate(long_prime, 1, rng=np.random.default_rng(0), temperature=0.0))
    seconds = time.perf_counter() - t0
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    print(f"priming with 1 MiB of ids ({PRIME_CHUNK} steps a chunk, no caches): {seconds:.1f} s, "
          f"peak memory added {peak / 2**20:.1f} MiB (the ids alone are {long_prime.nbytes / 2**20:.0f} MiB)")
    print(footer(harness))


if __name__ == "__main__":
    main()
