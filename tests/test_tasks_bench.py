"""``benchmarks/tasks.py --quick``: the long-lag task suite runs end to end on tiny sizes.

What is checked is what the full run relies on: every task and cell produces a row, the PyTorch peer
really is the same model (same initial weights, same batches: its learning curve starts at exactly
rnnkit's test metric and stays with it over the few steps), the baselines are the analytic ones,
and the pictures, table and JSON are written.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("matplotlib")

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "tasks.py"


def _load_tasks_module():
    spec = importlib.util.spec_from_file_location("rnnkit_bench_tasks", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def tasks():
    return _load_tasks_module()


def test_quick_run_writes_every_artifact_and_the_torch_peer_follows(tasks, tmp_path: Path) -> None:
    results = tasks.main(["--quick", "--out", str(tmp_path)])
    assert set(results) == {"adding100", "adding200", "copy", "sine", "varlen"}
    for name in results:
        assert (tmp_path / f"{name}.png").stat().st_size > 10_000
        for cell in ("rnn", "lstm", "gru"):
            ours, theirs = results[name][cell]["rnnkit"], results[name][cell]["torch"]
            assert ours["steps"] == theirs["steps"] == [0, 3, 6]
            # Same initial weights: identical before training, and still together after 6 steps (float32).
            np.testing.assert_allclose(ours["metric"][0], theirs["metric"][0], rtol=1e-5)
            np.testing.assert_allclose(ours["metric"], theirs["metric"], rtol=1e-3, atol=1e-6)
            flow = results[name][cell]["gradient_flow"]
            assert len(flow) == tasks.all_tasks(quick=True)[name].T and all(v > 0 for v in flow)
    table = (tmp_path / "tasks.md").read_text()
    assert table.count("\n| ") == 1 + 15  # header + one row per task and cell
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["budget"]["steps"] == 6


def test_task_data(tasks) -> None:
    rng = np.random.default_rng(0)
    batch = tasks.adding_task(100).make(rng, 2000)
    marks = batch.x[:, :, 1]
    assert np.all(marks.sum(axis=1) == 2) and np.all(marks[:, :50].sum(axis=1) == 1)
    np.testing.assert_allclose(batch.y[:, 0], (batch.x[:, :, 0] * marks).sum(axis=1), rtol=1e-6)
    assert abs(tasks.adding_task(100).baseline(batch) - 1 / 6) < 0.02  # Var(U + U') = 2/12 about 1

    copy = tasks.copy_task(delay=50)
    batch = copy.make(rng, 4)
    assert copy.T == 70 and batch.x.shape == (4, 70, 10)
    np.testing.assert_array_equal(batch.y[:, -10:], batch.x[:, :10].argmax(axis=2))
    assert np.all(batch.x[:, 59].argmax(axis=1) == 9) and np.all(batch.y[:, :60] == 0)

    varlen = tasks.varlen_task(50).make(rng, 300)
    assert varlen.lengths.min() >= 10 and varlen.lengths.max() <= 50
    assert np.all(varlen.x.sum(axis=2) == (np.arange(50)[None] < varlen.lengths[:, None]))
    np.testing.assert_array_equal(varlen.y, varlen.x[:, 0].argmax(axis=1))


def test_bad_arguments_exit_with_a_message(tasks, capsys) -> None:
    with pytest.raises(SystemExit) as error:
        tasks.main(["--quick", "--tasks", "adding1000"])
    assert error.value.code == 2 and "unknown task 'adding1000'" in capsys.readouterr().err
