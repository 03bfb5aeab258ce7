"""One command for a machine with an NVIDIA GPU: `make gpu-check` (this script), one JSON report.

  python3 launch/gpu_check.py [--out=runs/gpu_check/report.json] [--python=.venv/bin/python]
      [--skip_install] [--budget_s=480] [--dry_run]

Steps, most wanted first (the budget may end the list), each with its command, wall time, exit status and the
tail of its output:
  device   `nvidia-smi -L`, then the environment's `jax.devices()` after the install
  install  the test environment and jax[cuda12] into .venv (`make .venv/.test-installed install-cuda`),
           unless the environment's JAX already sees a GPU or --skip_install; timed and counted in
           --budget_s like the steps
  bench    clever_jax.perf.throughput in bfloat16 (after the demo also float32, and float16 with its dynamic
           loss scale) at the demo shapes (configs/demo.py) and at the paper's (configs/vg_gpu.py: BERT-base sizes from
           configs/bert_base, bag 50, 70 word pieces, 50 regions; PAPER_BAGS bags a step); MFU against
           the measured matmul peak (the bench's own) and against the card's published dense peak
           (PUBLISHED_TFLOPS, matched on the name nvidia-smi gives); the paper's shapes in bfloat16 without
           and with packing (--compare_packing: the same batches, timed alternately; the others pack)
  memory   clever_jax.perf.memory of configs/vg_gpu10.py: one 11 GB RTX 2080 Ti's share of the paper's
           60-bag step (1 bag of 50 per device, 6 accumulation steps), as XLA:GPU assigns it
  demo     what `make demo` runs, on the GPU, into runs/gpu_check/demo (its test metrics)
  tests    the test suite (pytest -n 8, the 20 slowest listed; GPU memory allocated on demand so that
           the workers share the card; the multi-device tests use forced host devices as on CPU), last:
           the figures come first when the budget is short

A step that fails is recorded and the next one runs; steps left when --budget_s is spent are
recorded as skipped. Exit status 1 when any step failed. --dry_run prints the commands, one per
line, and runs nothing (tests/test_launch.py checks them on CPU). Standard library only: it runs
before the environment exists.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time

import common

DTYPES = ("float32", "bfloat16", "float16")
PAPER_BAGS = 8  # 400 instances of 120 tokens: BERT-base's train step fits an 80 GB card with room to spare.
DEMO_DIR = "runs/gpu_check/demo"
# Seconds per bench run. On an H100 (2026-12-06) a demo-shape run took 41-44 s, 16-18 s of it compiling the train
# step; a paper-shape run (12 layers) had not written its report after 120 s.
BENCH_TIMEOUT_S = {"demo": 120, "paper": 300, "paper_packing": 420}  # The comparison compiles two steps.
# Published dense (no sparsity) peaks in TFLOP/s: float32 without tensor cores, tf32 for float32 matrix products
# on tensor cores (what XLA uses by default on Ampere and later), bfloat16 and float16 tensor cores.
PUBLISHED_TFLOPS = {
    "H200": {"float32": 66.9, "tf32": 494.7, "bfloat16": 989.4, "float16": 989.4},
    "H100 PCIe": {"float32": 51.2, "tf32": 378.0, "bfloat16": 756.0, "float16": 756.0},
    "H100": {"float32": 66.9, "tf32": 494.7, "bfloat16": 989.4, "float16": 989.4},  # SXM5.
    "A100": {"float32": 19.5, "tf32": 156.0, "bfloat16": 312.0, "float16": 312.0},
    "L4": {"float32": 30.3, "tf32": 60.0, "bfloat16": 121.0, "float16": 121.0},
    "RTX 2080 Ti": {"float32": 13.4, "float16": 53.8},  # float16 with float32 accumulation (GeForce Turing).
}


def published_peak(card: str) -> dict[str, float]:
    """The PUBLISHED_TFLOPS row of the first name contained in `card` (e.g. 'NVIDIA H100 80GB HBM3'), else {}."""
    return next((row for name, row in PUBLISHED_TFLOPS.items() if name in card), {})


def bench_commands(python: str, out_dir: str) -> dict[tuple[str, str], str]:
    """(shapes, dtype) -> the clever_jax.perf.throughput command writing out_dir/bench_{shapes}_{dtype}.json."""
    shapes = {"demo": ["--config=configs/demo.py"],
              "paper": ["--config=configs/vg_gpu.py", "--config.model.pretrained_dir=configs/bert_base",
                        f"--config.data.batch_size={PAPER_BAGS}", f"--config.data.eval_batch_size={PAPER_BAGS}"]}
    compare = lambda name, dtype: ["--compare_packing"] if (name, dtype) == ("paper", "bfloat16") else []  # noqa: E731
    return {(name, dtype): shlex.join([python, "-m", "clever_jax.perf.throughput", *flags,
                                       f"--config.model.dtype={dtype}", "--repeats=5", *compare(name, dtype),
                                       f"--out={out_dir}/bench_{name}_{dtype}.json"])
            for name, flags in shapes.items() for dtype in DTYPES}


def steps(args: argparse.Namespace) -> list[tuple[str, str, float]]:
    """(name, shell command, timeout in seconds) of every step after the install, in order."""
    out_dir, python = os.path.dirname(args.out), args.python
    devices = shlex.join([python, "-c", "import jax; print(jax.devices()); print(jax.default_backend())"])
    tests = (f"XLA_PYTHON_CLIENT_PREALLOCATE=false {shlex.quote(python)} -m pytest -q -n 8 --dist loadfile "
             "--durations=20")
    memory = shlex.join([python, "-m", "clever_jax.perf.memory", "--config=configs/vg_gpu10.py",
                         "--config.model.pretrained_dir=configs/bert_base", f"--out={out_dir}/memory_vg_gpu10.json"])
    demo = shlex.join([python, "-m", "clever_jax.main", "--config=configs/demo.py", f"--workdir={DEMO_DIR}"])
    bench = bench_commands(python, out_dir)
    first = [("paper", "bfloat16"), ("demo", "bfloat16")]  # The headline precision; the rest after the demo.
    rest = [key for key in bench if key not in first]
    timeout = lambda key: BENCH_TIMEOUT_S["paper_packing" if "--compare_packing" in bench[key] else key[0]]  # noqa: E731
    bench_step = lambda key: (f"bench_{key[0]}_{key[1]}", bench[key], timeout(key))  # noqa: E731
    return ([("devices", devices, 120)] + [bench_step(key) for key in first]
            + [("memory", memory, 180), ("demo", demo, 300)] + [bench_step(key) for key in rest]
            + [("tests", tests, 360)])


def run_step(name: str, command: str, timeout: float) -> dict:
    """Runs one step in the repository root; its record for the report."""
    print(f"+ {command}", file=sys.stderr, flush=True)
    start = time.time()
    try:
        result = subprocess.run(command, shell=True, cwd=common.ROOT, executable="/bin/bash", capture_output=True,
                                text=True, timeout=timeout)
        status, output = result.returncode, result.stdout + result.stderr
    except subprocess.TimeoutExpired as e:  # Its partial output comes as bytes.
        status = "timeout"
        output = "".join(part.decode(errors="replace") if isinstance(part, bytes) else part or ""
                         for part in (e.stdout, e.stderr))
    return {"name": name, "command": command, "seconds": round(time.time() - start, 1), "status": status,
            "output_tail": output[-3000:]}


def summarise(report: dict, out_dir: str, card: str) -> dict:
    """The figures of the steps' own reports: bench step times and MFUs, the memory estimate, the demo's metrics."""
    peaks, figures = published_peak(card), {}
    for name in ("demo", "paper"):
        for dtype in DTYPES:
            path = os.path.join(out_dir, f"bench_{name}_{dtype}.json")
            if not os.path.isfile(path):
                continue
            with open(path) as f:
                bench = json.load(f)
            row = {}
            if "speedup" in bench:  # --compare_packing: the packed step's figures, and the padded one's time.
                row = {"padded_train_step_s": bench["padded"]["train"]["median_s"],
                       "packing_speedup": bench["speedup"]["train"]}
                bench = bench["packed"]
            train = bench["train"]
            row.update(train_step_s=train["median_s"], instances_per_s=bench["instances_per_s"],
                       mfu_vs_measured_peak=bench["mfu"], measured_peak_tflops=bench["peak_flops"] / 1e12)
            for kind in (dtype, "tf32") if dtype == "float32" else (dtype,):
                if kind in peaks:
                    row[f"mfu_vs_published_{kind}"] = train["flops_per_s"] / (peaks[kind] * 1e12)
            figures[f"bench_{name}_{dtype}"] = row
    memory = os.path.join(out_dir, "memory_vg_gpu10.json")
    if os.path.isfile(memory):
        with open(memory) as f:
            estimate = json.load(f)
        figures["memory_vg_gpu10_gib"] = {"analytic": estimate.get("analytic_gib"), "xla": estimate.get("xla_gib"),
                                          "fits_11gb": estimate.get("xla_gib", 99) < 11 * 1e9 / 2**30}
    metrics = os.path.join(DEMO_DIR, "metrics.json")
    if os.path.isfile(os.path.join(common.ROOT, metrics)):
        with open(os.path.join(common.ROOT, metrics)) as f:
            figures["demo_test_metrics"] = json.load(f)["test"]
    return {**report, "card": card, "published_tflops": peaks, "figures": figures}


def write_json(path: str, value: dict) -> None:
    """Writes `value` to `path` whole (a temporary file renamed)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path + ".tmp", "w") as f:
        json.dump(value, f, indent=1)
    os.replace(path + ".tmp", path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="runs/gpu_check/report.json", help="The JSON report (relative to the root).")
    parser.add_argument("--python", default=".venv/bin/python", help="The environment's interpreter.")
    parser.add_argument("--skip_install", action="store_true", help="Use the environment's JAX as it is.")
    parser.add_argument("--budget_s", type=float, default=480, help="Steps that would start after this are skipped.")
    args = common.parse(parser)
    run = common.Runner(args.dry_run)
    listing = run.output("nvidia-smi -L")
    if listing is not None and not listing.startswith("GPU "):
        sys.exit(f"nvidia-smi -L lists no GPU:\n{listing}")
    card = (listing or "").split(":", 1)[-1].split("(UUID")[0].strip()
    sees_gpu = f"{shlex.quote(args.python)} -c \"import jax; assert jax.default_backend() == 'gpu'\""
    install = [] if args.skip_install else [
        ("install", f"{sees_gpu} 2>/dev/null || make .venv/.test-installed install-cuda", 600)]
    todo = install + steps(args)
    if args.dry_run:
        for _, command, _ in todo:
            run(command)
        return
    out, start, report = os.path.join(common.ROOT, args.out), time.time(), {"steps": []}
    for name, command, timeout in todo:
        left = args.budget_s - (time.time() - start)
        if left <= 0:
            report["steps"].append({"name": name, "command": command, "status": "skipped: budget spent"})
            continue
        report["steps"].append(run_step(name, command, min(timeout, left)))
        write_json(out, summarise(report, os.path.dirname(out), card))  # What has run so far, after each step.
    report = summarise(report, os.path.dirname(out), card)
    write_json(out, report)
    print(json.dumps(report["figures"], indent=1))
    failed = [s["name"] for s in report["steps"] if s["status"] not in (0, "skipped: budget spent")]
    if failed:
        sys.exit(f"failed: {', '.join(failed)} (report: {args.out})")


if __name__ == "__main__":
    main()
