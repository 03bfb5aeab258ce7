"""Command line: `python -m clever_jax.main --config=configs/demo.py --workdir=DIR [--mode=MODE]`.

Modes:
  all (default): prepare (if needed), train, pick the best checkpoint on validation, evaluate it
    on validation and test and extract: writes DIR/metrics.json, DIR/{val,test}_scores.npz,
    DIR/pr_curve.png and DIR/triplets.jsonl. With train.max_epochs=0 nothing is trained and the
    pretrained parameters are evaluated (LAMA: model.encoder=text, model.head=prompt).
  prepare: build (or reuse) the world, benchmark, bags and records; writes DIR/stats.json.
  train: prepare + train (resumes from DIR/checkpoints/latest when present).
  eval: the best checkpoint on the validation and test splits -> metrics.json, *_scores.npz, pr_curve.png.
  extract: the best checkpoint's ranked triplets of config.extract.split -> triplets.jsonl.
  kb: a knowledge base of a detector's output alone (config.extract.features_path) with the best
    checkpoint, or with an exported bundle (config.extract.bundle) -> DIR/kb/ (see clever_jax.kb.build).
    (--mode=extract with config.extract.features_path still runs it, with a notice.)
  scene_graphs: every image's object pairs of config.extract.features_path with their relations, scored by
    the best checkpoint or a bundle -> DIR/scene_graphs/ (see clever_jax.kb.scene_graphs).
  bootstrap: rounds of extraction over the training split's pairs without a fact, what the filters of
    config.extract.target_precision keep added as training labels, training continued from the best
    checkpoint -> DIR/bootstrap/rounds.json (see clever_jax.kb.bootstrap).
  report: an HTML evidence page of DIR/kb/kb.jsonl (or config.report.kb_path) -> report.html next
    to it (see clever_jax.kb.report).
  export: a self-contained inference bundle in DIR/export (see clever_jax.kb.export).
  export_release: the benchmark in the layout of the authors' release, in DIR/release
    (see clever_jax.data.release_write; read back with configs/clever_release.py).
Override any config value on the command line, e.g. `--config.model.head=avg`.

Multi-host: run the same command on every host (or once per GPU) with
`--config.distributed.enabled=True` (see clever_jax.distributed); on TPU VMs, Slurm and MPI the
processes find each other by themselves, elsewhere add `--config.distributed.coordinator_address=HOST:PORT`
(process 0's), `--config.distributed.num_processes=N` and `--config.distributed.process_id=I`.
WORKDIR/checkpoints must be storage every host shares (NFS, a mounted bucket); the records can
be built on each host's own disk.

Stopping: SIGTERM (preemption) or Ctrl-C stops training after the current step with the latest
state saved; in a multi-host run a signal to any one process stops every process after the same
step (see distributed.StopSignal). The same command resumes.
"""

from __future__ import annotations

import sys

from absl import app, flags
from ml_collections import config_flags

from clever_jax import cli, job

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file (configs/*.py).", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Folder for the world, records, checkpoints and results.")
_MODE = flags.DEFINE_enum("mode", "all", job.MODES, "What to run.")


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    from clever_jax.config_checks import ConfigError
    from clever_jax.data.jsonio import DataError
    from clever_jax.training.checkpoints import CheckpointError
    from clever_jax.workdir import ChangedSettings, WorkdirInUse

    try:
        job.run(_CONFIG.value, _WORKDIR.value, _MODE.value)
    except (CheckpointError, ChangedSettings, WorkdirInUse, ConfigError, DataError) as e:  # The message says it all.
        sys.exit(f"{type(e).__name__}: {e}")


if __name__ == "__main__":
    cli.run(main, required=["config", "workdir"], stop_signals=True)
