"""The query pair's box geometry: what `config.model.pair_geometry` embeds (models/encoder.py,
models/region_pair.py) and what the PredCls study reads (experiments/predcls.py)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from clever_jax.data.vg import GEOMETRY_DIM


def pair_geometry(subject: jax.Array, obj: jax.Array) -> jax.Array:
    """18 numbers of a box pair from their region geometry [..., 6] (x1, y1, x2, y2 over the image
    size, width, height) -> float32 [..., 18]: both boxes, the centre offset, log width and height
    ratios, the intersection over each box's area and over their union, and three vertical edge
    offsets (subject bottom - object top, the bottoms, the tops). Sizes are floored at 1e-6."""
    subject, obj = jnp.asarray(subject, jnp.float32), jnp.asarray(obj, jnp.float32)
    eps = 1e-6
    width = jnp.maximum(jnp.minimum(subject[..., 2], obj[..., 2]) - jnp.maximum(subject[..., 0], obj[..., 0]), 0)
    height = jnp.maximum(jnp.minimum(subject[..., 3], obj[..., 3]) - jnp.maximum(subject[..., 1], obj[..., 1]), 0)
    inter = width * height
    size_s, size_o = jnp.maximum(subject[..., 4:6], eps), jnp.maximum(obj[..., 4:6], eps)
    area_s, area_o = size_s[..., 0] * size_s[..., 1], size_o[..., 0] * size_o[..., 1]
    centre = (subject[..., :2] + subject[..., 2:4]) / 2 - (obj[..., :2] + obj[..., 2:4]) / 2
    return jnp.concatenate([
        subject[..., :4], obj[..., :4], centre, jnp.log(size_s / size_o),
        jnp.stack([inter / area_s, inter / area_o, inter / jnp.maximum(area_s + area_o - inter, eps),
                   subject[..., 3] - obj[..., 1], subject[..., 3] - obj[..., 3], subject[..., 1] - obj[..., 1]], -1),
    ], axis=-1)


def query_geometry(regions: jax.Array, region_mask: jax.Array) -> tuple[jax.Array, jax.Array]:
    """The box geometry [..., 6] of region 0 (subject) and region 1 (object) of regions [..., Lr, F],
    zero where region_mask [..., Lr] marks them as padding (a padding instance)."""
    geometry = jnp.where(region_mask[..., :2, None], regions[..., :2, -GEOMETRY_DIM:], 0)
    return geometry[..., 0, :], geometry[..., 1, :]
