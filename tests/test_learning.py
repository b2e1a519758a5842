"""Proof that the toolkit learns, and learns exactly as PyTorch does.

The task is a delayed copy: on a stream of random tokens over a vocabulary of 4, the target at
step ``t`` is the input at step ``t - 2``.  The model is trained with truncated BPTT on chunks of
``T`` steps, so the first two targets of every chunk can only be predicted from the state carried
over from the previous chunk: learning them shows the state is carried correctly.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from rnnkit.layers.embedding import Embedding
from rnnkit.layers.linear import Linear
from rnnkit.layers.recurrent import LSTM
from rnnkit.layers.sequential import Sequential
from rnnkit.losses import softmax_cross_entropy
from rnnkit.optim import Adam
from rnnkit.tbptt import stream_batches, tbptt_step

V, DELAY = 4, 2


def _delayed_copy_stream(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Random tokens and their targets ``tokens[t - DELAY]`` (the first DELAY targets are arbitrary: 0)."""
    tokens = rng.integers(0, V, n)
    targets = np.concatenate([np.zeros(DELAY, np.int64), tokens[:-DELAY]])
    return tokens, targets


def _model(dtype: type, hidden: int, seed: int) -> Sequential:
    return Sequential([("embed", Embedding(V, 8, dtype=dtype, seed=seed)),
                       ("rnn", LSTM(8, hidden, dtype=dtype, seed=seed + 1)),
                       ("head", Linear(hidden, V, dtype=dtype, seed=seed + 2))])


def test_lstm_learns_a_delayed_copy_with_tbptt() -> None:
    rng = np.random.default_rng(0)
    B, T = 16, 10
    model = _model(np.float32, hidden=24, seed=0)
    optimizer = Adam(lr=1e-2)
    losses = []
    for _ in range(25):  # 25 fresh streams of 10 chunks each: 250 updates
        tokens, targets = _delayed_copy_stream(rng, B * 10 * T)
        state = None
        for x, y in stream_batches(tokens, B, T, targets=targets):
            step = tbptt_step(model, softmax_cross_entropy, optimizer, x, y, state, clip=1.0)
            state = step.state
            losses.append(step.loss)
    assert losses[0] > 0.9 * math.log(V)  # starts at chance

    # Evaluate on a fresh stream, carrying the state, without updates.
    tokens, targets = _delayed_copy_stream(rng, B * 10 * T)
    correct, correct_no_carry, state = [], [], None
    for x, y in stream_batches(tokens, B, T, targets=targets):
        logits, state, _ = model.forward(x, state=state, keep_cache=False)
        correct.append(logits.argmax(axis=-1) == y)
        correct_no_carry.append(model.forward(x, keep_cache=False)[0].argmax(axis=-1) == y)
    correct_all = np.concatenate(correct, axis=1)[:, DELAY:]  # each row's first targets are unknowable

    def at_chunk_starts(per_chunk: list[np.ndarray]) -> float:
        """Accuracy on the first DELAY steps of every chunk but the first: only the carried state knows them."""
        return float(np.concatenate([c[:, :DELAY] for c in per_chunk[1:]], axis=1).mean())

    assert correct_all.mean() > 0.98
    assert at_chunk_starts(correct) > 0.95
    assert at_chunk_starts(correct_no_carry) < 0.5  # control: restarting from zeros is at chance (1/4)
    assert np.mean(losses[-10:]) < 0.1 * math.log(V)  # well below chance, log V


def _torch_twin(model: Sequential, hidden: int) -> dict[str, torch.nn.Module]:
    modules = {"embed": torch.nn.Embedding(V, 8, dtype=torch.float64),
               "rnn": torch.nn.LSTM(8, hidden, batch_first=True, dtype=torch.float64),
               "head": torch.nn.Linear(hidden, V, dtype=torch.float64)}
    with torch.no_grad():
        for name, module in modules.items():
            for key, p in module.named_parameters():
                p.copy_(torch.from_numpy(model.params[f"{name}.{key}"]))
    return modules


def test_training_run_equals_pytorch() -> None:
    """20 TBPTT steps (Adam, norm clipping, carried state) in rnnkit and in torch, float64, same batches."""
    rng = np.random.default_rng(1)
    B, T, hidden, clip = 4, 6, 10, 0.25
    tokens, targets = _delayed_copy_stream(rng, B * 20 * T)
    batches = list(stream_batches(tokens, B, T, targets=targets))
    assert len(batches) == 20

    model = _model(np.float64, hidden=hidden, seed=3)
    modules = _torch_twin(model, hidden)
    torch_params = [p for m in modules.values() for p in m.parameters()]
    torch_opt = torch.optim.Adam(torch_params, lr=1e-2)
    optimizer = Adam(lr=1e-2)

    state, torch_state, norms = None, None, []
    for x, y in batches:
        step = tbptt_step(model, softmax_cross_entropy, optimizer, x, y, state, clip=clip)
        state = step.state
        norms.append(step.grad_norm)

        torch_opt.zero_grad()
        out, (h, c) = modules["rnn"](modules["embed"](torch.from_numpy(x)), torch_state)
        logits = modules["head"](out)
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, V), torch.from_numpy(y).reshape(-1))
        loss.backward()
        torch_norm = torch.nn.utils.clip_grad_norm_(torch_params, clip)
        torch_opt.step()
        torch_state = (h.detach(), c.detach())  # truncated BPTT in torch: detach the carried state

        assert step.loss == pytest.approx(loss.item(), rel=0, abs=1e-8)
        assert step.grad_norm == pytest.approx(torch_norm.item(), rel=1e-8)
        np.testing.assert_allclose(state["rnn"][0], torch_state[0].numpy(), rtol=0, atol=1e-8)

    assert sum(n > clip for n in norms) >= 5  # clipping really happened
    for name, module in modules.items():
        for key, p in module.named_parameters():
            np.testing.assert_allclose(model.params[f"{name}.{key}"], p.detach().numpy(), rtol=0, atol=1e-8,
                                       err_msg=f"{name}.{key}")
