"""Packed tokens: the encoder's per-token work done on real tokens only.

A padded batch computes B N (Lt + Lr) tokens, of which the real ones are often fewer than two
thirds (docs/performance.md, "Packing"). With config.data.packing each step also receives where
the real tokens are (clever_jax.data.packing builds it on the host), in G groups of bags (one per
device and accumulation micro-batch; group g holds the bags [g B_g, (g + 1) B_g) of the batch
the model sees, M = B_g N (Lt + Lr) padded positions):

  packed_text int32 [G, Ct], packed_regions int32 [G, Cr]: the padded position m (in the group's
    [B_g, N, Lt + Lr] layout, flattened) of each compact slot's token: the group's real text
    tokens, then its real regions, in padded order; unused slots hold M.
  token_slots int32 [B, N, Lt + Lr]: the compact slot in [0, Ct + Cr) of each padded position
    (text slots first), Ct + Cr for padding.

The embeddings, every projection, the FFN, the LayerNorms and the dropouts then run on the
compact [G (Ct + Cr), H] tokens; only attention, which mixes an instance's tokens, runs in the
padded layout, its queries, keys and values gathered there and its output gathered back
(`Packing.to_padded`, `Packing.to_compact`). Each real token sees what it sees unpacked: the
same keys under the same mask, the same position embedding, and the same dropout masks (the
hashed masks of encoder.Dropout take each token's unpacked index, `Packing.token_index`). Both
gathers move rows by a one-to-one map, so each one's gradient is the other gather
(`gather_rows`): no scatter-add.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

PACKING_KEYS = ("packed_text", "packed_regions", "token_slots")


def take_rows(x: jax.Array, index: jax.Array) -> jax.Array:
    """x [G, M, ...], index int [G, C] -> [G, C, ...]: rows x[g, index[g, c]], 0 where index is not in [0, M)."""
    index = index.reshape(index.shape + (1,) * (x.ndim - 2))
    return jnp.take_along_axis(x, index, axis=1, mode="fill", fill_value=0)


@jax.custom_vjp
def gather_rows(x: jax.Array, index: jax.Array, inverse: jax.Array) -> jax.Array:
    """Rows of x [G, M, ...] at index int [G, C] (0 where out of range) -> [G, C, ...].

    inverse int [G, M] is the map back: index[g, inverse[g, m]] = m for every row m that index
    picks, out of range for the others. The gradient is then a gather by `inverse` rather than
    a scatter-add (index must be one-to-one on its in-range entries; unused rows get 0).
    """
    return take_rows(x, index)


def _gather_rows_fwd(x, index, inverse):
    return take_rows(x, index), (index, inverse)


def _gather_rows_bwd(residuals, grad):
    index, inverse = residuals
    return take_rows(grad, inverse), None, None


gather_rows.defvjp(_gather_rows_fwd, _gather_rows_bwd)


class Packing(NamedTuple):
    """Where the real tokens of a packed batch are (module docstring).

    Attributes:
      index: int32 [G, C] the padded position (in the group, of M) of each compact slot; M: unused.
      slots: int32 [G, M] the compact slot of each padded position; C: padding.
      token_index: uint32 [G C] each slot's position in the batch's flattened padded [B, N, Lt + Lr]
        layout (g M + index): the element index of its hashed dropout mask.

    Compact tokens are [G C, ...], groups one after the other: flat, XLA:CPU sums a LayerNorm's
    gradient over the tokens four times faster than over the middle axis of [G, C, H].
    """

    index: jax.Array
    slots: jax.Array
    token_index: jax.Array

    @classmethod
    def of(cls, packed_text: jax.Array, packed_regions: jax.Array, token_slots: jax.Array) -> Packing:
        """From the batch arrays (module docstring); token_slots [B, N, L] with B = G B_g."""
        groups = packed_text.shape[0]
        slots = token_slots.reshape(groups, -1)
        index = jnp.concatenate([packed_text, packed_regions], axis=1)
        start = jnp.arange(groups, dtype=jnp.uint32)[:, None] * jnp.uint32(slots.shape[1])
        return cls(index=index, slots=slots, token_index=(start + index.astype(jnp.uint32)).reshape(-1))

    def to_compact(self, x: jax.Array) -> jax.Array:
        """Padded [B, N, L, ...] -> compact [G C, ...] (0 in unused slots)."""
        compact = gather_rows(x.reshape(*self.slots.shape, *x.shape[3:]), self.index, self.slots)
        return compact.reshape(-1, *x.shape[3:])

    def to_padded(self, y: jax.Array, shape: tuple[int, int, int]) -> jax.Array:
        """Compact [G C, ...] -> padded [*shape, ...] for shape (B, N, L) (0 at padding)."""
        grouped = y.reshape(*self.index.shape, *y.shape[1:])
        return gather_rows(grouped, self.slots, self.index).reshape(*shape, *y.shape[1:])


def locate(index: jax.Array, positions: int, length: int) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Where compact slots sit: index int [G, C] (padded positions of [B_g, N, `length`], flattened; unused:
    `positions` = B_g N length) -> (used bool, instance in the group int, position in the instance int), each
    [G, C]; unused slots get instance B_g N (out of range) and position 0."""
    used = index < positions
    instance, position = jnp.divmod(jnp.where(used, index, positions), length)
    return used, instance, position
