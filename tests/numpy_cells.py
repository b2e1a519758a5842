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


def layer_norm(v):  # type: ignore[no-untyped-def]
    """LN over the rows of each column (biased variance, eps 1e-5): ``(v̂, r)``, ``r = 1/sqrt(var + eps)``."""
    centred = v - v.mean(axis=0)
    r = 1.0 / np.sqrt((centred**2).mean(axis=0) + 1e-5)
    return centred * r, r


def layer_norm_backward(d_hat, v_hat, r):  # type: ignore[no-untyped-def]
    """The gradient for ``v`` given the one for ``v̂ = LN(v)``."""
    return r * (d_hat - d_hat.mean(axis=0) - v_hat * (d_hat * v_hat).mean(axis=0))


def lnlstm_split(p, H):  # type: ignore[no-untyped-def]
    """``p`` = [γ_x (4H); γ_h (4H); b (4H); γ_c (H); β_c (H)] as column vectors."""
    G = 4 * H
    return tuple(v[:, None] for v in (p[:G], p[G : 2 * G], p[2 * G : 3 * G], p[3 * G : 3 * G + H], p[3 * G + H :]))


def lnlstm_forward(xp, h_prev, c_prev, w_hh, p):  # type: ignore[no-untyped-def]
    """The layer-normalised LSTM step; ``xp = W_ih x`` (no bias).  Returns h, c and a dict of intermediates."""
    H = c_prev.shape[0]
    g_x, g_h, b, g_c, b_c = lnlstm_split(p, H)
    x_hat, r_x = layer_norm(xp)
    h_hat, r_h = layer_norm(w_hh @ h_prev)
    a = g_x * x_hat + g_h * h_hat + b
    i, f, g, o = sigmoid(a[:H]), sigmoid(a[H : 2 * H]), np.tanh(a[2 * H : 3 * H]), sigmoid(a[3 * H :])
    c = f * c_prev + i * g
    c_hat, r_c = layer_norm(c)
    tanh_y = np.tanh(g_c * c_hat + b_c)
    h = o * tanh_y
    saved = {"gates": np.concatenate([i, f, g, o]), "x_hat": x_hat, "h_hat": h_hat, "c_hat": c_hat,
             "tanh_y": tanh_y, "r_x": r_x, "r_h": r_h, "r_c": r_c}
    return h, c, saved


def lnlstm_backward(dh, dc, c_prev, saved, w_hh, p):  # type: ignore[no-untyped-def]
    """Returns ``(dh_prev, dc_prev, d_xp, d_hp, dp)``: ``d_xp`` for ``xp``, ``d_hp`` for ``W_hh h_prev``."""
    H = dh.shape[0]
    g_x, g_h, _, g_c, _ = lnlstm_split(p, H)
    gates, x_hat, h_hat, c_hat, tanh_y = (saved[k] for k in ("gates", "x_hat", "h_hat", "c_hat", "tanh_y"))
    i, f, g, o = gates[:H], gates[H : 2 * H], gates[2 * H : 3 * H], gates[3 * H :]
    dy = dh * o * (1 - tanh_y**2)
    dc = dc + layer_norm_backward(g_c * dy, c_hat, saved["r_c"])
    da = np.concatenate([dc * g * i * (1 - i), dc * c_prev * f * (1 - f), dc * i * (1 - g * g),
                         dh * tanh_y * o * (1 - o)])
    d_xp = layer_norm_backward(g_x * da, x_hat, saved["r_x"])
    d_hp = layer_norm_backward(g_h * da, h_hat, saved["r_h"])
    dp = np.concatenate([(da * x_hat).sum(1), (da * h_hat).sum(1), da.sum(1), (dy * c_hat).sum(1), dy.sum(1)])
    return w_hh.T @ d_hp, dc * f, d_xp, d_hp, dp
