"""Long-lag tasks: can a trained RNN, LSTM and GRU bridge 50 to 200 steps?  rnnkit beside PyTorch.

    python benchmarks/tasks.py                      # every task, RNN / LSTM / GRU, rnnkit and torch
    python benchmarks/tasks.py --tasks adding100 --cells lstm,gru
    python benchmarks/tasks.py --quick              # a tiny smoke run (seconds; what the tests run)

The tasks (each a fresh random batch per step from a seeded generator, and a fixed test set):

* ``adding100``, ``adding200`` -- the adding problem (Hochreiter & Schmidhuber 1997): two channels,
  random numbers in [0, 1) and a marker that is 1 at two positions (one in each half); the target,
  read at the last step, is the sum of the two marked numbers.  Metric: test MSE; answering 1
  always scores ~0.167; solved below 0.01.
* ``copy`` -- copy memory (Arjovsky et al. 2016): ten symbols out of eight, ``delay`` blanks (50 by
  default), a delimiter, then the ten symbols must be written back.  Metric: accuracy on the ten
  recalled symbols; guessing scores 0.125; solved at 0.99.
* ``sine`` -- forecasting: a sine of random frequency, phase and amplitude, predict the next value at
  every step.  Metric: test MSE; the persistence forecast (repeat the current value) is the
  baseline; solved below a tenth of it.
* ``varlen`` -- classification of variable-length sequences (lengths 10..T, padded, run with
  ``lengths``): random symbols out of four, the class is the *first* symbol, read at each
  sequence's own last step.  Metric: test accuracy; guessing scores 0.25; solved at 0.95.

Every cell gets the same budget: hidden size, batch size, steps, Adam learning rate, gradient-norm
clipping.  The PyTorch model (``torch.nn.RNN/LSTM/GRU`` + ``nn.Linear``) starts from a copy of the
rnnkit model's initial weights and trains on the same batches, so the two learning curves should lie
on top of each other until rounding differences grow.  Written to ``--out``
(``benchmarks/tasks_out`` by default): ``tasks.md`` (the table), ``results.json``, and one PNG per
task with the learning curves beside the gradient flow ``||dL/dh_t||`` of the trained models (loss at
the last step; :func:`rnnkit.gradient_norms_over_time`).  torch is a benchmark peer only
(``--no-torch`` skips it); matplotlib draws the pictures (``--no-plots`` skips them).
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import rnnkit  # noqa: E402
from rnnkit.layers import GRU, LSTM, RNN, Linear  # noqa: E402
from rnnkit.losses import mse, softmax_cross_entropy  # noqa: E402
from rnnkit.optim import Adam  # noqa: E402

clip_grad_norm, gradient_norms_over_time = rnnkit.clip_grad_norm, rnnkit.gradient_norms_over_time

CELLS = {"rnn": RNN, "lstm": LSTM, "gru": GRU}


class Batch(NamedTuple):
    """One batch of a task: inputs, targets and (for variable lengths) the lengths."""

    x: np.ndarray                 # (B, T, I) float32
    y: np.ndarray                 # "last" readout: (B, O) floats or (B,) class ids; "all": (B, T, O) or (B, T)
    lengths: np.ndarray | None    # (B,) true lengths, or None (every sequence runs T steps)
    mask: np.ndarray | None       # (B, T) positions that count in the loss ("all" readout), or None


@dataclass(frozen=True)
class Task:
    """A task: how to draw a batch, how the model reads out, and how its test metric is judged."""

    name: str
    title: str
    T: int
    input_size: int
    output_size: int
    readout: str                      # "last": one prediction per sequence; "all": one per step
    loss: str                         # "mse" or "ce"
    metric: str                       # the metric's name in the table
    higher_is_better: bool
    threshold: float                  # solved when the metric is beyond it
    make: Callable[[np.random.Generator, int], Batch]
    baseline_name: str = ""
    baseline: Callable[[Batch], float] | None = None


# ---------------------------------------------------------------------- the tasks
def adding_task(T: int) -> Task:
    def make(rng: np.random.Generator, B: int) -> Batch:
        values = rng.random((B, T))
        marks = np.zeros((B, T))
        first, second = rng.integers(0, T // 2, B), rng.integers(T // 2, T, B)
        marks[np.arange(B), first] = marks[np.arange(B), second] = 1.0
        x = np.stack([values, marks], axis=2).astype(np.float32)
        y = (values[np.arange(B), first] + values[np.arange(B), second])[:, None].astype(np.float32)
        return Batch(x, y, None, None)

    return Task(f"adding{T}", f"adding problem, T = {T}", T, 2, 1, "last", "mse", "test MSE", False, 0.01, make,
                "always 1", lambda b: float(np.mean((b.y - 1.0) ** 2)))


def copy_task(delay: int, symbols: int = 8, length: int = 10) -> Task:
    blank, delimiter, classes = 0, symbols + 1, symbols + 2
    T = length + delay + length

    def make(rng: np.random.Generator, B: int) -> Batch:
        seq = rng.integers(1, symbols + 1, (B, length))
        ids = np.full((B, T), blank)
        ids[:, :length] = seq
        ids[:, length + delay - 1] = delimiter  # the last blank of the delay is the "now write" signal
        targets = np.full((B, T), blank)
        targets[:, -length:] = seq
        mask = np.zeros((B, T), bool)
        mask[:, -length:] = True
        return Batch(np.eye(classes, dtype=np.float32)[ids], targets, None, mask)

    return Task("copy", f"copy memory, delay {delay} (T = {T})", T, classes, classes, "all", "ce",
                "recall accuracy", True, 0.99, make, "guessing", lambda b: 1.0 / symbols)


def sine_task(T: int = 50) -> Task:
    def make(rng: np.random.Generator, B: int) -> Batch:
        omega, phase, amplitude = rng.uniform(0.1, 0.6, (B, 1)), rng.uniform(0, 2 * np.pi, (B, 1)), \
            rng.uniform(0.5, 1.5, (B, 1))
        wave = amplitude * np.sin(omega * np.arange(T + 1) + phase)
        return Batch(wave[:, :T, None].astype(np.float32), wave[:, 1:, None].astype(np.float32), None, None)

    return Task("sine", f"sine forecasting, T = {T}", T, 1, 1, "all", "mse", "test MSE", False, math.nan, make,
                "persistence", lambda b: float(np.mean((b.y - b.x) ** 2)))


def varlen_task(T: int = 50, classes: int = 4, shortest: int = 10) -> Task:
    def make(rng: np.random.Generator, B: int) -> Batch:
        lengths = rng.integers(shortest, T + 1, B)
        ids = rng.integers(0, classes, (B, T))
        x = np.eye(classes, dtype=np.float32)[ids]
        x[np.arange(T)[None, :] >= lengths[:, None]] = 0.0  # padding
        return Batch(x, ids[:, 0].copy(), lengths, None)

    return Task("varlen", f"variable-length classification, T = {shortest}..{T}", T, classes, classes, "last",
                "ce", "test accuracy", True, 0.95, make, "guessing", lambda b: 1.0 / classes)


def all_tasks(quick: bool) -> dict[str, Task]:
    if quick:
        return {"adding100": replace(adding_task(12), name="adding100"),
                "adding200": replace(adding_task(16), name="adding200"),
                "copy": copy_task(delay=3, length=3), "sine": sine_task(10), "varlen": varlen_task(8, shortest=3)}
    return {"adding100": adding_task(100), "adding200": adding_task(200), "copy": copy_task(delay=50),
            "sine": sine_task(50), "varlen": varlen_task(50)}


@dataclass
class Budget:
    """The same for every cell of a task."""

    steps: int = 3000
    batch_size: int = 64
    hidden: int = 64
    lr: float = 2e-3
    clip: float = 1.0
    eval_every: int = 100
    test_size: int = 1000
    seed: int = 0
    init_hh: str = "pytorch"
    forget_bias: float | None = None


# ---------------------------------------------------------------------- rnnkit model: recurrent layer + linear readout
@dataclass
class Model:
    rnn: Any
    head: Linear
    task: Task

    @property
    def params(self) -> dict[str, np.ndarray]:
        return {**{f"rnn.{k}": v for k, v in self.rnn.params.items()},
                **{f"head.{k}": v for k, v in self.head.params.items()}}

    def _last(self, batch: Batch) -> np.ndarray:
        B, T = batch.x.shape[:2]
        return np.full(B, T - 1) if batch.lengths is None else batch.lengths - 1

    def predict(self, batch: Batch, keep_cache: bool = False) -> tuple[np.ndarray, Any]:
        out, _, rnn_cache = self.rnn.forward(batch.x, lengths=batch.lengths, keep_cache=keep_cache)
        if self.task.readout == "last":
            out = out[np.arange(len(out)), self._last(batch)]          # (B, H)
        pred, head_cache = self.head.forward(out)
        return pred, (rnn_cache, head_cache)

    def loss(self, pred: np.ndarray, batch: Batch) -> tuple[float, np.ndarray]:
        if self.task.loss == "mse":
            return mse(pred, batch.y, mask=batch.mask)
        return softmax_cross_entropy(pred, batch.y, mask=batch.mask)

    def train_step(self, batch: Batch, optimizer: Adam, clip: float) -> float:
        pred, (rnn_cache, head_cache) = self.predict(batch, keep_cache=True)
        loss, d_pred = self.loss(pred, batch)
        d_out, head_grads = self.head.backward(d_pred, head_cache)
        if self.task.readout == "last":
            d_seq = np.zeros((*batch.x.shape[:2], d_out.shape[-1]), d_out.dtype)
            d_seq[np.arange(len(d_out)), self._last(batch)] = d_out
            d_out = d_seq
        _, _, rnn_grads = self.rnn.backward(d_out, None, rnn_cache)
        grads = {**{f"rnn.{k}": v for k, v in rnn_grads.items()}, **{f"head.{k}": v for k, v in head_grads.items()}}
        clip_grad_norm(grads, clip)
        optimizer.step(self.params, grads)
        return loss

    def last_step_loss(self, batch: Batch) -> Callable[[np.ndarray], tuple[float, np.ndarray]]:
        """The loss at the last step as a function of the recurrent layer's last output (gradient flow)."""
        target = batch.y if self.task.readout == "last" else batch.y[:, -1]

        def loss_fn(out_last: np.ndarray) -> tuple[float, np.ndarray]:
            pred, cache = self.head.forward(out_last)
            if self.task.loss == "mse":
                loss, d_pred = mse(pred, target, reduction="sum")
            else:
                loss, d_pred = softmax_cross_entropy(pred, target, reduction="sum")
            return loss, self.head.backward(d_pred, cache)[0]

        return loss_fn


def metric_of(task: Task, pred: np.ndarray, batch: Batch) -> float:
    if task.loss == "mse":
        return float(mse(pred, batch.y, mask=batch.mask)[0])
    hits = pred.argmax(axis=-1) == batch.y
    return float(hits[batch.mask].mean() if batch.mask is not None else hits.mean())


def solved(task: Task, value: float, threshold: float) -> bool:
    return value >= threshold if task.higher_is_better else value < threshold


# ---------------------------------------------------------------------- the PyTorch peer
def torch_peer(model: Model, cell: str) -> Any:
    """``torch.nn`` twin of ``model`` with a copy of its weights, and a function that trains/evaluates it."""
    import torch

    class Peer(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            rnn_type = {"rnn": torch.nn.RNN, "lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[cell]
            self.rnn = rnn_type(model.rnn.input_size, model.rnn.hidden_size, batch_first=True)
            self.head = torch.nn.Linear(model.head.in_features, model.head.out_features)

        def forward(self, batch: Batch) -> Any:
            x = torch.from_numpy(batch.x)
            if batch.lengths is None:
                out, _ = self.rnn(x)
            else:
                packed = torch.nn.utils.rnn.pack_padded_sequence(x, torch.from_numpy(batch.lengths),
                                                                 batch_first=True, enforce_sorted=False)
                out, _ = torch.nn.utils.rnn.pad_packed_sequence(self.rnn(packed)[0], batch_first=True,
                                                                total_length=x.shape[1])
            if model.task.readout == "last":
                last = torch.from_numpy(model._last(batch))
                out = out[torch.arange(len(last)), last]
            return self.head(out)

    peer = Peer()
    with torch.no_grad():
        for name, value in model.params.items():
            peer.get_parameter(name).copy_(torch.from_numpy(value))
    return peer


def torch_loss(task: Task, pred: Any, batch: Batch) -> Any:
    import torch

    if task.loss == "mse":
        errors = (pred - torch.from_numpy(batch.y)) ** 2
        return errors.mean() if batch.mask is None else errors[torch.from_numpy(batch.mask)].mean()
    logits, targets = pred, torch.from_numpy(batch.y)
    if batch.mask is not None:
        logits, targets = logits[torch.from_numpy(batch.mask)], targets[torch.from_numpy(batch.mask)]
    return torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))


# ---------------------------------------------------------------------- one run
@dataclass
class Curve:
    steps: list[int] = field(default_factory=list)
    metric: list[float] = field(default_factory=list)
    train_seconds: float = 0.0


def run_cell(task: Task, cell: str, budget: Budget, with_torch: bool) -> dict[str, Any]:
    """Train ``cell`` on ``task`` with rnnkit (and the same model with torch): curves, times, gradient flow."""
    kwargs: dict[str, Any] = {"init_hh": budget.init_hh}
    if cell == "lstm" and budget.forget_bias is not None:
        kwargs["forget_bias"] = budget.forget_bias
    rnn = CELLS[cell](task.input_size, budget.hidden, seed=budget.seed, **kwargs)
    model = Model(rnn, Linear(budget.hidden, task.output_size, seed=budget.seed + 1), task)
    test = task.make(np.random.default_rng([budget.seed, 1]), budget.test_size)
    peer = torch_peer(model, cell) if with_torch else None

    ours, theirs = Curve(), Curve()
    optimizer = Adam(lr=budget.lr)
    if peer is not None:
        import torch

        torch_optimizer = torch.optim.Adam(peer.parameters(), lr=budget.lr)
    data = np.random.default_rng([budget.seed, 2])
    for step in range(budget.steps + 1):
        if step % budget.eval_every == 0 or step == budget.steps:
            ours.steps.append(step)
            ours.metric.append(metric_of(task, model.predict(test)[0], test))
            if peer is not None:
                with torch.no_grad():
                    theirs.steps.append(step)
                    theirs.metric.append(metric_of(task, peer(test).numpy(), test))
        if step == budget.steps:
            break
        batch = task.make(data, budget.batch_size)
        start = time.perf_counter()
        model.train_step(batch, optimizer, budget.clip)
        ours.train_seconds += time.perf_counter() - start
        if peer is not None:
            start = time.perf_counter()
            torch_optimizer.zero_grad()
            torch_loss(task, peer(batch), batch).backward()
            torch.nn.utils.clip_grad_norm_(peer.parameters(), budget.clip)
            torch_optimizer.step()
            theirs.train_seconds += time.perf_counter() - start

    flow_batch = test._replace(x=test.x[:64], y=test.y[:64], lengths=None,
                               mask=None if test.mask is None else test.mask[:64])
    flow = gradient_norms_over_time(model.rnn, flow_batch.x, model.last_step_loss(flow_batch))
    return {"rnnkit": ours.__dict__, "torch": theirs.__dict__ if peer is not None else None,
            "gradient_flow": flow.tolist()}


def steps_to_solve(task: Task, curve: dict[str, Any], threshold: float) -> int | None:
    for step, value in zip(curve["steps"], curve["metric"], strict=True):
        if solved(task, value, threshold):
            return step
    return None


# ---------------------------------------------------------------------- report
def table(results: dict[str, Any], tasks: dict[str, Task]) -> str:
    rows = ["| task | metric (solved at) | baseline | cell | rnnkit final | torch final | rnnkit steps to solve | "
            "torch steps to solve | rnnkit train s | torch train s |", "|---|---|---|---|---|---|---|---|---|---|"]
    for name, per_cell in results.items():
        task, info = tasks[name], per_cell["_task"]
        threshold = info["threshold"]
        sign = "≥" if task.higher_is_better else "<"
        for cell, result in per_cell.items():
            if cell.startswith("_"):
                continue
            ours, theirs = result["rnnkit"], result["torch"]
            cells = [task.title, f"{task.metric} ({sign} {threshold:.3g})",
                     f"{info['baseline']:.3g} ({task.baseline_name})", cell.upper(), f"{ours['metric'][-1]:.4g}",
                     "—" if theirs is None else f"{theirs['metric'][-1]:.4g}",
                     _steps(steps_to_solve(task, ours, threshold)),
                     "—" if theirs is None else _steps(steps_to_solve(task, theirs, threshold)),
                     f"{ours['train_seconds']:.1f}", "—" if theirs is None else f"{theirs['train_seconds']:.1f}"]
            rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


def _steps(value: int | None) -> str:
    return "not solved" if value is None else str(value)


def plot(path: Path, task: Task, per_cell: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (curves, flow) = plt.subplots(1, 2, figsize=(11, 4))
    colors = {"rnn": "tab:red", "lstm": "tab:blue", "gru": "tab:green"}
    for cell, result in per_cell.items():
        if cell.startswith("_"):
            continue
        ours = result["rnnkit"]
        curves.plot(ours["steps"], ours["metric"], color=colors[cell], label=f"{cell.upper()} rnnkit")
        if result["torch"] is not None:
            curves.plot(result["torch"]["steps"], result["torch"]["metric"], color=colors[cell], linestyle="--",
                        alpha=0.7, label=f"{cell.upper()} torch")
        norms = np.asarray(result["gradient_flow"])
        flow.semilogy(np.arange(len(norms)), np.maximum(norms, 1e-300), color=colors[cell], label=cell.upper())
    info = per_cell["_task"]
    curves.axhline(info["baseline"], color="gray", linestyle=":", label=task.baseline_name)
    curves.axhline(info["threshold"], color="black", linewidth=0.8, linestyle="-.", label="solved")
    if not task.higher_is_better:
        curves.set_yscale("log")
    curves.set(xlabel="training step", ylabel=task.metric, title=f"{task.title}: learning curves")
    curves.legend(fontsize=7)
    flow.set(xlabel="time step t", ylabel="‖∂L/∂h_t‖ (trained model, loss at the last step)",
             title="gradient flow after training")
    flow.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", default="adding100,adding200,copy,sine,varlen", help="comma-separated task names")
    parser.add_argument("--cells", default="rnn,lstm,gru", help="comma-separated cells: rnn, lstm, gru")
    parser.add_argument("--steps", type=int, help="training steps per run (default 3000; --quick: 6)")
    parser.add_argument("--hidden", type=int, help="hidden units (default 64; --quick: 8)")
    parser.add_argument("--lr", type=float, default=2e-3, help="Adam learning rate (default 2e-3)")
    parser.add_argument("--init-hh", choices=("pytorch", "orthogonal"), default="pytorch",
                        help="initializer of the recurrent weights (default: PyTorch's)")
    parser.add_argument("--forget-bias", type=float, default=None, help="LSTM forget-gate bias (default: PyTorch's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke test that runs in seconds")
    parser.add_argument("--no-torch", action="store_true", help="skip the PyTorch peer")
    parser.add_argument("--no-plots", action="store_true", help="skip the pictures")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "tasks_out")
    args = parser.parse_args(argv)

    tasks = all_tasks(args.quick)
    chosen, cells = args.tasks.split(","), args.cells.split(",")
    for name in chosen:
        if name not in tasks:
            parser.error(f"unknown task {name!r}; choose from {', '.join(tasks)}")
    for cell in cells:
        if cell not in CELLS:
            parser.error(f"unknown cell {cell!r}; choose from {', '.join(CELLS)}")
    budget = (Budget(steps=6, batch_size=8, hidden=8, eval_every=3, test_size=16) if args.quick else Budget())
    budget = replace(budget, lr=args.lr, seed=args.seed, init_hh=args.init_hh, forget_bias=args.forget_bias,
                     steps=args.steps or budget.steps, hidden=args.hidden or budget.hidden)
    with_torch = not args.no_torch
    if with_torch:
        try:
            import torch  # noqa: F401
        except ImportError:
            sys.exit("tasks.py compares against PyTorch: pip install torch (or pass --no-torch)")
    args.out.mkdir(parents=True, exist_ok=True)

    results: dict[str, Any] = {}
    for name in chosen:
        task = tasks[name]
        test = task.make(np.random.default_rng([budget.seed, 1]), budget.test_size)
        baseline = task.baseline(test) if task.baseline is not None else math.nan
        threshold = task.threshold if not math.isnan(task.threshold) else baseline / 10  # sine: a tenth of persistence
        results[name] = {"_task": {"title": task.title, "baseline": baseline, "threshold": threshold}}
        for cell in cells:
            print(f"{task.title}: {cell.upper()} ...", flush=True)
            results[name][cell] = run_cell(task, cell, budget, with_torch)
        if not args.no_plots:
            plot(args.out / f"{name}.png", task, results[name])

    report = table(results, tasks)
    header = (f"{len(cells)} cells x {len(chosen)} tasks; budget per run: {budget.steps} steps of batch "
              f"{budget.batch_size}, hidden {budget.hidden}, Adam lr {budget.lr}, clip {budget.clip}, init_hh "
              f"{budget.init_hh}, forget_bias {budget.forget_bias}, float32; rnnkit {rnnkit.__version__}, "
              f"numpy {np.__version__}, {platform.machine()}")
    (args.out / "tasks.md").write_text(header + "\n\n" + report + "\n")
    (args.out / "results.json").write_text(json.dumps({"budget": budget.__dict__, "results": results}, indent=1))
    print(header)
    print(report)
    return results


if __name__ == "__main__":
    main()
