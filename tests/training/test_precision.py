"""Precision policies (float32, bfloat16, float16 + dynamic loss scaling) and gradient accumulation."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree
from multidevice_check import R1, F
from multidevice_check import batch as fixed_batch

from clever_jax.models.clever import Clever
from clever_jax.models.encoder import EncoderConfig
from clever_jax.training import builder, precision, steps
from configs import demo


def setup(dtype: str = "float32", dropout: float = 0.1, **train_overrides):
    """A tiny model's config, step function and initial state (same float32 parameters for every dtype)."""
    config = demo.get_config("tiny")
    config.model.dtype = dtype
    config.train.update(lr=1e-3, warmup_steps=1, **train_overrides)
    encoder = EncoderConfig(vocab_size=1000, hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64,
                            max_position_embeddings=16, region_dim=F, dtype=dtype, hidden_dropout=dropout,
                            attention_dropout=dropout)
    model = Clever(encoder, num_relations=R1, head="clever", eval_head="clever", temperature=2.0, bag_dropout=dropout)
    params = jax.jit(model.init)(jax.random.key(0), fixed_batch(0))["params"]
    tx = builder.make_optimizer(config, params)
    state = steps.TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params),
                             lr_scale=jnp.ones(()), loss_scale=precision.initial_loss_scale(config))
    step = jax.jit(functools.partial(steps.train_step, model=model, tx=tx, config=config))
    return config, model, step, state


@functools.cache
def policy(dtype: str):
    """The compiled step and initial state of each policy (float16: loss scale period 3), built once."""
    return setup(dtype, loss_scale_period=3)


@pytest.mark.parametrize("dtype, loss_rtol, grad_rtol, min_cosine",
                         [("bfloat16", 2e-2, 5e-2, 0.95), ("float16", 2e-3, 1e-2, 0.99)])
def test_policies_give_finite_losses_and_updates_close_to_float32(dtype, loss_rtol, grad_rtol, min_cosine):
    batch = fixed_batch(0)
    _, _, step32, state32 = policy("float32")
    _, _, step, state = policy(dtype)
    if dtype == "float16":  # A scale at which this model's float16 gradients do not overflow.
        state = state.replace(loss_scale=state.loss_scale.replace(scale=jnp.float32(2.0**8)))
    new32, m32 = step32(state32, batch)
    new, m = step(state, batch)
    assert bool(m["finite"]) and np.isfinite(float(m["loss"]))
    np.testing.assert_allclose(float(m["loss"]), float(m32["loss"]), rtol=loss_rtol)
    np.testing.assert_allclose(float(m["grad_norm"]), float(m32["grad_norm"]), rtol=grad_rtol)
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(new.params))  # Parameters stay float32.
    # The first Adam update (close to lr x the gradient's sign) agrees with float32's.
    update = lambda s: ravel_pytree(jax.tree.map(jnp.subtract, s.params, state32.params))[0]  # noqa: E731
    u, u32 = update(new), update(new32)
    assert float(jnp.dot(u, u32) / (jnp.linalg.norm(u) * jnp.linalg.norm(u32))) > min_cosine


def test_float16_loss_scale_backs_off_on_overflow_and_recovers():
    _, _, step, state = policy("float16")
    batch = fixed_batch(0)
    with_scale = lambda state, scale: state.replace(  # noqa: E731
        loss_scale=state.loss_scale.replace(scale=jnp.float32(scale), good_steps=jnp.int32(0)))

    def run(state, num_steps):
        scales, finite = [], []
        for _ in range(num_steps):
            before = state
            state, metrics = step(state, batch)
            scales.append(float(metrics["loss_scale"]))
            finite.append(bool(metrics["finite"]))
            if not finite[-1]:  # A skipped step: parameters and optimiser state untouched, the scale halved.
                jax.tree.map(np.testing.assert_array_equal, state.params, before.params)
                assert float(state.loss_scale.scale) == scales[-1] / 2
        return state, scales, finite

    # Back-off: at 2^20 this model's float16 backward pass overflows (weight gradients sum over B N L tokens);
    # the scale halves at every overflow down to the first finite step.
    backed_off, scales, finite = run(with_scale(state, 2.0**20), 10)
    assert not finite[0] and any(finite), (scales, finite)
    first_ok = finite.index(True)
    assert scales[:first_ok + 1] == [2.0**20 / 2**i for i in range(first_ok + 1)]
    assert int(backed_off.step) == 10
    assert any(jax.tree.leaves(jax.tree.map(lambda a, b: not np.array_equal(a, b), backed_off.params, state.params)))
    # Recovery: from a scale well below the overflow (2^8), three finite steps in a row (the period) double it.
    recovered, scales, finite = run(with_scale(backed_off, 2.0**8), 4)
    assert finite == [True] * 4 and scales == [2.0**8] * 3 + [2.0**9], (scales, finite)
    assert float(recovered.loss_scale.scale) == 2.0**9


def test_loss_scale_update_rule():
    scale = precision.LossScale(scale=jnp.float32(8.0), good_steps=jnp.int32(0), period=2)
    scale = scale.update(jnp.bool_(True))
    assert (float(scale.scale), int(scale.good_steps)) == (8.0, 1)
    scale = scale.update(jnp.bool_(True))
    assert (float(scale.scale), int(scale.good_steps)) == (16.0, 0)
    scale = scale.update(jnp.bool_(False))
    assert (float(scale.scale), int(scale.good_steps)) == (8.0, 0)
    floor = precision.LossScale(scale=jnp.float32(1.0), good_steps=jnp.int32(0)).update(jnp.bool_(False))
    assert float(floor.scale) == 1.0


def test_unknown_policy_is_rejected():
    config = demo.get_config("tiny")
    config.model.dtype = "float8"
    with pytest.raises(ValueError, match="config.model.dtype='float8'"):
        precision.check_policy(config)


def test_gradient_accumulation_equals_the_whole_batch_step():
    batch = fixed_batch(0)
    _, _, step1, state1 = setup(dropout=0.0)
    _, _, step4, state4 = setup(dropout=0.0, grad_accum_steps=4)
    for _ in range(2):
        state1, m1 = step1(state1, batch)
        state4, m4 = step4(state4, batch)
    np.testing.assert_allclose(float(m4["loss"]), float(m1["loss"]), rtol=1e-5)
    # atol: Adam turns rounding-level gradient differences on near-zero gradients into updates of up to ~lr (1e-3).
    close = jax.tree.map(lambda a, b: bool(np.allclose(a, b, rtol=1e-5, atol=2e-5)), state4.params, state1.params)
    assert all(jax.tree.leaves(close))


def test_micro_batches_keep_each_devices_bags_together():
    batch = {"bag": np.arange(8)}
    micro = steps.micro_batches(batch, 2)["bag"]
    # Two devices hold bags 0-3 and 4-7: each micro-batch takes two bags from each.
    np.testing.assert_array_equal(micro, [[0, 2, 4, 6], [1, 3, 5, 7]])
