"""Gradient flow in a *trained* char-LM (what ``rnnkit diagnose RUN`` draws).

For a run's checkpoint, :func:`trained_gradient_flow` takes ``batch_size`` windows of ``seq_len``
characters from the run's own validation text (the held-out part of its training text, split as
training split it), takes the cross-entropy of the prediction after the last character of each, and
returns ``||dL/dh_t||`` for every step ``t`` (:func:`rnnkit.diagnostics.gradient_norms_over_time`)
-- for the trained weights, and for a fresh network of the same architecture as the reference: how
far back the trained model's gradient reaches, compared with where it started.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rnnkit._types import Array
from rnnkit.charlm.data import DataError, handle_unknown, load_text, split_lines, split_stream, text_lines
from rnnkit.charlm.model import CharLM, load_model
from rnnkit.diagnostics import gradient_norms_over_time
from rnnkit.losses import softmax_cross_entropy


@dataclass
class TrainedFlow:
    """What :func:`trained_gradient_flow` measured."""

    checkpoint: Path                 # the checkpoint file that was read
    text: str                        # where the validation text came from
    curves: dict[str, Array]         # label -> (T,) ||dL/dh_t||, mean over the windows
    seq_len: int                     # T, the window length used
    windows: int                     # B, the number of windows


def trained_gradient_flow(
    checkpoint: str | os.PathLike[str],
    seq_len: int = 100,
    batch_size: int = 16,
    seed: int = 0,
    data: str | None = None,
) -> TrainedFlow:
    """``||dL/dh_t||`` over ``t`` for the trained model of ``checkpoint`` and a fresh copy of its architecture.

    Args:
        checkpoint: a char-LM checkpoint or run directory (its best checkpoint).
        seq_len: ``T`` characters per window (lines models: at most the longest validation line + 1).
        batch_size: ``B`` windows, drawn from ``seed`` (lines models: the longest validation lines).
        seed: the windows' positions and the fresh network's weights.
        data: the run's text, when its recorded place is gone (default: the place in the checkpoint).

    Raises:
        ValueError: an unusable checkpoint, a missing or changed text, a validation text shorter than one
            window, or a non-positive size.
    """
    for name, value in (("seq_len", seq_len), ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be a positive integer, got {value!r}")
    loaded = load_model(checkpoint)
    document = loaded.document
    saved: dict[str, Any] = document["config"] if isinstance(document.get("config"), dict) else {}
    path = data if data is not None else saved.get("data")
    if path is not None and not isinstance(path, str):
        raise DataError(f"{loaded.path}: its recorded data path is not a string; give --data")
    if path is not None and data is None and not Path(path).exists():
        raise DataError(f"the run's text {path!r} does not exist any more; pass its new place with --data")
    text = handle_unknown(load_text(path), loaded.vocab, "error", f"the text {path or '(built-in corpus)'}")
    val_fraction = saved.get("val_fraction", 0.1)
    if isinstance(val_fraction, bool) or not isinstance(val_fraction, float) or not 0 < val_fraction < 0.5:
        val_fraction = 0.1
    rng = np.random.default_rng(seed)
    newline = loaded.vocab.chars.index("\n") if "\n" in loaded.vocab else None
    if document.get("mode", "stream") == "lines" and newline is not None:
        items = [loaded.vocab.encode(line) for line in text_lines(text)]
        split_seed = saved.get("seed", 0) if isinstance(saved.get("seed", 0), int) else 0
        _, val_items = split_lines(items, val_fraction, split_seed)
        val_items = sorted(val_items, key=len, reverse=True)[:batch_size]
        # Each window is how training reads an item: the start symbol, then the item; the loss is the
        # prediction of the character that follows the window (or the newline that ends the item).
        T = min(seq_len, len(val_items[-1]) + 1)
        x = np.array([np.concatenate(([newline], item[: T - 1])) for item in val_items])
        targets = np.array([item[T - 1] if len(item) > T - 1 else newline for item in val_items])
    else:
        _, val_ids = split_stream(loaded.vocab.encode(text), val_fraction)
        T = seq_len
        if len(val_ids) < T + 1:
            raise DataError(f"the run's validation text has {len(val_ids)} characters, fewer than one window of "
                            f"--seq-len {T} + 1; choose a smaller --seq-len")
        starts = rng.integers(0, len(val_ids) - T, size=batch_size)
        x = np.stack([val_ids[s : s + T] for s in starts])
        targets = val_ids[starts + T]

    def last_step_loss(logits: Array) -> tuple[float, Array]:
        return softmax_cross_entropy(logits, targets, reduction="sum")

    fresh = CharLM(loaded.model.config, seed=seed)
    curves = {
        f"trained ({loaded.path.name})": gradient_norms_over_time(loaded.model.net, x, last_step_loss),
        "fresh network, same architecture": gradient_norms_over_time(fresh.net, x, last_step_loss),
    }
    return TrainedFlow(loaded.path, path or "the built-in corpus", curves, int(T), len(x))


def plot_trained_gradient_flow(flow: TrainedFlow, path: str | os.PathLike[str], title: str = "") -> Path:
    """Draw ``flow``'s curves (log y-axis) to the image file ``path``.  Needs matplotlib."""
    try:
        from matplotlib.figure import Figure
    except ImportError as error:
        raise ImportError("diagnose needs matplotlib: pip install 'rnnkit[app]'") from error
    fig = Figure(figsize=(9, 5.4), layout="constrained")
    ax = fig.add_subplot()
    t = np.arange(flow.seq_len)
    for name, norms in flow.curves.items():
        rate = (norms[0] / norms[-1]) ** (1.0 / max(flow.seq_len - 1, 1)) if norms[-1] > 0 else float("nan")
        ax.semilogy(t, norms, linewidth=2, label=f"{name}: ×{rate:.2f} per step back")
    ax.set_xlim(0, max(flow.seq_len - 1, 1))
    ax.set_xlabel(f"time step t   (the loss is the prediction after step {flow.seq_len - 1})")
    ax.set_ylabel(r"$\|\partial L / \partial h_t\|$   (mean over the windows)")
    ax.set_title((title or "Gradient flow of a trained model on its validation text").replace("$", r"\$"))
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(loc="lower right",
              title=f"{flow.windows} windows of {flow.seq_len} characters from {Path(flow.text).name}")
    fig.savefig(path, dpi=110)
    return Path(path)
