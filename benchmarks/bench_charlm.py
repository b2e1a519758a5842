"""The char-LM's default model trained for the same wall-clock time by rnnkit and by PyTorch.

    python benchmarks/bench_charlm.py                  # 10 minutes each (about 20 minutes in all)
    python benchmarks/bench_charlm.py --minutes 1      # a quick look
    python benchmarks/bench_charlm.py --speed          # training speed only (fair harness, ~1 minute)
    python benchmarks/bench_charlm.py --layers 2 --dropout 0.2 --tie-weights --embed-dim 256   # other settings

Both sides train the model ``rnnkit train`` builds with its defaults (``TrainConfig()``: embedding,
one LSTM layer, linear head; Adam, gradient-norm clipping, truncated BPTT with the state carried
between chunks) on the built-in corpus, from the *same initial weights*, on the same batches in
the same order, and validate on the same held-out text every ``eval_every`` steps.  rnnkit runs
through its real training loop (:func:`rnnkit.charlm.train.train`, checkpoints and all); PyTorch
runs the equivalent plain loop.  Reported: steps done, training characters per second (time spent
in training steps only), the best and the last validation bits per character, and the unigram
baseline.  The model and regularization flags (``--dropout``, ``--weight-drop``, ``--embed-dropout``,
``--tie-weights``, ``--weight-decay``, ...) set the same fields of ``TrainConfig`` that ``rnnkit train``
has; the PyTorch side builds the same thing: ``nn.Dropout`` on the embedding output and before the
head, ``nn.LSTM(dropout=...)`` between layers, embedding rows dropped as in AWD-LSTM, ``W_hh``
DropConnect through ``torch.func.functional_call``, a shared embedding/head weight, and AdamW.
torch is a benchmark peer only, never a dependency of rnnkit.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import cpu_name  # noqa: E402

from rnnkit.charlm.data import StreamBatches, Vocab, load_text, split_stream, unigram_bits_per_char  # noqa: E402
from rnnkit.charlm.model import CharLM  # noqa: E402
from rnnkit.charlm.train import TrainConfig, make_optimizer, train  # noqa: E402

try:
    import torch
except ImportError:  # pragma: no cover - the benchmark needs its peer
    sys.exit("bench_charlm.py compares against PyTorch: pip install torch==2.13.0 (make test installs it)")


def run_rnnkit(config: TrainConfig) -> dict[str, float]:
    with open(Path(config.out).parent / "rnnkit-log.txt", "w") as log:  # beside the run directory, not in it
        result = train(config, progress=False, log=log)
    records = [json.loads(line) for line in (Path(config.out) / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in records if r["kind"] == "train"]
    return {
        "steps": result.step,
        "chars_per_s": sum(r["chars"] for r in steps) / sum(r["time_s"] for r in steps),
        "best_bpc": result.best_val_bpc,
        "last_bpc": result.val_bpc,
    }


class TorchCharLM(torch.nn.Module):
    def __init__(self, vocab_size: int, config: TrainConfig) -> None:
        super().__init__()
        cells = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU, "rnn": torch.nn.RNN}
        self.config = config
        self.embed = torch.nn.Embedding(vocab_size, config.embed_dim)
        self.rnn = cells[config.cell](config.embed_dim, config.hidden, config.layers, batch_first=True,
                                      dropout=config.dropout if config.layers > 1 else 0.0)
        self.head = torch.nn.Linear(config.hidden, vocab_size)
        self.drop = torch.nn.Dropout(config.dropout)
        if config.tie_weights:
            self.head.weight = self.embed.weight

    def forward(self, x, state):
        c = self.config
        weight = self.embed.weight
        if self.training and c.embed_dropout:  # whole rows, as rnnkit's Embedding(dropout=...)
            keep = torch.empty(weight.shape[0], 1, dtype=weight.dtype).bernoulli_(1 - c.embed_dropout)
            weight = weight * keep / (1 - c.embed_dropout)
        emb = self.drop(torch.nn.functional.embedding(x, weight))
        if self.training and c.weight_drop:  # DropConnect on W_hh, one mask per forward pass
            params = {name: torch.nn.functional.dropout(p, c.weight_drop) if name.startswith("weight_hh") else p
                      for name, p in self.rnn.named_parameters()}
            out, state = torch.func.functional_call(self.rnn, params, (emb, state))
        else:
            out, state = self.rnn(emb, state)
        return self.head(self.drop(out)), state


def _detach(state):
    return tuple(s.detach() for s in state) if isinstance(state, tuple) else state.detach()


def _torch_optimizer(model: torch.nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """The optimizer rnnkit's make_optimizer(config) builds, in torch."""
    if config.optimizer == "adamw":
        decay = {} if config.weight_decay is None else {"weight_decay": config.weight_decay}
        return torch.optim.AdamW(model.parameters(), lr=config.lr, **decay)
    if config.optimizer != "adam":
        raise SystemExit(f"bench_charlm.py compares adam and adamw only, not {config.optimizer}")
    return torch.optim.Adam(model.parameters(), lr=config.lr)


def run_torch(config: TrainConfig, train_batches: StreamBatches, val_batches: StreamBatches,
              initial: dict[str, np.ndarray], vocab_size: int) -> dict[str, float]:
    model = TorchCharLM(vocab_size, config)
    with torch.no_grad():
        for name, value in initial.items():
            model.get_parameter(name).copy_(torch.from_numpy(value))
    optimizer = _torch_optimizer(model, config)
    loss_fn = torch.nn.CrossEntropyLoss()

    def evaluate() -> float:
        total, count, state = 0.0, 0, None
        model.eval()
        with torch.no_grad():
            for index in range(len(val_batches)):
                batch = val_batches.get(index)
                logits, state = model(torch.from_numpy(batch.x), state)
                y = torch.from_numpy(batch.y)
                total += float(torch.nn.functional.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="sum"))
                count += y.numel()
        model.train()
        return total / count / math.log(2)

    deadline = time.monotonic() + 60.0 * config.minutes
    step, train_time, chars, state, best, last = 0, 0.0, 0, None, math.inf, math.nan
    while time.monotonic() < deadline:
        for index in range(len(train_batches)):  # one epoch; the state restarts at zero each epoch
            if time.monotonic() >= deadline:
                break
            batch = train_batches.get(index)
            started = time.monotonic()
            logits, state = model(torch.from_numpy(batch.x), state)
            loss = loss_fn(logits.flatten(0, 1), torch.from_numpy(batch.y).flatten())
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.clip)
            optimizer.step()
            state = _detach(state)
            train_time += time.monotonic() - started
            chars += batch.y.size
            step += 1
            if step % config.eval_every == 0:
                last = evaluate()
                best = min(best, last)
        state = None
    last = evaluate()
    return {"steps": step, "chars_per_s": chars / train_time, "best_bpc": min(best, last), "last_bpc": last}


def speed(config: TrainConfig, train_ids: np.ndarray, vocab_size: int, threads: int, pairs: int) -> None:
    """Training steps per second of both sides, same model, weights and batches, with the fair harness."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _harness import Busy, Harness, footer, header

    import rnnkit
    from rnnkit.clip import clip_grad_norm

    rnnkit.set_num_threads(threads)
    torch.set_num_threads(threads)
    model = CharLM(config.model_config(vocab_size), seed=config.seed)
    peer = TorchCharLM(vocab_size, config)
    with torch.no_grad():
        for name, value in model.state_dict().items():
            peer.get_parameter(name).copy_(torch.from_numpy(value))
    optimizer = make_optimizer(config)
    peer_optimizer = _torch_optimizer(peer, config)
    rng = np.random.default_rng(config.seed)  # rnnkit's dropout masks (torch draws its own)
    loss_fn = torch.nn.CrossEntropyLoss()
    batches = StreamBatches(train_ids, config.batch_size, config.seq_len)
    ours: dict[str, Any] = {"index": 0, "state": None}
    theirs: dict[str, Any] = {"index": 0, "state": None}

    def rk_step() -> None:  # what the trainer's step does: loss and gradients, clip, update
        batch = batches.get(ours["index"] % len(batches))
        ours["index"] += 1
        _, grads, ours["state"] = model.loss_and_grads(batch, ours["state"], rng)
        clip_grad_norm(grads, config.clip)
        optimizer.step(model.params, grads)

    def pt_step() -> None:
        batch = batches.get(theirs["index"] % len(batches))
        theirs["index"] += 1
        logits, state = peer(torch.from_numpy(batch.x), theirs["state"])
        loss = loss_fn(logits.flatten(0, 1), torch.from_numpy(batch.y).flatten())
        peer_optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(peer.parameters(), config.clip)
        peer_optimizer.step()
        theirs["state"] = _detach(state)

    harness = Harness(pairs=pairs, calls=5, min_pairs=max(3, pairs - 2))
    chars = config.batch_size * config.seq_len
    print(header("char-LM training speed, default model (rnnkit vs torch, same weights and batches)",
                 f"torch {torch.__version__}; {threads} threads each; {config.cell} {config.hidden}, embed "
                 f"{config.embed_dim}, batch {config.batch_size} x {config.seq_len}, {config.optimizer} "
                 f"(weight decay {config.weight_decay}), dropout {config.dropout}, clip {config.clip}"))
    try:
        pair = harness.compare(rk_step, pt_step)
    except Busy as busy:
        print(f"not reported: the machine was busy ({busy})")
        return
    print(f"{'':<8} {'ms/step':>8} {'chars/s':>9}")
    print(f"{'rnnkit':<8} {pair.ours * 1e3:>8.1f} {chars / pair.ours:>9.0f}")
    print(f"{'torch':<8} {pair.peer * 1e3:>8.1f} {chars / pair.peer:>9.0f}")
    print(f"speed ratio rnnkit/torch (chars/s): {pair.ratio:.2f}  ({pair.kept} quiet pairs of 5 steps each)")
    print(footer(harness))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=10.0, help="training time for each side (default 10)")
    parser.add_argument("--speed", action="store_true",
                        help="only measure training speed (chars/s) with the fair harness, no training run")
    parser.add_argument("--threads", type=int, default=2, help="threads for both sides (default 2)")
    parser.add_argument("--pairs", type=int, default=9, help="quiet pairs of blocks with --speed (default 9)")
    defaults = TrainConfig()
    for flag, kind in (("cell", str), ("hidden", int), ("layers", int), ("embed-dim", int), ("lr", float),
                       ("dropout", float), ("embed-dropout", float), ("weight-drop", float),
                       ("weight-decay", float), ("seed", int)):
        name = flag.replace("-", "_")
        parser.add_argument(f"--{flag}", type=kind, default=getattr(defaults, name),
                            help=f"TrainConfig.{name} (default {getattr(defaults, name)})")
    parser.add_argument("--tie-weights", action="store_true", help="TrainConfig.tie_weights")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    options = {name: getattr(args, name) for name in ("cell", "hidden", "layers", "embed_dim", "lr", "dropout",
                                                      "embed_dropout", "weight_drop", "weight_decay", "seed",
                                                      "tie_weights")}

    with tempfile.TemporaryDirectory() as out:
        config = TrainConfig(steps=None, minutes=args.minutes, sample_every=0, out=str(Path(out) / "run"),
                             threads=args.threads, **options)
        text = load_text(config.data)
        vocab = Vocab.from_text(text)
        train_ids, val_ids = split_stream(vocab.encode(text), config.val_fraction)
        unigram = unigram_bits_per_char(train_ids, val_ids, len(vocab))
        if args.speed:
            speed(config, train_ids, len(vocab), args.threads, args.pairs)
            return
        initial = CharLM(config.model_config(len(vocab)), seed=config.seed).state_dict()

        print(f"{cpu_name()}; numpy {np.__version__}, torch {torch.__version__}; {args.threads} threads each, "
              f"python {platform.python_version()}, {platform.machine()}")
        print(f"built-in corpus: {len(train_ids)} training / {len(val_ids)} validation characters, "
              f"vocabulary {len(vocab)}; model {config.cell} hidden {config.hidden} x {config.layers}, "
              f"embed {config.embed_dim}, batch {config.batch_size} x seq_len {config.seq_len}, "
              f"{config.optimizer} lr {config.lr}, clip {config.clip}; dropout {config.dropout}, embed_dropout "
              f"{config.embed_dropout}, weight_drop {config.weight_drop}, tie_weights {config.tie_weights}, "
              f"weight_decay {config.weight_decay}; {args.minutes:g} minutes each", flush=True)

        results = {"rnnkit": run_rnnkit(config)}
        print(f"rnnkit done: {results['rnnkit']}", flush=True)
        train_batches = StreamBatches(train_ids, config.batch_size, config.seq_len)
        val_batches = StreamBatches.for_evaluation(val_ids, config.batch_size, config.seq_len)
        results["torch"] = run_torch(config, train_batches, val_batches, initial, len(vocab))

    print(f"\n{'':<8} {'steps':>7} {'chars/s':>9} {'best val bpc':>13} {'last val bpc':>13}")
    for name, r in results.items():
        print(f"{name:<8} {r['steps']:>7} {r['chars_per_s']:>9.0f} {r['best_bpc']:>13.3f} {r['last_bpc']:>13.3f}")
    print(f"unigram baseline: {unigram:.3f} bits/char;  speed ratio rnnkit/torch: "
          f"{results['rnnkit']['chars_per_s'] / results['torch']['chars_per_s']:.2f}")


if __name__ == "__main__":
    main()
