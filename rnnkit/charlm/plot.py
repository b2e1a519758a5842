"""The loss curve of a training run: training and validation bits per character against steps.

Reads the run's ``metrics.jsonl`` (see :mod:`rnnkit.charlm.train`) and draws, on one axis, the
training loss of every step (faint) and its moving average, the validation loss of every
evaluation, and the unigram baseline as a dashed line -- the model has learned something about
context exactly where its curves are below that line.  matplotlib comes from the optional ``app``
extra and is imported only here; without it :func:`plot_losses` draws nothing and returns None.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from rnnkit.io.checkpoint import atomic_write_bytes


def read_metrics(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The records of a ``metrics.jsonl`` file, in order; a line torn by a crash is skipped."""
    records = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict):
            records.append(record)
    return records


def plot_losses(
    metrics_path: str | os.PathLike[str],
    png_path: str | os.PathLike[str],
    title: str = "",
) -> Path | None:
    """Draw the loss curve of ``metrics_path`` to ``png_path`` (written atomically).

    Returns:
        ``png_path`` as a Path, or None when matplotlib is not installed.
    """
    try:
        from matplotlib.figure import Figure
    except ImportError:
        return None
    records = read_metrics(metrics_path)
    train = np.array([(r["step"], r["bpc"]) for r in records if r.get("kind") == "train"], dtype=float)
    val = np.array([(r["step"], r["bpc"]) for r in records if r.get("kind") == "val"], dtype=float)
    runs = [r for r in records if r.get("kind") == "run"]
    unigram = runs[-1]["unigram_bpc"] if runs else None

    # A Figure without pyplot: no GUI backend and no global state are involved.
    fig = Figure(figsize=(8, 4.8), layout="constrained")
    ax = fig.add_subplot()
    shown = []
    if len(train):
        ax.plot(train[:, 0], train[:, 1], color="C0", alpha=0.25, linewidth=0.8, label="training (each step)")
        window = max(1, len(train) // 50)
        if window > 1:
            average = np.convolve(train[:, 1], np.ones(window) / window, mode="valid")
            ax.plot(train[window - 1 :, 0], average, color="C0", linewidth=1.8,
                    label=f"training (mean of {window} steps)")
        shown.append(train[:, 1])
    if len(val):
        best = int(np.argmin(val[:, 1]))
        ax.plot(val[:, 0], val[:, 1], "o-", color="C1", markersize=3.5, linewidth=1.8,
                label=f"validation (best {val[best, 1]:.3f} at step {int(val[best, 0])})")
        shown.append(val[:, 1])
    if unigram is not None:
        ax.axhline(unigram, color="grey", linestyle="--", linewidth=1.2, label=f"unigram baseline ({unigram:.3f})")
    if shown:
        values = np.concatenate(shown)
        # The first steps start near log2(V) bits; cap the view so that the interesting part is not squashed.
        top = max(unigram if unigram is not None else 0.0, float(val[:, 1].max()) if len(val) else 0.0)
        top = 1.15 * top if top > 0 else float(values.max())
        ax.set_ylim(0.9 * float(values.min()), max(top, 1.02 * float(values.min())))
    ax.set_xlabel("step")
    ax.set_ylabel("bits per character")
    # A "$" would start matplotlib's mathtext (two of them in a file name break the title): escape it.
    ax.set_title(title.replace("$", r"\$"))
    ax.grid(True, alpha=0.3)
    ax.legend(loc="upper right")
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    atomic_write_bytes(png_path, buffer.getvalue())
    return Path(png_path)
