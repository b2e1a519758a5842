"""Invent new Python module names with a character-level RNN built from the textbook API.

The classic "dinosaur names" exercise, on data every Python installation already has: the names of
the standard-library modules (``sys.stdlib_module_names``), lowercased, keeping those made of
letters and ``_`` only, one name per line.  Each iteration trains on one name with
:func:`rnnkit.textbook.optimize` (forward, backpropagation through time, gradient clipping, one SGD
step); every ``--print-every`` iterations the script prints the smoothed loss and a few names drawn
with :func:`rnnkit.textbook.sample`, marking with ``*`` the ones that already exist.

Run it with ``make demo`` or ``python examples/textbook_demo.py [--iterations N]`` (about 20 s on one core).
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from rnnkit.textbook import optimize, sample


def module_names() -> list[str]:
    """The standard library's module names, lowercased, letters and ``_`` only, sorted."""
    names = {name.lower() for name in sys.stdlib_module_names}
    return sorted(name for name in names if all(ch.isalpha() or ch == "_" for ch in name))


def initialize_parameters(n_a: int, vocab_size: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Small random weights and zero biases, as in the exercise (n_x = n_y = vocab_size)."""
    return {
        "Wax": rng.normal(scale=0.01, size=(n_a, vocab_size)),
        "Waa": rng.normal(scale=0.01, size=(n_a, n_a)),
        "Wya": rng.normal(scale=0.01, size=(vocab_size, n_a)),
        "ba": np.zeros((n_a, 1)),
        "by": np.zeros((vocab_size, 1)),
    }


def _decode(indices: list[int], ix_to_char: dict[int, str]) -> str:
    """The characters of a sampled name, without its closing newline."""
    return "".join(ix_to_char[i] for i in indices[:-1])


def _show(name: str, known: set[str]) -> str:
    """A sampled name for the one-line report: ``*`` if it exists, shortened if it rambles on."""
    if not name:
        return "''"
    # Early samples run to the 50-character limit; keep the report to one line.
    shown = name if len(name) <= 24 else name[:21] + "..."
    return shown + ("*" if name in known else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=15_000, help="training iterations (one name each)")
    parser.add_argument("--hidden", type=int, default=50, help="hidden units n_a")
    parser.add_argument("--learning-rate", type=float, default=0.01)
    parser.add_argument("--print-every", type=int, default=2_500)
    parser.add_argument("--samples", type=int, default=7, help="names sampled at each report")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    names = module_names()
    known = set(names)
    chars = sorted(set("".join(names)) | {"\n"})
    char_to_ix = {ch: i for i, ch in enumerate(chars)}
    ix_to_char = dict(enumerate(chars))
    newline = char_to_ix["\n"]
    rng = np.random.default_rng(args.seed)
    rng.shuffle(names)
    parameters = initialize_parameters(args.hidden, len(chars), rng)

    print(f"{len(names)} standard-library module names, e.g. {', '.join(sorted(names)[-4:])}")
    print(f"vocabulary: {len(chars)} characters (newline, '_', a-z); vanilla RNN with n_a = {args.hidden}")
    print(f"training {args.iterations} iterations, one name each, SGD lr {args.learning_rate}, clip 5\n")

    # The loss of a uniform guess over a name of average length: the smoothed loss starts there.
    mean_length = float(np.mean([len(name) + 1 for name in names]))
    smooth_loss = -np.log(1.0 / len(chars)) * mean_length
    for j in range(args.iterations + 1):
        name = names[j % len(names)]
        X = [None] + [char_to_ix[ch] for ch in name]  # None: the zero "start" input
        Y = X[1:] + [newline]
        # Every name starts from a zero state, as sample() does.  (The exercise carries the last
        # state over to the next name; training on the start sample() actually uses learns faster.)
        loss, _, _ = optimize(X, Y, np.zeros((args.hidden, 1)), parameters, args.learning_rate)
        smooth_loss = 0.999 * smooth_loss + 0.001 * loss

        if j % args.print_every == 0:
            drawn = [_decode(sample(parameters, char_to_ix, seed=j + k), ix_to_char) for k in range(args.samples)]
            shown = "  ".join(_show(name, known) for name in drawn)
            print(f"iteration {j:6d}   smoothed loss {smooth_loss:6.2f}   {shown}")

    final = [_decode(sample(parameters, char_to_ix, seed=10_000 + k), ix_to_char) for k in range(40)]
    invented = sorted({n for n in final if n and n not in known})
    existing = sorted({n for n in final if n in known})
    print(f"\n40 more samples: {len(invented)} distinct new names"
          + (f", and existing modules {', '.join(existing)}" if existing else "") + ":")
    print("  " + "  ".join(invented))


if __name__ == "__main__":
    main()
