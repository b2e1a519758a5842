"""Variable-length sequence classification: is a noisy signal a sine, a square or a sawtooth wave?

    python examples/classify.py          # about 20 s on 2 cores; test accuracy 0.99
"""

import tempfile
from pathlib import Path

import numpy as np

import rnnkit
from rnnkit import GRU, Adam, EarlyStopping, LastStep, Linear, ProgressBar, Sequential, softmax, softmax_cross_entropy


def waves(n, rng):
    """``n`` noisy waves of 20 to 60 steps, one feature each: ``(X, lengths, labels)``, 0 sine, 1 square, 2 sawtooth."""
    labels = rng.integers(0, 3, n)
    sequences = []
    for label in labels:
        t = np.arange(rng.integers(20, 61)) * rng.uniform(0.15, 0.4) + rng.uniform(0, 2 * np.pi)
        wave = (np.sin(t), np.sign(np.sin(t)), 2 * (t / (2 * np.pi) % 1) - 1)[label]
        sequences.append((wave + 0.3 * rng.standard_normal(len(t)))[:, None])
    X, lengths = rnnkit.pad_sequences(sequences, dtype=np.float32)  # (n, 60, 1) and (n,)
    return X, lengths, labels


def main(n_train=2000, epochs=15, seed=0):
    rng = np.random.default_rng(seed)
    (X, lengths, y), (X_val, lengths_val, y_val), (X_test, lengths_test, y_test) = (
        waves(n_train, rng), waves(500, rng), waves(1000, rng))
    model = Sequential([("rnn", GRU(1, 32, seed=seed)), ("last", LastStep()), ("head", Linear(32, 3, seed=seed))])
    rnnkit.fit(model, softmax_cross_entropy, Adam(lr=5e-3), (X, y, lengths), epochs=epochs, batch_size=32,
               bucket=True, clip=5.0, val=(X_val, y_val, lengths_val), metrics=["accuracy"],
               callbacks=[EarlyStopping(monitor="val_accuracy", patience=4), ProgressBar()])

    path = Path(tempfile.mkdtemp()) / "waves.safetensors"
    rnnkit.save(model, path)                       # architecture + weights, one file
    restored = rnnkit.load(path)
    probabilities = softmax(rnnkit.predict(restored, X_test, lengths_test))  # (1000, 3)
    accuracy = float((probabilities.argmax(axis=1) == y_test).mean())
    print(f"test accuracy {accuracy:.3f} (model saved to {path})")
    return accuracy


if __name__ == "__main__":
    main()
