"""rnnkit.charlm.train: the run directory, exact resume (after steps, minutes and Ctrl-C), lines mode, init_from."""

from __future__ import annotations

import io
import json
import shutil
import signal
import sys
from pathlib import Path

import numpy as np
import pytest

from rnnkit.charlm.data import DataError
from rnnkit.charlm.model import load_model
from rnnkit.charlm.train import DEFAULT_STEPS, TrainConfig, Trainer, train
from rnnkit.io.checkpoint import CheckpointError

WORDS = ["alpha", "beta", "gamma", "delta", "the", "cat", "sat", "on", "a", "mat", "run", "fast"]


def write_words(path: Path, n_words: int, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    path.write_text(" ".join(WORDS[i] for i in rng.integers(0, len(WORDS), n_words)) + "\n", encoding="utf-8")
    return path


def write_names(path: Path, n: int = 40, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    syllables = ["ka", "ro", "mi", "sa", "lu", "ten", "dor", "vi"]
    names = ["".join(syllables[i] for i in rng.integers(0, len(syllables), rng.integers(1, 4))).title()
             for _ in range(n)]
    path.write_text("\n".join(names) + "\n", encoding="utf-8")
    return path


def config(tmp_path: Path, data: Path, out: str = "run", **changes) -> TrainConfig:
    settings = dict(data=str(data), hidden=16, embed_dim=8, seq_len=8, batch_size=4, steps=20, eval_every=5,
                    sample_every=0, out=str(tmp_path / out))
    settings.update(changes)
    return TrainConfig(**settings)


def run(cfg: TrainConfig, explicit=None):
    return train(cfg, explicit, log=io.StringIO(), progress=False)


def records(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def trajectory(run_dir: Path) -> tuple[list, list]:
    """What must match bit for bit: every step's loss and gradient norm, and the validation losses."""
    rows = records(run_dir)
    steps = [(r["step"], r["epoch"], r["loss"], r["grad_norm"]) for r in rows if r["kind"] == "train"]
    vals = {r["step"]: r["loss"] for r in rows if r["kind"] == "val"}
    return steps, vals


def assert_same_run(resumed: Path, straight: Path) -> None:
    steps_a, vals_a = trajectory(resumed)
    steps_b, vals_b = trajectory(straight)
    assert steps_a == steps_b
    common = vals_a.keys() & vals_b.keys()
    assert set(vals_b) <= common  # the resumed run evaluated at every step the straight one did (and maybe more)
    assert all(vals_a[s] == vals_b[s] for s in common)


@pytest.mark.parametrize("mode", ["stream", "lines"])
def test_resume_equals_an_uninterrupted_run(tmp_path, mode) -> None:
    if mode == "stream":
        # ~600 characters: one epoch is 17 batches, so 20 steps cross an epoch boundary (state reset).
        data, extra = write_words(tmp_path / "words.txt", 110), {}
    else:
        data, extra = write_names(tmp_path / "names.txt", 40), {"mode": "lines", "seq_len": 12}
    straight = run(config(tmp_path, data, "straight", **extra))
    assert straight.step == 20 and straight.stopped_by == "steps"
    first = run(config(tmp_path, data, "split", steps=10, **extra))
    assert first.step == 10
    # On resume only the step target is given; everything else comes from the run.
    resumed = run(config(tmp_path, data, "split", steps=20, resume=True), explicit={"steps", "resume", "out"})
    assert resumed.step == 20
    assert_same_run(tmp_path / "split", tmp_path / "straight")
    assert max(r["epoch"] for r in records(tmp_path / "straight") if r["kind"] == "train") >= 1
    latest_a = load_model(tmp_path / "split" / "latest.safetensors").model.params
    latest_b = load_model(tmp_path / "straight" / "latest.safetensors").model.params
    assert all(np.array_equal(latest_a[k], latest_b[k]) for k in latest_b)


def test_ctrl_c_saves_latest_and_resume_is_exact(tmp_path, monkeypatch) -> None:
    data = write_words(tmp_path / "words.txt", 200)
    run(config(tmp_path, data, "straight"))

    step = Trainer.train_step

    def step_then_ctrl_c(self):
        result = step(self)
        if self.step == 7:
            signal.raise_signal(signal.SIGINT)  # as if the user pressed Ctrl-C during step 7
        return result

    monkeypatch.setattr(Trainer, "train_step", step_then_ctrl_c)
    interrupted = run(config(tmp_path, data, "split"))
    assert interrupted.stopped_by == "interrupt" and interrupted.step == 7
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the handler is put back
    monkeypatch.undo()
    progress = load_model(tmp_path / "split" / "latest.safetensors").document["progress"]
    assert progress["step"] == 7
    run(config(tmp_path, data, "split", resume=True), explicit={"resume", "out"})
    assert_same_run(tmp_path / "split", tmp_path / "straight")


def test_minutes_stop_and_resume_by_step(tmp_path) -> None:
    data = write_words(tmp_path / "words.txt", 200)
    run(config(tmp_path, data, "straight"))
    timed = run(config(tmp_path, data, "split", steps=None, minutes=0.0002))  # ~12 ms
    assert timed.stopped_by == "minutes" and timed.step < 20
    run(config(tmp_path, data, "split", steps=20, resume=True), explicit={"steps", "resume", "out"})
    assert_same_run(tmp_path / "split", tmp_path / "straight")


def test_run_directory_artifacts(tmp_path) -> None:
    data = write_words(tmp_path / "words.txt", 200)
    result = run(config(tmp_path, data, steps=12, eval_every=5, sample_every=6))
    out = tmp_path / "run"
    assert sorted(p.name for p in out.iterdir()) == [
        ".lock", "best.safetensors", "config.json", "latest.safetensors", "loss.png", "metrics.jsonl"]
    saved = json.loads((out / "config.json").read_text())
    assert TrainConfig(**saved).hidden == 16 and saved["data"] == str(data.absolute())
    rows = records(out)
    assert rows[0]["kind"] == "run" and rows[0]["unigram_bpc"] == pytest.approx(result.unigram_bpc)
    assert [r["step"] for r in rows if r["kind"] == "train"] == list(range(1, 13))
    assert [r["step"] for r in rows if r["kind"] == "val"] == [5, 10, 12]  # and a final evaluation
    val = [r for r in rows if r["kind"] == "val"]
    assert result.val_bpc == pytest.approx(val[-1]["bpc"]) and result.best_val_bpc == min(r["bpc"] for r in val)
    assert all(r["bpc"] == pytest.approx(r["loss"] / np.log(2)) for r in rows if "bpc" in r and "loss" in r)
    assert (out / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    best = load_model(out).document["progress"]
    assert best["best_val_loss"] == min(r["loss"] for r in val)


def test_a_tiny_model_learns_a_repetitive_text(tmp_path) -> None:
    data = tmp_path / "abc.txt"
    data.write_text("abcdefgh" * 200, encoding="utf-8")
    result = run(config(tmp_path, data, steps=60, lr=1e-2, eval_every=30))
    assert result.unigram_bpc == pytest.approx(3.0, abs=0.01)   # 8 equally frequent characters
    assert result.val_bpc < 0.5                                  # the next character is determined


def test_refuses_to_overwrite_or_resume_what_is_not_there(tmp_path) -> None:
    data = write_words(tmp_path / "words.txt", 200)
    with pytest.raises(CheckpointError, match="no checkpoint to resume from"):
        run(config(tmp_path, data, resume=True))
    run(config(tmp_path, data, steps=5))
    with pytest.raises(ValueError, match="already holds a run"):
        run(config(tmp_path, data, steps=5))
    with pytest.raises(ValueError, match="hidden is 16 there and 32 here"):
        run(config(tmp_path, data, resume=True, hidden=32), explicit={"resume", "hidden", "out"})
    write_words(data, 200, seed=1)
    with pytest.raises(DataError, match="is not the text the run .* was trained on"):
        run(config(tmp_path, data, resume=True, steps=10), explicit={"resume", "steps", "out"})


def test_init_from_fine_tunes_and_lists_unknown_characters(tmp_path) -> None:
    data = write_words(tmp_path / "words.txt", 200)
    run(config(tmp_path, data, "base", steps=5, hidden=12))
    subset = tmp_path / "subset.txt"
    subset.write_text("the cat sat on a mat\n" * 40, encoding="utf-8")
    tuned = run(config(tmp_path, subset, "tuned", steps=5, init_from=str(tmp_path / "base")),
                explicit={"data", "steps", "out", "init_from"})
    assert tuned.step == 5
    base, loaded = load_model(tmp_path / "base"), load_model(tmp_path / "tuned")
    assert loaded.vocab == base.vocab and loaded.model.config == base.model.config  # hidden 12, inherited
    # The fine-tuned run resumes like any other: its own weights are read, so the run it started from
    # is not needed any more (a copy keeps the rest of this test going).
    shutil.copytree(tmp_path / "base", tmp_path / "base-copy")
    shutil.rmtree(tmp_path / "base")
    resumed = run(config(tmp_path, subset, "tuned", steps=7, resume=True, hidden=12))
    assert resumed.step == 7
    shutil.move(tmp_path / "base-copy", tmp_path / "base")
    with pytest.raises(ValueError, match="exclude each other"):
        run(config(tmp_path, subset, "tuned", resume=True, init_from=str(tmp_path / "base")))
    foreign = tmp_path / "foreign.txt"
    foreign.write_text("the cat sat on a mat, über café\n" * 40, encoding="utf-8")
    with pytest.raises(DataError, match=r"3 character\(s\) that the vocabulary of .* lacks: ',', 'é', 'ü'"):
        run(config(tmp_path, foreign, "x", init_from=str(tmp_path / "base")), explicit={"data", "init_from", "out"})
    with pytest.raises(ValueError, match="lstm model with hidden 12, not 16"):
        run(config(tmp_path, subset, "y", init_from=str(tmp_path / "base")), explicit={"hidden", "init_from"})


def test_lines_mode_trains_and_checks_item_length(tmp_path) -> None:
    data = write_names(tmp_path / "names.txt", 40)
    result = run(config(tmp_path, data, mode="lines", seq_len=12, steps=8))
    assert result.step == 8
    loaded = load_model(tmp_path / "run")
    assert loaded.document["mode"] == "lines" and loaded.document["max_item_length"] == 12
    with pytest.raises(DataError, match="longer than seq_len 4 allows"):
        run(config(tmp_path, data, "short", mode="lines", seq_len=4))


@pytest.mark.parametrize(
    ("changes", "message"),
    [({"seq_len": 0}, "seq_len must be a positive integer"), ({"hidden": -1}, "hidden must be"),
     ({"batch_size": 0}, "batch_size"), ({"lr": 0.0}, "lr must be"), ({"clip": -1.0}, "clip must be"),
     ({"val_fraction": 0.7}, "val_fraction"), ({"cell": "transformer"}, "cell must be one of"),
     ({"steps": 0}, "steps must be"), ({"minutes": -1.0}, "minutes must be")],
)
def test_train_config_validation(changes, message) -> None:
    with pytest.raises(ValueError, match=message):
        TrainConfig(**changes)


def test_resume_drops_metrics_logged_after_the_checkpoint(tmp_path) -> None:
    data = write_words(tmp_path / "words.txt", 200)
    run(config(tmp_path, data, "straight"))
    run(config(tmp_path, data, "split", steps=10))
    # A crash after step 10's checkpoint: records of steps it never saved, and a line torn mid-write.
    with (tmp_path / "split" / "metrics.jsonl").open("a", encoding="utf-8") as metrics:
        metrics.write(json.dumps({"kind": "train", "step": 11, "epoch": 0, "loss": 9.0, "grad_norm": 1.0}) + "\n")
        metrics.write('{"kind": "train", "st')
    run(config(tmp_path, data, "split", steps=20, resume=True), explicit={"steps", "resume", "out"})
    assert_same_run(tmp_path / "split", tmp_path / "straight")


def test_lines_mode_vocabulary_always_has_the_terminator(tmp_path) -> None:
    one_line = tmp_path / "one.txt"
    one_line.write_text("abcabcabcabc", encoding="utf-8")  # no newline anywhere
    with pytest.raises(DataError, match="at least 2 non-empty lines"):
        run(config(tmp_path, one_line, mode="lines", seq_len=16))
    two = tmp_path / "two.txt"
    two.write_text("abc\nbca", encoding="utf-8")
    run(config(tmp_path, two, mode="lines", batch_size=1, steps=2))
    assert load_model(tmp_path / "run").vocab.chars == ("\n", "a", "b", "c")


def test_without_the_app_extra_progress_is_logged_and_the_plot_skipped(tmp_path, monkeypatch, capsys) -> None:
    """tqdm and matplotlib are optional: plain progress lines on stderr, and a note instead of loss.png."""
    for module in ("tqdm", "matplotlib", "matplotlib.figure"):
        monkeypatch.setitem(sys.modules, module, None)  # makes `import module` raise ImportError
    monkeypatch.setattr("rnnkit.charlm.train._LOG_INTERVAL_S", 0.0)
    data = write_words(tmp_path / "words.txt", 200)
    result = train(config(tmp_path, data, steps=3), log=sys.stdout, progress=True)
    captured = capsys.readouterr()
    assert result.plot is None and not (tmp_path / "run" / "loss.png").exists()
    assert "loss curve: not drawn (matplotlib is not installed" in captured.out
    assert "step 3/3  train " in captured.err and "chars/s" in captured.err


def test_minutes_alone_lifts_the_default_step_limit() -> None:
    assert TrainConfig().steps == DEFAULT_STEPS
    assert TrainConfig(minutes=2.5).steps is None  # the time decides, as with `rnnkit train --minutes 2.5`
    assert TrainConfig(minutes=2.5, steps=10).steps == 10
