"""Which layer, and which weights, a forward cache was made with: the check behind every ``backward``.

A cache is only valid for the layer object whose ``forward`` made it, and only while that layer's
weights are the ones the forward pass used.  Every layer cache therefore records a
:class:`WeightVersion`, and ``backward`` compares it with :func:`weight_version` of the layer now:

* **owner** -- the layer object itself (``is``): a cache of another layer of the same shape is caught;
* **arrays** -- the parameter arrays themselves (``is``): an array replaced (``params[k] = new``,
  ``load_state_dict``) is caught, whatever its values;
* **counts** -- how often each array was marked as modified by :func:`note_modified`, which rnnkit's
  optimizers call after every ``step``: every optimizer update is caught, even one that happens to
  leave the sampled elements below unchanged;
* **sample** -- the bytes of a fixed strided sample of each array (at most :data:`SAMPLE_ELEMENTS`
  elements, spread evenly over it): an in-place edit by other code (``w[...] = v``, ``w *= 0.5``,
  ``w += noise``) is caught whenever it changes at least one sampled element, which every edit of a
  whole array or of a whole row or column does in practice.

What is *not* guaranteed: an in-place edit of a few single elements that all fall between the
sampled ones, made by code other than rnnkit's optimizers, goes unnoticed.  Hashing every element
instead would cost a pass over all weights on each forward and backward (several percent of a small
layer's step); the sample costs a few microseconds per array.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

from rnnkit._types import Array

SAMPLE_ELEMENTS = 256
"""The most elements per parameter array whose bytes a :class:`WeightVersion` keeps."""

# id(array) -> how often note_modified saw it.  An entry is dropped when its array is freed (a
# weakref.finalize), so a new array that reuses the id starts from zero -- and a cache still holding
# the old array would notice the replacement by identity anyway.
_modifications: dict[int, int] = {}


class WeightVersion(NamedTuple):
    """What a layer and its weights looked like when a cache was made (see the module docstring)."""

    owner: Any                   # the layer object
    arrays: tuple[Array, ...]    # the parameter arrays, in ``params`` order
    counts: tuple[int, ...]      # note_modified counts of those arrays
    sample: bytes                # the sampled elements of every array, concatenated


def note_modified(arrays: Iterable[Array]) -> None:
    """Record that ``arrays`` were changed in place (rnnkit's optimizers call this after each step)."""
    for array in arrays:
        key = id(array)
        count = _modifications.get(key)
        if count is None:
            weakref.finalize(array, _modifications.pop, key, None)
            count = 0
        _modifications[key] = count + 1


def _sample(array: Array) -> bytes:
    flat = array.reshape(-1)
    stride = max(1, flat.size // SAMPLE_ELEMENTS)
    return flat[::stride].tobytes()


def weight_version(owner: Any, params: Mapping[str, Array]) -> WeightVersion:
    """The current :class:`WeightVersion` of ``owner`` whose parameters are ``params``."""
    arrays = tuple(params.values())
    counts = tuple(_modifications.get(id(array), 0) for array in arrays)
    return WeightVersion(owner, arrays, counts, b"".join(_sample(array) for array in arrays))


def check_version(recorded: Any, owner: Any, params: Mapping[str, Array], what: str) -> None:
    """Raise ValueError unless ``recorded`` is ``owner``'s current weight version.

    ``what`` names the layer kind in the message (``"LSTM"``, ``"Linear"`` ...).  The message says
    what happened: a cache of another layer, or weights that changed (replaced or edited) since the
    forward pass.
    """
    if not isinstance(recorded, WeightVersion):
        raise ValueError(f"cache must be the cache returned by this {what}'s forward(...)")
    if recorded.owner is not owner:
        raise ValueError(f"cache comes from another {type(recorded.owner).__name__} object, not from this {what}: "
                         f"pass the cache of this layer's own forward")
    arrays = tuple(params.values())
    if len(arrays) != len(recorded.arrays) or any(a is not b for a, b in zip(arrays, recorded.arrays, strict=False)):
        raise ValueError(f"the {what}'s weights were replaced since the forward pass that made this cache "
                         f"(params reassigned or load_state_dict); run forward again before backward")
    current = weight_version(owner, params)
    if current.counts != recorded.counts:
        raise ValueError(f"the {what}'s weights were updated (an optimizer step) since the forward pass that made "
                         f"this cache; its gradients would be wrong: run forward again before backward")
    if current.sample != recorded.sample:
        raise ValueError(f"the {what}'s weights were changed in place since the forward pass that made this cache; "
                         f"its gradients would be wrong: run forward again before backward")

