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
  attention_slots: K arrays int32 [G, n_k, R_k], one per length class: the group's instances sorted
    by their real tokens, longest first, n_k of them in class k, each in a row of R_k positions
    holding its compact slots (real tokens first, in padded order; Ct + Cr after).
  attention_positions int32 [G, Ct + Cr]: each compact slot's position in the classes' rows
    flattened one after the other (A = sum_k n_k R_k in all: unused slots).

The embeddings, every projection, the FFN, the LayerNorms and the dropouts then run on the
compact [G (Ct + Cr), H] tokens; attention, which mixes an instance's tokens, runs in the rows of
the length classes, each class at its own length: queries, keys and values are gathered there and
the attention's output is gathered back (`Packing.to_rows`, `Packing.from_rows`). Each real token
sees what it sees unpacked: the same keys under the same mask, the same position embedding, and
the same dropout masks (the hashed masks of models/dropout.py take each element's unpacked index:
`Packing.token_index` for tokens, `Packing.row_queries` + `Packing.row_keys` for attention
probabilities). All
gathers move rows by one-to-one maps, so each one's gradient is the other gather (`gather_rows`):
no scatter-add.
"""

from __future__ import annotations

import itertools
from typing import NamedTuple

import jax
import jax.numpy as jnp

PACKING_KEYS = ("packed_text", "packed_regions", "token_slots", "attention_slots", "attention_positions")


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
      rows: K arrays int32 [G, n_k, R_k], the compact slot at each position of each length class's rows (C:
        padding).
      row_slots: int32 [G, A] the same, the classes' rows flattened one after the other.
      row_positions: int32 [G, C] each compact slot's position in row_slots (A: unused slot).
      row_queries: K arrays uint32 [G, n_k, heads, R_k] and row_keys: K arrays uint32 [G, n_k, R_k]: the
        dropout element index of attention probability (head, q, k) in a class's rows is row_queries[..., head,
        q] + row_keys[..., k], its index in the padded probabilities [B, N, heads, L, L] (`attention_index`).

    Compact tokens are [G C, ...], groups one after the other: flat, XLA:CPU sums a LayerNorm's
    gradient over the tokens four times faster than over the middle axis of [G, C, H].
    """

    index: jax.Array
    slots: jax.Array
    token_index: jax.Array
    rows: tuple[jax.Array, ...]
    row_slots: jax.Array
    row_positions: jax.Array
    row_queries: tuple[jax.Array, ...]
    row_keys: tuple[jax.Array, ...]

    @classmethod
    def of(cls, packed_text: jax.Array, packed_regions: jax.Array, token_slots: jax.Array,
           attention_slots: tuple[jax.Array, ...], attention_positions: jax.Array, heads: int) -> Packing:
        """From the batch arrays (module docstring); token_slots [B, N, L] with B = G B_g; `heads` attention heads."""
        groups, length = packed_text.shape[0], token_slots.shape[-1]
        slots = token_slots.reshape(groups, -1)
        index = jnp.concatenate([packed_text, packed_regions], axis=1)
        start = jnp.arange(groups, dtype=jnp.uint32)[:, None] * jnp.uint32(slots.shape[1])
        row_slots = jnp.concatenate([rows.reshape(groups, -1) for rows in attention_slots], axis=1)
        # The padded position of each row position; padding (slot C) reads the appended M.
        at_rows = take_rows(jnp.concatenate([index, jnp.full((groups, 1), slots.shape[1], index.dtype)], axis=1),
                            row_slots)
        tokens = start + at_rows.astype(jnp.uint32)  # Each row position's index in the batch's padded tokens.
        tokens = split_rows(tokens, attention_slots)
        queries, keys = zip(*(attention_index(t, heads, length) for t in tokens), strict=True)
        return cls(index=index, slots=slots, token_index=(start + index.astype(jnp.uint32)).reshape(-1),
                   rows=tuple(attention_slots), row_slots=row_slots, row_positions=attention_positions,
                   row_queries=queries, row_keys=keys)

    def to_padded(self, y: jax.Array, shape: tuple[int, int, int]) -> jax.Array:
        """Compact [G C, ...] -> padded [*shape, ...] for shape (B, N, L) (0 at padding)."""
        grouped = y.reshape(*self.index.shape, *y.shape[1:])
        return gather_rows(grouped, self.slots, self.index).reshape(*shape, *y.shape[1:])

    def to_rows(self, y: jax.Array) -> list[jax.Array]:
        """Compact [G C, ...] -> each length class's rows [G, n_k, R_k, ...] (0 at padding)."""
        return split_rows(gather_rows(y.reshape(*self.index.shape, *y.shape[1:]), self.row_slots, self.row_positions),
                          self.rows)

    def from_rows(self, rows: list[jax.Array]) -> jax.Array:
        """Each length class's rows [G, n_k, R_k, ...] -> compact [G C, ...] (0 in unused slots)."""
        groups, tail = self.index.shape[0], rows[0].shape[3:]
        flat = jnp.concatenate([r.reshape(groups, -1, *tail) for r in rows], axis=1)
        return gather_rows(flat, self.row_positions, self.row_slots).reshape(-1, *tail)


def split_rows(flat: jax.Array, rows: tuple[jax.Array, ...]) -> list[jax.Array]:
    """flat [G, A, ...] (the length classes' rows one after the other) -> each class's [G, n_k, R_k, ...], the
    shapes of `rows`."""
    bounds = [0, *itertools.accumulate(r.shape[1] * r.shape[2] for r in rows)]
    return [flat[:, a:b].reshape(*r.shape, *flat.shape[2:]) for (a, b), r in zip(itertools.pairwise(bounds), rows,
                                                                                   strict=True)]


def attention_index(tokens: jax.Array, heads: int, length: int) -> tuple[jax.Array, jax.Array]:
    """tokens uint32 [..., R]: the padded index (instance L + position) of each position of attention rows ->
    (uint32 [..., heads, R], uint32 [..., R]) whose sum [..., heads, q, k] is the index of probability (head, q,
    k) in the padded probabilities [instances, heads, L, L]: ((instance heads + head) L + q's position) L + k's."""
    instance, position = tokens // jnp.uint32(length), tokens % jnp.uint32(length)
    head = jax.lax.iota(jnp.uint32, heads)[:, None]
    queries = ((instance[..., None, :] * jnp.uint32(heads) + head) * jnp.uint32(length) + position[..., None, :])
    return queries * jnp.uint32(length), position


def locate(index: jax.Array, positions: int, length: int) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Where compact slots sit: index int [G, C] (padded positions of [B_g, N, `length`], flattened; unused:
    `positions` = B_g N length) -> (used bool, instance in the group int, position in the instance int), each
    [G, C]; unused slots get instance B_g N (out of range) and position 0."""
    used = index < positions
    instance, position = jnp.divmod(jnp.where(used, index, positions), length)
    return used, instance, position
