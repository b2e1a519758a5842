"""Many-to-many regression: read a noisy sine wave and predict, at every step, the clean value one step ahead.

    python examples/forecast.py          # about 15 s on 2 cores

Each sequence is a sine of its own frequency, phase and amplitude, seen through noise of standard
deviation 0.2; the target at step t is the noise-free wave at step t+1.  An LSTM reads the sequence
and a Linear head maps every step's output to one number (a per-step head: the loss and the
``mse`` metric count every step).  The model must both filter the noise and extrapolate the phase;
a network that only repeated its input would score about the noise variance plus the one-step change.
"""

import numpy as np

import rnnkit
from rnnkit import LSTM, Adam, EarlyStopping, Linear, ProgressBar, Sequential, mse

T = 40  # steps per sequence


def noisy_sines(n, rng):
    """``n`` sequences: inputs ``(n, T, 1)`` (noisy wave) and targets ``(n, T, 1)`` (clean wave one step ahead)."""
    t = np.arange(T + 1)[None, :] * rng.uniform(0.1, 0.5, (n, 1)) + rng.uniform(0, 2 * np.pi, (n, 1))
    clean = rng.uniform(0.5, 1.5, (n, 1)) * np.sin(t)                     # (n, T + 1)
    noisy = clean[:, :T] + 0.2 * rng.standard_normal((n, T))
    return noisy[..., None].astype(np.float32), clean[:, 1:, None].astype(np.float32)


def main(n_train=2000, epochs=15, seed=0):
    rng = np.random.default_rng(seed)
    (X, Y), (X_val, Y_val), (X_test, Y_test) = noisy_sines(n_train, rng), noisy_sines(400, rng), noisy_sines(400, rng)
    model = Sequential([("rnn", LSTM(1, 32, seed=seed)), ("head", Linear(32, 1, seed=seed))])
    rnnkit.fit(model, mse, Adam(lr=5e-3), (X, Y), epochs=epochs, batch_size=32, clip=1.0, val=(X_val, Y_val),
               metrics=["mse"], callbacks=[EarlyStopping(patience=3), ProgressBar()])

    predicted = rnnkit.predict(model, X_test)                             # (400, T, 1): every step
    model_mse = float(np.mean((predicted - Y_test) ** 2))
    repeat_mse = float(np.mean((X_test - Y_test) ** 2))                   # "the next value is this one"
    late_mse = float(np.mean((predicted[:, 10:] - Y_test[:, 10:]) ** 2))  # after 10 steps of context
    print(f"test MSE {model_mse:.4f} (from step 10 on: {late_mse:.4f}); repeating the input: {repeat_mse:.4f}")
    return model_mse, late_mse, repeat_mse


if __name__ == "__main__":
    main()
