"""The cell equations written with whole-array NumPy operations: the test oracle for the compiled kernels.

This is the form the cells had before they were compiled (rnnkit/cells/*.py hold the kernels, one
copy of each gate equation).  Each function takes one step's input projection ``xp = W_ih x + b_x``
``(G*H, B)``, the previous states ``(H, B)`` and the weights, and returns what the kernel writes;
the backward functions return the gradients for the previous states and the pre-activations.
"""

from __future__ import annotations

import numpy as np


def sigmoid(a: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-a))


def rnn_forward(xp, h_prev, w_hh, relu=False):  # type: ignore[no-untyped-def]
    a = w_hh @ h_prev + xp
    return np.maximum(a, 0.0) if relu else np.tanh(a)


def rnn_backward(dh, h, w_hh, relu=False):  # type: ignore[no-untyped-def]
    da = dh * (h > 0) if relu else dh * (1 - h * h)
    return w_hh.T @ da, da


def lstm_forward(xp, h_prev, c_prev, w_hh):  # type: ignore[no-untyped-def]
    H = c_prev.shape[0]  # (h_prev is P wide under a projection)
    a = w_hh @ h_prev + xp
    i, f, g, o = sigmoid(a[:H]), sigmoid(a[H : 2 * H]), np.tanh(a[2 * H : 3 * H]), sigmoid(a[3 * H :])
    c = f * c_prev + i * g
    h = o * np.tanh(c)
    return h, c, np.concatenate([i, f, g, o]), np.tanh(c)


def lstm_backward(dh, dc, c_prev, gates, tanh_c, w_hh):  # type: ignore[no-untyped-def]
    H = dh.shape[0]
    i, f, g, o = gates[:H], gates[H : 2 * H], gates[2 * H : 3 * H], gates[3 * H :]
    do = dh * tanh_c
    dc = dc + dh * o * (1 - tanh_c**2)
    da = np.concatenate([dc * g * i * (1 - i), dc * c_prev * f * (1 - f), dc * i * (1 - g * g), do * o * (1 - o)])
    return w_hh.T @ da, dc * f, da


def gru_forward(xp, h_prev, w_hh, b_hn):  # type: ignore[no-untyped-def]
    H = h_prev.shape[0]
    hp = w_hh @ h_prev
    r = sigmoid(xp[:H] + hp[:H])
    z = sigmoid(xp[H : 2 * H] + hp[H : 2 * H])
    hn = hp[2 * H :] + b_hn[:, None]
    n = np.tanh(xp[2 * H :] + r * hn)
    return n + z * (h_prev - n), np.concatenate([r, z, n]), hn


def gru_backward(dh, h_prev, gates, hn, w_hh):  # type: ignore[no-untyped-def]
    H = dh.shape[0]
    r, z, n = gates[:H], gates[H : 2 * H], gates[2 * H :]
    da_z = dh * (h_prev - n) * z * (1 - z)
    da_n = dh * (1 - z) * (1 - n * n)
    da_r = da_n * hn * r * (1 - r)
    d_xp = np.concatenate([da_r, da_z, da_n])
    d_hp = np.concatenate([da_r, da_z, da_n * r])
    return z * dh + w_hh.T @ d_hp, d_xp, d_hp
