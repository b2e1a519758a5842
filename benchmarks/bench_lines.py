"""Lines mode on a list of names: does the model invent new items, or recite the training list?

    python benchmarks/bench_lines.py --data names.txt                 # the defaults below
    python benchmarks/bench_lines.py --data names.txt --dropout 0 --weight-decay 0 --steps 3000   # without

Trains ``rnnkit train --mode lines`` on the list (one item per line; a tenth held out for
validation, as ``rnnkit train`` does), then samples 200 items from the best checkpoint, exactly as
``rnnkit sample RUN`` does (temperature 1, from the start symbol), and reports:

* the validation curve: its best, the last value, and their difference (the overfitting blow-up
  the regularization is there to prevent);
* how many sampled items are copies of a *training* item, and how many are copies of any item of
  the list (the held-out ones included), out of 200, as a percentage.

Any list works; the course's 1,536 dinosaur names are the classic one.  rnnkit ships none (the
data is the user's), so ``--data`` is required.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import rnnkit  # noqa: E402
from rnnkit.charlm.data import Vocab, load_text, split_lines, text_lines  # noqa: E402
from rnnkit.charlm.sample import SampleConfig, sample_text  # noqa: E402
from rnnkit.charlm.train import TrainConfig, train  # noqa: E402

SAMPLES = 200


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="UTF-8 list, one item per line")
    parser.add_argument("--samples", type=int, default=SAMPLES, help=f"items to sample (default {SAMPLES})")
    parser.add_argument("--sample-seed", type=int, default=1)
    parser.add_argument("--out", type=Path, default=None, help="keep the run here (default: a temporary folder)")
    defaults = TrainConfig(mode="lines")
    for flag, kind in (("cell", str), ("hidden", int), ("layers", int), ("embed-dim", int), ("batch-size", int),
                       ("lr", float), ("steps", int), ("eval-every", int), ("dropout", float),
                       ("embed-dropout", float), ("weight-drop", float), ("weight-decay", float), ("seed", int)):
        name = flag.replace("-", "_")
        parser.add_argument(f"--{flag}", type=kind, default=getattr(defaults, name),
                            help=f"TrainConfig.{name} (default {getattr(defaults, name)})")
    args = parser.parse_args(argv)
    options = {name: getattr(args, name) for name in ("cell", "hidden", "layers", "embed_dim", "batch_size", "lr",
                                                      "steps", "eval_every", "dropout", "embed_dropout",
                                                      "weight_drop", "weight_decay", "seed")}

    with tempfile.TemporaryDirectory() as scratch:
        out = args.out if args.out is not None else Path(scratch) / "run"
        config = TrainConfig(mode="lines", data=args.data, out=str(out), sample_every=0, **options)
        text = load_text(args.data)
        items = text_lines(text)
        vocab = Vocab(set(text) | {"\n"})  # as rnnkit train builds it in lines mode
        train_ids, _ = split_lines([vocab.encode(item) for item in items], config.val_fraction, config.seed)
        training = {vocab.decode(ids) for ids in train_ids}
        every = set(items)

        print(f"rnnkit {rnnkit.__version__}, numpy {np.__version__}, python {platform.python_version()}, "
              f"{platform.machine()}")
        print(f"{args.data}: {len(items)} items ({len(training)} distinct training items); model {config.cell} "
              f"{config.hidden} x {config.layers}, embed {config.embed_dim}, batch {config.batch_size}, "
              f"{config.optimizer} lr {config.lr}, dropout {config.dropout}, embed_dropout {config.embed_dropout}, "
              f"weight_drop {config.weight_drop}, weight_decay {config.weight_decay}, {config.steps} steps", flush=True)
        with open(Path(out).parent / "train-log.txt", "w") as log:
            train(config, progress=False, log=log)
        records = [json.loads(line) for line in (Path(out) / "metrics.jsonl").read_text().splitlines()]
        curve = [(r["step"], r["bpc"]) for r in records if r.get("kind") == "val"]
        best_step, best = min(curve, key=lambda pair: pair[1])
        last_step, last = curve[-1]

        sampled = list(sample_text(SampleConfig(checkpoint=str(out), length=args.samples, seed=args.sample_seed)))
        names = [piece.rstrip("\n") for piece in "".join(sampled).splitlines()][: args.samples]
        copies_train = sum(name in training for name in names)
        copies_any = sum(name in every for name in names)

    print("\nvalidation bits/char by step: " + ", ".join(f"{s}: {v:.3f}" for s, v in curve))
    print(f"best {best:.3f} (step {best_step}), last {last:.3f} (step {last_step}): last - best = {last - best:.3f}")
    print(f"{len(names)} sampled items: {copies_train} copies of training items "
          f"({100 * copies_train / len(names):.1f} %), {copies_any} of any listed item "
          f"({100 * copies_any / len(names):.1f} %)")
    print("first 20: " + ", ".join(names[:20]))
    return {"best": best, "last": last, "copies_train": copies_train / len(names),
            "copies_any": copies_any / len(names)}


if __name__ == "__main__":
    main()
