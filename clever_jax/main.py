"""Command line: `python -m clever_jax.main --config=configs/demo.py --workdir=DIR [--mode=MODE]`.

Modes:
  all (default): prepare (if needed), train, pick the best checkpoint on validation, evaluate it
    on test and extract: writes DIR/metrics.json, DIR/pr_curve.png and DIR/triplets.jsonl.
  prepare: build (or reuse) the world, benchmark, bags and records; writes DIR/stats.json.
  train: prepare + train (resumes from DIR/checkpoints/latest when present).
  eval: the best checkpoint on the validation and test splits -> metrics.json, pr_curve.png.
  extract: the best checkpoint's ranked triplets of config.extract.split -> triplets.jsonl.
  export: a self-contained inference bundle in DIR/export (see clever_jax.export).
Override any config value on the command line, e.g. `--config.model.head=avg`.
"""

from __future__ import annotations

import json
import logging as pylogging
import os

from absl import app, flags, logging
from ml_collections import config_flags

MODES = ("all", "prepare", "train", "eval", "extract", "export")

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file (configs/*.py).", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Folder for the world, records, checkpoints and results.")
_MODE = flags.DEFINE_enum("mode", "all", MODES, "What to run.")


class _QuietLibraries(pylogging.Filter):
    """Keeps the libraries' INFO chatter (checkpointing, dataset building) out of the progress log."""

    NOISY = ("/orbax/", "/tensorflow_datasets/", "/array_record/", "/grain/")

    def filter(self, record: pylogging.LogRecord) -> bool:
        return record.levelno >= pylogging.WARNING or not any(p in record.pathname for p in self.NOISY)


def run(config, workdir: str, mode: str) -> None:
    """Runs one mode (see the module docstring)."""
    from clever_jax.data import prepare

    os.makedirs(workdir, exist_ok=True)
    records_dir = prepare.prepare(config, workdir)
    if mode == "prepare":
        with open(os.path.join(workdir, prepare.STATS)) as f:
            for name, sizes in json.load(f)["splits"].items():
                logging.info("%-5s %s", name, " ".join(f"{k}={v}" for k, v in sizes.items()))
        logging.info("Records in %s, statistics in %s", records_dir, os.path.join(workdir, prepare.STATS))
        return

    from clever_jax import export, train
    from clever_jax.data.vocab import benchmark_vocab

    trainer = train.Trainer(config, workdir, records_dir)
    if mode in ("all", "train"):
        best = trainer.train()
        logging.info("Best validation: %s", best)
        if mode == "train":
            return
    if mode == "export":
        logging.info("Exported to %s", export.export_bundle(config, workdir, records_dir, trainer))
        return
    params = train.Checkpoints(workdir).restore_params("best", trainer.example_params())
    if mode in ("all", "eval"):
        results, curves = {}, {}
        for split in ("val", "test"):
            metrics, outputs = trainer.evaluate(params, split)
            results[split] = metrics
            curves[split] = outputs
        from clever_jax import evaluate

        with open(os.path.join(workdir, "metrics.json"), "w") as f:
            json.dump(results, f, indent=1)
        test = curves["test"]
        evaluate.precision_recall_plot(
            {f"{config.model.head} (test)": evaluate.micro_curve(test.scores[:, 1:], test.labels[:, 1:])},
            os.path.join(workdir, "pr_curve.png"),
        )
        logging.info("Test: %s", " ".join(f"{k}={v:.2f}" for k, v in results["test"].items()))
    if mode in ("all", "extract"):
        from clever_jax.data.records import open_records
        from clever_jax.extract import write_triplets

        _, outputs = trainer.evaluate(params, config.extract.split, keep_evidence=True)
        path = os.path.join(workdir, "triplets.jsonl")
        count = write_triplets(path, outputs, open_records(records_dir)[0], benchmark_vocab(), config.extract.top_k,
                               config.extract.num_evidence)
        logging.info("Wrote %d triplets to %s", count, path)


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    logging.get_absl_handler().addFilter(_QuietLibraries())
    run(_CONFIG.value, _WORKDIR.value, _MODE.value)


if __name__ == "__main__":
    flags.mark_flags_as_required(["config", "workdir"])
    app.run(main)
