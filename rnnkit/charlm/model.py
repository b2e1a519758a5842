"""The character-level language model: ``Embedding -> RNN/LSTM/GRU -> Linear`` over the vocabulary.

:class:`CharLM` is a :class:`~rnnkit.layers.sequential.Sequential` of three named layers, so its
parameters carry PyTorch-style dotted names (``embed.weight``, ``rnn.weight_ih_l0``, ...,
``head.weight``, ``head.bias``) and its state is ``{"rnn": h}`` (``{"rnn": (h, c)}`` for an LSTM or
layer-normalised LSTM),
carried from one chunk of text to the next.  It adds what a language model needs on top:

* :meth:`CharLM.loss_and_grads` -- one batch's mean cross-entropy in **nats** per character and
  the gradients; the state that comes in is a constant (truncated BPTT: no gradient crosses the
  boundary into the previous chunk);
* :meth:`CharLM.evaluate` -- the mean loss over a whole validation set, forward only;
* :meth:`CharLM.generate` -- a generator that yields one sampled id at a time, feeding each back
  in, with temperature (0 = greedy), top-k and a caller-supplied ``np.random.Generator`` for
  reproducibility.  Generation runs the layers with ``keep_cache=False`` on one step at a time,
  carrying the state, so each character costs one small forward step.

Losses are natural-log (nats), as :func:`rnnkit.losses.softmax_cross_entropy` computes them;
:func:`bits` converts to bits per character (divide by ``ln 2``), the unit people compare.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from rnnkit import Array, Grads, IntArray, Params
from rnnkit.charlm.data import Batch, Vocab
from rnnkit.io.checkpoint import CheckpointError, load_checkpoint
from rnnkit.layers import GRU, LSTM, RNN, Dropout, Embedding, LayerNormLSTM, Linear, ModelState, Sequential
from rnnkit.layers.init import INIT_HH, INIT_IH
from rnnkit.losses import log_softmax, softmax_cross_entropy

CELLS = {"lstm": LSTM, "gru": GRU, "rnn": RNN, "lnlstm": LayerNormLSTM}
"""The recurrent layer of each ``cell`` name (``rnn`` is the tanh Elman RNN)."""

DTYPES = ("float32", "float64")

CHECKPOINT_FORMAT = "rnnkit.charlm"
"""``document["format"]`` of a char-LM checkpoint; anything else is another kind of model."""
CHECKPOINT_VERSION = 1
BEST_CHECKPOINT = "best.safetensors"
"""In a run directory: the checkpoint with the lowest validation loss so far."""
LATEST_CHECKPOINT = "latest.safetensors"
"""In a run directory: the checkpoint of the last step, the one ``--resume`` continues from."""


GREEDY_TEMPERATURE = 1e-4
"""Temperatures below this are greedy: softmax(logits / T) would put all its mass (to float64
precision) on the most likely id anyway for any logit gap above 0.004, and dividing by a tiny T
would overflow."""

PRIME_CHUNK = 256
"""Steps per forward pass when a prime is read: a long prime costs constant memory, not memory ~ its length."""


def bits(nats: float) -> float:
    """A loss in nats per character as bits per character."""
    return nats / math.log(2)


def _check_positive_int(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


@dataclass(frozen=True)
class ModelConfig:
    """The architecture of a :class:`CharLM`: everything needed to rebuild it from its weights."""

    vocab_size: int
    cell: str = "lstm"
    embed_dim: int = 64
    hidden: int = 256
    layers: int = 1
    dtype: str = "float32"
    # Regularization and initialisation (see CharLM).  Checkpoints written before these existed lack
    # them and load with these defaults, which are exactly the model those checkpoints hold.
    dropout: float = 0.0              # on the embedding output, between stacked layers, before the head
    embed_dropout: float = 0.0        # whole rows of the embedding (characters dropped from a batch)
    weight_drop: float = 0.0          # DropConnect on every W_hh
    tie_weights: bool = False         # head.weight is embed.weight (needs embed_dim == hidden)
    init_hh: str = "pytorch"          # "pytorch" or "orthogonal"
    init_ih: str = "pytorch"          # "pytorch" or "xavier"
    forget_bias: float | None = None  # LSTM and LN-LSTM only: the forget gate's bias
    proj_size: int = 0                # LSTM only: h projected to this size (PyTorch's proj_size); 0: none
    recurrent_dropout: float = 0.0    # RNN/LSTM: dropout on the h fed to W_hh, one mask per sequence
    zoneout: float = 0.0              # each unit keeps its previous state with this probability per step

    def __post_init__(self) -> None:
        for name in ("vocab_size", "embed_dim", "hidden", "layers"):
            _check_positive_int(name, getattr(self, name))
        if self.cell not in CELLS:
            raise ValueError(f"cell must be one of {', '.join(CELLS)}, got {self.cell!r}")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}")
        for name in ("dropout", "embed_dropout", "weight_drop", "recurrent_dropout", "zoneout"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
                raise ValueError(f"{name} must be a probability in [0, 1), got {value!r}")
        if not isinstance(self.tie_weights, bool):
            raise ValueError(f"tie_weights must be true or false, got {self.tie_weights!r}")
        if isinstance(self.proj_size, bool) or not isinstance(self.proj_size, int) or self.proj_size < 0:
            raise ValueError(f"proj_size must be a non-negative integer, got {self.proj_size!r}")
        if self.recurrent_dropout and self.cell == "gru":
            raise ValueError("recurrent_dropout is not available for the GRU (its h_{t-1} also enters the update "
                             "outside W_hh); use zoneout, dropout or weight_drop")
        if self.proj_size and self.cell != "lstm":
            raise ValueError(f"proj_size is an LSTM option (its output projection), not one of a {self.cell}")
        if self.proj_size >= self.hidden:
            raise ValueError(f"proj_size must be smaller than hidden ({self.hidden}), got {self.proj_size}")
        if self.tie_weights and self.embed_dim != self.output_size:
            size = "proj_size" if self.proj_size else "hidden"
            raise ValueError(f"tie_weights needs embed_dim == {size} (the head's weight is the embedding, "
                             f"{self.vocab_size} x embed_dim), got embed_dim {self.embed_dim} and {size} "
                             f"{self.output_size}")
        for name, choices in (("init_hh", INIT_HH), ("init_ih", INIT_IH)):
            if getattr(self, name) not in choices:
                raise ValueError(f"{name} must be one of {', '.join(choices)}, got {getattr(self, name)!r}")
        if self.forget_bias is not None:
            if self.cell not in ("lstm", "lnlstm"):
                raise ValueError(f"forget_bias is an LSTM option (its forget gate), not one of a {self.cell}")
            if isinstance(self.forget_bias, bool) or not isinstance(self.forget_bias, (int, float)) or not \
                    math.isfinite(self.forget_bias):
                raise ValueError(f"forget_bias must be a finite number, got {self.forget_bias!r}")

    @property
    def output_size(self) -> int:
        """The width of the recurrent layer's output, the head's input: ``proj_size`` or ``hidden``."""
        return self.proj_size or self.hidden

    def to_json(self) -> dict[str, Any]:
        """The fields as a JSON-friendly dict (the form stored in checkpoints)."""
        return asdict(self)

    @classmethod
    def from_json(cls, data: Any) -> ModelConfig:
        """Inverse of :meth:`to_json`; missing or unknown keys are an error that names them."""
        if not isinstance(data, Mapping):
            raise ValueError(f"a model config is a dict, got {type(data).__name__}")
        expected = {f.name for f in fields(cls)}
        missing = expected - set(data) - set(OPTIONAL_MODEL_FIELDS)
        if missing or set(data) - expected:
            raise ValueError(f"a model config has the keys {sorted(expected)}; missing "
                             f"{sorted(missing)}, unknown {sorted(set(data) - expected)}")
        return cls(**data)


OPTIONAL_MODEL_FIELDS = ("dropout", "embed_dropout", "weight_drop", "tie_weights", "init_hh", "init_ih", "forget_bias",
                         "proj_size", "recurrent_dropout", "zoneout")
"""ModelConfig fields a stored config may lack (checkpoints from before they existed): their defaults apply."""


def check_sampling(temperature: float, top_k: int | None, rng: np.random.Generator) -> None:
    """Validate the sampling settings of :func:`sample_from_logits` (ValueError / TypeError naming the argument)."""
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not (
        math.isfinite(temperature) and temperature >= 0
    ):
        raise ValueError(f"temperature must be a finite number >= 0 (0: greedy), got {temperature!r}")
    if top_k is not None:
        _check_positive_int("top_k", top_k)
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")


def sample_from_logits(
    logits: Array,
    temperature: float,
    top_k: int | None,
    rng: np.random.Generator,
) -> int:
    """Draw one id from ``softmax(logits / temperature)``, restricted to the ``top_k`` largest logits.

    Args:
        logits: ``(V,)`` unnormalised scores.
        temperature: 0 (or anything below :data:`GREEDY_TEMPERATURE`) picks the most likely id
            (greedy, no randomness used); below 1 sharpens the distribution, above 1 flattens it.
        top_k: keep only the ``top_k`` most likely ids (ties with the k-th are kept too); None: all.
        rng: the source of randomness: the same generator state gives the same id.
    """
    if temperature < GREEDY_TEMPERATURE:
        return int(np.argmax(logits))
    # The maximum is subtracted before dividing, so that no temperature can overflow: every z <= 0.
    z = logits.astype(np.float64)
    z = (z - z.max()) / temperature
    if top_k is not None and top_k < len(z):
        threshold = np.partition(z, -top_k)[-top_k]
        z = np.where(z >= threshold, z, -np.inf)
    p = np.exp(z - z.max())
    cumulative = np.cumsum(p)
    # The first id whose cumulative mass exceeds u * total; an id with zero mass can never be that
    # first one, so masked ids are never drawn.
    index = int(np.searchsorted(cumulative, rng.random() * cumulative[-1], side="right"))
    # u * total can round up to total itself; then take the last id with mass.
    return index if index < len(p) else int(np.flatnonzero(p)[-1])


def _gates(cell: str) -> int:
    """Gate blocks in the cell's stacked weights (LSTM 4, GRU 3, RNN 1), read off a 1-unit layer."""
    return int(CELLS[cell](1, 1).params["weight_hh_l0"].shape[0])


def count_parameters(config: ModelConfig) -> int:
    """The number of trainable scalars of ``config``'s model, computed without allocating it."""
    V, E, H, L, G = config.vocab_size, config.embed_dim, config.hidden, config.layers, _gates(config.cell)
    P = config.output_size  # h's width (proj_size with a projection, whose weight_hr_l{k} is (P, H))
    projection = P * H if config.proj_size else 0
    # Per layer: b_ih and b_hh; the LN-LSTM's b, γ_x, γ_h (4H each) and γ_c, β_c (H each) instead.
    vectors = 14 * H if config.cell == "lnlstm" else 2 * G * H
    recurrent = G * H * (E + P) + vectors + projection + (L - 1) * (G * H * (P + P) + vectors + projection)
    return V * E + recurrent + V * P + V


def check_declared_sizes(config: ModelConfig, tensors: Mapping[str, Any]) -> None:
    """Check that ``tensors`` (a checkpoint's weights) have exactly the names and shapes ``config``
    declares, before a model of that size is allocated (a checkpoint that declares ``layers = 10**9``
    is refused by arithmetic, not by running out of memory).

    Raises:
        ValueError: a name is missing or unknown, or a shape differs; the message names it.
    """
    V, E, H, L, G = config.vocab_size, config.embed_dim, config.hidden, config.layers, _gates(config.cell)
    P = config.output_size  # the width of h: proj_size with a projection (then weight_hr_l{k} is (P, H))
    per_layer = 7 if config.cell == "lnlstm" else 5 if config.proj_size else 4
    recurrent = sorted(name for name in tensors if name.startswith("rnn."))
    if len(recurrent) != per_layer * L:
        raise ValueError(f"the checkpoint declares {L} recurrent layer(s) ({per_layer * L} rnn.* tensors) but holds "
                         f"{len(recurrent)} rnn.* tensors")
    expected: dict[str, tuple[int, ...]] = {"embed.weight": (V, E), "head.weight": (V, P), "head.bias": (V,)}
    if config.tie_weights:  # head.weight is embed.weight: stored once, under the embedding's name
        del expected["head.weight"]
    for layer in range(L):
        expected[f"rnn.weight_ih_l{layer}"] = (G * H, E if layer == 0 else P)
        expected[f"rnn.weight_hh_l{layer}"] = (G * H, P)
        if config.cell == "lnlstm":
            for name, size in (("bias", G * H), ("ln_ih_weight", G * H), ("ln_hh_weight", G * H),
                               ("ln_c_weight", H), ("ln_c_bias", H)):
                expected[f"rnn.{name}_l{layer}"] = (size,)
        else:
            expected[f"rnn.bias_ih_l{layer}"] = (G * H,)
            expected[f"rnn.bias_hh_l{layer}"] = (G * H,)
        if config.proj_size:
            expected[f"rnn.weight_hr_l{layer}"] = (P, H)
    missing, unknown = sorted(expected.keys() - tensors.keys()), sorted(tensors.keys() - expected.keys())
    if missing or unknown:
        raise ValueError(f"the weights do not match the declared {config.cell} model: missing {missing[:5]}, "
                         f"unknown {unknown[:5]}")
    for name, shape in expected.items():
        actual = tuple(np.shape(tensors[name]))
        if actual != shape:
            raise ValueError(f"the checkpoint declares {config} but {name} has shape {actual}, not {shape}")


class CharLM:
    """Embedding -> recurrent layer(s) -> Linear head over the vocabulary (see the module docstring).

    Args:
        config: the architecture.
        seed: seed of the initial weights (None: fresh randomness).  Each layer gets its own stream,
            derived from ``seed``, so the same seed always gives the same model.
    """

    def __init__(self, config: ModelConfig, seed: int | None = None) -> None:
        self.config = config
        embed_seed, rnn_seed, head_seed = (int(s) for s in np.random.SeedSequence(seed).generate_state(3))
        dtype = np.dtype(config.dtype)
        V, E, H = config.vocab_size, config.embed_dim, config.hidden
        options: dict[str, Any] = {"dropout": config.dropout, "weight_drop": config.weight_drop,
                                   "init_hh": config.init_hh, "init_ih": config.init_ih}
        if config.forget_bias is not None:
            options["forget_bias"] = config.forget_bias
        if config.proj_size:
            options["proj_size"] = config.proj_size
        if config.recurrent_dropout:
            options["recurrent_dropout"] = config.recurrent_dropout
        if config.zoneout:
            options["zoneout"] = config.zoneout
        p = config.dropout
        # The Dropout blocks have no parameters, so the parameter names are the same with and without them.
        self.net = Sequential([
            ("embed", Embedding(V, E, dtype=dtype, seed=embed_seed, dropout=config.embed_dropout)),
            *([("drop_in", Dropout(p))] if p else []),
            ("rnn", CELLS[config.cell](E, H, config.layers, dtype=dtype, seed=rnn_seed, **options)),
            *([("drop_out", Dropout(p))] if p else []),
            ("head", Linear(config.output_size, V, dtype=dtype, seed=head_seed)),
        ], tied={"head.weight": "embed.weight"} if config.tie_weights else None)

    def __repr__(self) -> str:
        return f"CharLM({self.config})"

    @property
    def params(self) -> Params:
        """All parameters under their dotted names; the arrays are the model's own (an optimizer updates them)."""
        return self.net.params

    def num_parameters(self) -> int:
        """The number of trainable scalars."""
        return sum(value.size for value in self.params.values())

    def state_dict(self) -> Params:
        """A copy of the parameters under their dotted names (what a checkpoint stores)."""
        return self.net.state_dict()

    def load_state_dict(self, tensors: Mapping[str, Any]) -> None:
        """Replace the parameters; the names and shapes must be exactly this architecture's.

        Raises:
            ValueError: a name is missing or unknown, or a shape differs (the message names them).
        """
        self.net.load_state_dict(tensors)

    # ------------------------------------------------------------------ training and evaluation
    def loss_and_grads(
        self, batch: Batch, state: ModelState | None, rng: np.random.Generator | None = None,
    ) -> tuple[float, Grads, ModelState]:
        """Forward (in training mode: dropout on) and backward over one batch.

        Args:
            batch: ids ``x``, targets ``y`` ``(B, T)``, and for padded batches ``lengths`` and ``mask``.
            state: the state to start from (the previous chunk's final state; None: zeros).  It is a
                constant here: no gradient flows into it.
            rng: the generator the dropout masks are drawn from (needed when the model has dropout).

        Returns:
            ``(loss, grads, final_state)``: the mean cross-entropy in nats over the counted targets,
            gradients keyed like :attr:`params`, and the final state to carry to the next chunk.
        """
        logits, final_state, cache = self.net.forward(batch.x, state=state, lengths=batch.lengths, training=True,
                                                      rng=rng)
        loss, d_logits = softmax_cross_entropy(logits, batch.y, mask=batch.mask)
        assert cache is not None  # keep_cache defaults to True
        _, _, grads = self.net.backward(d_logits, None, cache)
        return loss, grads, final_state

    def evaluate(self, batches: Any, on_batch: Callable[[int], None] | None = None) -> float:
        """The mean cross-entropy in nats per character over every batch of ``batches``.

        ``batches`` is a :class:`~rnnkit.charlm.data.StreamBatches` (the state is carried from batch
        to batch, as in training) or a :class:`~rnnkit.charlm.data.LineBatches` (each batch from the
        zero state), read in its natural order.  Forward only, without caches.  ``on_batch(done)``
        is called after each batch with the number of batches done (for a progress display).
        """
        total, count, state = 0.0, 0, None
        for index in range(len(batches)):
            batch = batches.get(index)
            logits, final_state, _ = self.net.forward(
                batch.x, state=state, lengths=batch.lengths, keep_cache=False
            )
            log_probs = log_softmax(logits)
            nll = -np.take_along_axis(log_probs, batch.y[..., None], axis=-1)[..., 0]
            if batch.mask is not None:
                nll = nll[batch.mask]
            total += float(np.sum(nll, dtype=np.float64))
            count += batch.num_targets
            state = final_state if batches.carries_state else None
            if on_batch is not None:
                on_batch(index + 1)
        return total / count

    # ------------------------------------------------------------------ generation
    def generate(
        self,
        prime: IntArray,
        length: int,
        *,
        rng: np.random.Generator,
        temperature: float = 1.0,
        top_k: int | None = None,
        stop_id: int | None = None,
    ) -> Iterator[int]:
        """Yield up to ``length`` new ids that continue ``prime``, one at a time.

        The prime is read from the zero state in forward passes of :data:`PRIME_CHUNK` steps (the
        state carried from one to the next), so a long prime costs constant memory; then each step samples an id
        from the distribution after the last id (:func:`sample_from_logits`), yields it, and feeds
        it back in.  The caller sees each id as soon as it is drawn (for streaming output).

        Args:
            prime: ``(N,)`` ids, ``N >= 1``: the text to continue (e.g. the id of ``"\\n"``).
            length: the most ids to generate (>= 0).
            rng: the randomness: the same prime, settings and generator state give the same ids.
            temperature: >= 0; 0 is greedy.
            top_k: None, or a positive integer (sample among the ``top_k`` most likely ids).
            stop_id: stop right after yielding this id (lines mode: the newline ending an item).
        """
        prime = np.asarray(prime)
        if prime.ndim != 1 or prime.size == 0 or not np.issubdtype(prime.dtype, np.integer):
            raise ValueError(f"prime must be a non-empty 1-D array of ids, got {prime.dtype} {prime.shape}")
        if isinstance(length, bool) or not isinstance(length, (int, np.integer)) or length < 0:
            raise ValueError(f"length must be a non-negative integer, got {length!r}")
        check_sampling(temperature, top_k, rng)

        state = None
        for start in range(0, prime.size, PRIME_CHUNK):
            logits, state, _ = self.net.forward(prime[None, start : start + PRIME_CHUNK], state=state,
                                                keep_cache=False)  # (1, <= PRIME_CHUNK, V)
        last = logits[0, -1]
        # Then one character at a time through the layers' inference step (the same kernels as the
        # forward pass, without its per-call machinery): embedding row -> recurrent step -> head.
        # (The Dropout blocks are the identity at inference.)
        embed, rnn, head = self.net["embed"], self.net["rnn"], self.net["head"]
        assert state is not None  # the prime is not empty
        rnn_state = state["rnn"]
        for _ in range(length):
            token = sample_from_logits(last, temperature, top_k, rng)
            yield token
            if token == stop_id:
                return
            out, rnn_state = rnn.step(embed.params["weight"][[token]], rnn_state)
            last = out[0] @ head.params["weight"].T + head.params["bias"]


def state_to_json(state: ModelState | None) -> dict[str, list[Array]] | None:
    """A model state in a checkpoint-document form: ``{layer: [h]}`` or ``{layer: [h, c]}`` (lists, not tuples)."""
    if state is None:
        return None
    return {name: list(value) if isinstance(value, tuple) else [value] for name, value in state.items()}


def state_from_json(data: Any, model: CharLM) -> ModelState | None:
    """Inverse of :func:`state_to_json` for ``model`` (an LSTM's state is the pair ``(h, c)``).

    Raises:
        ValueError: the stored state does not have ``model``'s layers, number of parts or shapes.
    """
    if data is None:
        return None
    parts = 2 if model.config.cell in ("lstm", "lnlstm") else 1
    if not isinstance(data, Mapping) or set(data) != set(model.net.recurrent):
        raise ValueError(f"the stored hidden state must be a dict over the layers {list(model.net.recurrent)}")
    state: ModelState = {}
    for name, arrays in data.items():
        if not isinstance(arrays, list) or len(arrays) != parts:
            raise ValueError(f"the stored hidden state of {name!r} must hold {parts} array(s)")
        layer = model.net[name]
        for k, array in enumerate(arrays):  # h is output_size wide (proj_size with a projection), c hidden_size
            width = layer.output_size if k == 0 else layer.hidden_size
            fits = (isinstance(array, np.ndarray) and array.ndim == 3 and array.shape[0] == layer.num_layers
                    and array.shape[2] == width and array.dtype == layer.dtype)
            if not fits:
                raise ValueError(f"the stored hidden state of {name!r} does not fit the model "
                                 f"({layer.num_layers} layers of {layer.hidden_size} units, {layer.dtype})")
        state[name] = tuple(arrays) if parts == 2 else arrays[0]
    return state


class LoadedModel(NamedTuple):
    """What :func:`load_model` returns."""

    model: CharLM
    vocab: Vocab
    document: dict[str, Any]   # the whole checkpoint document (config, mode, training progress ...)
    path: Path                 # the checkpoint file that was read


def find_checkpoint(path: str | os.PathLike[str]) -> Path:
    """The checkpoint file ``path`` names: the file itself, or in a run directory its best checkpoint
    (its latest one when no validation has run yet).

    Raises:
        CheckpointError: ``path`` does not exist, or is a directory that holds neither checkpoint.
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no such checkpoint file or run directory")
    if path.is_dir():
        for name in (BEST_CHECKPOINT, LATEST_CHECKPOINT):
            if (path / name).is_file():
                return path / name
        raise CheckpointError(f"{path}: a directory without {BEST_CHECKPOINT} or {LATEST_CHECKPOINT}; "
                              f"pass a checkpoint file or a run directory written by 'rnnkit train'")
    return path


def load_model(path: str | os.PathLike[str]) -> LoadedModel:
    """Load a char-LM checkpoint (a file, or a run directory, see :func:`find_checkpoint`).

    Nothing from the file is executed: the weights are safetensors and the document JSON.

    Raises:
        CheckpointError: the file is missing or corrupt, is not a char-LM checkpoint (another kind
            of model, or another version), its weights do not fit the architecture it declares
            (checked before the model is allocated), or they hold NaN or infinite values; the
            message names the file and the problem.
    """
    file = find_checkpoint(path)
    tensors, document = load_checkpoint(file)
    kind = document.get("format")
    if kind != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{file}: not a character-level language model checkpoint (format {kind!r}, "
                              f"expected {CHECKPOINT_FORMAT!r})")
    if document.get("version") != CHECKPOINT_VERSION:
        raise CheckpointError(f"{file}: char-LM checkpoint version {document.get('version')!r} is not supported "
                              f"(this rnnkit reads version {CHECKPOINT_VERSION})")
    try:
        config = ModelConfig.from_json(document.get("model"))
        vocab = Vocab.from_json(document.get("vocab"))
        if len(vocab) != config.vocab_size:
            raise ValueError(f"the vocabulary has {len(vocab)} characters but the model {config.vocab_size}")
        check_declared_sizes(config, tensors)  # before a model of the declared size is allocated
        model = CharLM(config)
        model.load_state_dict(tensors)
    except (ValueError, TypeError) as error:
        raise CheckpointError(f"{file}: {error}") from None
    return LoadedModel(model, vocab, document, file)
