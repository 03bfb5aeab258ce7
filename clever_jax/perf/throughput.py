"""Throughput benchmark of the jitted train and evaluation steps.

  python -m clever_jax.perf.throughput --config=configs/demo.py [--config.x=y ...] [--out=PATH] [--repeats=K]
      [--records=DIR] [--pretrained]
  XLA_FLAGS=--xla_force_host_platform_device_count=8 python -m clever_jax.perf.throughput --config=configs/demo.py \
      --weak_scaling=8     (weak scaling: see `weak_scaling`)

Builds the run with the builder training uses (clever_jax.training.builder.build: model, optimiser,
placed state and the jitted train and evaluation steps, here on a one-device mesh), on batches
in the input pipeline's layout (synthetic by default, clever_jax.data.synthetic, or real batches
of a prepared records folder with --records) trimmed as training trims them
(config.data.length_multiple: the text and region axes cut to the batch's bucket; the timed train
batch is the first of 20 in their most common bucket), compiles both steps, warms up, then times
K single steps each (block_until_ready after every step) and reports the median and quartiles.
Writes a JSON report (default runs/bench/<config name>.json) and prints a summary whose last line
ends in `mfu=<value>`.

FLOPs: clever_jax.perf.flops counts the matrix multiplies of each step analytically (its docstring
has the formulas); the count is cross-checked against XLA's cost analysis of the compiled step.

MFU = analytic FLOPs per step / median step time / peak, where the peak is the best throughput
of a jitted square matmul in the compute dtype (config.model.dtype), measured here on the same
device, before and after the step timings (the better of the two: a peak measured while another
process briefly holds a core would flatter the MFU; `peak.runs` has both). MFU counts every
token the step computes, the padding left in its bucket included; `useful_mfu` scales it by the
real (unpadded) tokens' share of the computed ones (text + regions of real instances, over
B N (Lt' + Lr') in each batch's bucket Lt' x Lr', means over the 20 token batches), and tokens/s
are reported both ways.

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

from clever_jax import cli
from clever_jax.data import pipeline, synthetic
from clever_jax.perf import flops
from clever_jax.perf.flops import Shapes
from clever_jax.training import builder, sharding, steps


def records_batches(run: builder.Run, count: int, *, train_split: bool) -> list[dict[str, np.ndarray]]:
    """`count` real batches of the run's records (train split shuffled, or validation in order, padded)."""
    batch_size = run.local_batch_size(train_split)
    batches = []
    for batch in run.loader("train" if train_split else "val", train=train_split):
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


def time_train(compiled: Any, state: steps.TrainState, batch: dict, warmup: int, repeats: int) -> dict[str, Any]:
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
    if not bool(metrics["finite"]):  # A non-finite step skips its update: not the step to time.
        raise FloatingPointError(f"the timed train step is not finite (loss {float(metrics['loss'])}): "
                                 "check the batch's token ids against the vocabulary and the precision")
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


# ---------------------------------------------------------------------------------------------
# The benchmark.


@dataclasses.dataclass
class Compiled:
    """The compiled steps of a config and what they run on.

    Attributes:
      shapes: the run's sizes (Lt, Lr: padded lengths). config: the resolved config (pretrained as asked).
      train_shapes, eval_shapes: `shapes` with the Lt and Lr of the timed train / eval batch (its bucket).
      train_step: compiled steps.train_step (state donated). eval_step: compiled steps.eval_step (or None).
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
    state: steps.TrainState
    train_batch: dict
    eval_batch: dict | None
    tokens: dict[str, Any]
    eval_tokens: dict[str, Any]
    source: str
    compile_s: dict[str, float]


def compile_steps(config: ml_collections.ConfigDict, *, records_dir: str = "", pretrained: bool = False,
                  num_token_batches: int = 20, devices: list | None = None, with_eval: bool = True) -> Compiled:
    """Builds the run of `config` (clever_jax.training.builder) on a mesh (config.mesh) over `devices` (default:
    the first device), its batches, and compiles the train step and (`with_eval`) the eval step."""
    config = config.copy_and_resolve_references()
    config.model.pretrained = pretrained
    start = time.perf_counter()
    run = builder.build(config, records_dir, devices or jax.devices()[:1])
    s = Shapes.of(run)
    logging.info("Built the run in %.1f s; making %d batches of %d bags", time.perf_counter() - start,
                 num_token_batches, s.batch_size)
    if records_dir:
        train_batches = records_batches(run, num_token_batches, train_split=True)
        eval_batches = records_batches(run, 1, train_split=False)
    else:
        rng = np.random.default_rng(config.seed)
        objects = synthetic.objects_per_image(config.data)
        shape, vocab_size = synthetic.with_vocabulary(run.shape, run.pretrained_dir)  # Ids the embeddings hold.
        train_batches = [synthetic.synthetic_batch(shape, s.batch_size, rng, objects, vocab_size, features=False)
                         for _ in range(num_token_batches)]
        eval_batches = [synthetic.synthetic_batch(shape, s.eval_batch_size, rng, objects, vocab_size, features=False)]
    multiple = config.data.length_multiple
    train_local, eval_local = timed_batch(train_batches, multiple), timed_batch(eval_batches, multiple)
    if not records_dir:  # Features for the two timed batches only.
        for local in (train_local, eval_local):
            local["regions"] = synthetic.region_features(local["region_mask"], run.shape.region_dim, rng)
    trimmed = lambda b: Shapes.of(run, b["text_mask"].shape[-1], b["region_mask"].shape[-1])  # noqa: E731
    train_batch = sharding.global_batch(train_local, run.batch_sharding)
    eval_batch = sharding.global_batch(eval_local, run.batch_sharding) if with_eval else None

    state = run.initial_state()
    logging.info("Initial state ready; compiling the train step (Lt %d, Lr %d)", train_local["text_mask"].shape[-1],
                 train_local["region_mask"].shape[-1])
    start = time.perf_counter()
    train_compiled = run.train_step.lower(state, train_batch).compile()
    middle = time.perf_counter()
    logging.info("Compiled the train step in %.1f s", middle - start)
    eval_compiled = run.eval_step.lower(state.params, eval_batch).compile() if with_eval else None
    compile_s = {"train": middle - start, "eval": time.perf_counter() - middle}
    if with_eval:
        logging.info("Compiled the eval step in %.1f s", compile_s["eval"])  # Each phase logged: GPUs compile long.
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
    flops_xla = {"train": flops.xla_flops(c.train_step), "eval": flops.xla_flops(c.eval_step)}
    peak_args = (jnp.dtype(c.config.model.dtype), peak_sizes or flops.default_peak_sizes(jax.devices()[0].platform))
    peaks = [flops.matmul_peak(*peak_args)]
    # Eval first: the train step donates (and so deletes) the state's parameters.
    eval_times = time_eval(c.eval_step, c.state.params, c.eval_batch, warmup, repeats)
    train_times = time_train(c.train_step, c.state, c.train_batch, warmup, repeats)
    peaks.append(flops.matmul_peak(*peak_args))
    peak = {**max(peaks, key=lambda p: p["flops_per_s"]), "runs": [p["flops_per_s"] for p in peaks]}
    return make_report(c, flops.step_flops(c.train_shapes, c.eval_shapes), flops_xla, train_times, eval_times,
                       peak)


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
        mesh_shape = dict(c.train_batch["bag_mask"].sharding.mesh.shape)
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
    next to another command-line module (clever_jax.experiments.results, clever_jax.main) defines nothing."""
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
    cli.run(main)
