"""Data benchmark: build time and peak memory at Visual Genome scale, and input-pipeline speed.

  python -m clever_jax.perf.data_loading --workdir=runs/bench-data --config=configs/demo.py \
      --build_config=configs/vg.py --world=configs/world.py:vg --world.feature_dim=16

1. Generates the world of --world (the `vg` preset: 108,077 images; 16-d features keep it small)
   in a child process so its memory does not count, then builds records from it with the data
   settings of --build_config (bag size 50, ...), timing ingestion, benchmark construction, bag
   construction and record writing, and reads this process's peak resident memory.
2. Builds the records of --config and times its training input pipeline (batches/s) at its
   batch shape.
Writes WORKDIR/bench_data.json.
"""

from __future__ import annotations

import json
import os
import resource
import time

from absl import flags
from ml_collections import config_flags

from clever_jax import cli
from clever_jax.data import pipeline, prepare, world

_WORKDIR = flags.DEFINE_string("workdir", "runs/bench-data", "Folder for the worlds, records and report.")
_CONFIG = config_flags.DEFINE_config_file("config", None, "Config whose input pipeline is timed (configs/demo.py).")
_BUILD_CONFIG = config_flags.DEFINE_config_file("build_config", None, "Data settings of the large build "
                                                "(configs/vg.py); its source becomes the --world world.")
_WORLD = config_flags.DEFINE_config_file("world", None, "The large build's world (configs/world.py:vg).")
_BATCHES = flags.DEFINE_integer("batches", 50, "Training batches to time.")
_WORKERS = flags.DEFINE_integer("worker_count", 0, "Grain worker processes for the pipeline timing.")


def _peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux reports KiB.


def bench_build(workdir: str) -> dict:
    """Build stages at vg scale: seconds per stage and peak memory."""
    config = _BUILD_CONFIG.value.copy_and_resolve_references()
    config.data.update(source="world", world=_WORLD.value, feature_dim=0)
    config.data.world_dir = world.generated_world(config.data.world, workdir)
    build_dir = prepare.prepare(config, os.path.join(workdir, "vg"))
    with open(os.path.join(build_dir, prepare.STATS)) as f:
        stats = json.load(f)
    timings = stats["timings_s"]
    return {
        "images": config.data.world.num_images,
        "feature_dim": config.data.world.feature_dim,
        "corpus": stats["corpus"],
        "splits": stats["splits"],
        "seconds": timings,
        "benchmark_and_bags_s": round(timings["ingest"] + timings["benchmark"] + timings["bags"], 1),
        "peak_rss_gb": round(_peak_rss_gb(), 2),
    }


def bench_pipeline(workdir: str) -> dict:
    """Training batches per second at the shapes of --config."""
    config = _CONFIG.value
    build_dir = prepare.prepare(config, os.path.join(workdir, "pipeline"))
    shape = pipeline.instance_shape(config.data, build_dir)
    loader = pipeline.make_loader(
        build_dir, "train", shape, config.data.batch_size, train=True, seed=config.data.shuffle_seed,
        worker_count=_WORKERS.value
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
    report = {"build": bench_build(workdir), "pipeline": bench_pipeline(workdir)}
    with open(os.path.join(workdir, "bench_data.json"), "w") as f:
        json.dump(report, f, indent=1)
    build, loader = report["build"], report["pipeline"]
    print(f"large build ({build['images']} images): ingest+benchmark+bags {build['benchmark_and_bags_s']} s, "
          f"records {build['seconds']['records']} s, peak memory {build['peak_rss_gb']} GB")
    print(f"input pipeline: {loader['ms_per_batch']} ms/batch, {loader['bags_per_s']} bags/s")


if __name__ == "__main__":
    cli.run(main, required=["config", "build_config", "world"])
