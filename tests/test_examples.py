"""The model-API examples run on small settings: classify (LastStep, early stopping, save/load) and forecast."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _load(name: str) -> Any:
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_classify_learns_and_its_saved_model_predicts(capsys: pytest.CaptureFixture[str]) -> None:
    accuracy = _load("classify").main(n_train=1000, epochs=4)
    assert accuracy > 0.7  # three classes: chance is 1/3 (the full run reaches 0.99)
    assert "test accuracy" in capsys.readouterr().out


def test_forecast_beats_repeating_the_input() -> None:
    model_mse, late_mse, repeat_mse = _load("forecast").main(n_train=400, epochs=3)
    assert late_mse < model_mse < 0.7 * repeat_mse
