"""The "Dinosaurus Island" character-model exercise, run unchanged against rnnkit.textbook.

Everything below the imports is the exercise's own code, in the course's style: its helper
functions (``utils.py``: ``initialize_parameters`` with the W1A2 key ``b``, ``get_initial_loss``,
``smooth``, ``get_sample``) and its ``model`` function, which calls ``optimize`` and ``sample`` on
one name per iteration.  The three functions a student writes — ``clip``, ``sample`` and
``optimize`` — come from :mod:`rnnkit.textbook` instead.

Usage: ``python examples/dinosaurus.py [NAMES_FILE] [ITERATIONS]`` (defaults: the list of
dinosaur names in ``tests/data/dinos.txt``, 22001 iterations, about half a minute).
"""
# The exercise's code is kept as the course writes it (global np.random, %-formatting, ...):
# ruff: noqa: NPY002, UP015, UP031, B007

import sys
from pathlib import Path

import numpy as np

from rnnkit.textbook import clip, optimize, sample  # noqa: F401  (clip: the exercise imports all three)


# ---------------------------------------------------------------- the exercise's utils.py
def get_initial_loss(vocab_size, seq_length):
    return -np.log(1.0 / vocab_size) * seq_length


def smooth(loss, cur_loss):
    return loss * 0.999 + cur_loss * 0.001


def get_sample(sample_ix, ix_to_char):
    txt = "".join(ix_to_char[ix] for ix in sample_ix)
    txt = txt[0].upper() + txt[1:]  # capitalize first character
    return txt


def initialize_parameters(n_a, n_x, n_y):
    np.random.seed(1)
    Wax = np.random.randn(n_a, n_x) * 0.01  # input to hidden
    Waa = np.random.randn(n_a, n_a) * 0.01  # hidden to hidden
    Wya = np.random.randn(n_y, n_a) * 0.01  # hidden to output
    b = np.zeros((n_a, 1))  # hidden bias
    by = np.zeros((n_y, 1))  # output bias
    parameters = {"Wax": Wax, "Waa": Waa, "Wya": Wya, "b": b, "by": by}
    return parameters


# ---------------------------------------------------------------- the exercise's model()
def model(data_x, ix_to_char, char_to_ix, num_iterations=35000, n_a=50, dino_names=7, vocab_size=27,
          verbose=False):
    # Retrieve n_x and n_y from vocab_size
    n_x, n_y = vocab_size, vocab_size

    # Initialize parameters
    parameters = initialize_parameters(n_a, n_x, n_y)

    # Initialize loss (this is required because we want to smooth our loss)
    loss = get_initial_loss(vocab_size, dino_names)

    # Build list of all dinosaur names (training examples).
    examples = [x.strip() for x in data_x]

    # Shuffle list of all dinosaur names
    np.random.seed(0)
    np.random.shuffle(examples)

    # Initialize the hidden state of your LSTM
    a_prev = np.zeros((n_a, 1))

    last_dino_name = "abc"

    # Optimization loop
    for j in range(num_iterations):
        # Set the index `idx` (see instructions above)
        idx = j % len(examples)

        # Set the input X (see instructions above)
        single_example = examples[idx]
        single_example_chars = [c for c in single_example]
        single_example_ix = [char_to_ix[c] for c in single_example_chars]
        X = [None] + single_example_ix

        # Set the labels Y (see instructions above)
        ix_newline = char_to_ix["\n"]
        Y = X[1:] + [ix_newline]

        # Perform one optimization step: Forward-prop -> Backward-prop -> Clip -> Update parameters
        # Choose a learning rate of 0.01
        curr_loss, gradients, a_prev = optimize(X, Y, a_prev, parameters, learning_rate=0.01)

        # debug statements to aid in correctly forming X, Y
        if verbose and j in [0, len(examples) - 1, len(examples)]:
            print("j = ", j, "idx = ", idx)
        if verbose and j in [0]:
            print("single_example =", single_example)
            print("single_example_chars", single_example_chars)
            print("single_example_ix", single_example_ix)
            print(" X = ", X, "\n", "Y =       ", Y, "\n")

        # to keep the loss smooth.
        loss = smooth(loss, curr_loss)

        # Every 2000 Iteration, generate "n" characters thanks to sample() to check if the model is learning properly
        if j % 2000 == 0:
            print("Iteration: %d, Loss: %f" % (j, loss) + "\n")

            # The number of dinosaur names to print
            seed = 0
            for name in range(dino_names):
                # Sample indices and print them
                sampled_indices = sample(parameters, char_to_ix, seed)
                last_dino_name = get_sample(sampled_indices, ix_to_char)
                print(last_dino_name.replace("\n", ""))

                seed += 1  # To get the same result (for grading purposes), increment the seed by one.

            print("\n")

    return parameters, last_dino_name


def main(path, num_iterations):
    data = open(path, "r").read()
    data = data.lower()
    chars = list(set(data))
    data_size, vocab_size = len(data), len(chars)
    print("There are %d total characters and %d unique characters in your data." % (data_size, vocab_size))
    chars = sorted(chars)
    char_to_ix = {ch: i for i, ch in enumerate(chars)}
    ix_to_char = {i: ch for i, ch in enumerate(chars)}
    return model(data.split("\n"), ix_to_char, char_to_ix, num_iterations, verbose=True)


if __name__ == "__main__":
    default = Path(__file__).resolve().parent.parent / "tests" / "data" / "dinos.txt"
    main(sys.argv[1] if len(sys.argv) > 1 else default, int(sys.argv[2]) if len(sys.argv) > 2 else 22001)
