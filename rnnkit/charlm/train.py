"""Training a char-LM: the :class:`TrainConfig`, the loop, the run directory, and an exact resume.

:func:`train` (what ``rnnkit train`` calls) reads the text, builds the vocabulary and the model,
and trains with truncated BPTT: every step is one batch of ``batch_size`` rows by ``seq_len``
characters; in stream mode the hidden state is carried from one batch into the next and no gradient
crosses the boundary.  The global gradient norm is clipped, then the optimizer steps -- the step is
:func:`rnnkit.fit.train_step`, the one step of every rnnkit training loop; this module adds the
char-LM's data position, checkpoints, signals and reporting around it.  Every ``eval_every`` steps
(or ``eval_every_s`` seconds, whichever comes first; a ``minutes`` run at least every tenth of its
time) the validation split is evaluated; every ``sample_every`` steps a short
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
continues from is the step); giving either of the two on resume replaces both, and a ``steps`` at
or below the step reached is an error that changes nothing.  ``data`` may be given on resume when
the file moved: its SHA-256 must be the one the run recorded.  Every field of the checkpoint's
document is validated (types, ranges, the item order a permutation, the optimizer state fitting the
weights, the saved config agreeing with the model) before any of it is used.  The metrics log is
cut back to the checkpoint's step first, so steps a crash lost are not logged twice.  All other
settings come from the run; passing one that differs is an error, because it would silently break
the exactness.

**Stopping.**  The first SIGINT (Ctrl-C), SIGTERM (``timeout``, ``docker stop``, a batch scheduler)
or SIGHUP (a closed terminal) lets the current step finish, writes ``latest.safetensors`` and returns
(``TrainResult.stopped_by == "interrupt"``, ``TrainResult.signal`` the signal's number; the command
line exits with 128 + that number: 130, 143, 129); a second one interrupts at once.

**The run directory is the run's own.**  ``out`` must be new, empty, or a run directory of rnnkit's
(only its files in it): anything else is refused before a byte is written, so ``--out ~`` or
``--out /`` can never overwrite or delete a user's files.  While a session runs it holds an OS-level
lock on ``out/.lock``, so a second training in the same directory stops at once with a one-line
error instead of interleaving its metrics and checkpoints with the first one's.

**Printing never stops training.**  Messages go through a stream wrapper that drops what a closed
stream or a dead pipe (``| tee`` after a Ctrl-C, ``| head``) cannot take, and replaces characters
the stream's encoding cannot show, so neither a sample with unusual characters nor a closed
terminal ends a run.  A loss plot that fails (a strange file name, a broken matplotlib) is a warning.

**Divergence.**  A non-finite loss, gradient norm or weight, or a loss far above what a model that
knows nothing scores (more than :data:`DIVERGENCE_FACTOR` times the larger of the unigram baseline
and ``log2 V`` bits per character, in the smoothed training loss or in validation) stops training
with a :class:`TrainingDiverged` error naming the step and suggesting a smaller learning rate.
Nothing diverged is ever saved: ``best`` and ``latest`` keep the last good state, and
``metrics.jsonl`` is strict JSON (a non-finite number is written as ``null``).

**Validation** reads at most ``val_max_chars`` characters of the held-out text (the first ones;
0: all), so that one pass over a large corpus takes seconds, and shows its own progress bar.

**init_from** starts a new run from another run's weights and vocabulary (fine-tuning on new text):
the architecture comes from that checkpoint, and characters of the new text that its vocabulary
lacks are an error that lists them (``unknown="error"``), dropped (``"skip"``) or replaced by a
space (``"replace"``).

**Defaults that depend on the run.**  ``lr=None`` is the optimizer's own rate (:data:`DEFAULT_LR`);
``seq_len=None`` is 64 in stream mode and the longest line + 1 in lines mode (up to
:data:`MAX_AUTO_SEQ_LEN`); ``threads=None`` is :func:`rnnkit.parallel.default_threads`.  config.json
and the checkpoints hold the resolved values.

**Randomness.**  ``seed`` determines the initial weights, the lines-mode validation split, the
generator that shuffles the items each epoch and draws every dropout mask (saved in checkpoints, so
a resumed run with dropout is exact too), and the printed samples (drawn from a generator seeded by
``(seed, step)``, so printing them never changes training).

**Regularization and schedules.**  ``dropout``, ``embed_dropout``, ``weight_drop``,
``recurrent_dropout``, ``zoneout``, ``proj_size``, ``tie_weights`` and the initializers are the
model's (:class:`~rnnkit.charlm.model.ModelConfig`); training steps run with dropout on,
evaluation and sampling with it off.  ``weight_decay`` is decoupled (AdamW: ``optimizer="adam"``
with a weight decay becomes ``"adamw"``).  ``lr_schedule`` ("cosine" over the
steps after the warm-up, "step": times ``lr_gamma`` every ``lr_step_size`` steps) follows ``warmup``
linear steps; its position is saved in checkpoints.  ``patience`` stops the run (``stopped_by ==
"patience"``) after that many evaluations without a new best validation loss.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import signal
import sys
import threading
import time
import warnings
from collections.abc import Collection
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from types import FrameType
from typing import Any, TextIO

import numpy as np

from rnnkit.charlm.data import (
    UNKNOWN_POLICIES,
    DataError,
    LineBatches,
    StreamBatches,
    Vocab,
    handle_unknown,
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
    count_parameters,
    load_model,
    state_from_json,
    state_to_json,
)
from rnnkit.charlm.plot import plot_losses
from rnnkit.charlm.sample import MODES, generate_text
from rnnkit.fit import train_step
from rnnkit.io import available_memory, format_bytes
from rnnkit.io.checkpoint import CheckpointError, atomic_write_text, save_checkpoint
from rnnkit.losses import softmax_cross_entropy
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
from rnnkit.parallel import set_num_threads

OPTIMIZERS: dict[str, type[Optimizer]] = {"adam": Adam, "adamw": AdamW, "sgd": SGD, "rmsprop": RMSprop,
                                          "adagrad": Adagrad}
"""Optimizer names; each is built with ``lr`` and otherwise ``torch.optim``'s defaults."""

DEFAULT_LR: dict[str, float] = {"adam": 2e-3, "adamw": 2e-3, "sgd": 1.0, "rmsprop": 1e-3, "adagrad": 1e-2}
"""Each optimizer's learning rate when ``lr`` is not given.  The adaptive ones divide by a running
gradient scale, so their steps are about ``lr`` per weight; plain SGD's steps are ``lr`` times the raw
(clipped) gradient, which for a char-LM is small, so it needs a rate hundreds of times larger."""

DEFAULT_WEIGHT_DECAY: dict[str, float] = {"adamw": 0.1}
"""The decoupled weight decay when ``weight_decay`` is not given (the others: none).  Chosen by
measurement with ``dropout = 0.3`` on the built-in corpus (benchmarks/README.md): without either,
ten minutes of training reach 1.771 bits/char and then overfit to 2.180; with both, 1.63 and flat."""

EVAL_TIME_FRACTION = 0.1
"""A time-limited run validates at least this often, as a fraction of its ``minutes`` (unless ``eval_every_s``)."""

DEFAULT_SEQ_LEN = 64
"""Stream mode's truncated-BPTT chunk length when ``seq_len`` is not given."""

MAX_AUTO_SEQ_LEN = 1024
"""Lines mode sizes ``seq_len`` itself (longest line + 1) up to this; longer lines need an explicit ``seq_len``."""

DEFAULT_STEPS = 2000
"""The number of steps a run trains for when neither ``steps`` nor ``minutes`` is given."""

MODEL_FIELDS = ("cell", "hidden", "layers", "embed_dim", "dtype", "tie_weights")
"""The TrainConfig fields that define the architecture (with ``init_from`` they come from the checkpoint)."""

RESUME_OVERRIDES = ("steps", "minutes", "eval_every", "eval_every_s", "sample_every", "resume", "out", "patience",
                    "threads")
"""The TrainConfig fields a resumed run may change: when to stop and how often to report.
(``data`` may change too, to the new place of the same text: its SHA-256 is checked.)"""

DIVERGENCE_FACTOR = 2.0
"""Training has diverged when its loss exceeds this many times max(unigram baseline, log2 V, 1) bits/char."""

DEFAULT_VAL_MAX_CHARS = 200_000
"""Validation reads at most this many held-out characters by default (about a second or two per pass)."""

LOCK_FILE = ".lock"
"""In a run directory: the file a training session holds an OS lock on."""

RUN_FILES = frozenset({"config.json", "metrics.jsonl", "loss.png", BEST_CHECKPOINT, LATEST_CHECKPOINT, LOCK_FILE})
"""What a run directory may hold (besides ``.*.tmp`` files left by a crash mid-write)."""

STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name))
"""The signals that stop training cleanly (SIGHUP does not exist on Windows)."""

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
    cell: str = "lstm"               # "lstm", "gru", "rnn" (tanh) or "lnlstm" (layer-normalised LSTM)
    hidden: int = 256                # hidden units per layer
    layers: int = 1                  # stacked recurrent layers
    embed_dim: int = 64              # size of the character embedding
    seq_len: int | None = None       # truncated-BPTT chunk length; None: stream 64, lines the longest item + 1
    batch_size: int = 32             # rows (stream) or items (lines) per step
    lr: float | None = None          # learning rate; None: the optimizer's own default (DEFAULT_LR)
    clip: float = 5.0                # max global gradient norm; 0: no clipping
    optimizer: str = "adamw"         # one of OPTIMIZERS
    steps: int | None = None         # total steps to reach; None: `minutes` decides (DEFAULT_STEPS if both None)
    minutes: float | None = None     # wall-clock limit of this session; None: none
    val_fraction: float = 0.1        # part of the text (stream: its tail) held out for validation
    eval_every: int = 200            # steps between validations (and latest/best checkpoints)
    eval_every_s: float | None = None  # also validate when this many seconds have passed since the last one;
    #                                    None: with `minutes`, every EVAL_TIME_FRACTION of them
    sample_every: int = 1000         # steps between printed samples; 0: never
    seed: int = 0                    # weights, lines split and shuffles, printed samples
    out: str = "runs/charlm"         # the run directory
    resume: bool = False             # continue the run in `out` from its latest checkpoint
    init_from: str | None = None     # start from this checkpoint's weights and vocabulary
    dtype: str = "float32"           # "float32" or "float64"
    val_max_chars: int = DEFAULT_VAL_MAX_CHARS  # validation reads at most this many characters; 0: all
    # Regularization, initialisation, schedules (see the module docstring; 0 / None / "none": off).
    dropout: float = 0.3             # embedding output, between layers, before the head (0: off)
    embed_dropout: float = 0.0       # whole rows of the embedding
    weight_drop: float = 0.0         # DropConnect on W_hh
    tie_weights: bool = False        # head.weight = embed.weight (embed_dim == hidden)
    init_hh: str = "pytorch"         # "pytorch" or "orthogonal"
    init_ih: str = "pytorch"         # "pytorch" or "xavier"
    forget_bias: float | None = None  # LSTM forget-gate bias
    proj_size: int = 0               # LSTM output projection (PyTorch's proj_size); 0: none
    recurrent_dropout: float = 0.0   # RNN/LSTM: on the h fed to W_hh (Keras's recurrent_dropout)
    zoneout: float = 0.0             # zoneout on h (and the LSTM's c)
    weight_decay: float | None = None  # decoupled weight decay (AdamW); None: DEFAULT_WEIGHT_DECAY, else none
    lr_schedule: str = "none"        # one of LR_SCHEDULES
    warmup: int = 0                  # linear warm-up steps before the schedule
    lr_step_size: int = 1000         # "step" schedule: steps between decays
    lr_gamma: float = 0.5            # "step" schedule: factor per decay
    patience: int = 0                # evaluations without improvement before stopping; 0: never
    unknown: str = "error"           # init_from: characters the checkpoint lacks: "error", "skip" or "replace"
    threads: int | None = None       # BLAS threads; None: rnnkit.parallel's policy (the number used is saved)

    def __post_init__(self) -> None:
        _check_choice("mode", self.mode, MODES)
        _check_choice("cell", self.cell, tuple(CELLS))
        _check_choice("optimizer", self.optimizer, tuple(OPTIMIZERS))
        _check_choice("dtype", self.dtype, DTYPES)
        _check_choice("unknown", self.unknown, UNKNOWN_POLICIES)
        for name in ("hidden", "layers", "embed_dim", "batch_size", "eval_every"):
            _check_int(name, getattr(self, name), low=1)
        if self.seq_len is None:
            # Lines mode sizes it from the data (Trainer); stream mode has a fixed default.
            if self.mode == "stream":
                self.seq_len = DEFAULT_SEQ_LEN
        else:
            _check_int("seq_len", self.seq_len, low=1)
        if self.threads is not None:
            _check_int("threads", self.threads, low=1)
        _check_int("sample_every", self.sample_every, low=0)
        _check_int("val_max_chars", self.val_max_chars, low=0)
        _check_int("seed", self.seed, low=0)
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
        if self.eval_every_s is not None:
            _check_number("eval_every_s", self.eval_every_s, positive=True)
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
            if self.optimizer == "adam" and self.weight_decay > 0:
                self.optimizer = "adamw"  # decoupled weight decay: what Adam with weight decay should be
        elif self.optimizer in DEFAULT_WEIGHT_DECAY:
            self.weight_decay = DEFAULT_WEIGHT_DECAY[self.optimizer]
        if self.lr is None:
            self.lr = DEFAULT_LR[self.optimizer]
        _check_number("lr", self.lr, positive=True)
        self.model_config(1)  # the model options' own checks, now rather than after the data is read

    def model_config(self, vocab_size: int) -> ModelConfig:
        """The architecture this config describes, for a vocabulary of ``vocab_size`` characters."""
        return ModelConfig(vocab_size=vocab_size, cell=self.cell, embed_dim=self.embed_dim, hidden=self.hidden,
                           layers=self.layers, dtype=self.dtype, dropout=self.dropout,
                           embed_dropout=self.embed_dropout, weight_drop=self.weight_drop,
                           tie_weights=self.tie_weights, init_hh=self.init_hh, init_ih=self.init_ih,
                           forget_bias=self.forget_bias, proj_size=self.proj_size,
                           recurrent_dropout=self.recurrent_dropout, zoneout=self.zoneout)


LR_SCHEDULES = ("none", "cosine", "step")
"""``TrainConfig.lr_schedule`` choices."""


def make_optimizer(config: TrainConfig) -> Optimizer:
    """The optimizer ``config`` asks for, with its learning rate and weight decay."""
    assert config.lr is not None  # TrainConfig resolves None to the optimizer's default
    decay = {} if config.weight_decay is None else {"weight_decay": config.weight_decay}
    return OPTIMIZERS[config.optimizer](lr=config.lr, **decay)


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
    plot: Path | None              # loss.png, or None without matplotlib (or when drawing it failed)
    signal: int | None = None      # the signal that stopped training (stopped_by "interrupt"), e.g. signal.SIGTERM


class TrainingDiverged(ValueError):
    """Training produced a non-finite or far too large loss (or weights); the message names the step and the fix."""


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
            checkpoint (:class:`~rnnkit.io.checkpoint.CheckpointError`), a run directory that is
            not a run's or is in use by another training, too little memory for the model, or a
            diverged training (:class:`TrainingDiverged`).
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
        # Messages must never stop training: a closed stream, a dead pipe or an encoding that cannot
        # show the text are absorbed by SafeStream.
        self.log = SafeStream(log if log is not None else sys.stdout)
        self.progress = progress
        self._bar: _Progress | None = None
        self._metrics: TextIO | None = None
        self._plot_warned = False
        explicit = frozenset(f.name for f in fields(TrainConfig)) if explicit is None else frozenset(explicit)
        # (A resumed run's own config may hold both: it was started from init_from and is now resumed.)
        if config.resume and config.init_from is not None and "init_from" in explicit:
            raise ValueError("resume and init_from exclude each other: resume continues a run, init_from starts one")
        config = replace(config, data=_absolute(config.data), init_from=_absolute(config.init_from),
                         out=str(Path(config.out).absolute()))
        self.out = Path(config.out)
        check_run_directory(self.out)
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

        if resumed is not None and config.data is not None and not Path(config.data).exists():
            raise DataError(f"the data file of the run in {self.out}, {config.data!r}, does not exist any more; if "
                            f"it moved, pass its new place with --data (its SHA-256 is checked)")
        text = load_text(config.data)
        self.data_sha256 = hashlib.sha256(text.encode("utf-8")).hexdigest()
        source = resumed or initial
        if source is not None:
            self.vocab = source.vocab
            # Fine-tuning on a new text (or resuming such a run): the characters the checkpoint lacks, as
            # config.unknown says.  The SHA-256 above is the file's, so a resume checks the same file.
            text = handle_unknown(text, self.vocab, config.unknown, "the text", f"the vocabulary of {source.path}")
        else:
            # Lines mode: "\n" ends every item, even in a one-line file without a final newline.
            self.vocab = Vocab(set(text) | {"\n"}) if config.mode == "lines" else Vocab.from_text(text)
        if resumed is not None and resumed.document.get("data_sha256") != self.data_sha256:
            raise DataError(f"the training text in {config.data or 'the built-in corpus'} is not the text the run in "
                            f"{self.out} was trained on (its SHA-256 differs); an exact resume needs the same text")
        self._prepare_data(text)
        config = self.config  # lines mode: with seq_len sized from the data
        del text  # the ids are all that is needed from here on

        if resumed is not None:
            self.model = resumed.model
        else:
            check_memory(config, len(self.vocab))  # before the model is allocated
            self.model = CharLM(config.model_config(len(self.vocab)), seed=config.seed)
            if initial is not None:
                self.model.load_state_dict(initial.model.state_dict())
        self.optimizer = make_optimizer(config)
        self.schedule = make_schedule(self.optimizer, config)
        self.rng = np.random.default_rng(config.seed)
        self.divergence_bpc = DIVERGENCE_FACTOR * max(self.unigram_bpc, math.log2(len(self.vocab)), 1.0)

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
            if config.steps is not None and config.steps <= self.step:
                limit = f"--steps {config.steps}" if "steps" in explicit else f"its steps ({config.steps})"
                raise ValueError(f"the run in {self.out} is at step {self.step} already, so {limit} leaves nothing "
                                 f"to do; give a --steps above {self.step} to continue (nothing was changed)")
        self.resumed = resumed is not None

    # ------------------------------------------------------------------ setup
    def _prepare_data(self, text: str) -> None:
        """Encode the text, split off validation, build the batches and the unigram baseline."""
        config = self.config
        if config.mode == "stream":
            assert config.seq_len is not None  # resolved by TrainConfig in stream mode
            ids = self.vocab.encode(text)
            train_ids, val_ids = split_stream(ids, config.val_fraction)
            if config.val_max_chars:
                val_ids = val_ids[: max(2, config.val_max_chars)]
            self.train_batches: Any = StreamBatches(train_ids, config.batch_size, config.seq_len)
            self.val_batches: Any = StreamBatches.for_evaluation(val_ids, config.batch_size, config.seq_len)
        else:
            if "\n" not in self.vocab:
                raise DataError("lines mode needs '\\n' in the vocabulary (it ends every item), and the vocabulary "
                                "of the --init-from checkpoint lacks it")
            lines = text_lines(text)
            longest = max(lines, key=len, default="")
            if config.seq_len is None:
                # Sized from the data: every item and its newline fit in one chunk.
                if len(longest) + 1 > MAX_AUTO_SEQ_LEN:
                    raise DataError(f"lines mode: the longest line has {len(longest)} characters, more than the "
                                    f"{MAX_AUTO_SEQ_LEN - 1} that --seq-len is sized for by itself; give --seq-len "
                                    f"{len(longest) + 1} explicitly (memory grows with it) or use --mode stream")
                config = self.config = replace(config, seq_len=len(longest) + 1)
            assert config.seq_len is not None
            if len(longest) + 1 > config.seq_len:
                too_long = sum(len(line) + 1 > config.seq_len for line in lines)
                raise DataError(f"lines mode: {too_long} line(s) are longer than seq_len {config.seq_len} allows "
                                f"(the longest has {len(longest)} characters + the newline); raise --seq-len to "
                                f"{len(longest) + 1} or use --mode stream")
            items = [self.vocab.encode(line) for line in lines]
            train_items, val_items = split_lines(items, config.val_fraction, config.seed)
            if config.val_max_chars:
                # Whole items, as many as fit (at least one).
                sizes = np.cumsum([len(item) + 1 for item in val_items])
                val_items = val_items[: max(1, int(np.searchsorted(sizes, config.val_max_chars, side="right")))]
            newline = self.vocab.chars.index("\n")
            self.train_batches = LineBatches(train_items, newline, config.batch_size, drop_last=True)
            self.val_batches = LineBatches(val_items, newline, config.batch_size, drop_last=False)
            nl = np.array([newline])
            train_ids = np.concatenate([np.concatenate((item, nl)) for item in train_items])
            val_ids = np.concatenate([np.concatenate((item, nl)) for item in val_items])
        self.train_chars, self.val_chars = len(train_ids), len(val_ids)
        self.unigram_bpc = unigram_bits_per_char(train_ids, val_ids, len(self.vocab))

    def _restore(self, document: dict[str, Any], path: Path) -> None:
        """Validate, then put back, the optimizer state and the training progress saved in a checkpoint.

        Every field is checked (type, range, consistency with the model and the data) before any is
        used; the first bad one is a :class:`CheckpointError` naming it.
        """
        def fail(field: str, problem: str) -> CheckpointError:
            return CheckpointError(f"{path}: cannot resume: {field} {problem}")

        config = self.config
        for field, expected in (("mode", config.mode), ("max_item_length", config.seq_len)):
            if document.get(field) != expected:
                raise fail(field, f"is {document.get(field)!r} but the run's config says {expected!r}")
        if document.get("model") != config.model_config(len(self.vocab)).to_json():
            raise fail("model", "does not agree with the run's config (cell, sizes, dtype, vocabulary)")
        saved = document.get("progress")
        keys = {"step", "epoch", "index", "order", "rng", "state", "best_val_loss", "best_step", "val_loss",
                "eval_step", "elapsed_s"}
        if not isinstance(saved, dict) or set(saved) != keys:
            raise fail("progress", f"must be a dict with the keys {sorted(keys)}")
        step = _natural(saved["step"], "progress.step", fail)
        epoch = _natural(saved["epoch"], "progress.epoch", fail)
        index = _natural(saved["index"], "progress.index", fail)
        if index >= len(self.train_batches):
            raise fail("progress.index", f"({index}) is outside the epoch of {len(self.train_batches)} batches")
        order = saved["order"]
        if config.mode == "stream":
            if order is not None:
                raise fail("progress.order", "must be null in stream mode")
        else:
            n = self.train_batches.num_items
            if not (isinstance(order, np.ndarray) and order.shape == (n,) and np.issubdtype(order.dtype, np.integer)
                    and np.array_equal(np.sort(order), np.arange(n))):
                raise fail("progress.order", f"is not a permutation of the {n} training items")
        rng = np.random.default_rng(0)
        try:
            if not isinstance(saved["rng"], dict) or saved["rng"].get("bit_generator") != "PCG64":
                raise ValueError("not a PCG64 state")
            rng.bit_generator.state = saved["rng"]
        except (TypeError, ValueError, KeyError, OverflowError) as error:
            raise fail("progress.rng", f"is not a random generator state ({_brief(error)})") from None
        try:
            state = state_from_json(saved["state"], self.model)
        except (TypeError, ValueError) as error:
            raise fail("progress.state", f"is unusable ({_brief(error)})") from None
        if state is not None:
            arrays = [a for value in state.values() for a in (value if isinstance(value, tuple) else (value,))]
            if config.mode != "stream" or any(a.shape[1] != config.batch_size or not np.isfinite(a).all()
                                              for a in arrays):
                raise fail("progress.state", f"must be null (lines mode) or finite arrays for batches of "
                                             f"{config.batch_size} rows")
        best_val = _optional_loss(saved["best_val_loss"], "progress.best_val_loss", fail)
        best_step = _optional_step(saved["best_step"], "progress.best_step", step, fail)
        last_val = _optional_loss(saved["val_loss"], "progress.val_loss", fail)
        eval_step = _optional_step(saved["eval_step"], "progress.eval_step", step, fail)
        if (best_val is None) != (best_step is None) or (last_val is None) != (eval_step is None):
            raise fail("progress", "has a validation loss without its step, or a step without its loss")
        elapsed = saved["elapsed_s"]
        if isinstance(elapsed, bool) or not isinstance(elapsed, (int, float)) or not (
                math.isfinite(elapsed) and elapsed >= 0):
            raise fail("progress.elapsed_s", f"must be a finite number >= 0, got {elapsed!r}")

        optimizer = make_optimizer(config)
        try:
            optimizer.load_state_dict(document.get("optimizer"))  # type: ignore[arg-type]
        except (TypeError, ValueError, KeyError, AttributeError) as error:
            raise fail("optimizer", f"is unusable ({_brief(error)})") from None
        saved_lr = optimizer.lr
        # The schedule drives the optimizer's rate: it is rebuilt on the restored optimizer (building
        # it resets the rate to the schedule's first one; loading its state sets the rate of `step`).
        schedule = make_schedule(optimizer, config)
        assert config.lr is not None  # resolved by TrainConfig
        if schedule is None:
            expected_lr = config.lr
        else:
            try:
                schedule.load_state_dict(document.get("schedule"))  # type: ignore[arg-type]
            except (TypeError, ValueError, KeyError, AttributeError) as error:
                raise fail("schedule", f"is unusable ({_brief(error)})") from None
            if schedule.last_epoch != step or schedule.base_lr != config.lr:
                raise fail("schedule", f"is at step {schedule.last_epoch} from lr {schedule.base_lr}, but the run "
                                       f"has lr {config.lr} and is at step {step}")
            expected_lr = optimizer.lr
        if not math.isclose(saved_lr, expected_lr, rel_tol=1e-12, abs_tol=0.0) or optimizer.step_count != step:
            raise fail("optimizer", f"has lr {saved_lr} and {optimizer.step_count} steps, but the run has lr "
                                    f"{expected_lr} and is at step {step}")
        optimizer.lr = expected_lr
        params = self.model.params
        if optimizer.state and optimizer.state.keys() != params.keys():
            raise fail("optimizer.state", "does not have the model's parameters")
        for name, buffers in optimizer.state.items():
            for buffer, array in buffers.items():
                if array.shape != params[name].shape or array.dtype != params[name].dtype:
                    raise fail(f"optimizer.state.{name}.{buffer}", f"is {array.dtype}{list(array.shape)}, not "
                                                                   f"{params[name].dtype}{list(params[name].shape)}")
                if not np.isfinite(array).all():
                    raise fail(f"optimizer.state.{name}.{buffer}", "holds NaN or infinite values")

        self.optimizer, self.schedule = optimizer, schedule
        self.step, self.epoch, self.index, self.order = step, epoch, index, order
        self.rng = rng
        self.state = state
        self.best_val, self.best_step, self.last_val, self.last_eval_step = best_val, best_step, last_val, eval_step
        self.elapsed_before = float(elapsed)

    # ------------------------------------------------------------------ one step
    def train_step(self) -> tuple[float, float, int]:
        """Train on the next batch and advance the data position.

        Returns:
            ``(loss, grad_norm, chars)``: the batch's mean loss in nats (before the update), the
            global gradient norm before clipping, and the number of characters predicted.

        Raises:
            TrainingDiverged: the loss, the gradient or the updated weights are not finite.
        """
        batches = self.train_batches
        batch = batches.get(self.index, self.order)
        state = self.state if batches.carries_state else None
        # The one training step of rnnkit.fit: forward with dropout from self.rng, the masked mean
        # cross-entropy, backward, clipping, and the optimizer's update -- refused before the update
        # when the loss or the gradient norm is not finite.
        try:
            result = train_step(self.model.net, softmax_cross_entropy, self.optimizer, batch.x, batch.y, state=state,
                                lengths=batch.lengths, mask=batch.mask,
                                clip=self.config.clip if self.config.clip > 0 else None, rng=self.rng)
        except FloatingPointError as error:
            # "the loss is inf" or "the loss is 2.1 and the gradient norm nan"; _diverged adds the fix.
            raise self._diverged(self.step + 1, str(error).split(":")[0]) from None
        loss, norm, final_state = result.loss, result.grad_norm, result.state
        # min and max propagate NaN and show inf, without a temporary array per parameter.
        for name, value in self.model.params.items():
            if not (np.isfinite(value.min()) and np.isfinite(value.max())):
                raise self._diverged(self.step + 1, f"the update made {name} NaN or infinite")
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
        """Train until ``steps`` is reached, ``minutes`` run out, or a stop signal; see the module docstring."""
        # The thread count is the process's (BLAS is shared); the number used goes into config.json.
        self.config = config = replace(self.config, threads=set_num_threads(self.config.threads))
        self.out.mkdir(parents=True, exist_ok=True)
        with _RunLock(self.out):
            if not self.resumed and (self.out / LATEST_CHECKPOINT).exists():
                # Another session wrote its first checkpoint after this one looked.
                raise ValueError(f"{self.out} already holds a run ({LATEST_CHECKPOINT}); continue it with --resume, "
                                 f"or choose another --out")
            return self._run_locked(config)

    def _run_locked(self, config: TrainConfig) -> TrainResult:
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
        with open(metrics_path, "a", encoding="utf-8") as metrics, _StopSignals(self._on_signal) as stop:
            self._metrics = metrics
            self._write_metrics({"kind": "run", "step": self.step, "resumed": self.resumed,
                                 "vocab_size": len(self.vocab), "train_chars": self.train_chars,
                                 "val_chars": self.val_chars, "unigram_bpc": self.unigram_bpc,
                                 "parameters": self.model.num_parameters(), "init_from": config.init_from})
            self._bar = bar
            speed = _Speed()
            eval_interval = config.eval_every_s
            if eval_interval is None and config.minutes is not None:
                eval_interval = EVAL_TIME_FRACTION * 60.0 * config.minutes
            last_eval = time.monotonic()
            try:
                while True:
                    if config.steps is not None and self.step >= config.steps:
                        stopped_by = "steps"
                        break
                    if deadline is not None and time.monotonic() >= deadline:
                        stopped_by = "minutes"
                        break
                    if stop.signum is not None:
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
                    if speed.bpc > self.divergence_bpc:
                        raise self._diverged(self.step, f"the training loss has risen to {speed.bpc:.3g} bits/char")
                    # Whichever comes first: eval_every steps, or the time interval (a slow machine
                    # still gets its validation points).
                    if self.step % config.eval_every == 0 or (
                            eval_interval is not None and time.monotonic() - last_eval >= eval_interval):
                        self._evaluate_and_save(session_start)
                        last_eval = time.monotonic()
                    if config.sample_every and self.step % config.sample_every == 0:
                        self._print_sample()
                    bar.update(self.step, self._postfix(speed, deadline))
            finally:
                bar.close()
            if stopped_by == "interrupt":
                self._save(LATEST_CHECKPOINT, session_start)
                self._say(f"{_signal_name(stop.signum)}: stopped after step {self.step}; "
                          f"{self.out / LATEST_CHECKPOINT} is saved (continue with --resume)")
            elif self.last_eval_step != self.step:
                self._evaluate_and_save(session_start)
        plot = self._plot()
        self._say(self._summary(stopped_by, plot, stop.signum))
        return TrainResult(self.out, self.step, stopped_by, _optional(bits, self.last_val),
                           _optional(bits, self.best_val), self.unigram_bpc, plot,
                           stop.signum if stopped_by == "interrupt" else None)

    def _diverged(self, step: int, what: str) -> TrainingDiverged:
        """The error that ends a diverged run: the step, what happened, the fix, and what is kept."""
        kept = (f"{self.out / LATEST_CHECKPOINT} holds step {self.last_eval_step}, the last good state"
                if self.last_eval_step is not None and (self.out / LATEST_CHECKPOINT).exists()
                else "no checkpoint was saved")
        lr = self.config.lr
        assert lr is not None  # resolved by TrainConfig
        return TrainingDiverged(f"training diverged at step {step}: {what}; try a smaller --lr (it is "
                                f"{lr:g}; e.g. --lr {lr / 10:g}) in a new run; {kept}")

    def _evaluate_and_save(self, session_start: float) -> None:
        """Validate, log, and write the latest checkpoint (and the best one when validation improved).

        A diverged validation loss (not finite, or far above the baseline) saves nothing and raises.
        """
        on_batch = self._bar.validation(len(self.val_batches)) if self._bar is not None else None
        try:
            val = self.model.evaluate(self.val_batches, on_batch)
        finally:
            if self._bar is not None:
                self._bar.close_validation()
        if not (math.isfinite(val) and bits(val) <= self.divergence_bpc):
            self._write_metrics({"kind": "val", "step": self.step, "loss": val, "bpc": bits(val),
                                 "elapsed_s": self._elapsed(session_start)})
            raise self._diverged(self.step, f"the validation loss is {bits(val):.3g} bits/char (the unigram baseline "
                                            f"is {self.unigram_bpc:.3f})")
        self.last_val, self.last_eval_step = val, self.step
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
        # Strict JSON: a non-finite number (a diverged loss) is written as null, never as NaN.
        clean = {key: None if isinstance(value, float) and not math.isfinite(value) else value
                 for key, value in record.items()}
        self._metrics.write(json.dumps(clean, allow_nan=False) + "\n")
        self._metrics.flush()

    def _on_signal(self, signum: int) -> None:
        self._say(f"{_signal_name(signum)}: stopping after this step and saving the latest checkpoint "
                  f"(send it again to abort without saving)")

    def _banner(self) -> str:
        c, m = self.config, self.model.config
        data = c.data if c.data is not None else "the built-in corpus (pydoc_data.topics)"
        what = "resuming at step " + str(self.step) if self.resumed else "training"
        return (f"{what}: {m.cell.upper()} {m.layers}x{m.hidden}, embedding {m.embed_dim}, "
                f"{self.model.num_parameters():,} parameters, {m.dtype}\n"
                f"  data: {data}, {c.mode} mode, vocabulary {len(self.vocab)}, "
                f"{self.train_chars:,} training / {self.val_chars:,} validation characters\n"
                f"  unigram baseline on the validation text: {self.unigram_bpc:.3f} bits/char\n"
                f"  batch {c.batch_size} x seq_len {c.seq_len}, {c.optimizer} lr {c.lr:g}, clip {c.clip:g}, "
                f"{c.threads} thread(s); run directory {self.out}")

    def _postfix(self, speed: _Speed, deadline: float | None) -> dict[str, str]:
        left = []
        if self.config.steps is not None and speed.step_time > 0:
            left.append((self.config.steps - self.step) * speed.step_time)
        if deadline is not None:
            left.append(max(0.0, deadline - time.monotonic()))
        val = "-" if self.last_val is None else f"{bits(self.last_val):.3f} bits/char"
        postfix = {"train": f"{speed.bpc:.3f} bits/char", "val": val, "speed": f"{speed.chars_per_s:,.0f} chars/s"}
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
        """Draw loss.png; a failure is a warning (once per session), never the end of training."""
        title = (f"{self.config.cell.upper()} {self.config.layers}x{self.config.hidden} on "
                 f"{Path(self.config.data).name if self.config.data else 'the built-in corpus'}")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # matplotlib's font and layout chatter is not the user's concern
                return plot_losses(self.out / "metrics.jsonl", self.out / "loss.png", title=title)
        except Exception as error:  # noqa: BLE001 -- any failure of an optional side feature
            if not self._plot_warned:
                self._plot_warned = True
                self._say(f"warning: the loss plot could not be drawn ({_brief(error)}); training goes on")
            return None

    def _summary(self, stopped_by: str, plot: Path | None, signum: int | None = None) -> str:
        if stopped_by == "steps":
            reason = f"reached {self.config.steps} steps"
        elif stopped_by == "minutes":
            reason = f"{self.config.minutes:g} minutes are up"
        elif stopped_by == "patience":
            reason = f"no better validation in {self.config.patience} evaluations (patience)"
        else:
            reason = f"stopped by {_signal_name(signum)}"
        lines = [f"done ({reason}) at step {self.step}, epoch {self.epoch}"]
        if self.best_val is not None:
            lines.append(f"  validation: {bits(self.last_val or self.best_val):.3f} bits/char (best "
                         f"{bits(self.best_val):.3f} at step {self.best_step}); unigram baseline "
                         f"{self.unigram_bpc:.3f}")
        lines.append(f"  checkpoints: {self.out / BEST_CHECKPOINT}, {self.out / LATEST_CHECKPOINT}")
        if plot:
            lines.append(f"  loss curve: {plot}")
        elif not self._plot_warned:
            lines.append("  loss curve: not drawn (matplotlib is not installed: pip install 'rnnkit[app]')")
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
    """The run's saved config, with the chosen overrides (:data:`RESUME_OVERRIDES`, and ``data``) applied.

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
        if name == "data" and new is not None and old is not None:
            changes[name] = new  # the text's new place: Trainer checks that its SHA-256 is the run's
            continue
        if name in RESUME_OVERRIDES:
            changes[name] = new
        elif new != old:
            raise ValueError(f"--resume continues the run in {config.out} exactly as it was set up, but {name} is "
                             f"{old!r} there and {new!r} here; leave {name} out (or start a new run)")
    if "threads" not in explicit:
        changes["threads"] = None  # the policy's choice for this machine now, not the count of an earlier session
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
        self._file = SafeStream(sys.stderr)
        self._validation_bar: Any = None
        self._tqdm: Any = None
        self._last_line = time.monotonic()
        self.total = total
        if enabled:
            try:
                from tqdm import tqdm
            except ImportError:
                return
            self._tqdm = tqdm
            self._bar = tqdm(total=total, initial=initial, unit=" steps", dynamic_ncols=True, file=self._file)

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
                  file=self._file, flush=True)

    def validation(self, total: int) -> Any:
        """A callback ``on_batch(done)`` showing a validation pass of ``total`` batches (None: no display)."""
        if not self.enabled:
            return None
        if self._tqdm is not None:
            self._validation_bar = self._tqdm(total=total, desc="validation", unit=" batches", leave=False,
                                              dynamic_ncols=True, file=self._file)

            def on_batch(done: int) -> None:
                self._validation_bar.update(done - self._validation_bar.n)
            return on_batch
        started = time.monotonic()
        last = [started]

        def log_batch(done: int) -> None:
            if time.monotonic() - last[0] >= _LOG_INTERVAL_S:
                last[0] = time.monotonic()
                print(f"validation {done}/{total} batches", file=self._file, flush=True)
        return log_batch

    def close_validation(self) -> None:
        if self._validation_bar is not None:
            self._validation_bar.close()
            self._validation_bar = None

    def write(self, text: str, file: TextIO | SafeStream) -> None:
        if self._bar is not None:
            self._bar.write(text, file=file)
            file.flush()
        else:
            print(text, file=file, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


class _StopSignals:
    """Turn the first SIGINT, SIGTERM or SIGHUP into a flag that the loop checks between steps (so no
    step is cut in half and the checkpoint is consistent); the handlers are then restored, so a second
    signal acts as usual (SIGINT raises KeyboardInterrupt, SIGTERM and SIGHUP end the process).

    ``on_first(signum)`` is called from the handler; it must not raise (the trainer's messages go
    through :class:`SafeStream`).  Signal handlers can only be installed from the main thread;
    elsewhere this does nothing.
    """

    def __init__(self, on_first: Any) -> None:
        self.signum: int | None = None
        self._on_first = on_first
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> _StopSignals:
        if threading.current_thread() is threading.main_thread():
            for signum in STOP_SIGNALS:
                # An ignored signal stays ignored: under nohup, SIGHUP must not stop the run.
                if signal.getsignal(signum) is not signal.SIG_IGN:
                    self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signum is None:
            self.signum = signum
        self._restore()
        self._on_first(signum)

    def _restore(self) -> None:
        for signum, previous in self._previous.items():
            # None: the previous handler was not installed from Python.  For SIGINT, Python's default
            # raises KeyboardInterrupt; for the others the system default ends the process.
            if previous is None:
                previous = signal.default_int_handler if signum == signal.SIGINT else signal.SIG_DFL
            signal.signal(signum, previous)
        self._previous = {}

    def __exit__(self, *exc: object) -> None:
        self._restore()


def _signal_name(signum: int | None) -> str:
    if signum is None:
        return "interrupted"
    name = signal.Signals(signum).name
    return "Ctrl-C (SIGINT)" if name == "SIGINT" else name


class _RunLock:
    """An exclusive OS lock on ``out/.lock`` for the duration of a session (POSIX ``flock``).

    The lock goes away with the process, however it ends (``kill -9`` included), so a crashed run
    never leaves a stale lock behind.  Where ``fcntl`` does not exist (Windows) nothing is locked.
    """

    def __init__(self, out: Path) -> None:
        self._path = out / LOCK_FILE
        self._handle: Any = None

    def __enter__(self) -> _RunLock:
        try:
            import fcntl
        except ImportError:
            return self
        handle = open(self._path, "a+", encoding="utf-8")  # noqa: SIM115 -- held until __exit__
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.seek(0)
            holder = handle.read().strip()
            handle.close()
            raise ValueError(f"another training is running in {self._path.parent}"
                             f"{f' (process {holder})' if holder else ''}; wait for it to finish, or choose "
                             f"another --out") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        self._handle = handle
        return self

    def __exit__(self, *exc: object) -> None:
        if self._handle is not None:
            self._handle.close()  # closing the file releases the lock
            self._handle = None


class SafeStream:
    """A text stream for messages whose ``write`` and ``flush`` never raise.

    * A character the stream's encoding cannot show (a cp1252 console and a sample with ``→``) is
      replaced (``?``), not an error.
    * A stream that fails -- a dead pipe (``| tee`` after a Ctrl-C, ``| head``), a closed or full
      file, ``None`` (Python's ``sys.stdout`` when file descriptor 1 was closed) -- is marked dead,
      and this and every later message is dropped.
    * A message written from a signal handler while the stream is in the middle of another write
      (a reentrant call) is dropped.

    Training must not stop because a message could not be shown.
    """

    def __init__(self, stream: TextIO | None) -> None:
        self._stream = stream
        self.dead = stream is None

    @property
    def encoding(self) -> str:
        """The wrapped stream's encoding (``utf-8`` when it has none)."""
        return getattr(self._stream, "encoding", None) or "utf-8"

    def write(self, text: str) -> int:
        """Write ``text`` (unencodable characters replaced); after a failed write, drop everything."""
        if not self.dead:
            try:
                try:
                    self._stream.write(text)  # type: ignore[union-attr]
                except UnicodeEncodeError:
                    encoding = self.encoding
                    self._stream.write(text.encode(encoding, "replace").decode(encoding, "replace"))  # type: ignore[union-attr]
            except (OSError, ValueError, AttributeError):
                # OSError: EPIPE, EIO, ENOSPC; ValueError: I/O operation on a closed file.
                self.dead = True
            except RuntimeError:
                # A signal handler's message arriving while the stream is mid-write ("reentrant
                # call"): this one message is dropped, the stream stays usable.
                pass
        return len(text)

    def flush(self) -> None:
        """Flush the wrapped stream; a failure marks the stream dead instead of raising."""
        if not self.dead:
            try:
                self._stream.flush()  # type: ignore[union-attr]
            except (OSError, ValueError, AttributeError):
                self.dead = True

    def isatty(self) -> bool:
        """Whether the wrapped stream is a live terminal (False once dead or on any error)."""
        try:
            return not self.dead and bool(self._stream.isatty())  # type: ignore[union-attr]
        except (OSError, ValueError, AttributeError):
            return False

    def fileno(self) -> int:
        """The wrapped stream's file descriptor (OSError without a stream)."""
        if self._stream is None:
            raise OSError("the stream is closed")
        return self._stream.fileno()


def check_run_directory(out: Path) -> None:
    """Refuse an ``out`` that exists and is not a new, empty or rnnkit run directory (nothing is written).

    Raises:
        ValueError: ``out`` is a file, or a directory holding anything but a run's files
            (:data:`RUN_FILES`, ``.*.tmp`` leftovers), or its ``config.json`` is not a run's config.
    """
    if not out.exists():
        return
    if not out.is_dir():
        raise ValueError(f"--out {out} is a file, not a run directory")
    try:
        names = sorted(entry.name for entry in out.iterdir())
    except OSError as error:
        raise ValueError(f"--out {out} cannot be listed ({error.strerror or error})") from None
    foreign = [name for name in names if name not in RUN_FILES and not (name.startswith(".") and name.endswith(".tmp"))]
    if not foreign and "config.json" in names:
        try:
            saved = json.loads((out / "config.json").read_text(encoding="utf-8"))
            if not isinstance(saved, dict) or not set(saved) <= {f.name for f in fields(TrainConfig)}:
                foreign = ["config.json"]
        except (OSError, ValueError):
            foreign = ["config.json"]
    if foreign:
        shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
        raise ValueError(f"--out {out} is not empty and is not an rnnkit run directory (it holds {shown}); "
                         f"choose a new or empty directory, so that no file of yours is overwritten")


def check_memory(config: TrainConfig, vocab_size: int) -> None:
    """Refuse a model whose training would not fit in the memory available, before allocating it.

    The estimate: the weights four times over (weights, gradients, two optimizer buffers) plus
    the activations one batch keeps for backward (every gate of every layer at every step, and the
    logits three times).  It is rough, but the point is the order of magnitude: ``--hidden 1000000``
    needs terabytes.  Sizes are Python integers, so nothing overflows however large they are.

    Raises:
        ValueError: the estimate exceeds the available memory; the message gives both.
    """
    model = config.model_config(vocab_size)
    itemsize = 4 if config.dtype == "float32" else 8
    assert config.seq_len is not None, "check_memory needs the resolved seq_len (lines mode: after the data)"
    rows = config.batch_size * config.seq_len
    activations = rows * (config.layers * (6 * config.hidden + 2 * model.embed_dim) + 3 * vocab_size)
    needed = itemsize * (4 * count_parameters(model) + activations)
    available = available_memory()
    if available is not None and needed > available:
        raise ValueError(f"the model ({config.cell} {config.layers}x{config.hidden}, embedding {config.embed_dim}, "
                         f"batch {config.batch_size} x {config.seq_len}) needs about {format_bytes(needed)} to train "
                         f"but {format_bytes(available)} of memory is available; choose a smaller --hidden, --layers, "
                         f"--embed-dim, --batch-size or --seq-len")


def _brief(error: BaseException) -> str:
    return " ".join(str(error).split())[:200] or type(error).__name__


def _natural(value: Any, field: str, fail: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise fail(field, f"must be an integer >= 0, got {value!r}")
    return value


def _optional_loss(value: Any, field: str, fail: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (math.isfinite(value) and value >= 0):
        raise fail(field, f"must be null or a finite loss >= 0, got {value!r}")
    return float(value)


def _optional_step(value: Any, field: str, step: int, fail: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= step:
        raise fail(field, f"must be null or a step in 0..{step}, got {value!r}")
    return value


__all__ = ["DIVERGENCE_FACTOR", "MODEL_FIELDS", "OPTIMIZERS", "RESUME_OVERRIDES", "SafeStream", "TrainConfig",
           "TrainResult", "Trainer", "TrainingDiverged", "check_memory", "check_run_directory", "train"]
