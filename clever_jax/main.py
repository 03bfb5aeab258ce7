"""Command line: `python -m clever_jax.main --config=configs/demo.py --workdir=DIR --mode=prepare`.

Modes:
  prepare: build (or reuse) the world, the benchmark, the bags and the TFDS records, and write
    DIR/stats.json.
Override any config value on the command line, e.g. `--config.data.bag_size=32`.
"""

from __future__ import annotations

import json
import os

from absl import app, flags, logging
from ml_collections import config_flags

from clever_jax.data import prepare

MODES = ("prepare",)

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file (configs/*.py).", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Folder for the world, records, checkpoints and results.")
_MODE = flags.DEFINE_enum("mode", "prepare", MODES, "What to run.")


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    config, workdir = _CONFIG.value, _WORKDIR.value
    os.makedirs(workdir, exist_ok=True)
    if _MODE.value == "prepare":
        build_dir = prepare.prepare(config, workdir)
        with open(os.path.join(workdir, prepare.STATS)) as f:
            splits = json.load(f)["splits"]
        for name, sizes in splits.items():
            logging.info("%-5s %s", name, " ".join(f"{k}={v}" for k, v in sizes.items()))
        logging.info("Records in %s, statistics in %s", build_dir, os.path.join(workdir, prepare.STATS))


if __name__ == "__main__":
    flags.mark_flags_as_required(["config", "workdir"])
    app.run(main)
