"""Shared test helpers for the recurrent layers: build one by kind, random states, a torch.nn twin.

Everything is exposed as fixtures (pytest's way of sharing code between test files), so a test
asks for ``make_layer``, ``random_state`` or ``torch_twin`` and gets the function.  ``layer_kind``
is a parametrized fixture: a test that takes it runs once per kind in :data:`LAYER_KINDS`.
torch is imported only inside :func:`build_torch_twin`, so test files that do not compare with
PyTorch do not need it.
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from rnnkit import GRU, LSTM, RNN
from rnnkit.layers import Recurrent

# The stop-signal tests play a user at a terminal (Ctrl-C, a closed terminal).  A test run started in
# the background (`make test &` in a non-interactive shell) or under nohup inherits SIGINT / SIGHUP
# *ignored*, which rnnkit's trainer rightly respects -- and which child processes inherit too -- so
# those tests would see no signal at all.  Give this process, and through it the children, the
# terminal's dispositions.
for _signum, _handler in ((signal.SIGINT, signal.default_int_handler), (signal.SIGHUP, signal.SIG_DFL)):
    if signal.getsignal(_signum) is signal.SIG_IGN:
        signal.signal(_signum, _handler)

LAYER_KINDS = ("rnn_tanh", "rnn_relu", "lstm", "gru")
"""The four layer kinds: RNN with tanh, RNN with relu, LSTM, GRU."""


def build_layer(
    kind: str,
    input_size: int,
    hidden_size: int,
    num_layers: int = 1,
    bidirectional: bool = False,
    dtype: Any = np.float64,
    seed: int = 0,
) -> Recurrent:
    """An rnnkit layer of ``kind`` (one of :data:`LAYER_KINDS`); float64 unless told otherwise."""
    if kind in ("rnn_tanh", "rnn_relu"):
        return RNN(input_size, hidden_size, num_layers, nonlinearity=kind[4:], bidirectional=bidirectional,
                   dtype=dtype, seed=seed)
    layer_type = {"lstm": LSTM, "gru": GRU}[kind]
    return layer_type(input_size, hidden_size, num_layers, bidirectional=bidirectional, dtype=dtype,
                      seed=seed)


def build_random_state(layer: Recurrent, batch: int, rng: np.random.Generator, scale: float = 0.5) -> Any:
    """A non-zero random state for ``layer``: ``h`` ``(L*D, B, H)``, or ``(h, c)`` for an LSTM."""
    shape = (layer.num_layers * layer.num_directions, batch, layer.hidden_size)
    arrays = tuple(rng.uniform(-scale, scale, shape).astype(layer.dtype) for _ in layer.cell.state_names)
    return arrays if len(arrays) > 1 else arrays[0]


def build_torch_twin(layer: Recurrent) -> Any:
    """The ``torch.nn`` module (batch_first) with the same configuration, dtype and a copy of the weights.

    The parameter names are the same on both sides, so the copy is by name; a name or shape that
    does not match fails here, which is itself a check of the layout.
    """
    import torch

    kwargs = dict(
        input_size=layer.input_size, hidden_size=layer.hidden_size, num_layers=layer.num_layers,
        bidirectional=layer.bidirectional, batch_first=True,
        dtype=torch.float64 if layer.dtype == np.float64 else torch.float32,
    )
    if layer.proj_size:
        kwargs["proj_size"] = layer.proj_size
    if layer.cell.name.startswith("rnn_"):
        module = torch.nn.RNN(nonlinearity=layer.cell.options["nonlinearity"], **kwargs)
    else:
        module = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[layer.cell.name](**kwargs)
    torch_params = dict(module.named_parameters())
    assert torch_params.keys() == layer.params.keys()
    with torch.no_grad():
        for name, value in layer.params.items():
            assert torch_params[name].shape == value.shape, name
            torch_params[name].copy_(torch.from_numpy(value))
    return module


def run_torch(
    module: Any, x: np.ndarray, state: tuple[np.ndarray, ...], lengths: np.ndarray | None,
    w_out: np.ndarray, w_state: tuple[np.ndarray, ...],
) -> tuple[np.ndarray, tuple[np.ndarray, ...], np.ndarray, tuple[np.ndarray, ...], dict[str, np.ndarray]]:
    """Forward and backward in torch of ``Σ out ⊙ w_out + Σ final ⊙ w_state`` (batch-first; with
    ``lengths``, through a packed sequence): ``(out, final, dx, d_state0, grads)`` as NumPy arrays."""
    import torch

    x_t = torch.tensor(x, requires_grad=True)
    state_t = tuple(torch.tensor(s, requires_grad=True) for s in state)
    hx = state_t if len(state_t) > 1 else state_t[0]
    if lengths is None:
        out, final = module(x_t, hx)
    else:
        packed = torch.nn.utils.rnn.pack_padded_sequence(
            x_t, torch.tensor(lengths), batch_first=True, enforce_sorted=False)
        out_packed, final = module(packed, hx)
        out, _ = torch.nn.utils.rnn.pad_packed_sequence(out_packed, batch_first=True, total_length=x.shape[1])
    final = final if isinstance(final, tuple) else (final,)
    loss = (out * torch.tensor(w_out)).sum()
    for f, w in zip(final, w_state, strict=True):
        loss = loss + (f * torch.tensor(w)).sum()
    module.zero_grad()
    loss.backward()
    grads = {name: p.grad.numpy() for name, p in module.named_parameters()}
    return (out.detach().numpy(), tuple(f.detach().numpy() for f in final), x_t.grad.numpy(),
            tuple(s.grad.numpy() for s in state_t), grads)


@pytest.fixture(params=LAYER_KINDS)
def layer_kind(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def make_layer() -> Callable[..., Recurrent]:
    return build_layer


@pytest.fixture
def random_state() -> Callable[..., Any]:
    return build_random_state


@pytest.fixture
def torch_twin() -> Callable[[Recurrent], Any]:
    return build_torch_twin
