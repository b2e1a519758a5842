"""Issue 11's command-line changes: usage, per-optimizer learning rates, lines-mode seq_len, --unknown,
``rnnkit eval``, --eval-every with a time, progress units, --threads, the loss-plot fixes and
``rnnkit diagnose RUN``."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

import rnnkit
from rnnkit import cli
from rnnkit.charlm.data import DataError, Vocab, handle_unknown
from rnnkit.charlm.diagnose import trained_gradient_flow
from rnnkit.charlm.evaluate import EvalConfig, evaluate_text
from rnnkit.charlm.model import load_model
from rnnkit.charlm.plot import loss_figure, read_metrics
from rnnkit.charlm.train import DEFAULT_LR, MAX_AUTO_SEQ_LEN, TrainConfig

TINY = ["--hidden", "16", "--embed-dim", "8", "--batch-size", "4", "--sample-every", "0", "--no-progress"]
WORDS = ["alpha", "beta", "gamma", "delta", "the", "cat", "sat", "on", "a", "mat"]


@pytest.fixture(autouse=True)
def _restore_threads():
    """--threads sets the process's BLAS threads: put the count back after each test."""
    before = rnnkit.get_num_threads()
    yield
    rnnkit.set_num_threads(before)


@pytest.fixture
def words(tmp_path) -> Path:
    rng = np.random.default_rng(0)
    path = tmp_path / "words.txt"
    path.write_text(" ".join(WORDS[i] for i in rng.integers(0, len(WORDS), 300)) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def trained(tmp_path, words) -> Path:
    out = tmp_path / "run"
    assert cli.main(["train", "--data", str(words), "--steps", "6", "--seq-len", "8", "--eval-every", "3",
                     "--out", str(out), *TINY]) == 0
    return out


def expect_error(capsys, argv: list[str], *fragments: str) -> None:
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("rnnkit: error: ") and err.endswith("\n") and err.count("\n") == 1, err
    for fragment in fragments:
        assert fragment in err, err


def config_of(run: Path) -> dict:
    return json.loads((run / "config.json").read_text(encoding="utf-8"))


# Per-optimizer learning rates
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("optimizer", "lr"), [("adam", 2e-3), ("adamw", 2e-3), ("sgd", 1.0), ("rmsprop", 1e-3),
                                               ("adagrad", 1e-2)])
def test_each_optimizer_has_its_own_default_lr(optimizer, lr) -> None:
    assert DEFAULT_LR[optimizer] == lr
    assert TrainConfig(optimizer=optimizer).lr == lr
    assert TrainConfig(optimizer=optimizer, lr=0.5).lr == 0.5
    # Adam with weight decay becomes AdamW, with AdamW's rate.
    assert TrainConfig(optimizer="adam", weight_decay=0.01).lr == DEFAULT_LR["adamw"]


def test_lr_defaults_in_help_and_config(tmp_path, words, capsys) -> None:
    assert cli.main(["train", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "adam 0.002" in text and "sgd 1" in text and "rmsprop 0.001" in text and "adagrad 0.01" in text
    out = tmp_path / "sgd"
    assert cli.main(["train", "--data", str(words), "--steps", "2", "--optimizer", "sgd", "--seq-len", "8",
                     "--out", str(out), *TINY]) == 0
    assert config_of(out)["lr"] == 1.0 and "sgd lr 1," in capsys.readouterr().out
    # A resumed run keeps its rate; --lr overrides the default of a new run.
    assert cli.main(["train", "--out", str(out), "--resume", "--steps", "3", "--no-progress"]) == 0
    assert config_of(out)["lr"] == 1.0
    out = tmp_path / "sgd-lr"
    assert cli.main(["train", "--data", str(words), "--steps", "2", "--optimizer", "sgd", "--lr", "0.25",
                     "--seq-len", "8", "--out", str(out), *TINY]) == 0
    assert config_of(out)["lr"] == 0.25
    metrics = read_metrics(out / "metrics.jsonl")
    assert [r["lr"] for r in metrics if r["kind"] == "train"] == [0.25, 0.25]


# Lines mode sizes seq_len
# --------------------------------------------------------------------------------------------------


def write_names(path: Path, longest: int) -> Path:
    rng = np.random.default_rng(1)
    names = ["".join(rng.choice(list("abcdefgh"), size=rng.integers(3, 9))) for _ in range(60)]
    names.append("x" * longest)
    path.write_text("\n".join(names) + "\n", encoding="utf-8")
    return path


def test_lines_mode_sizes_seq_len_itself(tmp_path, capsys) -> None:
    data = write_names(tmp_path / "names.txt", 17)
    out = tmp_path / "names"
    assert cli.main(["train", "--data", str(data), "--mode", "lines", "--steps", "3", "--out", str(out), *TINY]) == 0
    assert config_of(out)["seq_len"] == 18  # the longest line, 17 characters, and its newline
    assert load_model(out).document["max_item_length"] == 18
    assert cli.main(["train", "--out", str(out), "--resume", "--steps", "4", "--no-progress"]) == 0
    assert config_of(out)["seq_len"] == 18
    capsys.readouterr()
    # An explicit --seq-len still wins, and one too small is still an error that gives the size needed.
    expect_error(capsys, ["train", "--data", str(data), "--mode", "lines", "--seq-len", "10", "--out",
                          str(tmp_path / "short"), *TINY], "raise --seq-len to 18")
    # Stream mode keeps its fixed default.
    assert TrainConfig().seq_len == 64 and TrainConfig(mode="lines").seq_len is None


def test_lines_mode_caps_the_automatic_seq_len(tmp_path, capsys) -> None:
    data = write_names(tmp_path / "long.txt", MAX_AUTO_SEQ_LEN)
    expect_error(capsys, ["train", "--data", str(data), "--mode", "lines", "--out", str(tmp_path / "r"), *TINY],
                 f"the longest line has {MAX_AUTO_SEQ_LEN} characters", f"--seq-len {MAX_AUTO_SEQ_LEN + 1}")
    assert not (tmp_path / "r").exists()


# --unknown
# --------------------------------------------------------------------------------------------------


def test_handle_unknown_policies() -> None:
    vocab = Vocab("abc ")
    assert handle_unknown("abc", vocab, "error", "x") == "abc"
    assert handle_unknown("a\u00e9b\u00fc c", vocab, "skip", "x") == "ab c"
    assert handle_unknown("a\u00e9b\u00fc c", vocab, "replace", "x") == "a b  c"
    with pytest.raises(DataError, match=r"the prime has 2 character\(s\) that the model's vocabulary lacks: "
                                        r"'é', 'ü' \(--unknown skip or replace"):
        handle_unknown("a\u00e9b\u00fc", vocab, "error", "the prime")
    assert handle_unknown("a\u00e9", Vocab("ab\n"), "replace", "x") == "a\n"
    with pytest.raises(DataError, match="needs ' ' or"):
        handle_unknown("a\u00e9", Vocab("ab"), "replace", "x")


def test_unknown_for_init_from(trained, tmp_path, capsys) -> None:
    foreign = tmp_path / "foreign.txt"
    text = "the cat sat on a mat, the zebra \u00fcber alpha " * 30
    foreign.write_text(text, encoding="utf-8")
    base = ["train", "--data", str(foreign), "--init-from", str(trained), "--steps", "2", "--seq-len", "8",
            "--batch-size", "4", "--sample-every", "0", "--no-progress"]
    expect_error(capsys, [*base, "--out", str(tmp_path / "e")], "4 character(s)", "',', 'r', 'z', 'ü'")
    counts = {}
    for policy in ("skip", "replace"):
        out = tmp_path / policy
        assert cli.main([*base, "--out", str(out), "--unknown", policy]) == 0
        run = next(r for r in read_metrics(out / "metrics.jsonl") if r["kind"] == "run")
        counts[policy] = run["train_chars"] + run["val_chars"]
        assert config_of(out)["unknown"] == policy
    missing = sum(text.count(c) for c in ",rz\u00fc")
    assert counts["replace"] == len(text) and counts["skip"] == len(text) - missing
    # The fine-tuned run resumes with its own policy.
    assert cli.main(["train", "--out", str(tmp_path / "skip"), "--resume", "--steps", "3", "--no-progress"]) == 0


def test_unknown_for_primes(trained, capsys) -> None:
    args = ["sample", str(trained), "--prime", "the zebra", "--length", "5", "--seed", "1"]
    expect_error(capsys, args, "not in the model's vocabulary", "'r', 'z'")
    assert cli.main([*args, "--unknown", "skip"]) == 0
    assert capsys.readouterr().out.startswith("the eba")
    assert cli.main([*args, "--unknown", "replace"]) == 0
    assert capsys.readouterr().out.startswith("the  eb a")
    expect_error(capsys, [*args, "--unknown", "drop"], "invalid choice: 'drop'")


# rnnkit eval
# --------------------------------------------------------------------------------------------------


def test_eval_scores_a_file_exactly(trained, words, capsys) -> None:
    # One row: the stream is read as one long sequence, so the score is that of a single forward pass.
    result = evaluate_text(EvalConfig(str(trained), str(words), batch_size=1))
    loaded = load_model(trained)
    ids = loaded.vocab.encode(words.read_text(encoding="utf-8"))
    logits, _, _ = loaded.model.net.forward(ids[None, :-1], keep_cache=False)
    z = logits[0].astype(np.float64)
    log_probs = z - z.max(axis=1, keepdims=True)
    log_probs -= np.log(np.exp(log_probs).sum(axis=1, keepdims=True))
    expected = -log_probs[np.arange(len(ids) - 1), ids[1:]].mean() / math.log(2)
    assert result.chars == len(ids) - 1
    assert result.bits_per_char == pytest.approx(expected, rel=1e-5)
    assert result.perplexity == pytest.approx(2.0 ** expected, rel=1e-5)

    assert cli.main(["eval", str(trained), "--data", str(words), "--batch-size", "1"]) == 0
    out = capsys.readouterr().out
    assert f"{len(ids) - 1:,} characters" in out
    assert f"bits/char  {result.bits_per_char:.4f}" in out and f"perplexity {result.perplexity:.4f}" in out
    # --max-chars: the first N characters only.
    assert evaluate_text(EvalConfig(str(trained), str(words), max_chars=101, batch_size=1)).chars == 100


def test_eval_a_lines_model(tmp_path) -> None:
    data = write_names(tmp_path / "names.txt", 12)
    out = tmp_path / "names"
    assert cli.main(["train", "--data", str(data), "--mode", "lines", "--steps", "2", "--out", str(out), *TINY]) == 0
    lines = data.read_text(encoding="utf-8").split()
    result = evaluate_text(EvalConfig(str(out), str(data), batch_size=7))
    # Every character of every line is predicted, and the newline that ends it.
    assert result.chars == sum(len(line) + 1 for line in lines)
    # Batching does not change the score: each line is read from the zero state on its own.
    one = evaluate_text(EvalConfig(str(out), str(data), batch_size=1))
    assert one.bits_per_char == pytest.approx(result.bits_per_char, rel=1e-5)
    assert math.isfinite(result.bits_per_char) and result.perplexity == pytest.approx(2**result.bits_per_char)


def test_eval_progress_bar_and_errors(trained, words, tmp_path, capsys) -> None:
    assert cli.main(["eval", str(trained / "latest.safetensors"), "--data", str(words)]) == 0
    captured = capsys.readouterr()
    assert "scoring" in captured.err and "bits/char" in captured.out
    expect_error(capsys, ["eval", str(trained), "--data", str(tmp_path / "none.txt")], "does not exist")
    expect_error(capsys, ["eval", str(tmp_path / "norun"), "--data", str(words)], "no such checkpoint")
    expect_error(capsys, ["eval", str(trained), "--data", str(words), "--max-chars", "-1"], "max_chars")
    zebra = tmp_path / "zebra.txt"
    zebra.write_text("the zebra sat on a mat\n", encoding="utf-8")
    expect_error(capsys, ["eval", str(trained), "--data", str(zebra)], "'r', 'z'", "--unknown")
    assert cli.main(["eval", str(trained), "--data", str(zebra), "--unknown", "skip", "--no-progress"]) == 0
    assert "20 characters" in capsys.readouterr().out  # 23 characters, 2 skipped, the first one not predicted
    expect_error(capsys, ["eval", str(trained)], "the following arguments are required: --data")


# --eval-every TIME, progress units, --threads
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("value", "steps", "seconds"),
                         [("7", 7, None), ("30s", None, 30.0), ("2m", None, 120.0), ("1.5h", None, 5400.0)])
def test_eval_every_steps_or_time(tmp_path, words, value, steps, seconds) -> None:
    out = tmp_path / "r"
    assert cli.main(["train", "--data", str(words), "--steps", "1", "--seq-len", "8", "--eval-every", value,
                     "--out", str(out), *TINY]) == 0
    config = config_of(out)
    assert config["eval_every_s"] == seconds and config["eval_every"] == (steps or 200)


@pytest.mark.parametrize("value", ["0", "-3s", "5x", "s", "infm"])
def test_bad_eval_every(tmp_path, words, capsys, value) -> None:
    expect_error(capsys, ["train", "--data", str(words), f"--eval-every={value}", "--out", str(tmp_path / "r")],
                 "--eval-every", "30s")


def test_time_triggers_validation(tmp_path, words) -> None:
    # A zero-length interval: every step is due, although no step count is.
    out = tmp_path / "r"
    assert cli.main(["train", "--data", str(words), "--steps", "4", "--seq-len", "8", "--eval-every", "0.000001s",
                     "--out", str(out), *TINY]) == 0
    assert [r["step"] for r in read_metrics(out / "metrics.jsonl") if r["kind"] == "val"] == [1, 2, 3, 4]


class FakeClock:
    """A monotonic clock that advances a fixed amount at every reading: time-driven logic, deterministically."""

    def __init__(self, tick: float) -> None:
        self.now, self.tick = 1000.0, tick

    def monotonic(self) -> float:
        self.now += self.tick
        return self.now


def test_a_minutes_run_validates_every_tenth_of_its_time(tmp_path, words, monkeypatch) -> None:
    import rnnkit.charlm.train as train_module

    monkeypatch.setattr(train_module, "time", FakeClock(0.01))
    out = tmp_path / "r"
    # 0.01 minutes = 0.6 s of fake time; a step count that never comes due.
    assert cli.main(["train", "--data", str(words), "--minutes", "0.01", "--seq-len", "8", "--eval-every",
                     "1000000", "--out", str(out), *TINY]) == 0
    records = read_metrics(out / "metrics.jsonl")
    val = [r for r in records if r["kind"] == "val"]
    steps = max(r["step"] for r in records)
    # Every 0.06 s of fake time (10 % of the budget) a validation, not just the final one; the clock also
    # ticks inside validation and saving, so there are fewer than ten, but never fewer than three.
    assert 3 <= len(val) <= 10 and val[-1]["step"] == steps and steps > len(val)


def test_progress_bar_has_units(tmp_path, words, capsys) -> None:
    args = ["train", "--data", str(words), "--steps", "3", "--seq-len", "8", "--out", str(tmp_path / "r"),
            "--hidden", "16", "--embed-dim", "8", "--batch-size", "4", "--sample-every", "0"]
    assert cli.main(args) == 0
    err = capsys.readouterr().err
    assert "train=" in err and "bits/char" in err and "chars/s" in err, err


def test_threads(tmp_path, words, trained, capsys) -> None:
    out = tmp_path / "t"
    assert cli.main(["train", "--data", str(words), "--steps", "1", "--seq-len", "8", "--threads", "1",
                     "--out", str(out), *TINY]) == 0
    assert config_of(out)["threads"] == 1 and "1 thread(s)" in capsys.readouterr().out
    assert rnnkit.get_num_threads() == 1
    # Without --threads: the policy's choice, recorded; a resume may use another count.
    assert isinstance(config_of(trained)["threads"], int) and config_of(trained)["threads"] >= 1
    assert cli.main(["train", "--out", str(out), "--resume", "--steps", "2", "--threads", "1", "--no-progress"]) == 0
    assert cli.main(["sample", str(trained), "--length", "3", "--threads", "1"]) == 0
    assert cli.main(["eval", str(trained), "--data", str(words), "--threads", "1", "--no-progress"]) == 0
    assert "1 thread(s)" in capsys.readouterr().out
    expect_error(capsys, ["sample", str(trained), "--threads", "0"], "threads must be a positive integer")
    expect_error(capsys, ["train", "--data", str(words), "--threads", "0", "--out", str(tmp_path / "z")],
                 "threads must be a positive integer")


# The loss plot
# --------------------------------------------------------------------------------------------------


def legend_labels(fig) -> list[str]:
    return [text.get_text() for text in fig.axes[0].get_legend().get_texts()]


def records(bpcs: list[float], unigram: float, val: list[tuple[int, float]] = (), **run) -> list[dict]:
    return ([{"kind": "run", "step": 0, "resumed": False, "unigram_bpc": unigram, **run}]
            + [{"kind": "train", "step": i + 1, "bpc": b} for i, b in enumerate(bpcs)]
            + [{"kind": "val", "step": s, "bpc": b} for s, b in val])


def test_plot_baseline_only_when_on_the_chart() -> None:
    pytest.importorskip("matplotlib")
    long_run = [6.0] * 5 + [2.0] * 200
    fig = loss_figure(records(long_run, 4.0, [(100, 2.1), (200, 2.0)]))
    assert any("unigram baseline (4.000)" in label for label in legend_labels(fig))
    low, high = fig.axes[0].get_ylim()
    assert high == pytest.approx(1.15 * 4.0)  # the first steps are capped away
    # A baseline far below every value is off the chart: no line, no legend entry.
    fig = loss_figure(records([6.0] * 50, 1.0, [(50, 5.9)]))
    assert not any("unigram" in label for label in legend_labels(fig))
    assert fig.axes[0].get_ylim()[0] > 1.0


def test_plot_skips_null_losses() -> None:
    pytest.importorskip("matplotlib")
    logged = records([5.0, 4.0], 4.5, [(2, 4.2)]) + [{"kind": "val", "step": 3, "loss": None, "bpc": None}]
    line = next(line for line in loss_figure(logged).axes[0].get_lines() if line.get_label().startswith("valid"))
    assert list(line.get_xdata()) == [2.0]


def test_plot_short_run_is_not_clipped() -> None:
    pytest.importorskip("matplotlib")
    short = [6.5, 6.0, 5.5, 5.0, 4.6]  # most of a short run lies above 1.15 x the baseline
    fig = loss_figure(records(short, 3.5, [(5, 4.5)]))
    assert fig.axes[0].get_ylim()[1] >= 6.5


def test_plot_marks_a_fine_tuned_start(trained, words, tmp_path) -> None:
    pytest.importorskip("matplotlib")
    fig = loss_figure(records([3.0, 2.9], 4.0, init_from=str(trained)))
    assert f"start: fine-tuned from {trained.name}" in legend_labels(fig)
    assert not any("fine-tuned" in label for label in legend_labels(loss_figure(records([3.0, 2.9], 4.0))))
    # A fine-tuning run records where it came from, so its loss.png gets the marker.
    out = tmp_path / "tuned"
    assert cli.main(["train", "--data", str(words), "--init-from", str(trained), "--steps", "2", "--seq-len", "8",
                     "--batch-size", "4", "--sample-every", "0", "--no-progress", "--out", str(out)]) == 0
    run = read_metrics(out / "metrics.jsonl")[0]
    assert run["kind"] == "run" and run["init_from"] == str(trained.absolute())


# rnnkit diagnose RUN
# --------------------------------------------------------------------------------------------------


def test_diagnose_a_trained_run(trained, words, tmp_path, capsys) -> None:
    png = tmp_path / "flow.png"
    assert cli.main(["diagnose", str(trained), "--out", str(png), "--seq-len", "10", "--batch-size", "3"]) == 0
    assert png.read_bytes()[:4] == b"\x89PNG"
    out = capsys.readouterr().out
    assert "3 windows of 10 characters" in out and "trained (best.safetensors)" in out and "fresh network" in out
    flow = trained_gradient_flow(trained, seq_len=10, batch_size=3)
    assert set(flow.curves) == {"trained (best.safetensors)", "fresh network, same architecture"}
    for norms in flow.curves.values():
        assert norms.shape == (10,) and np.isfinite(norms).all() and (norms > 0).all()
    # The trained and the fresh weights see the same windows but are different networks.
    trained_curve, fresh_curve = flow.curves.values()
    assert not np.allclose(trained_curve, fresh_curve)
    # The run's text moved: --data gives its new place; without it, the error says so.
    moved = tmp_path / "moved.txt"
    words.rename(moved)
    expect_error(capsys, ["diagnose", str(trained), "--out", str(png)], "does not exist any more", "--data")
    assert cli.main(["diagnose", str(trained), "--out", str(png), "--seq-len", "5", "--data", str(moved)]) == 0
    expect_error(capsys, ["diagnose", "--out", str(png), "--data", str(moved)], "--data needs a RUN")
    expect_error(capsys, ["diagnose", str(trained), "--out", str(png), "--seq-len", "100000", "--data", str(moved)],
                 "fewer than one window")


def test_diagnose_a_lines_run(tmp_path, capsys) -> None:
    data = write_names(tmp_path / "names.txt", 12)
    out = tmp_path / "names"
    assert cli.main(["train", "--data", str(data), "--mode", "lines", "--steps", "2", "--out", str(out), *TINY]) == 0
    flow = trained_gradient_flow(out, seq_len=50, batch_size=4)
    assert flow.windows == 4 and 1 <= flow.seq_len <= 13  # at most the longest validation line + its start symbol


# The shared training step
# --------------------------------------------------------------------------------------------------


def test_train_step_refuses_a_non_finite_gradient_before_the_update() -> None:
    from rnnkit import SGD, Linear, Sequential
    from rnnkit.fit import train_step

    model = Sequential([("head", Linear(2, 2, dtype=np.float64, seed=0))])
    before = {name: value.copy() for name, value in model.params.items()}

    def huge_gradient(out: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
        return 1.0, np.full_like(out, 1e300)  # finite, but its squared norm overflows

    def infinite_gradient(out: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
        return 1.0, np.full_like(out, np.inf)

    x, y = np.ones((3, 2)), np.zeros((3, 2))
    with pytest.raises(FloatingPointError, match="the loss is 1.0 and the gradient norm inf"), \
            np.errstate(over="ignore"):
        train_step(model, huge_gradient, SGD(lr=0.1), x, y, clip=1.0)
    with pytest.raises(FloatingPointError, match="the gradient overflowed in backward"):
        train_step(model, infinite_gradient, SGD(lr=0.1), x, y)
    for name, value in model.params.items():
        np.testing.assert_array_equal(value, before[name])


def test_char_lm_divergence_through_the_shared_step(tmp_path, words) -> None:
    from rnnkit.charlm.train import TrainingDiverged, train

    config = TrainConfig(data=str(words), steps=5, hidden=16, embed_dim=8, batch_size=4, seq_len=8,
                         sample_every=0, optimizer="sgd", lr=1e30, clip=0.0, out=str(tmp_path / "r"))
    with pytest.raises(TrainingDiverged, match=r"training diverged at step \d+: .*try a smaller --lr"), \
            np.errstate(all="ignore"):
        train(config, progress=False, log=open(tmp_path / "log.txt", "w", encoding="utf-8"))
