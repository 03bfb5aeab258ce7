"""LayerNorm and GELU with hand-written backward passes: the same values and gradients as JAX derives."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from clever_jax.models.bert_ops import LayerNorm, gelu


def test_gelu_values_and_gradient_match_jax() -> None:
    x = jnp.linspace(-6.0, 6.0, 241, dtype=jnp.float32).reshape(-1, 1) * jnp.ones((1, 3))
    exact = jax.nn.gelu(x, approximate=False)  # through erfc: exact in the far negative tail, where 1 + erf is not
    np.testing.assert_allclose(gelu(x), exact, rtol=1e-6, atol=1e-6)
    weights = jnp.asarray(np.random.default_rng(0).normal(size=x.shape), jnp.float32)
    ours = jax.grad(lambda v: jnp.sum(gelu(v) * weights))(x)
    reference = jax.grad(lambda v: jnp.sum(jax.nn.gelu(v, approximate=False) * weights))(x)
    np.testing.assert_allclose(ours, reference, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("shape", [(7, 16), (2, 3, 16)])
def test_layer_norm_matches_flax(shape) -> None:
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.normal(size=shape) * 3 + 1, jnp.float32)
    dy = jnp.asarray(rng.normal(size=shape), jnp.float32)
    params = {"params": {"scale": jnp.asarray(rng.normal(size=16), jnp.float32),
                         "bias": jnp.asarray(rng.normal(size=16), jnp.float32)}}
    ours, theirs = LayerNorm(epsilon=1e-12), nn.LayerNorm(epsilon=1e-12, use_fast_variance=False)
    assert jax.tree.structure(ours.init(jax.random.key(0), x)) == jax.tree.structure(params)

    def loss(module):
        return lambda p, v: jnp.sum(module.apply(p, v) * dy)

    np.testing.assert_allclose(ours.apply(params, x), theirs.apply(params, x), rtol=1e-5, atol=1e-6)
    ours_grads = jax.grad(loss(ours), argnums=(0, 1))(params, x)
    their_grads = jax.grad(loss(theirs), argnums=(0, 1))(params, x)
    for a, b in zip(jax.tree.leaves(ours_grads), jax.tree.leaves(their_grads), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_layer_norm_keeps_bfloat16_and_float32_statistics() -> None:
    x = jnp.asarray(np.random.default_rng(2).normal(size=(4, 8)) * 100 + 1000, jnp.bfloat16)
    params = LayerNorm(epsilon=1e-12).init(jax.random.key(0), x)
    y = LayerNorm(epsilon=1e-12).apply(params, x)
    assert y.dtype == jnp.bfloat16 and params["params"]["scale"].dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(y, np.float32).mean(-1), 0.0, atol=0.05)
    dx = jax.grad(lambda v: jnp.sum(LayerNorm(epsilon=1e-12).apply(params, v).astype(jnp.float32) ** 2))(x)
    assert dx.dtype == jnp.bfloat16 and bool(jnp.all(jnp.isfinite(dx.astype(jnp.float32))))
    assert LayerNorm(epsilon=1e-12, dtype=jnp.float32).apply(params, x).dtype == jnp.float32
