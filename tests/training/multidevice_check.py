"""Run under 8 forced CPU devices (see test_sharding.py): sharded train steps vs one device, padded and
packed (data/packing.py).

Prints one JSON line: max relative parameter differences, the shardings that landed and the collectives
of each compiled step.
"""

import collections
import functools
import json
import re

import jax
import jax.numpy as jnp
import numpy as np

from clever_jax.data import packing
from clever_jax.models.clever import Clever
from clever_jax.models.encoder import EncoderConfig
from clever_jax.training import builder, sharding, steps
from configs import demo

B, N, LT, LR, F, R1 = 8, 3, 8, 4, 10, 5


def batch(seed: int) -> dict:
    rng = np.random.default_rng(seed)
    labels = np.zeros((B, R1), np.float32)
    target = rng.integers(0, R1, B)
    labels[np.arange(B), target] = 1
    return {
        "text_ids": rng.integers(1, 1000, (B, N, LT)).astype(np.int32),
        "text_mask": (rng.random((B, N, LT)) < 0.8) | (np.arange(LT) < 4),  # The spans' pieces are real.
        "regions": rng.normal(size=(B, N, LR, F)).astype(np.float32),
        "region_mask": (rng.random((B, N, LR)) < 0.8) | (np.arange(LR) < 2),  # So are the query regions.
        "subject_span": np.tile(np.array([1, 3], np.int32), (B, N, 1)),
        "object_span": np.tile(np.array([3, 4], np.int32), (B, N, 1)),
        "instance_mask": rng.random((B, N)) < 0.9,
        "labels": labels,
        "target": target.astype(np.int32),
        "bag_mask": np.ones(B, bool),
    }


def packed(batch: dict, devices: int, steps: int) -> dict:
    """The batch with where its real tokens are, for `devices` devices and `steps` micro-batches."""
    sampled = packing.sample([batch], devices, steps, classes=3)
    return packing.pack(batch, devices, steps, packing.capacities(batch, devices, steps, sampled))


def run(config, devices, mode, pack=False):
    config.mesh.params = mode
    model = Clever(EncoderConfig(vocab_size=1000, hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64,
                                 max_position_embeddings=16, region_dim=F), num_relations=R1, head="clever",
                   eval_head="clever", temperature=2.0)
    mesh = sharding.make_mesh(config, devices)
    params = jax.jit(model.init)(jax.random.key(0), batch(0))["params"]
    param_shardings = sharding.tree_shardings(params, mesh, mode, config.mesh.fsdp_min_size)
    params = jax.device_put(params, param_shardings)
    tx = builder.make_optimizer(config, params)
    opt_shardings = sharding.tree_shardings(jax.eval_shape(tx.init, params), mesh, mode, config.mesh.fsdp_min_size)
    replicated = sharding.replicated(mesh)
    state = steps.TrainState(step=jax.device_put(jnp.zeros((), jnp.int32), replicated), params=params,
                             opt_state=jax.jit(tx.init, out_shardings=opt_shardings)(params),
                             lr_scale=jax.device_put(jnp.ones(()), replicated))
    state_shardings = steps.TrainState(step=replicated, params=param_shardings, opt_state=opt_shardings,
                                       lr_scale=replicated)
    step = jax.jit(functools.partial(steps.train_step, model=model, tx=tx, config=config),
                   in_shardings=(state_shardings, sharding.batch_sharding(mesh)),
                   out_shardings=(state_shardings, replicated))
    collectives = None
    for seed in range(3):
        local = packed(batch(seed), mesh.size, config.train.grad_accum_steps) if pack else batch(seed)
        global_batch = sharding.global_batch(local, sharding.batch_sharding(mesh))
        if collectives is None:  # What the compiled step sends between devices.
            text = step.lower(state, global_batch).compile().as_text()
            collectives = dict(collections.Counter(re.findall(
                r"\b(all-gather|all-reduce|all-to-all|collective-permute|reduce-scatter)(?:-start)?\(", text)))
        state, metrics = step(state, global_batch)
    specs = {jax.tree_util.keystr(path): str(leaf.sharding.spec)
             for path, leaf in jax.tree_util.tree_flatten_with_path(state.params)[0]}
    return jax.device_get(state.params), specs, float(metrics["loss"]), collectives


def main():
    config = demo.get_config("tiny")
    config.train.update(lr=1e-3, warmup_steps=1)
    reference, _, loss, _ = run(config, jax.devices()[:1], "replicated")
    config.train.grad_accum_steps = 2
    config.mesh.update(data=1, fsdp=1)
    accumulated, _, _, _ = run(config, jax.devices()[:1], "replicated")
    results = {"devices": jax.device_count(), "loss": loss}
    cases = {"data8": (8, 1, "replicated", 1, reference), "fsdp": (2, 4, "fsdp", 1, reference),
             "accumulate": (4, 1, "replicated", 2, accumulated),  # 2 bags per device, 1 per micro-batch.
             "packed8": (8, 1, "replicated", 1, reference), "packed_accumulate": (4, 1, "replicated", 2, accumulated),
             "packed_fsdp": (2, 4, "fsdp", 1, reference)}
    for name, (data, fsdp, mode, accum, expected) in cases.items():
        config.mesh.update(data=data, fsdp=fsdp)
        config.train.grad_accum_steps = accum
        params, specs, _, collectives = run(config, jax.devices()[:data * fsdp], mode, pack=name.startswith("packed"))
        # Parameters agree to rtol 1e-5, with atol 1e-5 (1% of one step of lr 1e-3) for entries whose
        # gradient is near zero (the attention key bias, or a weight whose gradient is ~1e-7): their gradient
        # is rounding noise, which Adam scales up to ~lr.
        close = jax.tree.map(lambda a, b: bool(np.allclose(a, b, rtol=1e-5, atol=1e-5)), params, expected)
        diffs = jax.tree.map(lambda a, b: float(np.max(np.abs(a - b))), params, expected)
        results[name] = {"allclose": all(jax.tree.leaves(close)), "max_abs_diff": max(jax.tree.leaves(diffs)),
                         "specs": specs, "collectives": collectives}
    print(json.dumps(results))


if __name__ == "__main__":
    main()
