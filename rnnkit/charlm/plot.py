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
        import matplotlib  # noqa: F401 -- only to know whether the figure can be drawn
    except ImportError:
        return None
    fig = loss_figure(read_metrics(metrics_path), title)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    atomic_write_bytes(png_path, buffer.getvalue())
    return Path(png_path)


def loss_figure(records: list[dict[str, Any]], title: str = "") -> Any:
    """The loss-curve ``matplotlib.figure.Figure`` of a run's metrics records (see :func:`plot_losses`).

    The y-range is capped a little above the baseline and the validation curve, so that the first
    steps (near ``log2 V``) do not squash the rest, unless that would hide a tenth of the training
    curve or more (a short run).  The unigram baseline is drawn, with its legend entry, only when it
    lies inside the y-range.  A run fine-tuned from another run's weights has a star at its start.
    Needs matplotlib.
    """
    from matplotlib.figure import Figure

    def points(kind: str) -> Any:
        # A diverged loss is logged as null: it has no point on the curve.
        return np.array([(r["step"], r["bpc"]) for r in records if r.get("kind") == kind
                         and isinstance(r.get("step"), int) and isinstance(r.get("bpc"), (int, float))],
                        dtype=float).reshape(-1, 2)

    train, val = points("train"), points("val")
    runs = [r for r in records if r.get("kind") == "run"]
    unigram = runs[-1].get("unigram_bpc") if runs else None
    if isinstance(unigram, bool) or not isinstance(unigram, (int, float)) or not np.isfinite(unigram):
        unigram = None
    # A run started from another run's weights (--init-from) records where it came from.
    tuned_from = runs[0].get("init_from") if runs and not runs[0].get("resumed") else None

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
    low = high = None
    if shown:
        values = np.concatenate(shown)
        values = values[np.isfinite(values)] if np.isfinite(values).any() else np.zeros(1)
        low, high = 0.9 * float(values.min()), 1.05 * float(values.max())
        # The first steps start near log2(V) bits; cap the view so that the interesting part is not
        # squashed -- unless the cap would hide much of the curve (a short run is mostly those steps).
        top = max(unigram if unigram is not None else 0.0, float(val[:, 1].max()) if len(val) else 0.0)
        if top > 0 and np.mean(values > 1.15 * top) < 0.1:
            high = 1.15 * top
        high = max(high, 1.02 * float(values.min()), low + 1e-6)
        ax.set_ylim(low, high)
    if unigram is not None and (low is None or high is None or low <= unigram <= high):
        # Only a baseline that is on the chart gets a line and a legend entry.
        ax.axhline(unigram, color="grey", linestyle="--", linewidth=1.2, label=f"unigram baseline ({unigram:.3f})")
    if isinstance(tuned_from, str) and len(train):
        ax.plot([train[0, 0]], [np.clip(train[0, 1], low if low is not None else -np.inf,
                                        high if high is not None else np.inf)],
                marker="*", markersize=13, color="C3", linestyle="none",
                label=f"start: fine-tuned from {Path(tuned_from).name}")
    ax.set_xlabel("step")
    ax.set_ylabel("bits per character")
    # A "$" would start matplotlib's mathtext (two of them in a file name break the title): escape it.
    ax.set_title(title.replace("$", r"\$"))
    ax.grid(True, alpha=0.3)
    ax.legend(loc="upper right")
    return fig
