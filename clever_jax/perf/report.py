"""The benchmark's JSON reports and their summary lines (clever_jax.perf.throughput makes the measurements)."""

from __future__ import annotations

import dataclasses
import os
import platform
from typing import TYPE_CHECKING, Any

import flax
import jax
import jax.numpy as jnp

from clever_jax.perf import flops as flops_lib

if TYPE_CHECKING:
    from clever_jax.perf.flops import Shapes


def make_report(c: Any, flops: dict[str, Any], flops_xla: dict[str, float], train_times: dict,
                eval_times: dict, peak: dict) -> dict[str, Any]:
    """The JSON report of compiled steps `c` (a throughput.Compiled): environment, sizes, times, throughputs,
    FLOPs and MFU."""
    s, config = c.shapes, c.config
    device = jax.devices()[0]
    peak_flops = peak["flops_per_s"]
    useful = flops_lib.step_flops(c.train_shapes.real(c.train_batch),
                                  c.eval_shapes.real(c.eval_batch) if c.eval_batch is not None else None)

    def throughput(times: dict, batch_size: int, timed: Shapes, tokens: dict, step_flops_: float,
                   xla: float, useful_flops: float) -> dict[str, Any]:
        t = times["median_s"]
        computed_tokens = sum(timed.tokens(batch_size))
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
            "flops_useful": useful_flops,
            "useful_mfu": useful_flops / t / peak_flops,
        }

    train_report = throughput(train_times, s.batch_size, c.train_shapes, c.tokens, flops["train"], flops_xla["train"],
                              useful["train"])
    eval_report = throughput(eval_times, s.eval_batch_size, c.eval_shapes, c.eval_tokens, flops["eval"],
                             flops_xla["eval"], useful["eval"])
    train_report["compile_s"], eval_report["compile_s"] = c.compile_s["train"], c.compile_s["eval"]
    train_report["flops_parts"], eval_report["flops_parts"] = flops["train_parts"], flops["eval_parts"]
    return {
        "device": {"platform": device.platform, "kind": device.device_kind, "count": jax.device_count(),
                   "host": platform.node(), "cpu_count": os.cpu_count()},
        "jax_version": jax.__version__,
        "flax_version": flax.__version__,
        "precision": jnp.dtype(config.model.dtype).name,
        "config": {**dataclasses.asdict(s), "seq_len": s.seq_len, "remat": bool(config.model.remat),
                   "length_multiple": config.data.length_multiple, "packing": bool(config.data.packing)},
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




def packing_summary(result: dict[str, Any]) -> list[str]:
    """Lines of a compare_packing result: each variant's summary, then the speedups; the last line ends in
    `speedup=<train step speedup>`."""
    lines = []
    for name in ("padded", "packed"):
        lines += [f"-- {name}", *summary(result[name])]
    padded, packed = result["padded"], result["packed"]
    return [
        *lines,
        f"-- packed vs padded: eval x{result['speedup']['eval']:.3f}; real instances/s "
        f"{padded['train']['real_instances_per_s']:.1f} -> {packed['train']['real_instances_per_s']:.1f}, "
        f"useful_mfu {padded['useful_mfu']:.3f} -> {packed['useful_mfu']:.3f}; "
        f"train speedup={result['speedup']['train']:.3f}",
    ]
