"""Where a train step's time goes, by kind of operation.

  python -m clever_jax.perf.profile --config=configs/vg.py --records=DIR [--config.x=y ...] [--steps=K]

Compiles the train step as the throughput benchmark does (clever_jax.perf.throughput.compile_steps:
the same batches, trimmed and packed as training does), runs it twice untimed, then K steps under
jax.profiler with a Perfetto trace, and sums the trace's operation events per step by the kind of
the compiled HLO instruction they run (`KINDS`): matrix products (the fusions that hold a dot),
reductions (LayerNorm and softmax statistics, bias gradients), layout copies and transposes,
gathers and scatters, the other elementwise fusions. Operation events on XLA:CPU are the thunks
named after their HLO instructions; where an event matches no instruction it is counted under
"other". Writes WORKDIR/trace (the Perfetto trace, for ui.perfetto.dev) and WORKDIR/profile.json
(seconds per step by kind and the 15 longest instructions) and prints the table.
"""

from __future__ import annotations

import collections
import glob
import gzip
import json
import os
import re
from typing import Any

import jax
from absl import app, flags
from ml_collections import config_flags

from clever_jax import cli
from clever_jax.perf import throughput

KINDS = ("matmul", "reduce", "copy", "gather/scatter", "elementwise", "other")


def instruction_kinds(hlo_text: str) -> dict[str, str]:
    """The kind (one of KINDS) of every instruction of an HLO module's text, by name."""
    bodies = {m.group(1): m.group(2) for m in re.finditer(r"^(?:ENTRY )?%?([\w.\-]+) \(.*?\{\n(.*?)\n\}",
                                                          hlo_text, re.S | re.M)}
    kinds = {}
    for m in re.finditer(r"^\s*(?:ROOT )?%?([\w.\-]+) = \S+ ([\w\-]+)\((.*)$", hlo_text, re.M):
        name, op, rest = m.groups()
        called = re.search(r"calls=%?([\w.\-]+)", rest)
        body = f" {op}(" + (bodies.get(called.group(1), "") if called else "")
        if re.search(r" (dot|convolution)\(", body):
            kinds[name] = "matmul"
        elif re.search(r" (reduce|reduce-window)\(", body):
            kinds[name] = "reduce"
        elif re.search(r" (gather|scatter)\(", body):
            kinds[name] = "gather/scatter"
        elif re.search(r" (copy|transpose)\(", body):
            kinds[name] = "copy"
        else:
            kinds[name] = "elementwise"
    return kinds


def breakdown(trace_path: str, hlo_text: str, steps: int) -> dict[str, Any]:
    """Seconds per step by kind and the longest instructions, from a Perfetto trace (gzipped JSON)."""
    with gzip.open(trace_path) as f:
        events = json.load(f)
    events = events.get("traceEvents", []) if isinstance(events, dict) else events
    kinds = instruction_kinds(hlo_text)
    by_name: dict[str, float] = collections.defaultdict(float)
    for event in events:
        if event.get("ph") == "X" and event["name"] in kinds:
            by_name[event["name"]] += event.get("dur", 0) / 1e6 / steps
    by_kind = dict.fromkeys(KINDS, 0.0)
    for name, seconds in by_name.items():
        by_kind[kinds[name]] += seconds
    longest = sorted(by_name.items(), key=lambda item: -item[1])[:15]
    return {"seconds_per_step": by_kind, "total_s": sum(by_kind.values()),
            "longest": [{"instruction": name, "kind": kinds[name], "seconds": s} for name, s in longest]}


def profile(config, workdir: str, records_dir: str = "", steps: int = 3) -> dict[str, Any]:
    """Profiles `steps` train steps of `config`; writes WORKDIR/trace and returns the breakdown."""
    c = throughput.compile_steps(config, records_dir=records_dir, with_eval=False)
    timer = throughput.TrainTimer(c.train_step, c.state, c.train_batch)
    timer(), timer()
    trace_dir = os.path.join(workdir, "trace")
    with jax.profiler.trace(trace_dir, create_perfetto_trace=True):
        times = [timer() for _ in range(steps)]
    timer.check_finite()
    traces = sorted(glob.glob(os.path.join(trace_dir, "**", "perfetto_trace.json.gz"), recursive=True),
                    key=os.path.getmtime)
    if not traces:
        raise FileNotFoundError(f"{trace_dir}: jax.profiler wrote no perfetto_trace.json.gz")
    result = breakdown(traces[-1], c.train_step.as_text(), steps)
    return {**result, "step_s": times, "device": jax.devices()[0].device_kind, "trace": traces[-1],
            "packing": bool(c.config.data.packing), "shapes": {"text_len": c.train_shapes.text_len,
                                                               "num_regions": c.train_shapes.num_regions}}


def table(result: dict[str, Any]) -> list[str]:
    steps = result["step_s"]
    lines = [f"train step {1e3 * min(steps):.1f}-{1e3 * max(steps):.1f} ms on {result['device']} "
             f"(packing {result['packing']}); operations {1e3 * result['total_s']:.1f} ms per step:"]
    lines += [f"  {kind:<15} {1e3 * s:8.1f} ms {100 * s / result['total_s']:5.1f}%"
              for kind, s in result["seconds_per_step"].items()]
    lines += [f"  longest: {e['instruction']} ({e['kind']}) {1e3 * e['seconds']:.1f} ms" for e in result["longest"][:5]]
    return lines


_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file (configs/*.py).", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", "runs/profile", "Folder for the trace and profile.json.")
_RECORDS = flags.DEFINE_string("records", "", "A prepared records folder (default: synthetic batches).")
_STEPS = flags.DEFINE_integer("steps", 3, "Train steps traced.")


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    result = profile(_CONFIG.value, _WORKDIR.value, _RECORDS.value, _STEPS.value)
    with open(os.path.join(_WORKDIR.value, "profile.json"), "w") as f:
        json.dump(result, f, indent=1)
    print("\n".join(table(result)), flush=True)


if __name__ == "__main__":
    cli.run(main, required=["config"])
