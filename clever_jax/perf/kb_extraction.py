"""Knowledge-base benchmark: extraction from a Visual Genome-size detector output, time and memory.

  python -m clever_jax.perf.kb_extraction --workdir=runs/bench-kb --config=configs/demo.py \
      --world=configs/world.py:vg --world.feature_dim=16

1. Generates the world of --world (the `vg` preset: 108,077 images; 16-d features keep the file
   small) unless runs/bench-kb already holds it (data/world.generated_world), and takes its
   features.tsv as the detector's output: boxes and class names, no annotations read.
2. The model: --config with the world's feature size, its best checkpoint an untrained one saved
   in WORKDIR/model (the scoring work does not depend on the parameters' values).
3. In one child process, `build.prepare_detections` (read the features, form a bag for every
   entity pair, write the records); in another, the whole `--mode=kb` with those records
   (scoring every bag's relations, streamed, and writing kb.jsonl, kb.csv, kb_meta.json, negatives.jsonl). Each
   child's wall time and peak resident memory are measured.
Writes WORKDIR/bench_kb.json and prints a summary.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import resource
import tempfile
import time

from absl import flags, logging
from ml_collections import config_flags

from clever_jax import files

_WORKDIR = flags.DEFINE_string("workdir", "runs/bench-kb", "Folder for the world, the model and the report.")
_CONFIG = config_flags.DEFINE_config_file("config", None, "The model's config (configs/demo.py).")
_WORLD = config_flags.DEFINE_config_file("world", None, "The detector's images: a world (configs/world.py:vg).")


def _prepare(config, workdir: str) -> None:
    from clever_jax.kb import build

    build.prepare_detections(config, workdir)


def _extract(config, workdir: str) -> None:
    from clever_jax import cli, job

    cli.quiet_libraries()
    job.run(config, workdir, "kb")


def _measured(target, out_path: str, *args) -> None:
    """Runs target(*args) and writes this process's peak resident memory (GB) to out_path."""
    logging.use_absl_handler()  # A spawned child has not run app.run: show its progress logs.
    logging.set_verbosity(logging.INFO)
    target(*args)
    with open(out_path, "w") as f:
        f.write(str(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20))  # Linux reports KiB.


def _timed_child(target, *args) -> tuple[float, float]:
    """Runs target(*args) in a fresh process: (seconds, its peak resident memory in GB)."""
    with tempfile.TemporaryDirectory() as scratch:
        out_path = os.path.join(scratch, "peak_rss_gb")
        start = time.perf_counter()
        child = multiprocessing.get_context("spawn").Process(target=_measured, args=(target, out_path, *args))
        child.start()
        child.join()
        if child.exitcode:
            raise RuntimeError(f"{target.__name__} failed with exit code {child.exitcode}")
        with open(out_path) as f:
            return time.perf_counter() - start, float(f.read())


def main(argv: list[str]) -> None:
    del argv
    from clever_jax.data import prepare, world
    from clever_jax.kb import build
    from clever_jax.training import builder
    from clever_jax.training.checkpoints import Checkpoints

    workdir = os.path.abspath(_WORKDIR.value)
    world_dir = world.generated_world(_WORLD.value, workdir)
    config = _CONFIG.value
    config.data.world.feature_dim = _WORLD.value.feature_dim  # The model reads the detector's feature size.
    config.extract.features_path = os.path.join(world_dir, "features.tsv")
    model_dir = os.path.join(workdir, "model")
    if not os.path.isdir(os.path.join(model_dir, "checkpoints", "best")):
        run = builder.build(config, prepare.prepare(config, model_dir))
        checkpoints = Checkpoints(model_dir)
        checkpoints.save("best", run.initial_state(), {})
        checkpoints.wait()
    build_s, build_gb = _timed_child(_prepare, config, model_dir)
    extract_s, extract_gb = _timed_child(_extract, config, model_dir)
    with open(os.path.join(model_dir, build.KB_DIR, "kb_meta.json")) as f:
        meta = json.load(f)
    report = {"images": meta["images"], "pairs": meta["pairs"], "instances": meta["instances"],
              "triplets": meta["triplets"], "bag_size": meta["bag_size"], "feature_dim": _WORLD.value.feature_dim,
              "build_s": round(build_s, 1), "build_peak_rss_gb": round(build_gb, 2),
              "extract_s": round(extract_s, 1), "extract_peak_rss_gb": round(extract_gb, 2)}
    files.write_json(os.path.join(workdir, "bench_kb.json"), report)
    print(f"{report['images']} images -> {report['pairs']} pairs, {report['instances']} instances: bags and records "
          f"{report['build_s']} s (peak {report['build_peak_rss_gb']} GB), scoring and writing "
          f"{report['triplets']} triplets {report['extract_s']} s (peak {report['extract_peak_rss_gb']} GB)")


if __name__ == "__main__":
    from clever_jax import cli

    cli.run(main, required=["config", "world"])
