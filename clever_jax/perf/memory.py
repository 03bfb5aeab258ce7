"""Per-device memory of a config's train step, estimated two ways, without running it.

  python -m clever_jax.perf.memory --config=configs/vg_gpu10.py --config.model.pretrained_dir=configs/bert_base

configs/bert_base holds BERT-base's config.json (sizes only, no weights): the VinVL encoder of
the paper has these sizes. The device runs `b = batch_size / devices` bags per step, as
`grad_accum_steps` micro-batches of `m = b / grad_accum_steps` bags of N instances.

Analytic (bytes, P parameters, c = bytes of the compute dtype, L = Lt + Lr tokens, H hidden,
I FFN size, A attention heads, K layers):
  state       12 P: float32 parameters and Adam's two moments.
  gradients   4 P, and 4 P more for the accumulator when grad_accum_steps > 1.
  casts       c P: the parameters in the compute dtype (float16/bfloat16 only).
  activations what the backward pass keeps for one micro-batch, per instance and layer:
              L H (8 c + 2)  layer input, q, k, v, context, attention and FFN LayerNorm inputs,
                             LayerNorm output (c each), two dropout masks (1 byte each);
              2 L I c        FFN pre- and post-GELU;
              A L^2 (4 + 1 + c)  float32 softmax output, its dropout mask, the dropped probs.
              With model.remat only the layer inputs (L H c per layer) stay, plus one layer's
              full set during its recomputation. Inputs (regions float32 Lr F) come on top.
              Packed (config.data.packing, data/packing.py): the per-token parts (all but the
              attention's A L^2 terms) scale with the share s of the padded tokens the compact slots
              hold, and the queries, keys, values and context gathered into the length classes'
              rows (at most the padded layout) add 4 L H c; s = 1 (--token_share, default) is the
              most a packed batch can need: the size a device must hold.
XLA: the train step of the run's builder (clever_jax.training.builder) is compiled for one device's share
(b bags, grad_accum_steps micro-batches, a one-device mesh) on this machine's backend and
`memory_analysis()` read: arguments + outputs - donated aliases +
temporaries. On CPU this is XLA:CPU's buffer assignment, whose fusion differs from a GPU's, so
the two figures bracket rather than predict the GPU number. XLA:CPU also undoes model.remat: it
drops the optimisation barriers that keep the recomputation apart before it runs CSE
(docs/performance.md).

Writes a JSON report (default runs/memory/<config name>.json) and prints a table.
"""

from __future__ import annotations

import json
import os
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import app, flags, logging
from ml_collections import config_flags

from clever_jax import cli
from clever_jax.data import packing
from clever_jax.perf.flops import Shapes
from clever_jax.training import builder

GIB = 2.0**30


def devices_of(config: ml_collections.ConfigDict, devices: int) -> int:
    """Devices the batch is split over: config.mesh sizes, or `devices` where an axis is -1."""
    sizes = [config.mesh.data, config.mesh.fsdp]
    if -1 in sizes:
        if not devices:
            raise ValueError("config.mesh has an axis of -1 (all devices): give the device count with --devices")
        return devices
    return int(np.prod(sizes))


def analytic(s: Shapes, num_params: int, micro_bags: int, dtype: str, accumulate: bool, remat: bool,
             token_share: float | None = None) -> dict[str, float]:
    """The analytic estimate in bytes, by part (module docstring); token_share: packed, with compact slots
    for that share of the padded tokens (None: padded)."""
    c = jnp.dtype(dtype).itemsize
    length, h, i, a, k = s.seq_len, s.hidden, s.intermediate, s.num_heads, s.num_layers
    per_token = length * h * (8 * c + 2) + 2 * length * i * c
    if token_share is not None:
        per_token = token_share * per_token + 4 * length * h * c
    per_layer = per_token + a * length**2 * (5 + c)
    layers = k * length * h * c + per_layer if remat else k * per_layer
    instances = micro_bags * s.bag_size
    return {
        "state": 12.0 * num_params,
        "gradients": 4.0 * num_params * (2 if accumulate else 1),
        "compute_casts": float(c * num_params) if c < 4 else 0.0,
        "activations": float(instances * layers),
        "inputs": float(instances * s.num_regions * s.region_dim * 4),
    }


def abstract_step(config: ml_collections.ConfigDict, device_bags: int, token_share: float | None
                  ) -> tuple[Any, Any, Any, Shapes, int]:
    """The jitted train step, the abstract state and the batch shapes of one device's share (packed: with
    compact slots for `token_share` of the padded text and region tokens, in multiples of 8, and attention rows
    of the padded length)."""
    config = config.copy_and_resolve_references()
    config.data.batch_size = device_bags
    config.mesh.update(data=1, fsdp=1)
    run = builder.build(config, devices=jax.devices()[:1])
    num_params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(run.abstract_params))
    batch = builder.batch_specs(run.shape, device_bags, keys=None)
    if token_share is not None:
        groups, shape = config.train.grad_accum_steps, run.shape
        per_group = device_bags // groups * shape.bag_size
        slots = [min(per_group * n, -(-int(np.ceil(token_share * per_group * n)) // 8) * 8)
                 for n in (shape.text_len, shape.num_regions)]
        batch.update({key: jax.ShapeDtypeStruct((groups, size), jnp.int32)
                      for key, size in zip(("packed_text", "packed_regions"), slots, strict=True)})
        length = shape.text_len + shape.num_regions
        batch["token_slots"] = jax.ShapeDtypeStruct((device_bags, shape.bag_size, length), jnp.int32)
        # Length classes as long as the padded rows: the most they can be.
        batch["attention_slots"] = tuple(jax.ShapeDtypeStruct((groups, int(n), length), jnp.int32)
                                         for n in packing.class_sizes(per_group, config.data.packing_classes))
        batch["attention_positions"] = jax.ShapeDtypeStruct((groups, sum(slots)), jnp.int32)
    return run.train_step, run.abstract_state(), batch, Shapes.of(run), num_params


def estimate(config: ml_collections.ConfigDict, devices: int = 0, token_share: float = 1.0) -> dict[str, Any]:
    """The report: sizes, the analytic parts and XLA's figures, in bytes and GiB; with config.data.packing (the
    VLP encoder) for compact slots that hold `token_share` of the padded tokens."""
    config = config.copy_and_resolve_references()
    config.model.pretrained = False
    n_devices = devices_of(config, devices)
    steps = config.train.grad_accum_steps
    device_bags, remainder = divmod(config.data.batch_size, n_devices)
    if remainder or device_bags % steps:
        raise ValueError(f"batch_size {config.data.batch_size} does not split into {n_devices} devices x "
                         f"{steps} micro-batches")
    if not 0 < token_share <= 1:
        raise ValueError(f"--token_share={token_share}: the share of the padded tokens a packed batch holds, in (0, 1]")
    share = token_share if config.data.packing and config.model.encoder == "vlp" else None
    step, state, batch, s, num_params = abstract_step(config, device_bags, share)
    parts = analytic(s, num_params, device_bags // steps, config.model.dtype, steps > 1, config.model.remat, share)
    compiled = step.lower(state, batch).compile()
    m = compiled.memory_analysis()
    xla = {"arguments": m.argument_size_in_bytes, "outputs": m.output_size_in_bytes,
           "aliased": m.alias_size_in_bytes, "temporaries": m.temp_size_in_bytes}
    xla_total = xla["arguments"] + xla["outputs"] - xla["aliased"] + xla["temporaries"]
    return {
        "config": {"devices": n_devices, "bags_per_device": device_bags, "grad_accum_steps": steps,
                   "micro_batch_bags": device_bags // steps, "bag_size": s.bag_size, "tokens": s.seq_len,
                   "hidden": s.hidden, "layers": s.num_layers, "dtype": config.model.dtype,
                   "remat": config.model.remat, "parameters": num_params, "packed_token_share": share},
        "analytic_bytes": parts, "analytic_gib": sum(parts.values()) / GIB,
        "xla_bytes": xla, "xla_gib": xla_total / GIB, "backend": jax.default_backend(),
    }


def table(report: dict[str, Any]) -> list[str]:
    c = report["config"]
    lines = [f"{c['devices']} devices x {c['bags_per_device']} bags ({c['grad_accum_steps']} micro-batches of "
             f"{c['micro_batch_bags']} x {c['bag_size']} instances, {c['tokens']} tokens), {c['layers']} layers "
             f"H={c['hidden']}, {c['parameters'] / 1e6:.1f} M parameters, {c['dtype']}, remat={c['remat']}, "
             + ("padded" if c["packed_token_share"] is None else f"packed ({c['packed_token_share']:.0%} of tokens)")]
    lines += [f"  analytic {name:<14} {value / GIB:7.2f} GiB" for name, value in report["analytic_bytes"].items()]
    lines.append(f"  analytic total          {report['analytic_gib']:7.2f} GiB")
    xla = f"XLA:{report['backend']}"
    lines += [f"  {xla} {name:<14} {value / GIB:7.2f} GiB" for name, value in report["xla_bytes"].items()]
    lines.append(f"  {xla} peak (arguments + outputs - aliased + temporaries) {report['xla_gib']:.2f} GiB")
    return lines


def define_flags() -> None:
    config_flags.DEFINE_config_file("config", None, "Config file (configs/*.py).", lock_config=True)
    flags.DEFINE_integer("devices", 0, "Device count where config.mesh has an axis of -1.")
    flags.DEFINE_string("out", "", "JSON report; default runs/memory/<config name>.json.")
    flags.DEFINE_float("token_share", 1.0, "With config.data.packing: the share of the padded tokens the packed "
                       "batch holds (1: the most a batch can need).")
    flags.mark_flags_as_required(["config"])


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    args = flags.FLAGS
    name = os.path.splitext(os.path.basename(config_flags.get_config_filename(args["config"])))[0]
    out = args.out or os.path.join("runs", "memory", name + ".json")
    report = estimate(args.config, args.devices, args.token_share)
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out, "w") as f:
        json.dump(report, f, indent=1)
    logging.info("Report in %s", out)
    print("\n".join(table(report)), flush=True)


if __name__ == "__main__":
    define_flags()
    cli.run(main)
