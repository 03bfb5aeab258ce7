"""The paper's Table 1 rows on one benchmark: random, AVG, ONE, ATT and CLEVER.

  python -m clever_jax.results --config=configs/demo.py --workdir=runs/results

Trains one run per head in WORKDIR/<head> (CLEVER starts from the AVG run's best checkpoint, as
in the paper), evaluates each best checkpoint on test, adds a seeded random-scoring row and writes
WORKDIR/results.json, WORKDIR/results.md and WORKDIR/pr_curves.png. Finished runs are reused.
"""

from __future__ import annotations

import json
import os
import sys

import numpy as np
from absl import app, flags, logging
from ml_collections import config_flags

from clever_jax import evaluate, files, job, metrics
from clever_jax import workdir as workdir_lib
from clever_jax.data import prepare
from clever_jax.data.records import open_records, read_manifest

METRICS = ("auc", "f1", "p@2%", "mauc", "mf1", "mp@2%", "spearman", "spearman_top", "attention_on_true",
           "attention_true_chance", "top_evidence_true")
HEADERS = {"spearman": "Spearman (all)", "spearman_top": "Spearman (top)", "attention_on_true": "Att. on true",
           "attention_true_chance": "(chance)", "top_evidence_true": "Top evidence true"}


def random_row(records_dir: str, grades: np.ndarray | None, seed: int = 0) -> tuple[dict, tuple]:
    """Metrics of uniformly random scores for the test split, and its precision-recall curve."""
    _, bags = open_records(records_dir)
    test = bags["test"]
    records = test.__getitems__(list(range(len(test))))
    labels = np.zeros((len(records), read_manifest(records_dir)["num_relations"]), bool)
    rows = np.repeat(np.arange(len(records)), [len(r["labels"]) for r in records])
    labels[rows, np.concatenate([r["labels"] for r in records])] = True
    scores = np.random.default_rng(seed).random(labels[:, 1:].shape)
    row = metrics.held_out_metrics(scores, labels[:, 1:])
    if grades is not None:
        pairs = np.stack([r["pair"] for r in records])
        row["spearman"] = metrics.commonsense_correlation(scores, pairs, grades)
        row["spearman_top"], row["spearman_top_triplets"] = metrics.spearman_top(scores, pairs, grades)
    return row, metrics.micro_curve(scores, labels[:, 1:])


def table(rows: dict[str, dict]) -> str:
    """A Markdown table of the rows' METRICS (% but Spearman's ρ; "—" where a row has none)."""
    header = "| Method | " + " | ".join(HEADERS.get(m, m.upper()) for m in METRICS) + " |"
    lines = [header, "|" + "---|" * (len(METRICS) + 1)]
    for name, row in rows.items():
        cells = ["—" if m not in row else f"{row[m]:.3f}" if m.startswith("spearman") else f"{row[m]:.2f}"
                 for m in METRICS]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def run_all(config, workdir: str, heads: list[str], clever_from_avg: bool) -> dict:
    """Trains (or reuses) one run per head; returns the table rows (test metrics), random first."""
    rows, curves = {}, {}
    for head in heads:
        run_dir = os.path.join(workdir, head)
        run_config = config.copy_and_resolve_references()
        run_config.model.head = head
        run_config.data.world_dir = config.data.world_dir or os.path.join(workdir, "world")
        if head == "clever" and clever_from_avg and "avg" in heads:
            run_config.train.init_from = os.path.join(workdir, "avg")
        if not os.path.isfile(os.path.join(run_dir, "test_scores.npz")):
            logging.info("Training %s in %s", head, run_dir)
            job.run(run_config, run_dir, "all")
        else:  # Reused: it must have been made with these settings.
            workdir_lib.check_settings(run_config, run_dir, write=False)
        with open(os.path.join(run_dir, "metrics.json")) as f:
            rows[head.upper()] = json.load(f)["test"]
        test = np.load(os.path.join(run_dir, "test_scores.npz"))
        curves[head.upper()] = metrics.micro_curve(test["scores"][:, 1:], test["labels"][:, 1:])
    records_dir = prepare.prepare(run_config, run_dir)
    random_metrics, curves["Random"] = random_row(records_dir, evaluate.world_grades(run_config, run_dir))
    rows = {"Random": random_metrics, **rows}
    files.write_json(os.path.join(workdir, "results.json"), rows)
    with files.atomic_write(os.path.join(workdir, "results.md")) as f:
        f.write(table(rows) + "\n")
    metrics.precision_recall_plot(curves, os.path.join(workdir, "pr_curves.png"))
    return rows


def define_flags() -> None:
    """The command line's flags; defined only when run as a program (see clever_jax.bench)."""
    config_flags.DEFINE_config_file("config", None, "Config file (configs/*.py).", lock_config=False)
    flags.DEFINE_string("workdir", "runs/results", "Folder for the runs and the table.")
    flags.DEFINE_list("heads", ["avg", "one", "att", "clever"], "Heads to train, in order.")
    flags.DEFINE_bool("clever_from_avg", True, "Initialise CLEVER from the AVG run.")
    flags.mark_flags_as_required(["config"])


def main(argv: list[str]) -> None:
    del argv
    job.start_command()
    args = flags.FLAGS
    print(table(run_all(args.config, args.workdir, args.heads, args.clever_from_avg)))


if __name__ == "__main__":
    define_flags()
    job.reject_renamed_flags(sys.argv)
    app.run(main)
