"""Draw the vanishing/exploding-gradient picture: ||dL/dh_t|| over t for RNN, LSTM and GRU.

    python examples/gradient_flow.py                  # writes docs/gradient_flow.png
    python examples/gradient_flow.py --seq-len 200 --hidden-size 128 --out /tmp/flow.png

Every curve comes from real backward passes (:func:`rnnkit.diagnostics.gradient_norms_over_time`)
with the loss at the last step; needs matplotlib (``pip install 'rnnkit[app]'``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from rnnkit.diagnostics import plot_gradient_flow


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default_out = Path(__file__).resolve().parent.parent / "docs" / "gradient_flow.png"
    parser.add_argument("--out", type=Path, default=default_out, help="PNG to write (default: docs/gradient_flow.png)")
    parser.add_argument("--seq-len", type=int, default=100, help="time steps T (default 100)")
    parser.add_argument("--batch-size", type=int, default=16, help="random sequences averaged over (default 16)")
    parser.add_argument("--input-size", type=int, default=32, help="input features (default 32)")
    parser.add_argument("--hidden-size", type=int, default=64, help="hidden units H (default 64)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the weights and the inputs (default 0)")
    parser.add_argument("--no-variants", action="store_true",
                        help="plot only the three default-initialised layers")
    args = parser.parse_args()

    args.out.parent.mkdir(parents=True, exist_ok=True)
    curves = plot_gradient_flow(args.out, args.seq_len, args.batch_size, args.input_size, args.hidden_size,
                                args.seed, variants=not args.no_variants)
    print(f"wrote {args.out}")
    for name, norms in curves.items():
        print(f"  {name:<28} ||dL/dh_t|| at t = T-1: {norms[-1]:.3e}   at t = 0: {norms[0]:.3e}")


if __name__ == "__main__":
    main()
