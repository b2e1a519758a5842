"""Training a char-LM: the :class:`TrainConfig`, the loop, the run directory, and an exact resume.

:func:`train` (what ``rnnkit train`` calls) reads the text, builds the vocabulary and the model,
and trains with truncated BPTT: every step is one batch of ``batch_size`` rows by ``seq_len``
characters; in stream mode the hidden state is carried from one batch into the next and no gradient
crosses the boundary.  The global gradient norm is clipped, then the optimizer steps.  Every
``eval_every`` steps the whole validation split is evaluated; every ``sample_every`` steps a short
sample is printed.  A progress bar (tqdm, from the ``app`` extra; plain log lines without it) shows
the step, the training and validation loss in bits per character, characters per second and the
time left.

The run directory ``out`` holds::

    config.json          the resolved TrainConfig (every field, absolute paths)
    metrics.jsonl        one JSON object per line: a "run" record per session (data sizes, the unigram
                         baseline), a "train" record per step, a "val" record per evaluation
    loss.png             training and validation bits per character against steps (needs matplotlib)
    best.safetensors     the checkpoint with the lowest validation loss so far
    latest.safetensors   the checkpoint of the last evaluation or of the moment training stopped

A checkpoint (:func:`rnnkit.io.checkpoint.save_checkpoint`, written atomically) stores the weights
under their dotted PyTorch-style names and a document with the model config, the vocabulary, the
training config, the optimizer state and the training progress: step, epoch, position in the epoch,
the epoch's item order (lines mode), the carried hidden state (stream mode), the state of the random
generator, the best validation loss and a SHA-256 of the text.

**Exact resume.**  ``resume=True`` continues from ``latest.safetensors`` with all of that restored, so
the losses are bit for bit those of an uninterrupted run.  ``steps`` is the total to reach and
``minutes`` limits each session's time (the time decides *when* a session stops; where the next one
continues from is the step); giving either of the two on resume replaces both.  The metrics log is
cut back to the checkpoint's step first, so steps a crash lost are not logged twice.  All other
settings come from the run; passing one that differs is an error, because it would silently break
the exactness.

**Stopping.**  The first Ctrl-C (SIGINT) lets the current step finish, writes ``latest.safetensors``
and returns (``TrainResult.stopped_by == "interrupt"``); a second one interrupts at once.

**init_from** starts a new run from another run's weights and vocabulary (fine-tuning on new text):
the architecture comes from that checkpoint, and characters of the new text that its vocabulary
lacks are an error that lists them.

**Randomness.**  ``seed`` determines the initial weights, the lines-mode validation split, the
generator that shuffles the items each epoch and draws every dropout mask (saved in checkpoints, so
a resumed run with dropout is exact too), and the printed samples (drawn from a generator seeded by
``(seed, step)``, so printing them never changes training).

**Regularization and schedules.**  ``dropout``, ``embed_dropout``, ``weight_drop``, ``tie_weights``
and the initializers are the model's (:class:`~rnnkit.charlm.model.ModelConfig`); training steps
run with dropout on, evaluation and sampling with it off.  ``weight_decay`` is decoupled (AdamW:
``optimizer="adam"`` with a weight decay becomes ``"adamw"``).  ``lr_schedule`` ("cosine" over the
steps after the warm-up, "step": times ``lr_gamma`` every ``lr_step_size`` steps) follows ``warmup``
linear steps; its position is saved in checkpoints.  ``patience`` stops the run (``stopped_by ==
"patience"``) after that many evaluations without a new best validation loss.
"""

from __future__ import annotations

import hashlib
import json
import math
import signal
import sys
import threading
import time
from collections.abc import Collection
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from types import FrameType
from typing import Any, TextIO

import numpy as np

from rnnkit.charlm.data import (
    DataError,
    LineBatches,
    StreamBatches,
    Vocab,
    describe_chars,
    load_text,
    split_lines,
    split_stream,
    text_lines,
    unigram_bits_per_char,
)
from rnnkit.charlm.model import (
    BEST_CHECKPOINT,
    CELLS,
    CHECKPOINT_FORMAT,
    CHECKPOINT_VERSION,
    DTYPES,
    LATEST_CHECKPOINT,
    CharLM,
    ModelConfig,
    bits,
    load_model,
    state_from_json,
    state_to_json,
)
from rnnkit.charlm.plot import plot_losses
from rnnkit.charlm.sample import MODES, generate_text
from rnnkit.clip import clip_grad_norm, grad_norm
from rnnkit.io.checkpoint import CheckpointError, atomic_write_text, save_checkpoint
from rnnkit.optim import (
    SGD,
    Adagrad,
    Adam,
    AdamW,
    CosineAnnealingLR,
    LinearWarmup,
    LRScheduler,
    Optimizer,
    RMSprop,
    StepLR,
)

OPTIMIZERS: dict[str, type[Optimizer]] = {"adam": Adam, "adamw": AdamW, "sgd": SGD, "rmsprop": RMSprop,
                                          "adagrad": Adagrad}
"""Optimizer names; each is built with ``lr`` and otherwise ``torch.optim``'s defaults."""

DEFAULT_STEPS = 2000
"""The number of steps a run trains for when neither ``steps`` nor ``minutes`` is given."""

MODEL_FIELDS = ("cell", "hidden", "layers", "embed_dim", "dtype", "tie_weights")
"""The TrainConfig fields that define the architecture (with ``init_from`` they come from the checkpoint)."""

RESUME_OVERRIDES = ("steps", "minutes", "eval_every", "sample_every", "resume", "out", "patience")
"""The TrainConfig fields a resumed run may change: when to stop and how often to report."""

SAMPLE_TEMPERATURE = 0.8   # the samples printed during training: a little sharper than the model
SAMPLE_CHARS = 200         # stream mode: characters per printed sample
SAMPLE_ITEMS = 5           # lines mode: items per printed sample
_LOG_INTERVAL_S = 10.0     # without tqdm: seconds between progress lines


@dataclass
class TrainConfig:
    """Everything a training run is made of; ``rnnkit train`` only parses its options into this.

    The defaults train a one-layer LSTM of 256 units on the built-in corpus, which beats the
    unigram baseline by a wide margin within a few minutes on two CPU cores (see the README).
    """

    data: str | None = None          # UTF-8 text file; None: the built-in corpus (pydoc_data.topics)
    mode: str = "stream"             # "stream": one long text; "lines": each line its own sequence
    cell: str = "lstm"               # "lstm", "gru" or "rnn" (tanh)
    hidden: int = 256                # hidden units per layer
    layers: int = 1                  # stacked recurrent layers
    embed_dim: int = 64              # size of the character embedding
    seq_len: int = 64                # truncated-BPTT chunk length; lines mode: the longest item + newline
    batch_size: int = 32             # rows (stream) or items (lines) per step
    lr: float = 2e-3                 # learning rate
    clip: float = 5.0                # max global gradient norm; 0: no clipping
    optimizer: str = "adam"          # one of OPTIMIZERS
    steps: int | None = None         # total steps to reach; None: `minutes` decides (DEFAULT_STEPS if both None)
    minutes: float | None = None     # wall-clock limit of this session; None: none
    val_fraction: float = 0.1        # part of the text (stream: its tail) held out for validation
    eval_every: int = 200            # steps between validations (and latest/best checkpoints)
    sample_every: int = 1000         # steps between printed samples; 0: never
    seed: int = 0                    # weights, lines split and shuffles, printed samples
    out: str = "runs/charlm"         # the run directory
    resume: bool = False             # continue the run in `out` from its latest checkpoint
    init_from: str | None = None     # start from this checkpoint's weights and vocabulary
    dtype: str = "float32"           # "float32" or "float64"
    # Regularization, initialisation, schedules (see the module docstring; 0 / None / "none": off).
    dropout: float = 0.0             # embedding output, between layers, before the head
    embed_dropout: float = 0.0       # whole rows of the embedding
    weight_drop: float = 0.0         # DropConnect on W_hh
    tie_weights: bool = False        # head.weight = embed.weight (embed_dim == hidden)
    init_hh: str = "pytorch"         # "pytorch" or "orthogonal"
    init_ih: str = "pytorch"         # "pytorch" or "xavier"
    forget_bias: float | None = None  # LSTM forget-gate bias
    weight_decay: float | None = None  # decoupled weight decay (AdamW); None: the optimizer's default
    lr_schedule: str = "none"        # one of LR_SCHEDULES
    warmup: int = 0                  # linear warm-up steps before the schedule
    lr_step_size: int = 1000         # "step" schedule: steps between decays
    lr_gamma: float = 0.5            # "step" schedule: factor per decay
    patience: int = 0                # evaluations without improvement before stopping; 0: never

    def __post_init__(self) -> None:
        _check_choice("mode", self.mode, MODES)
        _check_choice("cell", self.cell, tuple(CELLS))
        _check_choice("optimizer", self.optimizer, tuple(OPTIMIZERS))
        _check_choice("dtype", self.dtype, DTYPES)
        for name in ("hidden", "layers", "embed_dim", "seq_len", "batch_size", "eval_every"):
            _check_int(name, getattr(self, name), low=1)
        _check_int("sample_every", self.sample_every, low=0)
        _check_int("seed", self.seed, low=0)
        _check_number("lr", self.lr, positive=True)
        _check_number("clip", self.clip, positive=False)
        _check_number("val_fraction", self.val_fraction, positive=True)
        if not self.val_fraction < 0.5:
            raise ValueError(f"val_fraction must lie in (0, 0.5), got {self.val_fraction!r}")
        if self.steps is None and self.minutes is None:
            self.steps = DEFAULT_STEPS  # neither limit given: a fixed number of steps; with minutes alone, time decides
        if self.steps is not None:
            _check_int("steps", self.steps, low=1)
        if self.minutes is not None:
            _check_number("minutes", self.minutes, positive=True)
        for name in ("data", "init_from"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value):
                raise ValueError(f"{name} must be a non-empty path string or None, got {value!r}")
        if not isinstance(self.out, str) or not self.out:
            raise ValueError(f"out must be a non-empty path string, got {self.out!r}")
        if not isinstance(self.resume, bool):
            raise ValueError(f"resume must be True or False, got {self.resume!r}")
        _check_choice("lr_schedule", self.lr_schedule, LR_SCHEDULES)
        for name in ("warmup", "patience"):
            _check_int(name, getattr(self, name), low=0)
        _check_int("lr_step_size", self.lr_step_size, low=1)
        _check_number("lr_gamma", self.lr_gamma, positive=True)
        if self.lr_schedule == "cosine" and (self.steps is None or self.steps <= self.warmup):
            raise ValueError("lr_schedule cosine decays over the run's steps: give steps (more than warmup)")
        if self.weight_decay is not None:
            _check_number("weight_decay", self.weight_decay, positive=False)
            if self.optimizer == "adam":
                self.optimizer = "adamw"  # decoupled weight decay: what Adam with weight decay should be
        self.model_config(1)  # the model options' own checks, now rather than after the data is read

    def model_config(self, vocab_size: int) -> ModelConfig:
        """The architecture this config describes, for a vocabulary of ``vocab_size`` characters."""
        return ModelConfig(vocab_size=vocab_size, cell=self.cell, embed_dim=self.embed_dim, hidden=self.hidden,
                           layers=self.layers, dtype=self.dtype, dropout=self.dropout,
                           embed_dropout=self.embed_dropout, weight_drop=self.weight_drop,
                           tie_weights=self.tie_weights, init_hh=self.init_hh, init_ih=self.init_ih,
                           forget_bias=self.forget_bias)


LR_SCHEDULES = ("none", "cosine", "step")
"""``TrainConfig.lr_schedule`` choices."""


def make_schedule(optimizer: Optimizer, config: TrainConfig) -> LRScheduler | None:
    """The learning-rate schedule ``config`` asks for on ``optimizer`` (None: a constant rate)."""
    after: LRScheduler | None = None
    if config.lr_schedule == "cosine":
        assert config.steps is not None
        after = CosineAnnealingLR(optimizer, T_max=config.steps - config.warmup)
    elif config.lr_schedule == "step":
        after = StepLR(optimizer, step_size=config.lr_step_size, gamma=config.lr_gamma)
    return LinearWarmup(optimizer, config.warmup, after) if config.warmup else after


def _check_choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(choices)}, got {value!r}")


def _check_int(name: str, value: Any, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        kind = "a positive integer" if low == 1 else f"an integer >= {low}"
        raise ValueError(f"{name} must be {kind}, got {value!r}")


def _check_number(name: str, value: Any, positive: bool) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or (
        value <= 0 if positive else value < 0
    ):
        raise ValueError(f"{name} must be a finite number {'> 0' if positive else '>= 0'}, got {value!r}")


@dataclass
class TrainResult:
    """What :func:`train` reports when it returns."""

    out: Path                      # the run directory
    step: int                      # the step reached
    stopped_by: str                # "steps", "minutes", "interrupt" or "patience"
    val_bpc: float | None          # validation bits per character at the last evaluation
    best_val_bpc: float | None     # the lowest validation bits per character of the run
    unigram_bpc: float             # the unigram baseline on the same validation text
    plot: Path | None              # loss.png, or None without matplotlib


def train(
    config: TrainConfig,
    explicit: Collection[str] | None = None,
    *,
    log: TextIO | None = None,
    progress: bool = True,
) -> TrainResult:
    """Train as ``config`` says (see the module docstring); returns when a stopping condition is met.

    Args:
        config: the settings.
        explicit: the names of the fields the caller actually chose (the command line passes the
            options given).  With ``resume`` or ``init_from`` the others are taken from the
            checkpoint; a chosen value that contradicts the checkpoint is an error.  None: all.
        log: where messages and samples go (default ``sys.stdout``); the progress bar uses stderr.
        progress: show the progress bar (or, without tqdm, periodic log lines).

    Raises:
        ValueError: bad settings or data (:class:`~rnnkit.charlm.data.DataError`), an unusable
            checkpoint (:class:`~rnnkit.io.checkpoint.CheckpointError`), or a diverged training.
        OSError: the run directory cannot be written.
    """
    return Trainer(config, explicit, log=log, progress=progress).run()


class Trainer:
    """One training session: :meth:`__init__` prepares everything (nothing is written yet),
    :meth:`run` trains.  :meth:`train_step` is one step; :func:`train` is the usual entry point."""

    def __init__(
        self,
        config: TrainConfig,
        explicit: Collection[str] | None = None,
        *,
        log: TextIO | None = None,
        progress: bool = True,
    ) -> None:
        self.log = log if log is not None else sys.stdout
        self.progress = progress
        self._bar: _Progress | None = None
        self._metrics: TextIO | None = None
        explicit = frozenset(f.name for f in fields(TrainConfig)) if explicit is None else frozenset(explicit)
        # (A resumed run's own config may hold both: it was started from init_from and is now resumed.)
        if config.resume and config.init_from is not None and "init_from" in explicit:
            raise ValueError("resume and init_from exclude each other: resume continues a run, init_from starts one")
        config = replace(config, data=_absolute(config.data), init_from=_absolute(config.init_from),
                         out=str(Path(config.out).absolute()))
        self.out = Path(config.out)
        latest = self.out / LATEST_CHECKPOINT
        resumed = None
        if config.resume:
            if not latest.is_file():
                raise CheckpointError(f"{latest}: no checkpoint to resume from (start the run without --resume)")
            resumed = load_model(latest)
            config = _resume_config(config, explicit, resumed.document, latest)
        elif latest.exists():
            raise ValueError(f"{self.out} already holds a run ({LATEST_CHECKPOINT}); continue it with --resume, "
                             f"or choose another --out (or delete the directory)")
        # A resumed run reads its own latest weights: the checkpoint it was first initialised from is
        # history (it may even be gone) and is not loaded again.
        initial = load_model(config.init_from) if config.init_from is not None and resumed is None else None
        if initial is not None:
            config = _init_config(config, explicit, initial.model.config, initial.path)
        self.config = config

        text = load_text(config.data)
        self.data_sha256 = hashlib.sha256(text.encode("utf-8")).hexdigest()
        source = resumed or initial
        if source is not None:
            self.vocab = source.vocab
            unknown = self.vocab.unknown(text)
            if unknown:
                raise DataError(f"the text has {len(unknown)} character(s) that the vocabulary of "
                                f"{source.path} lacks: {describe_chars(unknown)}")
        else:
            # Lines mode: "\n" ends every item, even in a one-line file without a final newline.
            self.vocab = Vocab(set(text) | {"\n"}) if config.mode == "lines" else Vocab.from_text(text)
        if resumed is not None and resumed.document.get("data_sha256") != self.data_sha256:
            raise DataError(f"the training text changed since the run in {self.out} started (its SHA-256 differs); "
                            f"an exact resume needs the same text")
        self._prepare_data(text)

        if resumed is not None:
            self.model = resumed.model
        else:
            self.model = CharLM(config.model_config(len(self.vocab)), seed=config.seed)
            if initial is not None:
                self.model.load_state_dict(initial.model.state_dict())
        decay = {} if config.weight_decay is None else {"weight_decay": config.weight_decay}
        self.optimizer = OPTIMIZERS[config.optimizer](lr=config.lr, **decay)
        self.schedule = make_schedule(self.optimizer, config)
        self.rng = np.random.default_rng(config.seed)

        # The data position (what the next step reads) and the progress so far.
        self.step, self.epoch, self.index = 0, 0, 0
        self.order = self.train_batches.new_order(self.rng)
        self.state: Any = None
        self.best_val: float | None = None   # nats per character
        self.best_step: int | None = None
        self.last_val: float | None = None
        self.last_eval_step: int | None = None
        self.elapsed_before = 0.0            # training seconds of earlier sessions
        if resumed is not None:
            self._restore(resumed.document, latest)
        self.resumed = resumed is not None

    # ------------------------------------------------------------------ setup
    def _prepare_data(self, text: str) -> None:
        """Encode the text, split off validation, build the batches and the unigram baseline."""
        config = self.config
        if config.mode == "stream":
            ids = self.vocab.encode(text)
            train_ids, val_ids = split_stream(ids, config.val_fraction)
            self.train_batches: Any = StreamBatches(train_ids, config.batch_size, config.seq_len)
            self.val_batches: Any = StreamBatches.for_evaluation(val_ids, config.batch_size, config.seq_len)
        else:
            if "\n" not in self.vocab:
                raise DataError("lines mode needs '\\n' in the vocabulary (it ends every item), and the vocabulary "
                                "of the --init-from checkpoint lacks it")
            lines = text_lines(text)
            longest = max(lines, key=len, default="")
            if len(longest) + 1 > config.seq_len:
                too_long = sum(len(line) + 1 > config.seq_len for line in lines)
                raise DataError(f"lines mode: {too_long} line(s) are longer than seq_len {config.seq_len} allows "
                                f"(the longest has {len(longest)} characters + the newline); raise --seq-len to "
                                f"{len(longest) + 1} or use --mode stream")
            items = [self.vocab.encode(line) for line in lines]
            train_items, val_items = split_lines(items, config.val_fraction, config.seed)
            newline = self.vocab.chars.index("\n")
            self.train_batches = LineBatches(train_items, newline, config.batch_size, drop_last=True)
            self.val_batches = LineBatches(val_items, newline, config.batch_size, drop_last=False)
            nl = np.array([newline])
            train_ids = np.concatenate([np.concatenate((item, nl)) for item in train_items])
            val_ids = np.concatenate([np.concatenate((item, nl)) for item in val_items])
        self.train_chars, self.val_chars = len(train_ids), len(val_ids)
        self.unigram_bpc = unigram_bits_per_char(train_ids, val_ids, len(self.vocab))

    def _restore(self, document: dict[str, Any], path: Path) -> None:
        """Put back the optimizer state and the training progress saved in a checkpoint document."""
        try:
            saved = document["progress"]
            self.optimizer.load_state_dict(document["optimizer"])
            if self.schedule is not None:
                self.schedule.load_state_dict(document["schedule"])
            self.step, self.epoch, self.index = int(saved["step"]), int(saved["epoch"]), int(saved["index"])
            self.order = saved["order"]
            self.rng.bit_generator.state = saved["rng"]
            self.state = state_from_json(saved["state"], self.model)
            self.best_val, self.best_step = saved["best_val_loss"], saved["best_step"]
            self.last_val, self.last_eval_step = saved["val_loss"], saved["eval_step"]
            self.elapsed_before = float(saved["elapsed_s"])
        except (KeyError, TypeError, ValueError) as error:
            raise CheckpointError(f"{path}: cannot resume from this checkpoint ({error!r})") from None
        if not 0 <= self.index < len(self.train_batches):
            raise CheckpointError(f"{path}: the saved data position {self.index} is outside the epoch "
                                  f"of {len(self.train_batches)} batches")

    # ------------------------------------------------------------------ one step
    def train_step(self) -> tuple[float, float, int]:
        """Train on the next batch and advance the data position.

        Returns:
            ``(loss, grad_norm, chars)``: the batch's mean loss in nats (before the update), the
            global gradient norm before clipping, and the number of characters predicted.

        Raises:
            ValueError: the loss or the gradient is not finite (training diverged).
        """
        batches = self.train_batches
        batch = batches.get(self.index, self.order)
        state = self.state if batches.carries_state else None
        loss, grads, final_state = self.model.loss_and_grads(batch, state, self.rng)
        clip = self.config.clip
        norm = clip_grad_norm(grads, clip) if clip > 0 else grad_norm(grads)
        if not (math.isfinite(loss) and math.isfinite(norm)):
            raise ValueError(f"training diverged at step {self.step + 1}: the loss is {loss} and the gradient "
                             f"norm {norm}; try a smaller --lr or --clip")
        self.optimizer.step(self.model.params, grads)
        if self.schedule is not None:
            self.schedule.step()
        self.state = final_state if batches.carries_state else None
        self.step += 1
        self.index += 1
        if self.index == len(batches):
            # A new epoch: the rows start over, so the carried state starts from zero again.
            self.epoch, self.index, self.state = self.epoch + 1, 0, None
            self.order = batches.new_order(self.rng)
        return loss, norm, batch.num_targets

    # ------------------------------------------------------------------ the loop
    def run(self) -> TrainResult:
        """Train until ``steps`` is reached, ``minutes`` run out, or Ctrl-C; see the module docstring."""
        config = self.config
        self.out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.out / "config.json", json.dumps(asdict(config), indent=2) + "\n")
        metrics_path = self.out / "metrics.jsonl"
        if self.resumed:
            _truncate_metrics(metrics_path, self.step)
        elif metrics_path.exists():
            metrics_path.unlink()  # left over from a run that stopped before its first checkpoint
        self._say(self._banner())

        session_start = time.monotonic()
        deadline = None if config.minutes is None else session_start + 60.0 * config.minutes
        stopped_by = "steps"
        bar = _Progress(config.steps, self.step, self.progress)
        with open(metrics_path, "a", encoding="utf-8") as metrics, _InterruptFlag(self._on_interrupt) as interrupt:
            self._metrics = metrics
            self._write_metrics({"kind": "run", "step": self.step, "resumed": self.resumed,
                                 "vocab_size": len(self.vocab), "train_chars": self.train_chars,
                                 "val_chars": self.val_chars, "unigram_bpc": self.unigram_bpc,
                                 "parameters": self.model.num_parameters()})
            self._bar = bar
            speed = _Speed()
            while True:
                if config.steps is not None and self.step >= config.steps:
                    stopped_by = "steps"
                    break
                if deadline is not None and time.monotonic() >= deadline:
                    stopped_by = "minutes"
                    break
                if interrupt.requested:
                    stopped_by = "interrupt"
                    break
                if self._out_of_patience():
                    stopped_by = "patience"
                    break
                started = time.monotonic()
                lr = self.optimizer.lr  # the rate of this step (a schedule moves it on after the update)
                loss, grad_norm, chars = self.train_step()
                step_time = time.monotonic() - started
                speed.add(chars, step_time, bits(loss))
                self._write_metrics({"kind": "train", "step": self.step, "epoch": self.epoch, "loss": loss,
                                     "bpc": bits(loss), "grad_norm": grad_norm, "lr": lr,
                                     "chars": chars, "time_s": step_time,
                                     "elapsed_s": self._elapsed(session_start)})
                if self.step % config.eval_every == 0:
                    self._evaluate_and_save(session_start)
                if config.sample_every and self.step % config.sample_every == 0:
                    self._print_sample()
                bar.update(self.step, self._postfix(speed, deadline))
            bar.close()
            if stopped_by == "interrupt":
                self._save(LATEST_CHECKPOINT, session_start)
                self._say(f"interrupted: stopped after step {self.step}; {self.out / LATEST_CHECKPOINT} is saved "
                          f"(continue with --resume)")
            elif self.last_eval_step != self.step:
                self._evaluate_and_save(session_start)
        plot = self._plot()
        self._say(self._summary(stopped_by, plot))
        return TrainResult(self.out, self.step, stopped_by, _optional(bits, self.last_val),
                           _optional(bits, self.best_val), self.unigram_bpc, plot)

    def _evaluate_and_save(self, session_start: float) -> None:
        """Validate, log, and write the latest checkpoint (and the best one when validation improved)."""
        self.last_val, self.last_eval_step = self.model.evaluate(self.val_batches), self.step
        improved = self.best_val is None or self.last_val < self.best_val
        if improved:
            self.best_val, self.best_step = self.last_val, self.step
        self._write_metrics({"kind": "val", "step": self.step, "loss": self.last_val, "bpc": bits(self.last_val),
                             "elapsed_s": self._elapsed(session_start)})
        self._save(LATEST_CHECKPOINT, session_start)
        if improved:
            self._save(BEST_CHECKPOINT, session_start)
        self._say(f"step {self.step}: validation {bits(self.last_val):.3f} bits/char"
                  f"{' (best so far)' if improved else ''}  [unigram baseline {self.unigram_bpc:.3f}]")
        self._plot()

    def _save(self, name: str, session_start: float) -> None:
        document = {
            "format": CHECKPOINT_FORMAT,
            "version": CHECKPOINT_VERSION,
            "model": self.model.config.to_json(),
            "vocab": self.vocab.to_json(),
            "mode": self.config.mode,
            "max_item_length": self.config.seq_len,
            "config": asdict(self.config),
            "data_sha256": self.data_sha256,
            "progress": {
                "step": self.step, "epoch": self.epoch, "index": self.index, "order": self.order,
                "rng": self.rng.bit_generator.state, "state": state_to_json(self.state),
                "best_val_loss": self.best_val, "best_step": self.best_step,
                "val_loss": self.last_val, "eval_step": self.last_eval_step,
                "elapsed_s": self._elapsed(session_start),
            },
            "optimizer": self.optimizer.state_dict(),
            "schedule": None if self.schedule is None else self.schedule.state_dict(),
        }
        save_checkpoint(self.out / name, self.model.state_dict(), document)

    def _out_of_patience(self) -> bool:
        """``patience`` evaluations have passed since the best one (early stopping)."""
        patience = self.config.patience
        if not patience or self.best_step is None or self.last_eval_step is None:
            return False
        evaluations_since_best = (self.last_eval_step - self.best_step) // self.config.eval_every
        return evaluations_since_best >= patience

    # ------------------------------------------------------------------ reporting
    def _elapsed(self, session_start: float) -> float:
        return self.elapsed_before + time.monotonic() - session_start

    def _say(self, text: str) -> None:
        if self._bar is not None:
            self._bar.write(text, self.log)
        else:
            print(text, file=self.log, flush=True)

    def _write_metrics(self, record: dict[str, Any]) -> None:
        assert self._metrics is not None, "metrics are written only inside run()"
        self._metrics.write(json.dumps(record) + "\n")
        self._metrics.flush()

    def _on_interrupt(self) -> None:
        self._say("Ctrl-C: stopping after this step and saving the latest checkpoint "
                  "(press Ctrl-C again to abort without saving)")

    def _banner(self) -> str:
        c, m = self.config, self.model.config
        data = c.data if c.data is not None else "the built-in corpus (pydoc_data.topics)"
        what = "resuming at step " + str(self.step) if self.resumed else "training"
        return (f"{what}: {m.cell.upper()} {m.layers}x{m.hidden}, embedding {m.embed_dim}, "
                f"{self.model.num_parameters():,} parameters, {m.dtype}\n"
                f"  data: {data}, {c.mode} mode, vocabulary {len(self.vocab)}, "
                f"{self.train_chars:,} training / {self.val_chars:,} validation characters\n"
                f"  unigram baseline on the validation text: {self.unigram_bpc:.3f} bits/char\n"
                f"  batch {c.batch_size} x seq_len {c.seq_len}, {c.optimizer} lr {c.lr:g}, clip {c.clip:g}; "
                f"run directory {self.out}")

    def _postfix(self, speed: _Speed, deadline: float | None) -> dict[str, str]:
        left = []
        if self.config.steps is not None and speed.step_time > 0:
            left.append((self.config.steps - self.step) * speed.step_time)
        if deadline is not None:
            left.append(max(0.0, deadline - time.monotonic()))
        postfix = {"train": f"{speed.bpc:.3f}", "val": "-" if self.last_val is None else f"{bits(self.last_val):.3f}",
                   "chars/s": f"{speed.chars_per_s:,.0f}"}
        if left:
            postfix["left"] = _clock(min(left))
        return postfix

    def _print_sample(self) -> None:
        rng = np.random.default_rng([self.config.seed, self.step])
        lines_mode = self.config.mode == "lines"
        pieces = generate_text(self.model, self.vocab, mode=self.config.mode,
                               length=SAMPLE_ITEMS if lines_mode else SAMPLE_CHARS, rng=rng,
                               temperature=SAMPLE_TEMPERATURE, max_item_length=self.config.seq_len)
        text = "".join(pieces).rstrip("\n")
        self._say(f"--- sample at step {self.step} (temperature {SAMPLE_TEMPERATURE}) ---\n{text}\n---")

    def _plot(self) -> Path | None:
        title = (f"{self.config.cell.upper()} {self.config.layers}x{self.config.hidden} on "
                 f"{Path(self.config.data).name if self.config.data else 'the built-in corpus'}")
        return plot_losses(self.out / "metrics.jsonl", self.out / "loss.png", title=title)

    def _summary(self, stopped_by: str, plot: Path | None) -> str:
        if stopped_by == "steps":
            reason = f"reached {self.config.steps} steps"
        elif stopped_by == "minutes":
            reason = f"{self.config.minutes:g} minutes are up"
        elif stopped_by == "patience":
            reason = f"no better validation in {self.config.patience} evaluations (patience)"
        else:
            reason = "interrupted"
        lines = [f"done ({reason}) at step {self.step}, epoch {self.epoch}"]
        if self.best_val is not None:
            lines.append(f"  validation: {bits(self.last_val or self.best_val):.3f} bits/char (best "
                         f"{bits(self.best_val):.3f} at step {self.best_step}); unigram baseline "
                         f"{self.unigram_bpc:.3f}")
        lines.append(f"  checkpoints: {self.out / BEST_CHECKPOINT}, {self.out / LATEST_CHECKPOINT}")
        lines.append(f"  loss curve: {plot}" if plot else "  loss curve: not drawn (matplotlib is not installed: "
                                                          "pip install 'rnnkit[app]')")
        return "\n".join(lines)


def _absolute(path: str | None) -> str | None:
    return None if path is None else str(Path(path).absolute())


def _optional(function: Any, value: float | None) -> float | None:
    return None if value is None else function(value)


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def _resume_config(config: TrainConfig, explicit: frozenset[str], document: dict[str, Any],
                   path: Path) -> TrainConfig:
    """The run's saved config, with the chosen overrides (:data:`RESUME_OVERRIDES`) applied.

    Raises:
        ValueError: a chosen field outside the overrides differs from the run's value.
    """
    try:
        saved = TrainConfig(**document["config"])
    except (KeyError, TypeError, ValueError) as error:
        raise CheckpointError(f"{path}: the saved training config is unusable ({error})") from None
    changes: dict[str, Any] = {}
    if explicit & {"steps", "minutes"}:
        # steps and minutes together are the stopping rule: giving either one replaces both (a run
        # started with --minutes and resumed with --steps N trains up to step N).
        explicit = explicit | {"steps", "minutes"}
    for name in sorted(explicit):
        new, old = getattr(config, name), getattr(saved, name)
        if name == "init_from":
            continue  # where the run's first weights came from; a resume reads its own latest weights instead
        if name in RESUME_OVERRIDES:
            changes[name] = new
        elif new != old:
            raise ValueError(f"--resume continues the run in {config.out} exactly as it was set up, but {name} is "
                             f"{old!r} there and {new!r} here; leave {name} out (or start a new run)")
    resolved = replace(saved, **changes)
    if resolved.steps is None and resolved.minutes is None:
        raise ValueError("give steps or minutes (or both): training needs a point to stop")
    return resolved


def _init_config(config: TrainConfig, explicit: frozenset[str], model: ModelConfig, path: Path) -> TrainConfig:
    """``config`` with the architecture of the ``init_from`` checkpoint; chosen fields must agree with it."""
    for name in MODEL_FIELDS:
        if name in explicit and getattr(config, name) != getattr(model, name):
            raise ValueError(f"--init-from {path} is a {model.cell} model with {name} {getattr(model, name)!r}, "
                             f"not {getattr(config, name)!r}; the architecture comes from the checkpoint, so leave "
                             f"{name} out")
    return replace(config, **{name: getattr(model, name) for name in MODEL_FIELDS})


def _truncate_metrics(path: Path, step: int) -> None:
    """Drop the records after ``step`` (logged after the checkpoint a resume starts from)."""
    if not path.exists():
        return
    kept = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue  # a line torn by a crash mid-write
        if isinstance(record, dict) and isinstance(record.get("step"), int) and record["step"] <= step:
            kept.append(line + "\n")
    atomic_write_text(path, "".join(kept))


class _Speed:
    """Smoothed characters per second, seconds per step and training bits per character, for the display."""

    def __init__(self, smoothing: float = 0.9) -> None:
        self._smoothing = smoothing
        self._count = 0
        self._averages = np.zeros(3)
        self.chars_per_s = self.step_time = self.bpc = 0.0

    def add(self, chars: int, seconds: float, bpc: float) -> None:
        # Exponential moving averages, with the usual bias correction for the first few steps.
        a = self._smoothing
        self._count += 1
        self._averages = a * self._averages + (1 - a) * np.array([chars / max(seconds, 1e-9), seconds, bpc])
        self.chars_per_s, self.step_time, self.bpc = (float(v) for v in self._averages / (1 - a**self._count))


class _Progress:
    """A tqdm progress bar on stderr, or plain progress lines every few seconds when tqdm is missing."""

    def __init__(self, total: int | None, initial: int, enabled: bool) -> None:
        self.enabled = enabled
        self._bar = None
        self._last_line = time.monotonic()
        self.total = total
        if enabled:
            try:
                from tqdm import tqdm
            except ImportError:
                return
            self._bar = tqdm(total=total, initial=initial, unit=" steps", dynamic_ncols=True, file=sys.stderr)

    def update(self, step: int, postfix: dict[str, str]) -> None:
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.set_postfix(postfix, refresh=False)
            self._bar.update(step - self._bar.n)
        elif time.monotonic() - self._last_line >= _LOG_INTERVAL_S:
            self._last_line = time.monotonic()
            of = f"/{self.total}" if self.total is not None else ""
            print(f"step {step}{of}  " + "  ".join(f"{key} {value}" for key, value in postfix.items()),
                  file=sys.stderr, flush=True)

    def write(self, text: str, file: TextIO) -> None:
        if self._bar is not None:
            self._bar.write(text, file=file)
            file.flush()
        else:
            print(text, file=file, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


class _InterruptFlag:
    """Turn the first Ctrl-C into a flag that the loop checks between steps (so no step is cut in half
    and the checkpoint is consistent); a second Ctrl-C raises KeyboardInterrupt as usual.

    Signal handlers can only be installed from the main thread; elsewhere this does nothing.
    """

    def __init__(self, on_first: Any) -> None:
        self.requested = False
        self._on_first = on_first
        self._previous: Any = None
        self._installed = False

    def __enter__(self) -> _InterruptFlag:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
            self._installed = True
        return self

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.requested = True
        self._restore()
        self._on_first()

    def _restore(self) -> None:
        # None: the previous handler was not installed from Python; Python's default raises KeyboardInterrupt.
        signal.signal(signal.SIGINT, signal.default_int_handler if self._previous is None else self._previous)

    def __exit__(self, *exc: object) -> None:
        if self._installed:
            self._restore()


__all__ = ["MODEL_FIELDS", "OPTIMIZERS", "RESUME_OVERRIDES", "TrainConfig", "TrainResult", "Trainer", "train"]
