"""rnnkit.charlm.model and .sample: the model against PyTorch, evaluation, generation, sampling, checkpoints."""

from __future__ import annotations

import math

import numpy as np
import pytest

from rnnkit.charlm.data import Batch, LineBatches, StreamBatches, Vocab
from rnnkit.charlm.model import (
    CharLM,
    ModelConfig,
    bits,
    load_model,
    sample_from_logits,
    state_from_json,
    state_to_json,
)
from rnnkit.charlm.sample import DEFAULT_LENGTH, SampleConfig, generate_text, sample_text
from rnnkit.io.checkpoint import CheckpointError, save_checkpoint

V = 7


def small_model(cell: str = "lstm", layers: int = 1, dtype: str = "float64", seed: int = 0) -> CharLM:
    return CharLM(ModelConfig(vocab_size=V, cell=cell, embed_dim=5, hidden=6, layers=layers, dtype=dtype), seed=seed)


def torch_twin(model: CharLM):
    """The same model in torch.nn (float64), weights copied by name."""
    import torch

    c = model.config
    rnn_type = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU, "rnn": torch.nn.RNN}[c.cell]
    embed = torch.nn.Embedding(c.vocab_size, c.embed_dim, dtype=torch.float64)
    rnn = rnn_type(c.embed_dim, c.hidden, c.layers, batch_first=True, dtype=torch.float64)
    head = torch.nn.Linear(c.hidden, c.vocab_size, dtype=torch.float64)
    modules = {"embed": embed, "rnn": rnn, "head": head}
    with torch.no_grad():
        for name, value in model.params.items():
            layer, key = name.split(".", 1)
            getattr(modules[layer], key).copy_(torch.from_numpy(value))
    return modules


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_loss_and_grads_match_torch_with_carried_state(cell: str) -> None:
    import torch

    model = small_model(cell, layers=2)
    rng = np.random.default_rng(1)
    x, y = rng.integers(0, V, (3, 4)), rng.integers(0, V, (3, 4))
    # A non-zero incoming state, as in the middle of a stream: it must be used but get no gradient.
    h = rng.uniform(-0.5, 0.5, (2, 3, 6))
    c = rng.uniform(-0.5, 0.5, (2, 3, 6))
    state = {"rnn": (h, c) if cell == "lstm" else h}
    loss, grads, final = model.loss_and_grads(Batch(x, y, None, None), state)

    m = torch_twin(model)
    th = (torch.from_numpy(h), torch.from_numpy(c)) if cell == "lstm" else torch.from_numpy(h)
    out, t_final = m["rnn"](m["embed"](torch.from_numpy(x)), th)
    t_loss = torch.nn.functional.cross_entropy(m["head"](out).reshape(-1, V), torch.from_numpy(y).reshape(-1))
    t_loss.backward()
    assert loss == pytest.approx(t_loss.item(), abs=1e-12)
    for name, grad in grads.items():
        layer, key = name.split(".", 1)
        np.testing.assert_allclose(grad, getattr(m[layer], key).grad.numpy(), atol=1e-10, err_msg=name)
    t_h = t_final[0] if cell == "lstm" else t_final
    np.testing.assert_allclose(final["rnn"][0] if cell == "lstm" else final["rnn"], t_h.detach().numpy(), atol=1e-12)


def test_padded_line_batch_matches_torch_per_item() -> None:
    """A padded batch with lengths and a mask = the mean over items run separately, without padding."""
    import torch

    model = small_model("lstm")
    vocab = Vocab(list("\nabcdef"))
    items = [vocab.encode(s) for s in ["abc", "f", "deadbe"]]
    batch = LineBatches(items, 0, batch_size=3, drop_last=False).get(0)
    loss, grads, _ = model.loss_and_grads(batch, None)

    m = torch_twin(model)
    total = 0
    for row, n in enumerate(batch.lengths):
        xb, yb = torch.from_numpy(batch.x[row : row + 1, :n]), torch.from_numpy(batch.y[row, :n])
        out, _ = m["rnn"](m["embed"](xb))
        total = total + torch.nn.functional.cross_entropy(m["head"](out)[0], yb, reduction="sum")
    t_loss = total / int(batch.lengths.sum())
    t_loss.backward()
    assert loss == pytest.approx(t_loss.item(), abs=1e-12)
    for name, grad in grads.items():
        layer, key = name.split(".", 1)
        np.testing.assert_allclose(grad, getattr(m[layer], key).grad.numpy(), atol=1e-10, err_msg=name)


def test_evaluate_carries_the_state_across_chunks() -> None:
    """Chunked evaluation with the carried state equals one pass over whole rows."""
    model = small_model("gru")
    ids = np.random.default_rng(2).integers(0, V, 161)
    chunked = model.evaluate(StreamBatches(ids, batch_size=4, seq_len=7))   # rows of 40: 6 chunks, last short
    whole = model.evaluate(StreamBatches(ids, batch_size=4, seq_len=40))    # one chunk per row
    assert len(StreamBatches(ids, 4, 7)) == 6
    assert chunked == pytest.approx(whole, abs=1e-12)
    fresh = model.evaluate(_restarting(StreamBatches(ids, batch_size=4, seq_len=7)))
    assert abs(fresh - whole) > 1e-6  # dropping the state changes the result: it is really carried


class _restarting:
    """The same batches, but every one from the zero state."""

    carries_state = False

    def __init__(self, batches: StreamBatches) -> None:
        self._batches = batches

    def __len__(self) -> int:
        return len(self._batches)

    def get(self, index: int) -> Batch:
        return self._batches.get(index)


def test_bits_converts_nats() -> None:
    assert bits(math.log(2)) == pytest.approx(1.0)
    assert bits(math.log(V)) == pytest.approx(math.log2(V))


# --------------------------------------------------------------------------------------------------
# Sampling and generation
# --------------------------------------------------------------------------------------------------


def test_sample_from_logits_follows_the_tempered_distribution() -> None:
    logits = np.array([0.0, 1.0, 2.0, -1.0])
    rng = np.random.default_rng(0)
    n = 40_000
    for temperature in (1.0, 0.5):
        draws = np.array([sample_from_logits(logits, temperature, None, rng) for _ in range(n)])
        p = np.exp(logits / temperature) / np.exp(logits / temperature).sum()
        freq = np.bincount(draws, minlength=4) / n
        # 5 standard errors of a binomial proportion.
        assert np.all(np.abs(freq - p) < 5 * np.sqrt(p * (1 - p) / n) + 1e-12), (freq, p)
    top2 = {sample_from_logits(logits, 1.0, 2, rng) for _ in range(2000)}
    assert top2 == {1, 2}
    assert sample_from_logits(logits, 0, None, rng) == 2
    assert sample_from_logits(logits, 1.0, 1, rng) == 2


def test_greedy_generation_equals_argmax_of_a_full_forward_pass() -> None:
    """Step-by-step generation with the carried state = re-running the whole sequence at once."""
    model = small_model("lstm", layers=2, seed=3)
    prime = np.array([1, 4, 2])
    generated = list(model.generate(prime, 12, rng=np.random.default_rng(0), temperature=0))
    sequence = np.concatenate([prime, generated])
    logits, _, _ = model.net.forward(sequence[None, :-1], keep_cache=False)
    assert generated == np.argmax(logits[0, len(prime) - 1 :], axis=-1).tolist()


def test_generation_is_reproducible_for_a_seed_and_stops_at_stop_id() -> None:
    model = small_model("gru", dtype="float32")
    def draw(seed: int) -> list[int]:
        return list(model.generate(np.array([0]), 50, rng=np.random.default_rng(seed), temperature=1.2, top_k=5))

    assert draw(7) == draw(7)
    assert draw(7) != draw(8)
    stopped = list(model.generate(np.array([0]), 200, rng=np.random.default_rng(1), stop_id=3))
    assert stopped[-1] == 3 and 3 not in stopped[:-1]


def test_generate_validates_its_arguments() -> None:
    model = small_model()
    rng = np.random.default_rng(0)
    for kwargs, message in [({"temperature": -1.0}, "temperature"), ({"top_k": 0}, "top_k"),
                            ({"temperature": float("nan")}, "temperature")]:
        with pytest.raises(ValueError, match=message):
            next(model.generate(np.array([0]), 3, rng=rng, **kwargs))
    with pytest.raises(ValueError, match="prime"):
        next(model.generate(np.array([], dtype=int), 3, rng=rng))
    with pytest.raises(TypeError, match="Generator"):
        next(model.generate(np.array([0]), 3, rng=0))


def test_generate_text_stream_and_lines() -> None:
    vocab = Vocab(list("\nabcdef"))
    model = small_model(seed=5)
    rng = np.random.default_rng(0)
    text = "".join(generate_text(model, vocab, prime="ab\nc", length=30, rng=rng))
    assert text.startswith("ab\nc") and len(text) == 34
    items = "".join(generate_text(model, vocab, mode="lines", prime="be", length=6, rng=rng, max_item_length=5))
    lines = items.split("\n")
    assert len(lines) == 7 and lines[-1] == ""
    assert all(line.startswith("be") and len(line) <= 4 for line in lines[:-1])
    with pytest.raises(ValueError, match=r"the prime has 1 character\(s\) not in the model's vocabulary.*'z'"):
        next(generate_text(model, vocab, prime="az", length=3, rng=rng))
    with pytest.raises(ValueError, match="line break"):
        next(generate_text(model, vocab, mode="lines", prime="a\nb", length=3, rng=rng, max_item_length=9))
    with pytest.raises(ValueError, match="at most 3 long"):
        next(generate_text(model, vocab, mode="lines", prime="abcd", length=3, rng=rng, max_item_length=4))


# --------------------------------------------------------------------------------------------------
# Checkpoints
# --------------------------------------------------------------------------------------------------


def _document(charlm: CharLM, vocab: Vocab, **changes) -> dict:
    return {"format": "rnnkit.charlm", "version": 1, "model": charlm.config.to_json(), "vocab": vocab.to_json(),
            "mode": "stream", **changes}


def test_checkpoint_round_trip_gives_identical_predictions(tmp_path) -> None:
    model = small_model("lstm", layers=2, dtype="float32", seed=9)
    vocab = Vocab(list("\nabcdef"))
    save_checkpoint(tmp_path / "m.safetensors", model.state_dict(), _document(model, vocab))
    loaded = load_model(tmp_path / "m.safetensors")
    assert loaded.vocab == vocab and loaded.model.config == model.config
    assert sorted(loaded.model.params) == sorted(model.params)
    ids = np.random.default_rng(0).integers(0, V, (2, 9))
    a, sa, _ = model.net.forward(ids, keep_cache=False)
    b, sb, _ = loaded.model.net.forward(ids, keep_cache=False)
    assert a.dtype == np.float32 and np.array_equal(a, b)
    assert np.array_equal(sa["rnn"][1], sb["rnn"][1])


def test_load_model_refuses_other_kinds_and_mismatched_weights(tmp_path) -> None:
    model, vocab = small_model(), Vocab(list("\nabcdef"))
    save_checkpoint(tmp_path / "other.safetensors", {"w": np.zeros(3)}, {"format": "someone.else"})
    with pytest.raises(CheckpointError, match="not a character-level language model checkpoint"):
        load_model(tmp_path / "other.safetensors")
    gru_doc = _document(model, vocab, model={**model.config.to_json(), "cell": "gru"})
    save_checkpoint(tmp_path / "gru.safetensors", model.state_dict(), gru_doc)
    with pytest.raises(CheckpointError, match=r"gru.safetensors: the checkpoint declares .* has shape \(24, 5\)"):
        load_model(tmp_path / "gru.safetensors")
    save_checkpoint(tmp_path / "v2.safetensors", model.state_dict(), _document(model, vocab, version=2))
    with pytest.raises(CheckpointError, match="version 2 is not supported"):
        load_model(tmp_path / "v2.safetensors")
    with pytest.raises(CheckpointError, match="without best.safetensors or latest.safetensors"):
        load_model(tmp_path)


def test_state_json_round_trip() -> None:
    model = small_model("lstm", layers=2)
    _, state, _ = model.net.forward(np.zeros((3, 2), dtype=int), keep_cache=False)
    back = state_from_json(state_to_json(state), model)
    assert isinstance(back["rnn"], tuple)
    assert all(np.array_equal(a, b) for a, b in zip(back["rnn"], state["rnn"], strict=True))
    assert state_from_json(None, model) is None
    with pytest.raises(ValueError, match="does not fit"):
        state_from_json({"rnn": [np.zeros((1, 3, 6)), np.zeros((1, 3, 6))]}, model)


def test_sample_text_defaults_the_length_by_mode_and_is_reproducible(tmp_path) -> None:
    model = small_model("gru", layers=1, dtype="float32", seed=3)
    vocab = Vocab(list("\nabcdef"))
    path = tmp_path / "m.safetensors"
    save_checkpoint(path, model.state_dict(), _document(model, vocab))
    text = "".join(sample_text(SampleConfig(str(path), prime="ab", seed=5)))
    assert text.startswith("ab") and len(text) == 2 + DEFAULT_LENGTH["stream"]
    assert text == "".join(sample_text(SampleConfig(str(path), prime="ab", seed=5)))
    assert len("".join(sample_text(SampleConfig(str(path), length=7, seed=5)))) == 7
    with pytest.raises(ValueError, match="not both"):
        SampleConfig(str(path), prime="ab", prime_file="p.txt")
