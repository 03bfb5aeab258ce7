"""Throughput benchmark of the jitted train and evaluation steps.

  python -m clever_jax.perf.throughput --config=configs/demo.py [--config.x=y ...] [--out=PATH] [--repeats=K]
      [--records=DIR] [--pretrained]
  XLA_FLAGS=--xla_force_host_platform_device_count=8 python -m clever_jax.perf.throughput --config=configs/demo.py \
      --weak_scaling=8     (weak scaling: see `weak_scaling`)
  python -m clever_jax.perf.throughput --config=configs/vg.py --records=DIR --compare_packing
                           (without and with packing, alternately: see `compare_packing`)

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
token the step computes, the padding left in its bucket included; `useful_mfu` counts only what
the timed batch needs at the least (`flops_useful`: its real tokens, text + regions of real
instances, and attention over each instance's real tokens: flops.Shapes.real), the same for
padded and packed steps of one batch. Tokens/s are reported both ways, real ones with the real
tokens' share of the computed ones (over B N (Lt' + Lr') in each batch's bucket Lt' x Lr', or over
a packed batch's compact slots (config.data.packing), means over the 20 token batches).

Report (JSON): device, jax_version, flax_version, precision, config (sizes, length_multiple), data
(source, real/computed/padded tokens and instances per batch, real_token_share and
computed_token_share of the padded tokens, real_share_of_computed, buckets "Lt'xLr'" -> batches,
instance_tokens (mean and percentiles);
`eval`: the same for the eval batch), train and eval ({median,p25,p75}_s, times_s, compile_s,
text_len and num_regions of the timed batch, bags/instances/tokens per second (real_* too),
flops_analytic, flops_xla, xla_over_analytic, flops_parts, flops_per_s, mfu, flops_useful, useful_mfu}), peak
(flops_per_s, size, dtype, by_size, runs), and at top level peak_flops, flops_analytic, flops_xla
(train step), flops_{analytic,xla}_eval, bags_per_s, instances_per_s, tokens_per_s,
real_tokens_per_s, mfu, mfu_eval, useful_mfu, useful_mfu_eval. With --weak_scaling=K: the report
of `weak_scaling`, and a last line ending in `time_ratio=<value>`; with --compare_packing: that of
`compare_packing` and a last line ending in `speedup=<value>`.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import os
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import app, flags, logging
from ml_collections import config_flags

from clever_jax import cli
from clever_jax.data import packing, pipeline, synthetic
from clever_jax.perf import flops, report
from clever_jax.perf.flops import Shapes
from clever_jax.training import builder, steps


def records_batches(run: builder.Run, count: int, *, train_split: bool) -> list[dict[str, np.ndarray]]:
    """`count` real batches of the run's records (train split shuffled, or validation in order, padded)."""
    batch_size = run.local_batch_size(train_split)
    batches = []
    for batch in run.loader("train" if train_split else "val", train=train_split):
        batches.append(pipeline.pad_batch(batch, batch_size))
        if len(batches) == count:
            break
    return batches


def token_counts(batches: list[dict[str, np.ndarray]], multiple: int, run: builder.Run | None = None,
                 train: bool = True) -> dict[str, Any]:
    """Tokens and instances per batch (means over `batches`, padded to Lt and Lr) and their buckets.

    Tokens: real (text + regions of real instances), computed (B N (Lt' + Lr') in the batch's
    bucket Lt' x Lr' for config.data.length_multiple = `multiple`: pipeline.bucket_lengths; a `run`
    that packs its `train` or evaluation batches: the compact slots G (Ct + Cr) that the encoder's
    per-token work runs on, builder.Run.packing_sizes) and padded (B N (Lt + Lr));
    their shares; `buckets`: "Lt'xLr'" -> number of batches; `instance_tokens`: the mean and the 10th,
    50th and 90th percentiles of a real instance's tokens (text + regions).
    """
    lengths = [pipeline.bucket_lengths(b, multiple) for b in batches]

    groups = run.packing_groups(train) if run is not None else None

    def computed_tokens(batch: dict[str, np.ndarray], bucket: np.ndarray) -> float:
        if groups is None:
            return batch["instance_mask"].size * float(bucket.sum())
        trimmed = pipeline.trim_padding(batch, *bucket)
        need = packing.needs(trimmed, *groups, len(run.packing_sample()) - 2)
        return float(groups[0] * groups[1] * sum(run.packing_sizes(trimmed, need, train)[:2]))

    real = np.mean([float(b["text_mask"].sum() + b["region_mask"].sum()) for b in batches])
    per_instance = np.concatenate([(b["text_mask"].sum(-1) + b["region_mask"].sum(-1))[b["instance_mask"]]
                                   for b in batches])
    computed = np.mean([computed_tokens(b, n) for b, n in zip(batches, lengths, strict=True)])
    padded = np.mean([b["text_mask"].size + b["region_mask"].size for b in batches])
    buckets = collections.Counter(f"{lt}x{lr}" for lt, lr in lengths)
    return {
        "real_tokens": float(real), "computed_tokens": float(computed), "padded_tokens": float(padded),
        "real_instances": float(np.mean([b["instance_mask"].sum() for b in batches])),
        "padded_instances": float(batches[0]["instance_mask"].size),
        "real_token_share": float(real / padded), "computed_token_share": float(computed / padded),
        "real_share_of_computed": float(real / computed), "buckets": dict(sorted(buckets.items())),
        "instance_tokens": {"mean": float(per_instance.mean()),
                            **{f"p{q}": float(np.percentile(per_instance, q)) for q in (10, 50, 90)}},
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


class TrainTimer:
    """Runs and times one train step per call (the state is donated and threaded through)."""

    def __init__(self, compiled: Any, state: steps.TrainState, batch: dict):
        self.compiled, self.state, self.batch, self.metrics = compiled, state, batch, None

    def __call__(self) -> float:
        start = time.perf_counter()
        self.state, self.metrics = self.compiled(self.state, self.batch)
        jax.block_until_ready((self.state, self.metrics))
        return time.perf_counter() - start

    def check_finite(self) -> None:
        if not bool(self.metrics["finite"]):  # A non-finite step skips its update: not the step to time.
            raise FloatingPointError(f"the timed train step is not finite (loss {float(self.metrics['loss'])}): "
                                     "check the batch's token ids against the vocabulary and the precision")


def eval_timer(compiled: Any, params: Any, batch: dict):
    """A function that runs and times one evaluation step per call."""
    def step() -> float:
        start = time.perf_counter()
        jax.block_until_ready(compiled(params, batch))
        return time.perf_counter() - start
    return step


def time_steps(timer, warmup: int, repeats: int) -> dict[str, Any]:
    """Quartiles of `repeats` calls of `timer` (a TrainTimer or eval_timer) after `warmup` untimed ones."""
    for _ in range(warmup):
        timer()
    times = [timer() for _ in range(repeats)]
    if isinstance(timer, TrainTimer):
        timer.check_finite()
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
    if not records_dir and config.data.packing:  # Capacities as training sets them, from these batches.
        run.packing_sampled = packing.sample(train_batches, *run.groups(train=True), config.data.packing_classes)
    train_batch = run.device_batch(train_local, train=True)  # Packed with config.data.packing.
    eval_batch = run.device_batch(eval_local, train=False)

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
    return Compiled(shapes=s, train_shapes=timed_shapes(run, train_batch), eval_shapes=timed_shapes(run, eval_batch),
                    config=config, train_step=train_compiled, eval_step=eval_compiled, state=state,
                    train_batch=train_batch, eval_batch=eval_batch if with_eval else None,
                    tokens=token_counts(train_batches, multiple, run), eval_tokens=token_counts(eval_batches, multiple,
                                                                                                run, train=False),
                    source=records_dir or "synthetic", compile_s=compile_s)


def timed_shapes(run: builder.Run, batch: dict) -> Shapes:
    """The run's sizes with the timed device batch's Lt and Lr (its bucket) and, packed, its compact slots and
    attention rows."""
    lt, lr = batch["text_mask"].shape[-1], batch["region_mask"].shape[-1]
    if "packed_text" not in batch:
        return Shapes.of(run, lt, lr)
    pairs = sum(rows.size * rows.shape[-1] for rows in batch["attention_slots"])
    return Shapes.of(run, lt, lr, text_tokens=batch["packed_text"].size, region_tokens=batch["packed_regions"].size,
                     attention_pairs=pairs)


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
    eval_times = time_steps(eval_timer(c.eval_step, c.state.params, c.eval_batch), warmup, repeats)
    train_times = time_steps(TrainTimer(c.train_step, c.state, c.train_batch), warmup, repeats)
    peaks.append(flops.matmul_peak(*peak_args))
    peak = {**max(peaks, key=lambda p: p["flops_per_s"]), "runs": [p["flops_per_s"] for p in peaks]}
    return report.make_report(c, flops.step_flops(c.train_shapes, c.eval_shapes), flops_xla, train_times,
                              eval_times, peak)


def compare_packing(config: ml_collections.ConfigDict, *, repeats: int = 10, warmup: int = 2, records_dir: str = "",
                    pretrained: bool = False, peak_sizes: list[int] | None = None) -> dict[str, Any]:
    """The steps of `config` without and with config.data.packing on the same batches, timed alternately
    (padded, packed, padded, ...; evaluation steps first, then train steps), so that both see the same
    machine state. Returns {"padded": report, "packed": report, "speedup": {train, eval}}: speedups are
    ratios of median step times, so of real instances and real tokens per second too."""
    compiled = {}
    for name, packed in (("padded", False), ("packed", True)):
        variant = config.copy_and_resolve_references()
        variant.data.packing = packed
        compiled[name] = compile_steps(variant, records_dir=records_dir, pretrained=pretrained)
    peak_args = (jnp.dtype(config.model.dtype), peak_sizes or flops.default_peak_sizes(jax.devices()[0].platform))
    peaks = [flops.matmul_peak(*peak_args)]
    timers = {"eval": {k: eval_timer(c.eval_step, c.state.params, c.eval_batch) for k, c in compiled.items()},
              "train": {k: TrainTimer(c.train_step, c.state, c.train_batch) for k, c in compiled.items()}}
    times = {}
    for step, by_variant in timers.items():  # Eval first: the train step donates the state's parameters.
        for timer in by_variant.values():
            for _ in range(warmup):
                timer()
        runs = [{name: timer() for name, timer in by_variant.items()} for _ in range(repeats)]
        times[step] = {name: _quartiles([r[name] for r in runs]) for name in by_variant}
    for timer in timers["train"].values():
        timer.check_finite()
    peaks.append(flops.matmul_peak(*peak_args))
    peak = {**max(peaks, key=lambda p: p["flops_per_s"]), "runs": [p["flops_per_s"] for p in peaks]}
    out = {name: report.make_report(c, flops.step_flops(c.train_shapes, c.eval_shapes),
                                    {"train": flops.xla_flops(c.train_step), "eval": flops.xla_flops(c.eval_step)},
                                    times["train"][name], times["eval"][name], peak)
           for name, c in compiled.items()}
    out["speedup"] = {step: times[step]["padded"]["median_s"] / times[step]["packed"]["median_s"] for step in times}
    return out


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
    (`time_steps` timings plus bags_per_s and compile_s), time_ratio, ideal_time_ratio,
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
        times = time_steps(TrainTimer(c.train_step, c.state, c.train_batch), warmup, repeats)
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
    flags.DEFINE_boolean("compare_packing", False, "Instead of the benchmark, time the steps without and with "
                         "config.data.packing on the same batches, alternately. Report default "
                         "runs/bench/<config name>_packing.json.")
    flags.mark_flags_as_required(["config"])


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    args = flags.FLAGS
    config_path = config_flags.get_config_filename(args["config"])
    if args.weak_scaling and args.compare_packing:
        raise app.UsageError("--weak_scaling and --compare_packing are two benchmarks: give one")
    suffix = "_scaling" if args.weak_scaling else "_packing" if args.compare_packing else ""
    name = os.path.splitext(os.path.basename(config_path))[0]
    out = args.out or os.path.join("runs", "bench", name + suffix + ".json")
    common = {"repeats": args.repeats, "warmup": args.warmup, "records_dir": args.records,
              "pretrained": args.pretrained}
    peak_sizes = [int(n) for n in args.peak_sizes] or None
    if args.weak_scaling:
        result = weak_scaling(args.config, args.weak_scaling, **common)
        lines = report.scaling_summary(result)
    elif args.compare_packing:
        result = compare_packing(args.config, **common, peak_sizes=peak_sizes)
        lines = report.packing_summary(result)
    else:
        result = run(args.config, **common, peak_sizes=peak_sizes)
        lines = report.summary(result)
    for part in (result["padded"], result["packed"]) if args.compare_packing else (result,):
        part["config"]["file"] = config_path
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out, "w") as f:
        json.dump(result, f, indent=1)
    logging.info("Report in %s", out)
    print("\n".join(lines), flush=True)


if __name__ == "__main__":
    define_flags()
    cli.run(main)
