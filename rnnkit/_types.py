"""Type aliases and the shape letters used throughout rnnkit.

Shape letters (declared once, used in every docstring and shape comment):

    B  batch size            T  time steps           I  input features
    H  hidden size           V  vocabulary size      G  gates per cell (RNN 1, GRU 3, LSTM 4)
    L  stacked layers        D  directions (1, or 2 when bidirectional)

Inside the time loop rnnkit works *feature-major*: one step's hidden state is ``(H, B)`` and a
sequence is ``(F, T, B)`` (features, time, batch).  PyTorch's weights stack the gates along rows
(``weight_hh_l0`` is ``(G*H, H)``), so ``W_hh @ h`` gives a ``(G*H, B)`` block whose gates are
contiguous row blocks, and the textbook API's column layout ``(n_a, m)`` is the same layout.
The public layers are batch-first ``(B, T, F)`` and transpose once on the way in and out.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

Array = npt.NDArray[np.floating[Any]]
"""A floating-point NumPy array (float32 by default, float64 for gradient checks)."""

IntArray = npt.NDArray[np.integer[Any]]
"""An integer NumPy array (token ids, sequence lengths)."""

Params = dict[str, Array]
"""Named parameters, PyTorch's names and layouts (``weight_ih_l0`` ...)."""

Grads = dict[str, Array]
"""Gradients, with exactly the keys of the matching :data:`Params`."""
