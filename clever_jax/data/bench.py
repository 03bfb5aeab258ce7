"""Data benchmark: build time and peak memory at Visual Genome scale, and input-pipeline speed.

  python -m clever_jax.data.bench --workdir=runs/bench-data

1. Generates the `vg`-preset world (108,077 images) with a small feature dimension, in a child
   process so its memory does not count, then times ingestion, benchmark construction, bag
   construction and record writing, and reads this process's peak resident memory.
2. Builds the demo records and times the training input pipeline (batches/s) at the demo
   config's batch shape.
Writes WORKDIR/bench_data.json.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import resource
import time

from absl import app, flags, logging

from clever_jax.data import pipeline, prepare, world
from configs import demo

_WORKDIR = flags.DEFINE_string("workdir", "runs/bench-data", "Folder for the worlds, records and report.")
_FEATURE_DIM = flags.DEFINE_integer("feature_dim", 16, "Appearance dimension of the vg-scale world.")
_NUM_IMAGES = flags.DEFINE_integer("num_images", 0, "Images of the vg-scale world; 0 = the vg preset's.")
_BATCHES = flags.DEFINE_integer("batches", 50, "Training batches to time.")
_WORKERS = flags.DEFINE_integer("worker_count", 0, "Grain worker processes for the pipeline timing.")


def _peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux reports KiB.


def bench_build(workdir: str) -> dict:
    """Build stages at vg scale: seconds per stage and peak memory."""
    config = demo.get_config()
    config.data.world = world.world_config("vg")
    config.data.world.feature_dim = _FEATURE_DIM.value
    if _NUM_IMAGES.value:
        config.data.world.num_images = _NUM_IMAGES.value
    config.data.world_dir = os.path.join(workdir, f"world-vg-{config.data.world.num_images}-{_FEATURE_DIM.value}")
    config.data.bag_size = 50
    if not all(os.path.isfile(os.path.join(config.data.world_dir, f)) for f in world.WORLD_FILES):
        start = time.perf_counter()
        child = multiprocessing.get_context("spawn").Process(
            target=world.generate, args=(config.data.world, config.data.world_dir)
        )
        child.start()
        child.join()
        if child.exitcode:
            raise RuntimeError(f"world generation failed with exit code {child.exitcode}")
        logging.info("Generated the vg-scale world in %.0f s", time.perf_counter() - start)
    build_dir = prepare.prepare(config, os.path.join(workdir, "vg"))
    with open(os.path.join(build_dir, prepare.STATS)) as f:
        stats = json.load(f)
    timings = stats["timings_s"]
    return {
        "images": config.data.world.num_images,
        "feature_dim": _FEATURE_DIM.value,
        "corpus": stats["corpus"],
        "splits": stats["splits"],
        "seconds": timings,
        "benchmark_and_bags_s": round(timings["ingest"] + timings["benchmark"] + timings["bags"], 1),
        "peak_rss_gb": round(_peak_rss_gb(), 2),
    }


def bench_pipeline(workdir: str) -> dict:
    """Training batches per second at the demo config's shapes."""
    config = demo.get_config()
    build_dir = prepare.prepare(config, os.path.join(workdir, "demo"))
    shape = pipeline.instance_shape(config.data, build_dir)
    loader = pipeline.make_loader(
        build_dir, "train", shape, config.data.batch_size, train=True, seed=0, worker_count=_WORKERS.value
    )
    iterator = iter(loader)
    next(iterator)  # Opening files, starting workers.
    start = time.perf_counter()
    for _ in range(_BATCHES.value):
        next(iterator)
    seconds = (time.perf_counter() - start) / _BATCHES.value
    return {
        "batch_size": config.data.batch_size,
        "bag_size": shape.bag_size,
        "text_len": shape.text_len,
        "num_regions": shape.num_regions,
        "worker_count": _WORKERS.value,
        "ms_per_batch": round(1000 * seconds, 2),
        "bags_per_s": round(config.data.batch_size / seconds, 1),
    }


def main(argv: list[str]) -> None:
    del argv
    workdir = _WORKDIR.value
    os.makedirs(workdir, exist_ok=True)
    report = {"build_vg_scale": bench_build(workdir), "pipeline_demo": bench_pipeline(workdir)}
    with open(os.path.join(workdir, "bench_data.json"), "w") as f:
        json.dump(report, f, indent=1)
    build, loader = report["build_vg_scale"], report["pipeline_demo"]
    print(f"vg-scale build ({build['images']} images): ingest+benchmark+bags {build['benchmark_and_bags_s']} s, "
          f"records {build['seconds']['records']} s, peak memory {build['peak_rss_gb']} GB")
    print(f"demo pipeline: {loader['ms_per_batch']} ms/batch, {loader['bags_per_s']} bags/s")


if __name__ == "__main__":
    app.run(main)
