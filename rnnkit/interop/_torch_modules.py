"""The PyTorch twin of :class:`rnnkit.Sequential`; this module imports torch at the top.

It is imported only by :mod:`rnnkit.interop.torch` inside its functions, so ``import rnnkit`` never
needs torch.  The class lives in a module of its own (not inside a function) so that its instances
pickle by reference: ``torch.multiprocessing`` and ``DistributedDataParallel`` workers can receive it.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

RECURRENT_TYPES = (nn.RNN, nn.LSTM, nn.GRU)


class RnnkitSequential(nn.Module):
    """Named blocks applied in order, with :class:`rnnkit.Sequential`'s forward contract.

    ``out, state = module(x, state=None, lengths=None)``: ``x`` is ``(B, T)`` token ids or
    ``(B, T, I)``; ``state`` is ``{block_name: h}`` (``(h, c)`` for an LSTM) over the recurrent
    blocks, each ``(L*D, B, H)``, missing blocks starting from zeros; ``lengths`` ``(B,)`` are the
    true sequence lengths (int64, on the CPU as PyTorch's packing requires), applied to every
    recurrent block exactly as rnnkit does: outputs past a sequence's end are zero and its final
    state is the state after its last valid step.  The blocks are registered under their rnnkit
    names, so ``state_dict()`` keys are rnnkit's dotted parameter names (``rnn.weight_ih_l0``).
    """

    def __init__(self, blocks: list[tuple[str, nn.Module]]) -> None:
        super().__init__()
        for name, block in blocks:
            if hasattr(self, name):
                # nn.Module would raise KeyError; say what to do instead.
                raise ValueError(f"block name {name!r} clashes with an attribute of torch.nn.Module; "
                                 f"rename that block of the rnnkit model")
            self.add_module(name, block)

    def forward(
        self,
        x: torch.Tensor,
        state: dict[str, Any] | None = None,
        lengths: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, dict[str, Any]]:
        states = dict(state or {})
        final: dict[str, Any] = {}
        out = x
        for name, block in self.named_children():
            if isinstance(block, RECURRENT_TYPES):
                out, final[name] = run_recurrent(block, out, states.get(name), lengths)
            elif isinstance(block, (LastStep, MeanPool)):
                out = block(out, lengths)
            else:
                out = block(out)
        return out, final


def _lengths(x: torch.Tensor, lengths: torch.Tensor | None) -> torch.Tensor:
    """``(B,)`` int64 lengths on ``x``'s device; None means every sequence has all ``T`` steps."""
    B, T = x.shape[0], x.shape[1]
    if lengths is None:
        return torch.full((B,), T, dtype=torch.int64, device=x.device)
    return lengths.to(x.device, torch.int64)


class LastStep(nn.Module):
    """rnnkit's :class:`~rnnkit.LastStep` in PyTorch: ``out[b] = x[b, lengths[b] - 1]``, ``(B, T, F) -> (B, F)``.

    ``bidirectional``: the last ``F/2`` features (the reverse direction's) are taken at step 0.
    """

    def __init__(self, bidirectional: bool = False) -> None:
        super().__init__()
        self.bidirectional = bool(bidirectional)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        steps = _lengths(x, lengths) - 1
        out = x[torch.arange(x.shape[0], device=x.device), steps]
        if self.bidirectional:
            half = x.shape[2] // 2
            out = torch.cat([out[:, :half], x[:, 0, half:]], dim=1)
        return out

    def extra_repr(self) -> str:
        return f"bidirectional={self.bidirectional}"


class MeanPool(nn.Module):
    """rnnkit's :class:`~rnnkit.MeanPool` in PyTorch: the mean over each sequence's valid steps, ``(B, F)``."""

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        lengths = _lengths(x, lengths)
        valid = (torch.arange(x.shape[1], device=x.device) < lengths[:, None]).to(x.dtype)  # (B, T)
        # As rnnkit: (valid steps as a 0/1 row) @ x, then divided by the length.
        total = torch.matmul(valid[:, None, :], x)[:, 0, :]
        return total / lengths[:, None].to(x.dtype)


def run_recurrent(
    block: nn.Module, x: torch.Tensor, state: Any, lengths: torch.Tensor | None
) -> tuple[torch.Tensor, Any]:
    """One batch-first recurrent block over ``x`` ``(B, T, F)``, packed when ``lengths`` is given.

    ``pad_packed_sequence(total_length=T)`` keeps the time axis at ``T`` with zeros past each
    sequence's end: the same layout as rnnkit's padded output.
    """
    if lengths is None:
        return block(x, state)
    packed = pack_padded_sequence(x, lengths.to("cpu", torch.int64), batch_first=True, enforce_sorted=False)
    out, final = block(packed, state)
    out, _ = pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])
    return out, final
