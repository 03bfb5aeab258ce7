"""Dropout with hashed masks (the encoder's, the bag head's and the baselines').

`Dropout` keeps an element with probability round((1 - rate) 2^32) / 2^32 -- for rate 0.1, 0.9 to
within 1.2e-10 -- and scales kept elements by the inverse of that exact probability. Its masks come
from a counter-based hash of each element's index under a per-call seed drawn from the "dropout"
rng collection; a packed batch (models/packing.py) gives each element its index in the unpacked
layout, so packed and padded batches drop the same elements.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp


def fmix32(x: jax.Array) -> jax.Array:
    """MurmurHash3's 32-bit finaliser: a bijection of uint32 in which every input bit flips each
    output bit with probability ~1/2. x uint32 [...] -> uint32 [...]."""
    x = x ^ (x >> 16)
    x = x * jnp.uint32(0x85EBCA6B)
    x = x ^ (x >> 13)
    x = x * jnp.uint32(0xC2B2AE35)
    return x ^ (x >> 16)


class Dropout(nn.Module):
    """Inverted dropout with hashed masks: x [...] -> [...].

    Each call draws a seed (s0, s1) of two 32-bit words from the "dropout" rng collection (as
    nn.Dropout draws its key). Element i, its row-major index in x, gets u_i = fmix32(fmix32(i ^ s0)
    + s1) and is kept iff u_i < t, t = round((1 - rate) 2^32); kept elements are scaled by 2^32 / t,
    so the expectation is exactly x. For a given seed i -> u_i is a bijection, so the u_i of one
    call are distinct 32-bit values, spread like a draw without replacement.

    Why not jax.random.bernoulli: threefry spends some 20 rounds of integer work per random word
    and XLA:CPU writes the words to memory before using them; the hash is a few integer operations
    that XLA fuses into the select that applies the mask (the demo train step's gain:
    docs/performance.md). The index is the global one, so a sharded x gets the mask it gets on one
    device.
    """

    rate: float

    @nn.compact
    def __call__(self, x: jax.Array | list[jax.Array], *, deterministic: bool,
                 index: jax.Array | list[jax.Array] | None = None) -> jax.Array | list[jax.Array]:
        """x: an array, or a list of arrays that share the call's seed. index: uint32 arrays broadcastable to
        x's (a list for a list): the element index in the unpacked layout (models/packing.py) of each element
        (`row_index` for rows of tokens); None: the row-major index in x."""
        if not 0.0 <= self.rate < 1.0:
            raise ValueError(f"dropout rate {self.rate} is not in [0, 1)")
        if deterministic or self.rate == 0.0:
            return x
        xs = x if isinstance(x, list) else [x]
        indices = [None] * len(xs) if index is None else index if isinstance(index, list) else [index]
        for array, element in zip(xs, indices, strict=True):
            if element is None and array.size >= 2**32:
                raise ValueError(f"dropout on {array.size} elements: the mask's 32-bit element index allows < 2^32")
        threshold = min(round((1.0 - self.rate) * 2**32), 2**32 - 1)
        s0, s1 = jax.random.bits(self.make_rng("dropout"), (2,), jnp.uint32)

        def drop(array: jax.Array, element: jax.Array | None) -> jax.Array:
            if element is None:
                element = jax.lax.iota(jnp.uint32, array.size).reshape(array.shape)
            keep = fmix32(fmix32(element.astype(jnp.uint32) ^ s0) + s1) < jnp.uint32(threshold)
            return jnp.where(keep, array * (2**32 / threshold), 0).astype(array.dtype)

        out = [drop(array, element) for array, element in zip(xs, indices, strict=True)]
        return out if isinstance(x, list) else out[0]


def row_index(token_index: jax.Array, width: int) -> jax.Array:
    """Dropout's element index of rows of `width` values: token_index int [...] (each row's index in the
    unpacked layout) -> uint32 [..., width], token_index x width + j."""
    return token_index.astype(jnp.uint32)[..., None] * jnp.uint32(width) + jax.lax.iota(jnp.uint32, width)
