"""The char-LM's regularization, initialisation and schedule options: model, trainer and CLI.

The heart of it: ``--resume`` stays bit-exact with every kind of dropout on (the masks come from the
trainer's generator, whose state the checkpoint stores), with tied weights, weight decay and a
warm-up + cosine schedule (whose position the checkpoint stores).  Also: the options reach the
model, evaluation and sampling are deterministic, checkpoints written before the options existed
still load, early stopping stops, and bad values get one-line errors (exit 2 on the CLI).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from test_charlm_train import assert_same_run, config, run, trajectory, write_names, write_words

from rnnkit.charlm.model import CharLM, ModelConfig, load_model
from rnnkit.charlm.train import TrainConfig
from rnnkit.cli import main
from rnnkit.layers import Dropout

REGULARIZED = dict(dropout=0.2, embed_dropout=0.1, weight_drop=0.2, tie_weights=True, hidden=8, embed_dim=8,
                   layers=2, init_hh="orthogonal", init_ih="xavier", forget_bias=1.0, weight_decay=0.01,
                   lr_schedule="step", lr_step_size=4, warmup=3)
"""Every option at once.  The schedule is "step": a cosine decays over the first session's ``steps``, so a
run split at step 10 of 20 is not the same run from its start (its position is still saved and restored)."""


@pytest.mark.parametrize("mode", ["stream", "lines"])
def test_resume_is_exact_with_dropout_on(tmp_path, mode) -> None:
    if mode == "stream":
        data, extra = write_words(tmp_path / "words.txt", 110), {}
    else:
        data, extra = write_names(tmp_path / "names.txt", 40), {"mode": "lines", "seq_len": 12}
    straight = run(config(tmp_path, data, "straight", **REGULARIZED, **extra))
    assert straight.step == 20
    run(config(tmp_path, data, "split", steps=10, **REGULARIZED, **extra))
    run(config(tmp_path, data, "split", steps=20, resume=True, **extra), explicit={"steps", "resume", "out"})
    assert_same_run(tmp_path / "split", tmp_path / "straight")
    # Dropout really was on: the same run without it has other losses.
    run(config(tmp_path, data, "plain", **{**REGULARIZED, "dropout": 0.0, "embed_dropout": 0.0,
                                           "weight_drop": 0.0}, **extra))
    assert trajectory(tmp_path / "plain")[0] != trajectory(tmp_path / "straight")[0]


def test_options_reach_the_model_and_are_saved(tmp_path) -> None:
    data = write_words(tmp_path / "words.txt", 110)
    run(config(tmp_path, data, steps=5, **{**REGULARIZED, "lr_schedule": "cosine"}))
    loaded = load_model(tmp_path / "run" / "latest.safetensors")
    model = loaded.model
    assert model.config.tie_weights and model.config.weight_drop == 0.2
    assert "head.weight" not in model.params  # tied: saved once
    assert model.net["head"].params["weight"] is model.net["embed"].params["weight"]
    assert model.net["rnn"].dropout == 0.2 and model.net["embed"].dropout == 0.1
    assert isinstance(model.net["drop_in"], Dropout) and isinstance(model.net["drop_out"], Dropout)
    saved = loaded.document["config"]
    assert saved["optimizer"] == "adamw" and saved["weight_decay"] == 0.01  # weight decay is AdamW's
    lrs = [r["lr"] for r in map(json.loads, (tmp_path / "run" / "metrics.jsonl").read_text().splitlines())
           if r["kind"] == "train"]
    # Three warm-up steps, then the cosine over the remaining 2 steps: lr (1 + cos(pi t / 2)) / 2.
    np.testing.assert_allclose(lrs, [2e-3 / 3, 2 * 2e-3 / 3, 2e-3, 2e-3, 1e-3], rtol=1e-12)


def test_evaluation_is_deterministic_with_dropout() -> None:
    model = CharLM(ModelConfig(vocab_size=6, hidden=8, embed_dim=8, layers=2, dropout=0.5, embed_dropout=0.5,
                               weight_drop=0.5), seed=0)
    plain = CharLM(ModelConfig(vocab_size=6, hidden=8, embed_dim=8, layers=2), seed=0)
    ids = np.random.default_rng(0).integers(0, 6, (2, 7))
    np.testing.assert_array_equal(model.net.forward(ids)[0], plain.net.forward(ids)[0])


def test_checkpoints_from_before_the_options_still_load() -> None:
    old = {"vocab_size": 5, "cell": "lstm", "embed_dim": 4, "hidden": 6, "layers": 1, "dtype": "float32"}
    config = ModelConfig.from_json(old)
    assert config.dropout == 0.0 and config.tie_weights is False and config.forget_bias is None
    with pytest.raises(ValueError, match="missing \\['hidden'\\]"):
        ModelConfig.from_json({k: v for k, v in old.items() if k != "hidden"})
    with pytest.raises(ValueError, match="unknown \\['layer_norm'\\]"):
        ModelConfig.from_json({**old, "layer_norm": True})


def test_patience_stops_early(tmp_path) -> None:
    data = write_words(tmp_path / "words.txt", 110)
    # lr so large that validation gets worse after the first evaluations.
    result = run(config(tmp_path, data, steps=200, eval_every=2, lr=0.5, optimizer="sgd", patience=2))
    assert result.stopped_by == "patience" and result.step < 200
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    vals = [r["loss"] for r in rows if r["kind"] == "val"]
    best = int(np.argmin(vals))
    assert len(vals) - 1 - best == 2  # stopped at exactly `patience` evaluations after the best


@pytest.mark.parametrize("changes, message", [
    (dict(tie_weights=True, hidden=16, embed_dim=8), "tie_weights needs embed_dim == hidden"),
    (dict(dropout=1.0), "dropout must be a probability"),
    (dict(forget_bias=1.0, cell="gru"), "forget_bias is an LSTM option"),
    (dict(init_hh="identity"), "init_hh must be one of"),
    (dict(lr_schedule="cosine", steps=None, minutes=1.0), "lr_schedule cosine decays over the run's steps"),
    (dict(lr_schedule="linear"), "lr_schedule must be one of"),
    (dict(weight_decay=-1.0), "weight_decay must be a finite number >= 0"),
    (dict(patience=-1), "patience must be an integer >= 0"),
])
def test_bad_options(changes, message) -> None:
    with pytest.raises(ValueError, match=message):
        TrainConfig(**changes)


def test_cli_flags_parse_into_the_config(tmp_path, capsys) -> None:
    data = write_words(tmp_path / "words.txt", 110)
    out = tmp_path / "cli"
    status = main(["train", "--data", str(data), "--out", str(out), "--steps", "4", "--eval-every", "2",
                   "--hidden", "8", "--embed-dim", "8", "--seq-len", "8", "--batch-size", "4", "--sample-every", "0",
                   "--no-progress", "--dropout", "0.1", "--embed-dropout", "0.1", "--weight-drop", "0.2",
                   "--tie-weights", "--init-hh", "orthogonal", "--init-ih", "xavier", "--forget-bias", "1",
                   "--weight-decay", "0.1", "--lr-schedule", "step", "--lr-step-size", "2", "--lr-gamma", "0.1",
                   "--warmup", "1", "--patience", "3"])
    assert status == 0
    saved = json.loads((out / "config.json").read_text())
    assert {k: saved[k] for k in ("dropout", "embed_dropout", "weight_drop", "tie_weights", "init_hh", "init_ih",
                                  "forget_bias", "weight_decay", "optimizer", "lr_schedule", "lr_step_size",
                                  "lr_gamma", "warmup", "patience")} == {
        "dropout": 0.1, "embed_dropout": 0.1, "weight_drop": 0.2, "tie_weights": True, "init_hh": "orthogonal",
        "init_ih": "xavier", "forget_bias": 1.0, "weight_decay": 0.1, "optimizer": "adamw", "lr_schedule": "step",
        "lr_step_size": 2, "lr_gamma": 0.1, "warmup": 1, "patience": 3}
    capsys.readouterr()
    status = main(["train", "--data", str(data), "--out", str(tmp_path / "bad"), "--tie-weights", "--hidden", "8"])
    err = capsys.readouterr().err
    assert status == 2 and err.count("\n") == 1 and "tie_weights needs embed_dim == hidden" in err


@pytest.mark.parametrize(("edit", "message"), [
    (lambda d: d.update(schedule=None), "schedule is unusable"),
    (lambda d: d["schedule"].update(last_epoch=3), "schedule is at step 3"),
    (lambda d: d["schedule"].update(base_lr=0.5), "from lr 0.5"),
    (lambda d: d["optimizer"]["hyperparameters"].update(lr=0.25), "optimizer has lr 0.25"),
])
def test_resume_refuses_a_schedule_that_does_not_fit_the_run(tmp_path, edit, message) -> None:
    """The schedule is rebuilt on the restored optimizer and checked against the run's step and rate."""
    from rnnkit.io.checkpoint import CheckpointError, load_checkpoint, save_checkpoint

    data = write_words(tmp_path / "words.txt", 110)
    run(config(tmp_path, data, steps=5, **REGULARIZED))
    latest = tmp_path / "run" / "latest.safetensors"
    tensors, document = load_checkpoint(latest)
    edit(document)
    save_checkpoint(latest, tensors, document)
    with pytest.raises(CheckpointError, match=message):
        run(config(tmp_path, data, steps=8, resume=True), explicit={"steps", "resume", "out"})
