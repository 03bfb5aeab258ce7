"""BERT's LayerNorm and exact GELU, each with a hand-written backward pass.

Both compute the same functions as `flax.linen.LayerNorm(use_fast_variance=False)` and
x (1 + erf(x / sqrt(2))) / 2, and the same gradients to float rounding (tests/models/test_bert_ops.py).
The derivatives are written out (the GELU's as Phi(x) + x phi(x), LayerNorm's input gradient from the
saved input and its two statistics) rather than derived by JAX: XLA:CPU fuses them into shorter passes,
and the packed train step at the paper's shapes took 3.10 s against 3.20 s (docs/performance.md, "Packing").
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

_SQRT_HALF = 2**-0.5
_INV_SQRT_2PI = (2 * jnp.pi) ** -0.5


@jax.custom_vjp
def gelu(x: jax.Array) -> jax.Array:
    """Exact GELU, x Phi(x) = x (1 + erf(x / sqrt(2))) / 2: BERT's "gelu" as PyTorch computes it. Any shape.

    jax.nn.gelu(approximate=False) evaluates the same function through erfc, which costs about
    twice as much on CPU.
    """
    return x * (1.0 + jax.lax.erf(x * _SQRT_HALF)) * 0.5


def _gelu_forward(x: jax.Array) -> tuple[jax.Array, jax.Array]:
    return gelu(x), x


def _gelu_backward(x: jax.Array, dy: jax.Array) -> tuple[jax.Array]:
    cdf = (1.0 + jax.lax.erf(x * _SQRT_HALF)) * 0.5
    density = jnp.exp(-0.5 * x * x) * _INV_SQRT_2PI
    return (dy * (cdf + x * density),)


gelu.defvjp(_gelu_forward, _gelu_backward)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def layer_norm(x: jax.Array, scale: jax.Array, bias: jax.Array, epsilon: float) -> jax.Array:
    """LayerNorm over the last axis with the exact (two-pass) variance: x [..., H], scale and bias [H].

    Statistics in float32; the output has x's dtype.
    """
    return _layer_norm_forward(x, scale, bias, epsilon)[0]


def _statistics(x: jax.Array, epsilon: float) -> tuple[jax.Array, jax.Array]:
    """Mean and 1 / std over the last axis, float32 [..., 1]."""
    x = x.astype(jnp.float32)
    mean = jnp.mean(x, -1, keepdims=True)
    centred = x - mean
    return mean, jax.lax.rsqrt(jnp.mean(centred * centred, -1, keepdims=True) + epsilon)


def _layer_norm_forward(x, scale, bias, epsilon):
    mean, inv_std = _statistics(x, epsilon)
    normed = (x.astype(jnp.float32) - mean) * inv_std
    return (normed * scale + bias).astype(x.dtype), (x, mean, inv_std, scale, bias)


def _layer_norm_backward(epsilon, residuals, dy):
    del epsilon
    x, mean, inv_std, scale, bias = residuals
    normed = (x.astype(jnp.float32) - mean) * inv_std
    dy = dy.astype(jnp.float32)
    d_normed = dy * scale
    dx = inv_std * (d_normed - jnp.mean(d_normed, -1, keepdims=True)
                    - normed * jnp.mean(d_normed * normed, -1, keepdims=True))
    rows = tuple(range(dy.ndim - 1))
    return (dx.astype(x.dtype), jnp.sum(dy * normed, rows).astype(scale.dtype),
            jnp.sum(dy, rows).astype(bias.dtype))


layer_norm.defvjp(_layer_norm_forward, _layer_norm_backward)


class LayerNorm(nn.Module):
    """`layer_norm` with parameters `scale` (ones) and `bias` (zeros) [H], float32: flax.linen.LayerNorm's names.

    The output is cast to `dtype` (None: x's dtype)."""

    epsilon: float
    dtype: Any = None

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        features = x.shape[-1]
        scale = self.param("scale", nn.initializers.ones, (features,), jnp.float32)
        bias = self.param("bias", nn.initializers.zeros, (features,), jnp.float32)
        return layer_norm(x, scale, bias, self.epsilon).astype(self.dtype or x.dtype)
