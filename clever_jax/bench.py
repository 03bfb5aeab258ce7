"""Throughput benchmark of the jitted train and evaluation steps.

  python -m clever_jax.bench --config=configs/demo.py [--config.x=y ...] [--out=PATH] [--repeats=K]
      [--records=DIR] [--pretrained]
  XLA_FLAGS=--xla_force_host_platform_device_count=8 python -m clever_jax.bench --config=configs/demo.py \
      --weak_scaling=8     (weak scaling: see `weak_scaling`)

Builds the model and optimiser as `train.Trainer` does, on a batch with the input pipeline's
exact layout (synthetic by default, or real batches of a prepared records folder with
--records), trimmed as training trims it (config.data.length_multiple: the text and region axes
cut to the batch's bucket, pipeline.bucket_lengths; the timed train batch is the first of 20 in
their most common bucket), compiles `train.train_step` (state donated) and `train.eval_step`
with the shardings training uses (train.place_state, train.jit_train_step, train.jit_eval_step: a one-device mesh),
warms up, then times K single steps each (block_until_ready after every step) and reports the
median and quartiles. Writes a JSON report (default runs/bench/<config name>.json) and prints a
summary whose last line ends in `mfu=<value>`.

FLOPs. `step_flops` counts the matrix multiplies of one step analytically, 2 FLOPs per
multiply-add; gathers (embeddings), elementwise work (GELU, LayerNorm, softmax, dropout, the
optimiser) are left out. Forward parts, for B bags, N instances, L = Lt + Lr tokens (the timed
batch's bucket), hidden H, FFN size I, region size F, pair size D = 4H, classifier hidden C = 8H,
R + 1 relations:

  region projection        2 B N Lr F H
  attention projections    per layer 2 B N L 4H^2  (query, key, value, output)
  attention scores, mix    per layer 2 B N 2 L^2 H (q.k and probs.v)
  FFN                      per layer 2 B N 2 L H I
  classifier (instances)   2 B N (D C + C (R+1))  (all heads but avg in training)
  head                     clever (train): per-relation bags 2 B (R+1) N D, the classifier's
                           hidden layer on them 2 B (R+1) D C, its diagonal 2 B (R+1) C; att/clever
                           (eval, factorised: models/heads.py): per-relation mixes of the instances'
                           hidden pre-activations 2 B (R+1) N C, the diagonal 2 B (R+1) C;
                           avg: mean 2 B N D + classifier on B bags; att (train):
                           weighted sum 2 B N D + classifier on B bags; one (train): classifier
                           on B bags; one/max (eval): nothing more.

Convention: a train step is 3x its forward pass (backward = 2x forward: gradients of the inputs
and of the weights of every matmul), except where JAX computes no input gradient: the region
projection (its input is data) counts 2x, and for the `one` head the instance classifier, whose
output only feeds an argmax, counts 1x. The analytic count is cross-checked against XLA's
cost analysis of the compiled step (`flops_xla`, which also counts elementwise work and the
optimiser, so it is a little higher).

MFU = analytic FLOPs per step / median step time / peak, where the peak is the best throughput
of a jitted square matmul in the compute dtype (config.model.dtype), measured here on the same
device, before and after the step timings (the better of the two: a peak measured while another
process briefly holds a core would flatter the MFU; `peak.runs` has both). MFU counts every
token the step computes, the padding left in its bucket included; `useful_mfu` scales it by the
real (unpadded) tokens' share of the computed ones (text + regions of real instances, over
B N (Lt' + Lr') in each batch's bucket Lt' x Lr', means over the 20 token batches), and tokens/s
are reported both ways.

Synthetic batches (`synthetic_batch`) follow the demo world's statistics: on the demo config
they have 53.0% real tokens of the padded Lt + Lr, the prepared demo records 53.3%. The steps run
on the first device.

Report (JSON): device, jax_version, flax_version, precision, config (sizes, length_multiple), data
(source, real/computed/padded tokens and instances per batch, real_token_share and
computed_token_share of the padded tokens, real_share_of_computed, buckets "Lt'xLr'" -> batches;
`eval`: the same for the eval batch), train and eval ({median,p25,p75}_s, times_s, compile_s,
text_len and num_regions of the timed batch, bags/instances/tokens per second (real_* too),
flops_analytic, flops_xla, xla_over_analytic, flops_parts, flops_per_s, mfu, useful_mfu}), peak
(flops_per_s, size, dtype, by_size, runs), and at top level peak_flops, flops_analytic, flops_xla
(train step), flops_{analytic,xla}_eval, bags_per_s, instances_per_s, tokens_per_s,
real_tokens_per_s, mfu, mfu_eval, useful_mfu, useful_mfu_eval. With --weak_scaling=K: the report
of `weak_scaling`, and a last line ending in `time_ratio=<value>`.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import os
import platform
import time
from typing import Any

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import app, flags, logging
from ml_collections import config_flags

from clever_jax import precision, sharding, train
from clever_jax.data import pipeline
from clever_jax.data.records import read_manifest
from clever_jax.data.vg import GEOMETRY_DIM
from clever_jax.data.vocab import benchmark_vocab
from clever_jax.models.clever import Clever

# Synthetic instances, like the demo world's (60 training batches of runs/demo: 14.1 real word
# pieces of 32, 11.8 regions of 12, 7.2 instances of 8 per bag; 53% of the tokens are real).
OBJECTS_PER_INTERACTION = 1.3  # Objects per image ~ 1.3 x interactions + extra (demo 14.9, vg preset 35.2).
PIECES_PER_TAG = 1.05  # Word pieces per object tag.
CANDIDATES_MEDIAN, CANDIDATES_SIGMA = 28.0, 1.5  # Candidate instances per pair: log-normal.
VG_OBJECTS_PER_IMAGE = 35.0  # Visual Genome: 3.8 M objects in 108 k images.


@dataclasses.dataclass(frozen=True)
class Shapes:
    """Sizes of the benchmarked model and batches.

    Attributes:
      batch_size, eval_batch_size: B bags per train / eval batch.
      bag_size: N. text_len: Lt. num_regions: Lr. region_dim: F. num_relations: R + 1.
      hidden: H. intermediate: I (FFN). num_layers, num_heads: encoder layers and attention heads.
      head, eval_head: the training and evaluation heads.
    """

    batch_size: int
    eval_batch_size: int
    bag_size: int
    text_len: int
    num_regions: int
    region_dim: int
    num_relations: int
    hidden: int
    intermediate: int
    num_layers: int
    num_heads: int
    head: str
    eval_head: str

    @property
    def seq_len(self) -> int:
        return self.text_len + self.num_regions


def region_dim(config: ml_collections.ConfigDict) -> int:
    """F = appearance features + 6 box geometry values, from config.data."""
    data = config.data
    appearance = data.world.feature_dim if data.source == "world" else (data.feature_dim or 2048)
    return appearance + GEOMETRY_DIM


# ---------------------------------------------------------------------------------------------
# FLOPs.


def _head_flops(head: str, batch_size: int, s: Shapes, *, train: bool) -> float:
    """Matmul FLOPs of a head after the instance classifier (forward)."""
    b, n, d, c, r = batch_size, s.bag_size, 4 * s.hidden, 8 * s.hidden, s.num_relations
    classify_bags = 2 * b * (d * c + c * r)
    if head in ("att", "clever") and not train:
        return 2 * b * r * n * c + 2 * b * r * c
    if head == "clever":
        return 2 * b * r * n * d + 2 * b * r * d * c + 2 * b * r * c
    if head in ("avg", "att"):
        return 2 * b * n * d + classify_bags
    if head == "one":
        return classify_bags if train else 0.0
    if head == "max":
        return 0.0
    raise ValueError(f"unknown head {head!r}")


def forward_flops(s: Shapes, batch_size: int, head: str, *, train: bool) -> dict[str, float]:
    """Matmul FLOPs of one forward pass over `batch_size` bags, by part (see the module docstring)."""
    seqs, length, h = batch_size * s.bag_size, s.seq_len, s.hidden
    d, c = 4 * h, 8 * h
    return {
        "region_projection": 2.0 * seqs * s.num_regions * s.region_dim * h,
        "attention_projections": 2.0 * s.num_layers * seqs * length * 4 * h * h,
        "attention_scores": 2.0 * s.num_layers * seqs * 2 * length * length * h,
        "ffn": 2.0 * s.num_layers * seqs * 2 * length * h * s.intermediate,
        # Every head classifies the instances, except avg in training (it classifies only the mean).
        "classifier_instances": 0.0 if train and head == "avg" else 2.0 * seqs * (d * c + c * s.num_relations),
        "head": float(_head_flops(head, batch_size, s, train=train)),
    }


def step_flops(s: Shapes, eval_shapes: Shapes | None = None) -> dict[str, Any]:
    """Analytic FLOPs of a train step (forward + backward) on batches of sizes `s` and an eval step
    (forward) on batches of sizes `eval_shapes` (default `s`), with parts."""
    forward = forward_flops(s, s.batch_size, s.head, train=True)
    multiplier = {k: 3.0 for k in forward}
    multiplier["region_projection"] = 2.0  # No gradient for the regions (data): weights only.
    if s.head == "one":
        multiplier["classifier_instances"] = 1.0  # Its output only feeds an argmax: no backward.
    train_parts = {k: v * multiplier[k] for k, v in forward.items()}
    eval_shapes = eval_shapes or s
    eval_parts = forward_flops(eval_shapes, eval_shapes.eval_batch_size, eval_shapes.eval_head, train=False)
    return {
        "train": sum(train_parts.values()), "eval": sum(eval_parts.values()),
        "train_parts": train_parts, "eval_parts": eval_parts,
    }


def xla_flops(program: Any) -> float:
    """FLOPs by XLA's cost analysis of a compiled (or lowered) program; the analysis is a dict or,
    depending on the JAX version, a list of dicts."""
    analysis = program.cost_analysis()
    if isinstance(analysis, dict):
        analysis = [analysis]
    return float(sum(a.get("flops", 0.0) for a in analysis or []))


# ---------------------------------------------------------------------------------------------
# Batches.


def synthetic_batch(s: Shapes, batch_size: int, rng: np.random.Generator, objects_per_image: float,
                    cls_id: int = 101, sep_id: int = 102) -> dict[str, np.ndarray]:
    """A batch with the pipeline's layout (clever_jax.data.pipeline) and realistic masks.

    Per bag, the instance count is min(N, candidates) with log-normal candidates; per instance,
    the image has 2 + Poisson(objects_per_image - 2) objects, of which the first Lr are regions,
    and the text is [CLS] + their tags (1 + Poisson(0.05) pieces each) + [SEP], cut to Lt.

    Returns: text_ids/text_mask [B, N, Lt], regions [B, N, Lr, F], region_mask [B, N, Lr],
      subject_span/object_span [B, N, 2], instance_mask/annotated/images/subjects/objects [B, N],
      labels [B, R+1], target [B], pair [B, 2], bag [B], bag_mask [B].
    """
    b, n, lt, lr = batch_size, s.bag_size, s.text_len, s.num_regions
    candidates = np.exp(rng.normal(np.log(CANDIDATES_MEDIAN), CANDIDATES_SIGMA, b))
    instances = np.clip(candidates.astype(np.int64), 1, n)
    instance_mask = np.arange(n)[None, :] < instances[:, None]  # [B, N]

    objects = 2 + rng.poisson(max(objects_per_image - 2, 0), (b, n))
    region_mask = (np.arange(lr) < np.minimum(objects, lr)[..., None]) & instance_mask[..., None]  # [B, N, Lr]
    pieces = (1 + rng.poisson(PIECES_PER_TAG - 1, (b, n, lr))) * region_mask  # Tag length of each slot.
    starts = 1 + np.cumsum(pieces, axis=-1) - pieces  # [B, N, Lr]
    sep = np.minimum(1 + pieces.sum(-1), lt - 1)  # [B, N]
    positions = np.arange(lt)
    text_mask = (positions <= sep[..., None]) & instance_mask[..., None]  # [B, N, Lt]
    text_ids = np.where(text_mask, rng.integers(1000, 30000, (b, n, lt)), 0)
    text_ids = np.where(positions == 0, cls_id, np.where(positions == sep[..., None], sep_id, text_ids))
    text_ids = (text_ids * text_mask).astype(np.int32)

    def span(j: int) -> np.ndarray:
        start = np.minimum(starts[..., j], lt - 1)
        end = np.minimum(starts[..., j] + pieces[..., j], lt - 1)
        return (np.stack([start, end], -1) * instance_mask[..., None]).astype(np.int32)

    regions = rng.standard_normal((b, n, lr, s.region_dim), dtype=np.float32) * region_mask[..., None]
    target = rng.integers(1, s.num_relations, b).astype(np.int32)
    labels = np.zeros((b, s.num_relations), np.float32)
    labels[np.arange(b), target] = 1.0
    index = lambda high: (rng.integers(0, high, (b, n)) * instance_mask).astype(np.int32)  # noqa: E731
    return {
        "text_ids": text_ids, "text_mask": text_mask, "regions": regions, "region_mask": region_mask,
        "subject_span": span(0), "object_span": span(1), "instance_mask": instance_mask,
        "annotated": instance_mask & (rng.random((b, n)) < 0.1), "images": index(1000), "subjects": index(2),
        "objects": index(2) + 2 * instance_mask, "labels": labels, "target": target,
        "pair": rng.integers(0, 100, (b, 2)).astype(np.int32), "bag": np.arange(b, dtype=np.int64),
        "bag_mask": np.ones(b, bool),
    }


def default_objects_per_image(config: ml_collections.ConfigDict) -> float:
    """Mean objects per image of the configured data (the world's preset, or Visual Genome's)."""
    if config.data.source == "world":
        w = config.data.world
        return OBJECTS_PER_INTERACTION * w.interactions_per_image + w.extra_objects_per_image
    return VG_OBJECTS_PER_IMAGE


def records_batches(config: ml_collections.ConfigDict, records_dir: str, batch_size: int, count: int,
                    *, train_split: bool) -> list[dict[str, np.ndarray]]:
    """`count` real batches (train split shuffled, or validation in order, padded to batch_size)."""
    shape = pipeline.instance_shape(config.data, records_dir)
    loader = pipeline.make_loader(records_dir, "train" if train_split else "val", shape, batch_size,
                                  train=train_split, seed=config.seed)
    batches = []
    for batch in loader:
        batches.append(pipeline.pad_batch(batch, batch_size))
        if len(batches) == count:
            break
    return batches


def token_counts(batches: list[dict[str, np.ndarray]], multiple: int) -> dict[str, Any]:
    """Tokens and instances per batch (means over `batches`, padded to Lt and Lr) and their buckets.

    Tokens: real (text + regions of real instances), computed (B N (Lt' + Lr') in the batch's
    bucket Lt' x Lr' for config.data.length_multiple = `multiple`: pipeline.bucket_lengths) and
    padded (B N (Lt + Lr)); their shares; `buckets`: "Lt'xLr'" -> number of batches.
    """
    lengths = [pipeline.bucket_lengths(b, multiple) for b in batches]
    real = np.mean([float(b["text_mask"].sum() + b["region_mask"].sum()) for b in batches])
    computed = np.mean([b["instance_mask"].size * float(n.sum()) for b, n in zip(batches, lengths, strict=True)])
    padded = np.mean([b["text_mask"].size + b["region_mask"].size for b in batches])
    buckets = collections.Counter(f"{lt}x{lr}" for lt, lr in lengths)
    return {
        "real_tokens": float(real), "computed_tokens": float(computed), "padded_tokens": float(padded),
        "real_instances": float(np.mean([b["instance_mask"].sum() for b in batches])),
        "padded_instances": float(batches[0]["instance_mask"].size),
        "real_token_share": float(real / padded), "computed_token_share": float(computed / padded),
        "real_share_of_computed": float(real / computed), "buckets": dict(sorted(buckets.items())),
    }


def timed_batch(batches: list[dict[str, np.ndarray]], multiple: int) -> dict[str, np.ndarray]:
    """The first of `batches` in their most common bucket (`token_counts`), trimmed to it as training trims."""
    lengths = [tuple(int(n) for n in pipeline.bucket_lengths(b, multiple)) for b in batches]
    common = collections.Counter(lengths).most_common(1)[0][0]
    return pipeline.trim_padding(batches[lengths.index(common)], *common)


# ---------------------------------------------------------------------------------------------
# Timing.


def _quartiles(times: list[float]) -> dict[str, Any]:
    p25, median, p75 = np.percentile(times, [25, 50, 75])
    return {"median_s": float(median), "p25_s": float(p25), "p75_s": float(p75), "times_s": [float(t) for t in times]}


def time_train(compiled: Any, state: train.TrainState, batch: dict, warmup: int, repeats: int) -> dict[str, Any]:
    """Times `repeats` train steps one by one (the state is donated and threaded through)."""
    for _ in range(warmup):
        state, metrics = compiled(state, batch)
    jax.block_until_ready(state)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        state, metrics = compiled(state, batch)
        jax.block_until_ready((state, metrics))
        times.append(time.perf_counter() - start)
    return _quartiles(times)


def time_eval(compiled: Any, params: Any, batch: dict, warmup: int, repeats: int) -> dict[str, Any]:
    """Times `repeats` evaluation steps one by one."""
    for _ in range(warmup):
        jax.block_until_ready(compiled(params, batch))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(compiled(params, batch))
        times.append(time.perf_counter() - start)
    return _quartiles(times)


def matmul_peak(dtype: Any, sizes: list[int], repeats: int = 5) -> dict[str, Any]:
    """Best throughput (FLOP/s) of a jitted square matmul a @ b in `dtype` over `sizes`."""
    by_size = {}
    for n in sizes:
        ka, kb = jax.random.split(jax.random.key(n))
        a = jax.random.normal(ka, (n, n), dtype)
        b = jax.random.normal(kb, (n, n), dtype)
        matmul = jax.jit(jnp.matmul).lower(a, b).compile()
        jax.block_until_ready(matmul(a, b))
        best = np.inf
        for _ in range(repeats):
            start = time.perf_counter()
            jax.block_until_ready(matmul(a, b))
            best = min(best, time.perf_counter() - start)
        by_size[str(n)] = 2.0 * n**3 / best
    size = max(by_size, key=by_size.get)
    return {"flops_per_s": by_size[size], "size": int(size), "dtype": jnp.dtype(dtype).name, "by_size": by_size}


def default_peak_sizes(platform_name: str) -> list[int]:
    return [1024, 2048, 3072] if platform_name == "cpu" else [2048, 4096, 8192]


# ---------------------------------------------------------------------------------------------
# The benchmark.


def build(config: ml_collections.ConfigDict, region_size: int, num_relations: int) -> tuple[Clever, Shapes]:
    """The model as train.create_model builds it (F = region_size, R + 1 = num_relations), and its sizes."""
    model = Clever(
        encoder=train.encoder_config(config, region_size),
        num_relations=num_relations,
        head=config.model.head,
        eval_head=config.model.eval_head or config.model.head,
        temperature=config.model.temperature,
        bag_dropout=config.model.bag_dropout,
    )
    enc, data = model.encoder, config.data
    shapes = Shapes(
        batch_size=data.batch_size, eval_batch_size=data.eval_batch_size, bag_size=data.bag_size,
        text_len=data.text_len, num_regions=data.num_regions, region_dim=region_size, num_relations=num_relations,
        hidden=enc.hidden_size, intermediate=enc.intermediate_size, num_layers=enc.num_layers,
        num_heads=enc.num_heads, head=model.head, eval_head=model.eval_head,
    )
    return model, shapes


@dataclasses.dataclass
class Compiled:
    """The compiled steps of a config and what they run on.

    Attributes:
      shapes: the config's sizes (Lt, Lr: padded lengths). config: the resolved config (pretrained as asked).
      train_shapes, eval_shapes: `shapes` with the Lt and Lr of the timed train / eval batch (its bucket).
      train_step: compiled train.train_step (state donated). eval_step: compiled train.eval_step (or None).
      state: the initial train state. train_batch, eval_batch: device batches (B and eval B bags; None
        without the eval step), trimmed to their buckets (`timed_batch`).
      tokens, eval_tokens: token counts and buckets of the train batches and of the eval batch (`token_counts`).
      source: "synthetic" or the records folder. compile_s: seconds to compile each step.
    """

    shapes: Shapes
    train_shapes: Shapes
    eval_shapes: Shapes
    config: ml_collections.ConfigDict
    train_step: Any
    eval_step: Any
    state: train.TrainState
    train_batch: dict
    eval_batch: dict | None
    tokens: dict[str, Any]
    eval_tokens: dict[str, Any]
    source: str
    compile_s: dict[str, float]


def compile_steps(config: ml_collections.ConfigDict, *, records_dir: str = "", pretrained: bool = False,
                  num_token_batches: int = 20, devices: list | None = None, with_eval: bool = True) -> Compiled:
    """Builds model, optimiser, state and batches as train.Trainer does, and compiles the train step
    and (`with_eval`) the eval step for a mesh (config.mesh) over `devices` (default: the first device)."""
    config = config.copy_and_resolve_references()
    config.model.pretrained = pretrained
    mesh = sharding.make_mesh(config, devices or jax.devices()[:1])
    batch_sharding = sharding.batch_sharding(mesh)
    if records_dir:
        manifest = read_manifest(records_dir)
        model, s = build(config, manifest["region_dim"], manifest["num_relations"])
        train_batches = records_batches(config, records_dir, s.batch_size, num_token_batches, train_split=True)
        eval_batches = records_batches(config, records_dir, s.eval_batch_size, 1, train_split=False)
    else:
        model, s = build(config, region_dim(config), benchmark_vocab().num_relations)
        rng = np.random.default_rng(config.seed)
        objects = default_objects_per_image(config)
        train_batches = [synthetic_batch(s, s.batch_size, rng, objects) for _ in range(num_token_batches)]
        eval_batches = [synthetic_batch(s, s.eval_batch_size, rng, objects)]
    multiple = config.data.length_multiple
    train_local, eval_local = timed_batch(train_batches, multiple), timed_batch(eval_batches, multiple)
    trimmed = lambda b: dataclasses.replace(s, text_len=b["text_mask"].shape[-1],  # noqa: E731
                                            num_regions=b["region_mask"].shape[-1])
    train_batch = sharding.global_batch(train_local, batch_sharding)
    eval_batch = sharding.global_batch(eval_local, batch_sharding) if with_eval else None

    params = jax.device_get(train.init_params(model, config, train_batch, config.seed))
    tx = train.make_optimizer(config, params)
    state, state_shardings = train.place_state(params, tx, mesh, config.mesh.params,
                                               precision.initial_loss_scale(config))
    train_fn = train.jit_train_step(model, tx, config, mesh, state_shardings)
    eval_fn = train.jit_eval_step(model, mesh, state_shardings.params)
    start = time.perf_counter()
    train_compiled = train_fn.lower(state, train_batch).compile()
    middle = time.perf_counter()
    eval_compiled = eval_fn.lower(state.params, eval_batch).compile() if with_eval else None
    compile_s = {"train": middle - start, "eval": time.perf_counter() - middle}
    return Compiled(shapes=s, train_shapes=trimmed(train_local), eval_shapes=trimmed(eval_local), config=config,
                    train_step=train_compiled, eval_step=eval_compiled, state=state, train_batch=train_batch,
                    eval_batch=eval_batch, tokens=token_counts(train_batches, multiple),
                    eval_tokens=token_counts(eval_batches, multiple), source=records_dir or "synthetic",
                    compile_s=compile_s)


def run(config: ml_collections.ConfigDict, *, repeats: int = 10, warmup: int = 2, records_dir: str = "",
        pretrained: bool = False, peak_sizes: list[int] | None = None) -> dict[str, Any]:
    """Benchmarks the train and eval steps of `config`; returns the report (see the module docstring)."""
    c = compile_steps(config, records_dir=records_dir, pretrained=pretrained)
    return measure(c, repeats=repeats, warmup=warmup, peak_sizes=peak_sizes)


def measure(c: Compiled, *, repeats: int = 10, warmup: int = 2, peak_sizes: list[int] | None = None) -> dict[str, Any]:
    """Times compiled steps (consumes c.state: it is donated), measures the peak; returns the report."""
    flops_xla = {"train": xla_flops(c.train_step), "eval": xla_flops(c.eval_step)}
    peak_args = (jnp.dtype(c.config.model.dtype), peak_sizes or default_peak_sizes(jax.devices()[0].platform))
    peaks = [matmul_peak(*peak_args)]
    # Eval first: the train step donates (and so deletes) the state's parameters.
    eval_times = time_eval(c.eval_step, c.state.params, c.eval_batch, warmup, repeats)
    train_times = time_train(c.train_step, c.state, c.train_batch, warmup, repeats)
    peaks.append(matmul_peak(*peak_args))
    peak = {**max(peaks, key=lambda p: p["flops_per_s"]), "runs": [p["flops_per_s"] for p in peaks]}
    return make_report(c, step_flops(c.train_shapes, c.eval_shapes), flops_xla, train_times, eval_times, peak)


def weak_scaling(config: ml_collections.ConfigDict, num_devices: int, *, repeats: int = 10, warmup: int = 2,
                 records_dir: str = "", pretrained: bool = False) -> dict[str, Any]:
    """Weak scaling of the train step: b = config.data.batch_size bags on one device, then K b bags on
    a mesh (config.mesh) of the first K = `num_devices` devices, b per device.

    time_ratio = median sharded step / median single-device step. Devices with their own compute
    (GPUs, TPU chips) would ideally keep it at 1. Forced CPU host devices
    (XLA_FLAGS=--xla_force_host_platform_device_count=K) share the machine's cores, which the
    single-device step already keeps busy, so the sharded step does K times the work on the same
    cores: the ideal ratio is K, and normalised_time_ratio = time_ratio / ideal_time_ratio is 1 when
    partitioning and collectives cost nothing (above 1: their overhead; below 1: K devices use the
    cores better than one).

    Returns: devices, platform, cpu_count, per_device_batch, global_batch, single and sharded
    (`time_train` timings plus bags_per_s and compile_s), time_ratio, ideal_time_ratio,
    normalised_time_ratio, config (sizes), mesh (axis sizes), params mode.
    """
    devices = jax.devices()
    if num_devices < 2 or len(devices) < num_devices:
        raise ValueError(f"weak scaling over {num_devices} devices: {len(devices)} {devices[0].platform} devices "
                         "available (need 2 or more; on CPU set XLA_FLAGS=--xla_force_host_platform_device_count="
                         f"{max(num_devices, 2)})")
    per_device = config.data.batch_size
    single_config = config.copy_and_resolve_references()
    single_config.mesh.update(data=1, fsdp=1)
    sharded_config = config.copy_and_resolve_references()
    sharded_config.data.batch_size = num_devices * per_device
    runs, shapes, mesh_shape = {}, None, None
    for name, cfg, k in (("single", single_config, 1), ("sharded", sharded_config, num_devices)):
        c = compile_steps(cfg, records_dir=records_dir, pretrained=pretrained, num_token_batches=1,
                          devices=devices[:k], with_eval=False)
        times = time_train(c.train_step, c.state, c.train_batch, warmup, repeats)
        runs[name] = {**times, "bags_per_s": cfg.data.batch_size / times["median_s"], "compile_s": c.compile_s["train"]}
        shapes = shapes or c.shapes
        mesh_shape = dict(sharding.make_mesh(cfg, devices[:k]).shape)
    platform_name = devices[0].platform
    ratio = runs["sharded"]["median_s"] / runs["single"]["median_s"]
    ideal = float(num_devices) if platform_name == "cpu" else 1.0
    return {
        "devices": num_devices, "platform": platform_name, "kind": devices[0].device_kind, "cpu_count": os.cpu_count(),
        "jax_version": jax.__version__, "per_device_batch": per_device, "global_batch": num_devices * per_device,
        "config": {**dataclasses.asdict(shapes), "seq_len": shapes.seq_len}, "mesh": mesh_shape,
        "params": config.mesh.params, "single": runs["single"], "sharded": runs["sharded"], "time_ratio": ratio,
        "ideal_time_ratio": ideal, "normalised_time_ratio": ratio / ideal,
    }


def scaling_summary(report: dict[str, Any]) -> list[str]:
    """Human-readable lines of a weak-scaling report; the last one ends in `time_ratio=<value>`."""
    single, sharded, k = report["single"], report["sharded"], report["devices"]
    ms = lambda t: f"{1e3 * t['median_s']:.1f} ms (IQR {1e3 * t['p25_s']:.1f}-{1e3 * t['p75_s']:.1f})"  # noqa: E731
    return [
        f"weak scaling on {k} {report['platform']} devices ({report['cpu_count']} CPU cores), mesh {report['mesh']}, "
        f"params {report['params']}, jax {report['jax_version']}",
        f"single device, {report['per_device_batch']} bags: {ms(single)}, {single['bags_per_s']:.1f} bags/s",
        f"{k} devices, {report['global_batch']} bags: {ms(sharded)}, {sharded['bags_per_s']:.1f} bags/s",
        f"ideal ratio {report['ideal_time_ratio']:.0f}; normalised_time_ratio={report['normalised_time_ratio']:.3f}; "
        f"time_ratio={report['time_ratio']:.3f}",
    ]


def make_report(c: Compiled, flops: dict[str, Any], flops_xla: dict[str, float], train_times: dict,
                eval_times: dict, peak: dict) -> dict[str, Any]:
    """The JSON report: environment, sizes, times, throughputs, FLOPs and MFU."""
    s, config = c.shapes, c.config
    device = jax.devices()[0]
    peak_flops = peak["flops_per_s"]

    def throughput(times: dict, batch_size: int, timed: Shapes, tokens: dict, step_flops_: float,
                   xla: float) -> dict[str, Any]:
        t = times["median_s"]
        computed_tokens = batch_size * s.bag_size * timed.seq_len
        share = tokens["real_share_of_computed"]
        return {
            **times,
            "text_len": timed.text_len,
            "num_regions": timed.num_regions,
            "bags_per_s": batch_size / t,
            "instances_per_s": batch_size * s.bag_size / t,
            "real_instances_per_s": tokens["real_instances"] / tokens["padded_instances"] * batch_size * s.bag_size / t,
            "tokens_per_s": computed_tokens / t,
            "real_tokens_per_s": share * computed_tokens / t,
            "flops_analytic": step_flops_,
            "flops_xla": xla,
            "xla_over_analytic": xla / step_flops_,
            "flops_per_s": step_flops_ / t,
            "mfu": step_flops_ / t / peak_flops,
            "useful_mfu": share * step_flops_ / t / peak_flops,
        }

    train_report = throughput(train_times, s.batch_size, c.train_shapes, c.tokens, flops["train"], flops_xla["train"])
    eval_report = throughput(eval_times, s.eval_batch_size, c.eval_shapes, c.eval_tokens, flops["eval"],
                             flops_xla["eval"])
    train_report["compile_s"], eval_report["compile_s"] = c.compile_s["train"], c.compile_s["eval"]
    train_report["flops_parts"], eval_report["flops_parts"] = flops["train_parts"], flops["eval_parts"]
    return {
        "device": {"platform": device.platform, "kind": device.device_kind, "count": jax.device_count(),
                   "host": platform.node(), "cpu_count": os.cpu_count()},
        "jax_version": jax.__version__,
        "flax_version": flax.__version__,
        "precision": jnp.dtype(config.model.dtype).name,
        "config": {**dataclasses.asdict(s), "seq_len": s.seq_len, "remat": bool(config.model.remat),
                   "length_multiple": config.data.length_multiple},
        "data": {"source": c.source, **c.tokens, "eval": c.eval_tokens},
        "train": train_report,
        "eval": eval_report,
        "peak": peak,
        "peak_flops": peak_flops,
        "flops_analytic": flops["train"],
        "flops_xla": flops_xla["train"],
        "flops_analytic_eval": flops["eval"],
        "flops_xla_eval": flops_xla["eval"],
        "bags_per_s": train_report["bags_per_s"],
        "instances_per_s": train_report["instances_per_s"],
        "tokens_per_s": train_report["tokens_per_s"],
        "real_tokens_per_s": train_report["real_tokens_per_s"],
        "mfu": train_report["mfu"],
        "mfu_eval": eval_report["mfu"],
        "useful_mfu": train_report["useful_mfu"],
        "useful_mfu_eval": eval_report["useful_mfu"],
    }


def summary(report: dict[str, Any]) -> list[str]:
    """Human-readable lines; the last one ends in `mfu=<value>`."""
    c, tr, ev, peak, data = report["config"], report["train"], report["eval"], report["peak"], report["data"]
    g = 1e9
    return [
        f"device: {report['device']['kind']} ({report['device']['platform']} x{report['device']['count']}), "
        f"jax {report['jax_version']}, compute {report['precision']}",
        f"model: {c['num_layers']} layers, H={c['hidden']}, head {c['head']}/{c['eval_head']}; "
        f"batch: B={c['batch_size']} (eval {c['eval_batch_size']}), N={c['bag_size']}, Lt={c['text_len']}, "
        f"Lr={c['num_regions']}, F={c['region_dim']}, length_multiple {c['length_multiple']}",
        f"matmul peak ({peak['dtype']}, n={peak['size']}): {peak['flops_per_s'] / g:.1f} GFLOP/s",
        f"FLOPs/step: train {tr['flops_analytic'] / g:.2f} G analytic, {tr['flops_xla'] / g:.2f} G XLA "
        f"(x{tr['xla_over_analytic']:.3f}); eval {ev['flops_analytic'] / g:.2f} G, {ev['flops_xla'] / g:.2f} G XLA",
        f"tokens ({data['source']}), of the padded Lt+Lr: {100 * data['computed_token_share']:.1f}% computed "
        f"(buckets LtxLr: {data['buckets']}), {100 * data['real_token_share']:.1f}% real",
        f"train batch {tr['text_len']}x{tr['num_regions']}: {tr['tokens_per_s']:.0f} tokens/s computed, "
        f"{tr['real_tokens_per_s']:.0f} real; useful_mfu={tr['useful_mfu']:.3f}",
        f"eval step ({ev['text_len']}x{ev['num_regions']}): {1e3 * ev['median_s']:.1f} ms "
        f"(IQR {1e3 * ev['p25_s']:.1f}-{1e3 * ev['p75_s']:.1f}), "
        f"{ev['bags_per_s']:.1f} bags/s, mfu_eval={ev['mfu']:.3f}",
        f"train step: {1e3 * tr['median_s']:.1f} ms (IQR {1e3 * tr['p25_s']:.1f}-{1e3 * tr['p75_s']:.1f}), "
        f"{tr['bags_per_s']:.1f} bags/s, {tr['instances_per_s']:.0f} instances/s, mfu={tr['mfu']:.3f}",
    ]


def define_flags() -> None:
    """The command line's flags; defined only when run as a program, so that importing this module
    next to another command-line module (clever_jax.results, clever_jax.main) defines nothing."""
    config_flags.DEFINE_config_file("config", None, "Config file (configs/*.py).", lock_config=True)
    flags.DEFINE_string("out", "", "JSON report path; default runs/bench/<config name>.json.")
    flags.DEFINE_integer("repeats", 10, "Timed steps (each timed on its own) per step function.")
    flags.DEFINE_integer("warmup", 2, "Untimed steps after compilation.")
    flags.DEFINE_string("records", "", "A prepared records folder: time real batches instead of synthetic.")
    flags.DEFINE_boolean("pretrained", False, "Load the pretrained encoder weights (timing does not need them).")
    flags.DEFINE_list("peak_sizes", [], "Square matmul sizes for the peak; default by device (CPU: "
                      "1024,2048,3072; else 2048,4096,8192).")
    flags.DEFINE_integer("weak_scaling", 0, "K > 1: instead of the benchmark, time the train step on one device "
                         "(config.data.batch_size bags) and on K devices (K times as many); CPU needs "
                         "XLA_FLAGS=--xla_force_host_platform_device_count=K. Report default "
                         "runs/bench/<config name>_scaling.json.")
    flags.mark_flags_as_required(["config"])


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    args = flags.FLAGS
    config_path = config_flags.get_config_filename(args["config"])
    name = os.path.splitext(os.path.basename(config_path))[0] + ("_scaling" if args.weak_scaling else "")
    out = args.out or os.path.join("runs", "bench", name + ".json")
    if args.weak_scaling:
        report = weak_scaling(args.config, args.weak_scaling, repeats=args.repeats, warmup=args.warmup,
                              records_dir=args.records, pretrained=args.pretrained)
        lines = scaling_summary(report)
    else:
        report = run(args.config, repeats=args.repeats, warmup=args.warmup, records_dir=args.records,
                     pretrained=args.pretrained, peak_sizes=[int(n) for n in args.peak_sizes] or None)
        lines = summary(report)
    report["config"]["file"] = config_path
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out, "w") as f:
        json.dump(report, f, indent=1)
    logging.info("Report in %s", out)
    print("\n".join(lines), flush=True)


if __name__ == "__main__":
    define_flags()
    app.run(main)
