"""The ``rnnkit`` command: ``train``, ``sample`` and ``eval`` a character-level language model, ``diagnose``
gradients, ``export`` a model.  Bare ``rnnkit`` prints the usage and the commands; ``--version`` the version.

::

    rnnkit train --minutes 2.5 --out runs/demo           # the built-in corpus, default LSTM
    rnnkit train --out runs/demo --resume --steps 3000   # continue exactly where it stopped
    rnnkit sample runs/demo --prime "The " --length 300 --temperature 0.7 --seed 1
    rnnkit train --data names.txt --mode lines --out runs/names && rnnkit sample runs/names
    rnnkit eval runs/demo --data held_out.txt             # bits/char and perplexity of a text
    rnnkit diagnose runs/demo --out flow.png             # gradient flow of the trained model
    rnnkit diagnose --out gradient_flow.png              # ... of fresh RNN, LSTM and GRU
    rnnkit export runs/demo --format onnx --with-state --out demo.onnx   # also: safetensors, torch

The subcommands only parse their options into :class:`rnnkit.charlm.TrainConfig` and call
:mod:`rnnkit.charlm` (or :mod:`rnnkit.diagnostics`).  Every problem with the input -- a bad option, a
missing, empty or non-UTF-8 file, a text too short for one batch, an unusable checkpoint -- ends the
program with one line ``rnnkit: error: ...`` on stderr and exit status 2, never a traceback (running
out of memory included).  Ctrl-C (SIGINT), SIGTERM or SIGHUP during training stops after the current
step and saves the latest checkpoint; the exit status is 128 + the signal's number (130, 143, 129).
Output that cannot be written -- a closed stdout, a dead pipe, an encoding that cannot show the
text -- never produces a traceback: characters are replaced, and what cannot be written is dropped.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import fields
from typing import Any, NoReturn

from rnnkit import __version__
from rnnkit.charlm.data import BUILTIN_CORPUS, UNKNOWN_POLICIES
from rnnkit.charlm.diagnose import plot_trained_gradient_flow, trained_gradient_flow
from rnnkit.charlm.evaluate import EvalConfig, evaluate_text
from rnnkit.charlm.export import FORMATS, ExportConfig, export_model
from rnnkit.charlm.model import CELLS, DTYPES
from rnnkit.charlm.sample import DEFAULT_LENGTH, MODES, SampleConfig, sample_text
from rnnkit.charlm.train import (
    DEFAULT_LR,
    DEFAULT_SEQ_LEN,
    DEFAULT_STEPS,
    EVAL_TIME_FRACTION,
    LR_SCHEDULES,
    MAX_AUTO_SEQ_LEN,
    OPTIMIZERS,
    TrainConfig,
    train,
)
from rnnkit.diagnostics import plot_gradient_flow
from rnnkit.layers.init import INIT_HH, INIT_IH
from rnnkit.parallel import set_num_threads

EXIT_USAGE = 2         # bad input: argparse's convention
EXIT_INTERRUPTED = 130  # 128 + SIGINT, the shell's convention for Ctrl-C
_EXIT_SIGNAL_BASE = 128  # the shell's convention: a run stopped by signal N exits with 128 + N

_TRAIN_FIELDS = frozenset(f.name for f in fields(TrainConfig))
_DEFAULTS = TrainConfig()


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors: ``rnnkit: error: ...`` and exit status 2, no usage block."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"rnnkit: error: {message}\n")


def _train_parser(commands: argparse._SubParsersAction) -> None:
    d = _DEFAULTS
    p = commands.add_parser(
        "train", help="train a character-level language model",
        description="Train a character-level language model with truncated BPTT; writes config.json, "
                    "metrics.jsonl, loss.png and the best and latest checkpoints into --out.",
        # Options left out do not appear in the namespace: TrainConfig supplies their defaults, and
        # --resume / --init-from can tell the options given from the ones inherited from a checkpoint.
        argument_default=argparse.SUPPRESS,
    )
    data = p.add_argument_group("data")
    data.add_argument("--data", metavar="PATH",
                      help=f"UTF-8 text file (default: the built-in corpus, {BUILTIN_CORPUS})")
    data.add_argument("--mode", choices=MODES,
                      help=f"stream: one long text; lines: every line is its own item, e.g. a list of names "
                           f"(default {d.mode})")
    data.add_argument("--val-fraction", type=float, metavar="F",
                      help=f"part of the text held out for validation (default {d.val_fraction})")
    data.add_argument("--val-max-chars", type=int, metavar="N",
                      help=f"validate on at most N held-out characters, 0: all (default {d.val_max_chars:,})")
    model = p.add_argument_group("model")
    model.add_argument("--cell", choices=tuple(CELLS),
                       help=f"recurrent cell, lnlstm: the layer-normalised LSTM (default {d.cell})")
    model.add_argument("--hidden", type=int, metavar="N", help=f"hidden units per layer (default {d.hidden})")
    model.add_argument("--layers", type=int, metavar="N", help=f"stacked recurrent layers (default {d.layers})")
    model.add_argument("--embed-dim", type=int, metavar="N", help=f"character embedding size (default {d.embed_dim})")
    model.add_argument("--proj-size", type=int, metavar="P",
                       help="LSTM: project h to P < --hidden units (PyTorch's proj_size; default 0: none)")
    model.add_argument("--dtype", choices=DTYPES, help=f"parameter dtype (default {d.dtype})")
    opt = p.add_argument_group("training")
    opt.add_argument("--seq-len", type=int, metavar="T",
                     help=f"truncated-BPTT chunk length (default: stream {DEFAULT_SEQ_LEN}; lines: the longest "
                          f"line + 1, up to {MAX_AUTO_SEQ_LEN})")
    opt.add_argument("--batch-size", type=int, metavar="B", help=f"rows or items per step (default {d.batch_size})")
    opt.add_argument("--optimizer", choices=tuple(OPTIMIZERS), help=f"optimizer (default {d.optimizer})")
    lrs = ", ".join(f"{name} {lr:g}" for name, lr in DEFAULT_LR.items())
    opt.add_argument("--lr", type=float, metavar="LR", help=f"learning rate (default: the optimizer's own: {lrs})")
    opt.add_argument("--clip", type=float, metavar="NORM", help=f"max gradient norm, 0: off (default {d.clip})")
    opt.add_argument("--steps", type=int, metavar="N",
                     help=f"total steps to reach (default {DEFAULT_STEPS}; with only --minutes: no step limit)")
    opt.add_argument("--minutes", type=float, metavar="M", help="stop this session after M minutes")
    opt.add_argument("--seed", type=int, metavar="S", help=f"random seed (default {d.seed})")
    reg = p.add_argument_group("regularization, initialisation and schedules (off by default, except --dropout and "
                               "--weight-decay)")
    reg.add_argument("--dropout", type=float, metavar="P",
                     help=f"dropout on the embedding output, between layers and before the head (default {d.dropout}; "
                          "0: off)")
    reg.add_argument("--embed-dropout", type=float, metavar="P", help="drop whole characters' embedding rows")
    reg.add_argument("--weight-drop", type=float, metavar="P", help="DropConnect on the recurrent weights W_hh")
    reg.add_argument("--recurrent-dropout", type=float, metavar="P",
                     help="rnn/lstm/lnlstm: dropout on the h fed to W_hh, one mask per sequence (Keras's "
                          "recurrent_dropout)")
    reg.add_argument("--zoneout", type=float, metavar="P",
                     help="zoneout: each unit keeps its previous state (h, and the LSTM's c) with probability P")
    reg.add_argument("--tie-weights", action="store_true",
                     help="the output head's weight is the embedding (needs --embed-dim equal to --hidden, "
                          "or to --proj-size)")
    reg.add_argument("--init-hh", choices=INIT_HH, help=f"recurrent weights' initializer (default {d.init_hh})")
    reg.add_argument("--init-ih", choices=INIT_IH, help=f"input weights' initializer (default {d.init_ih})")
    reg.add_argument("--forget-bias", type=float, metavar="B", help="LSTM / lnlstm forget-gate bias, e.g. 1")
    reg.add_argument("--weight-decay", type=float, metavar="WD",
                     help="decoupled weight decay (default 0.1 with adamw, the default optimizer; "
                          "--optimizer adam with a weight decay becomes adamw)")
    reg.add_argument("--lr-schedule", choices=LR_SCHEDULES,
                     help=f"cosine: decay to 0 over --steps; step: times --lr-gamma every --lr-step-size steps "
                          f"(default {d.lr_schedule})")
    reg.add_argument("--warmup", type=int, metavar="N", help="linear learning-rate warm-up steps (default 0)")
    reg.add_argument("--lr-step-size", type=int, metavar="N", help=f"step schedule period (default {d.lr_step_size})")
    reg.add_argument("--lr-gamma", type=float, metavar="G", help=f"step schedule factor (default {d.lr_gamma})")
    reg.add_argument("--patience", type=int, metavar="N",
                     help="stop after N evaluations without a better validation loss (default 0: never)")
    run = p.add_argument_group("run")
    run.add_argument("--out", metavar="DIR", help=f"run directory (default {d.out})")
    run.add_argument("--resume", action="store_true",
                     help="continue the run in --out exactly from its latest checkpoint (give a larger --steps)")
    run.add_argument("--init-from", metavar="CHECKPOINT",
                     help="start from this checkpoint's (or run directory's) weights and vocabulary")
    run.add_argument("--unknown", choices=UNKNOWN_POLICIES,
                     help="with --init-from: characters of --data that its vocabulary lacks are an error, "
                          "skipped, or replaced by a space (default error)")
    run.add_argument("--eval-every", type=_steps_or_time, metavar="N|TIME",
                     help=f"validate and checkpoint every N steps (default {d.eval_every}) or, with a unit "
                          f"(30s, 2m, 1h), every TIME as well; a --minutes run also validates every "
                          f"{EVAL_TIME_FRACTION:.0%}% of its time")
    run.add_argument("--sample-every", type=int, metavar="N",
                     help=f"steps between printed samples, 0: never (default {d.sample_every})")
    run.add_argument("--no-progress", action="store_true", help="no progress bar")
    _threads_option(run, argparse.SUPPRESS)
    p.set_defaults(handler=_train)


def _sample_parser(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "sample", help="generate text from a trained model",
        description="Generate text from a checkpoint, streamed to stdout as it is drawn.",
    )
    p.add_argument("checkpoint", metavar="CHECKPOINT",
                   help="a .safetensors checkpoint, or a run directory (its best checkpoint)")
    prime = p.add_mutually_exclusive_group()
    prime.add_argument("--prime", metavar="TEXT", default="", help="text to continue (lines mode: how items start)")
    prime.add_argument("--prime-file", metavar="PATH", help="read the prime from a UTF-8 file (long primes, newlines)")
    p.add_argument("--length", type=int, metavar="N",
                   help=f"characters to generate (default {DEFAULT_LENGTH['stream']}); lines models: items "
                        f"(default {DEFAULT_LENGTH['lines']})")
    p.add_argument("--temperature", type=float, default=1.0, metavar="T",
                   help="< 1: safer, > 1: wilder, 0: always the most likely character (default 1.0)")
    p.add_argument("--top-k", type=int, metavar="K", help="sample only among the K most likely characters")
    p.add_argument("--seed", type=int, metavar="S", help="random seed: the same seed gives the same text")
    p.add_argument("--unknown", choices=UNKNOWN_POLICIES, default="error",
                   help="prime characters the vocabulary lacks: error, skip, or replace by a space "
                        "(default %(default)s)")
    _threads_option(p, None)
    p.set_defaults(handler=_sample)


def _eval_parser(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "eval", help="score a text file with a trained model: bits per character and perplexity",
        description="Score a UTF-8 text with a checkpoint: the mean cross-entropy in bits per character, "
                    "and the per-character perplexity (2 ** bits/char).",
    )
    p.add_argument("checkpoint", metavar="RUN|CHECKPOINT",
                   help="a .safetensors checkpoint, or a run directory (its best checkpoint)")
    p.add_argument("--data", required=True, metavar="FILE", help="the UTF-8 text to score")
    p.add_argument("--max-chars", type=int, default=0, metavar="N",
                   help="score at most the first N characters, 0: all (default %(default)s)")
    p.add_argument("--batch-size", type=int, default=32, metavar="B",
                   help="rows or lines per forward pass (default %(default)s)")
    p.add_argument("--unknown", choices=UNKNOWN_POLICIES, default="error",
                   help="characters the vocabulary lacks: error, skip, or replace by a space (default %(default)s)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    _threads_option(p, None)
    p.set_defaults(handler=_eval)


def _diagnose_parser(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "diagnose", help="plot how the gradient vanishes over time: in a trained run, or in fresh RNN, LSTM, GRU",
        description="Plot ||dL/dh_t|| over t (loss at the last step).  With RUN: the trained model of a run "
                    "(and a fresh network of its architecture) on windows of the run's own validation text; "
                    "without: a fresh tanh RNN, LSTM and GRU on random inputs.",
    )
    p.add_argument("run", nargs="?", metavar="RUN|CHECKPOINT",
                   help="a run directory (its best checkpoint) or a checkpoint; omit for fresh networks")
    p.add_argument("--data", metavar="PATH", help="with RUN: the run's text, if it moved (default: where it was)")
    p.add_argument("--out", default="gradient_flow.png", metavar="PNG", help="image to write (default %(default)s)")
    p.add_argument("--seq-len", type=int, default=100, metavar="T", help="time steps (default %(default)s)")
    p.add_argument("--hidden", type=int, default=64, metavar="N", help="hidden units (default %(default)s)")
    p.add_argument("--batch-size", type=int, default=16, metavar="B",
                   help="random sequences averaged over (default %(default)s)")
    p.add_argument("--seed", type=int, default=0, metavar="S", help="seed of weights and inputs (default %(default)s)")
    _threads_option(p, None)
    p.set_defaults(handler=_diagnose)


def _export_parser(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "export", help="export a trained model for deployment: ONNX, weights-only safetensors, PyTorch",
        description="Export a char-LM checkpoint without its training state: onnx (an ONNX graph for onnxruntime, "
                    "the vocabulary in its metadata), safetensors (weights + architecture; rnnkit sample reads "
                    "it), torch (a state_dict for nn.Module.load_state_dict).",
    )
    p.add_argument("checkpoint", metavar="RUN|CHECKPOINT",
                   help="a .safetensors checkpoint, or a run directory (its best checkpoint)")
    p.add_argument("--format", required=True, choices=tuple(FORMATS), help="what to write")
    p.add_argument("--out", required=True, metavar="FILE",
                   help="the file to write: .onnx, .safetensors, or .pt / .pth for torch")
    onnx = p.add_argument_group("onnx")
    onnx.add_argument("--with-state", action="store_true",
                      help="initial states as inputs (rnn.h0, rnn.c0): generation token by token")
    onnx.add_argument("--with-lengths", action="store_true", help="a lengths input (B,) for padded batches")
    onnx.add_argument("--opset", type=int, metavar="N", help="ONNX opset (default 17)")
    onnx.add_argument("--dtype", choices=DTYPES, default="float32",
                      help="exported float type (default float32: onnxruntime runs recurrent operators in float32)")
    p.set_defaults(handler=_export)


_TIME_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0}


def _steps_or_time(text: str) -> int | float:
    """``--eval-every``: a step count (``500``, an int) or a time (``30s``, ``2m``, ``1h``: seconds, a float)."""
    value = text.strip().lower()
    try:
        if value[-1:] in _TIME_UNITS:
            seconds = float(value[:-1]) * _TIME_UNITS[value[-1]]
            if not (seconds > 0 and seconds != float("inf")):
                raise ValueError
            return seconds
        steps = int(value)
        if steps < 1:
            raise ValueError
        return steps
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a positive number of steps (500) or a time (30s, 2m, 1h), got {text!r}") from None


def _threads_option(group: argparse._ActionsContainer, default: Any) -> None:
    group.add_argument("--threads", type=int, metavar="N", default=default,
                       help="BLAS threads (default: the cores not busy with other work, at most "
                            "$RNNKIT_NUM_THREADS; the number used is printed)")


def _set_threads(args: argparse.Namespace) -> int:
    """Apply ``--threads`` (None: the policy's choice) and return the number used."""
    return set_num_threads(args.threads)


def build_parser() -> argparse.ArgumentParser:
    """The ``rnnkit`` argument parser with its subcommands."""
    parser = _Parser(prog="rnnkit", description="Recurrent neural networks from first principles in NumPy.")
    parser.add_argument("--version", action="version", version=f"rnnkit {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    _train_parser(commands)
    _sample_parser(commands)
    _eval_parser(commands)
    _diagnose_parser(commands)
    _export_parser(commands)
    return parser


def _train(args: argparse.Namespace) -> int:
    given = {name: value for name, value in vars(args).items() if name in _TRAIN_FIELDS}
    if isinstance(given.get("eval_every"), float):  # a time: seconds
        given["eval_every_s"] = given.pop("eval_every")
    config = TrainConfig(**given)
    result = train(config, explicit=given.keys(), progress=not getattr(args, "no_progress", False))
    if result.stopped_by == "interrupt":
        return _EXIT_SIGNAL_BASE + result.signal if result.signal is not None else EXIT_INTERRUPTED
    return 0


def _sample(args: argparse.Namespace) -> int:
    _set_threads(args)
    config = SampleConfig(**{f.name: getattr(args, f.name) for f in fields(SampleConfig)})
    if sys.stdout is None:  # file descriptor 1 was closed before Python started
        raise OSError("standard output is closed: there is nowhere to write the text")
    pieces = sample_text(config)
    last = "\n"
    for piece in pieces:
        # Flushed piece by piece: the text appears as it is generated.
        sys.stdout.write(piece)
        sys.stdout.flush()
        last = piece[-1:] or last
    if last != "\n":
        sys.stdout.write("\n")
    return 0


def _eval(args: argparse.Namespace) -> int:
    config = EvalConfig(**{f.name: getattr(args, f.name) for f in fields(EvalConfig)})
    threads = _set_threads(args)
    bars: list[Any] = []

    def progress(total: int) -> Callable[[int], None] | None:
        if args.no_progress:
            return None
        try:
            from tqdm import tqdm
        except ImportError:
            return None
        bars.append(tqdm(total=total, desc="scoring", unit=" batches", leave=False, dynamic_ncols=True,
                         file=sys.stderr))
        return lambda done: bars[0].update(done - bars[0].n)

    try:
        result = evaluate_text(config, progress)
    finally:
        for bar in bars:
            bar.close()
    print(f"{result.checkpoint}: {result.chars:,} characters of {config.data} ({threads} thread(s))")
    print(f"bits/char  {result.bits_per_char:.4f}")
    print(f"perplexity {result.perplexity:.4f}")
    return 0


def _diagnose(args: argparse.Namespace) -> int:
    for option in ("seq_len", "hidden", "batch_size"):
        if getattr(args, option) < 1:
            raise ValueError(f"--{option.replace('_', '-')} must be a positive integer, got {getattr(args, option)}")
    _set_threads(args)
    if args.run is not None:
        flow = trained_gradient_flow(args.run, seq_len=args.seq_len, batch_size=args.batch_size, seed=args.seed,
                                     data=args.data)
        plot_trained_gradient_flow(flow, args.out)
        print(f"{flow.checkpoint}: {flow.windows} windows of {flow.seq_len} characters of {flow.text}")
        for name, norms in flow.curves.items():
            print(f"{name:40s} ||dL/dh_0|| / ||dL/dh_T-1|| = {norms[0] / norms[-1]:.3g}")
        print(f"wrote {args.out}")
        return 0
    if args.data is not None:
        raise ValueError("--data needs a RUN: fresh networks run on random inputs")
    curves = plot_gradient_flow(args.out, seq_len=args.seq_len, batch_size=args.batch_size,
                                hidden_size=args.hidden, seed=args.seed)
    for name, norms in curves.items():
        print(f"{name:28s} ||dL/dh_0|| / ||dL/dh_T-1|| = {norms[0] / norms[-1]:.3g}")
    print(f"wrote {args.out}")
    return 0


def _export(args: argparse.Namespace) -> int:
    config = ExportConfig(**{f.name: getattr(args, f.name) for f in fields(ExportConfig)})
    print(export_model(config))
    return 0


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__


def _tolerant_streams() -> None:
    """Make stdout and stderr replace what their encoding cannot show (a cp1252 console) instead of raising."""
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            try:
                reconfigure(errors="replace")
            except (ValueError, OSError):
                pass


def _silence_dead_stdout() -> None:
    """If stdout can no longer be flushed (a dead pipe, a full disk), point it at devnull, so that
    Python's own final flush neither prints 'Exception ignored' nor turns the exit status into 120."""
    stream = sys.stdout
    if stream is None:
        return
    try:
        stream.flush()
    except (OSError, ValueError):
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), stream.fileno())
        except (OSError, ValueError):
            pass


def _say_error(text: str) -> None:
    """One line on stderr; dropped if stderr is gone (closed, a dead pipe)."""
    if sys.stderr is None:
        return
    try:
        print(text, file=sys.stderr, flush=True)
    except (OSError, ValueError, AttributeError):
        pass


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``rnnkit`` with ``argv`` (default: the command line) and return the exit status."""
    _tolerant_streams()
    try:
        return _main(argv)
    except KeyboardInterrupt:  # a Ctrl-C while the error of another one is being reported
        return EXIT_INTERRUPTED
    finally:
        _silence_dead_stdout()


def _main(argv: Sequence[str] | None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # --help (status 0) or a usage error already reported in one line (2)
        return int(exit_.code or 0)
    if args.command is None:
        # Bare `rnnkit`: what there is to do, on stderr, with argparse's status for a missing argument.
        _say_error(parser.format_help().rstrip("\n"))
        return EXIT_USAGE
    try:
        return int(args.handler(args))
    except KeyboardInterrupt:
        _say_error("rnnkit: interrupted")
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader went away.  Point stdout at devnull so that Python's final flush does not complain
        # a second time.  For `rnnkit sample ... | head` that is the normal end; anything else (a
        # training run) stopped before it was done, which must not look like success.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        if args.handler is _sample:
            return 0
        _say_error("rnnkit: error: standard output was closed (broken pipe); stopped")
        return EXIT_USAGE
    except MemoryError:
        _say_error("rnnkit: error: out of memory; choose smaller sizes (--hidden, --layers, --batch-size, --seq-len, "
                   "--length) or a smaller file")
        return EXIT_USAGE
    except (ValueError, OSError, ImportError, OverflowError) as error:
        # ValueError covers DataError and CheckpointError; OSError unreadable or unwritable paths;
        # ImportError a missing optional extra (matplotlib for diagnose); OverflowError a number too
        # large for NumPy.
        _say_error(f"rnnkit: error: {_one_line(error)}")
        return EXIT_USAGE
