"""Precision policies and dynamic loss scaling.

Parameters, optimiser state and gradients are always float32; config.model.dtype picks the
compute dtype of the encoder and the classifier (softmaxes, LayerNorm statistics and the loss
stay float32):

  float32    the reference.
  bfloat16   TPUs and NVIDIA Ampere or later: same exponent range as float32, no loss scaling.
  float16    cards without fast bfloat16 (Turing, e.g. the RTX 2080 Ti of the paper): the loss is
             multiplied by a dynamic scale before differentiation so that small gradients do not
             underflow float16, and the gradients are divided by it afterwards.

Dynamic scale: an overflow (a non-finite gradient) skips the update and halves the scale; after
`period` finite steps in a row the scale doubles (never above MAX_SCALE, never below 1).
"""

from __future__ import annotations

import flax
import jax
import jax.numpy as jnp
import ml_collections

POLICIES = ("float32", "bfloat16", "float16")
MAX_SCALE = 2.0**24


@flax.struct.dataclass
class LossScale:
    """scale float32 [] (multiplies the loss), good_steps int32 [] (finite steps since the last change)."""

    scale: jax.Array
    good_steps: jax.Array
    period: int = flax.struct.field(pytree_node=False, default=2000)

    def update(self, grads_finite: jax.Array) -> LossScale:
        """Halve after an overflow; double after `period` finite steps in a row."""
        grow = grads_finite & (self.good_steps + 1 >= self.period)
        scale = jnp.where(grads_finite, jnp.where(grow, self.scale * 2, self.scale), self.scale / 2)
        good_steps = jnp.where(grads_finite & ~grow, self.good_steps + 1, 0)
        return LossScale(scale=jnp.clip(scale, 1.0, MAX_SCALE), good_steps=good_steps.astype(jnp.int32),
                         period=self.period)


def check_policy(config: ml_collections.ConfigDict) -> str:
    """config.model.dtype, validated."""
    dtype = config.model.dtype
    if dtype not in POLICIES:
        raise ValueError(f"config.model.dtype={dtype!r}: expected one of {POLICIES}")
    return dtype


def initial_loss_scale(config: ml_collections.ConfigDict) -> LossScale | None:
    """The starting loss scale for float16 compute; None (no scaling) for float32 and bfloat16."""
    if check_policy(config) != "float16":
        return None
    t = config.train
    return LossScale(scale=jnp.asarray(t.loss_scale_init, jnp.float32), good_steps=jnp.zeros((), jnp.int32),
                     period=int(t.loss_scale_period))
