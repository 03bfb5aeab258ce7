"""The paper's Table 1 rows on one benchmark: random, RTP (captions), AVG, ONE, ATT and CLEVER.

  python -m clever_jax.results --config=configs/demo.py --workdir=runs/results

Trains one run per head in WORKDIR/<head> (CLEVER starts from the AVG run's best checkpoint, as
in the paper), evaluates each best checkpoint on test, adds a seeded random-scoring row and the
RTP row (the test candidates' counts in a caption corpus, --captions; the world's by default) and
writes WORKDIR/results.json, WORKDIR/results.md (with the paper's numbers of the same rows) and
WORKDIR/pr_curves.png. Finished runs are reused.
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
from clever_jax.baselines import captions, rtp
from clever_jax.data import prepare
from clever_jax.data.records import open_records, read_manifest
from clever_jax.data.vocab import benchmark_vocab

METRICS = ("auc", "f1", "p@2%", "mauc", "mf1", "mp@2%", "spearman", "spearman_top", "attention_on_true",
           "attention_true_chance", "top_evidence_true")
# The paper's Table 1 (test split; AUC, F1, P@2%, mAUC, mF1, mP@2%), beside ours in results.md.
PAPER_TABLE1 = {
    "Random": (1.76, 3.51, 1.71, 2.04, 5.13, 1.94), "RTP": (12.30, 23.67, 16.65, 4.10, 8.62, 7.34),
    "LAMA": (5.97, 14.11, 12.80, 3.84, 3.59, 5.59), "Vanilla-FT": (37.28, 47.06, 44.21, 17.75, 30.98, 17.34),
    "Prompt-FT": (37.99, 44.43, 41.69, 20.15, 35.37, 19.81), "AVG": (39.04, 47.49, 44.34, 24.73, 41.07, 20.83),
    "ONE": (19.69, 31.10, 25.20, 15.70, 30.40, 12.82), "ATT": (17.13, 28.37, 25.07, 2.91, 6.09, 2.20),
    "CLEVER": (41.92, 48.96, 45.84, 26.57, 43.62, 22.02), "Ensemble": (45.68, 49.93, 47.09, 27.38, 43.13, 22.80),
}
HEADERS = {"spearman": "Spearman (all)", "spearman_top": "Spearman (top)", "attention_on_true": "Att. on true",
           "attention_true_chance": "(chance)", "top_evidence_true": "Top evidence true"}


def test_split(records_dir: str) -> tuple[np.ndarray, np.ndarray]:
    """The test bags' gold labels bool [P, R + 1] (NA included) and entity pairs int [P, 2]."""
    _, bags = open_records(records_dir)
    test = bags["test"]
    records = test.__getitems__(list(range(len(test))))
    labels = np.zeros((len(records), read_manifest(records_dir)["num_relations"]), bool)
    rows = np.repeat(np.arange(len(records)), [len(r["labels"]) for r in records])
    labels[rows, np.concatenate([r["labels"] for r in records])] = True
    return labels, np.stack([r["pair"] for r in records])


def scored_row(scores: np.ndarray, labels: np.ndarray, pairs: np.ndarray, grades: np.ndarray | None) -> tuple[dict,
                                                                                                                tuple]:
    """Metrics of test scores [P, R] (non-NA relations) and their precision-recall curve."""
    row = metrics.held_out_metrics(scores, labels[:, 1:])
    if grades is not None:
        row["spearman"] = metrics.commonsense_correlation(scores, pairs, grades)
        row["spearman_top"], row["spearman_top_triplets"] = metrics.spearman_top(scores, pairs, grades)
    return row, metrics.micro_curve(scores, labels[:, 1:])


def random_row(records_dir: str, grades: np.ndarray | None, seed: int = 0) -> tuple[dict, tuple]:
    """Metrics of uniformly random scores for the test split, and its precision-recall curve."""
    labels, pairs = test_split(records_dir)
    return scored_row(np.random.default_rng(seed).random(labels[:, 1:].shape), labels, pairs, grades)


def rtp_row(records_dir: str, grades: np.ndarray | None, captions_path: str) -> tuple[dict, tuple]:
    """RTP (baselines.rtp): the test candidates scored by their caption counts in `captions_path`."""
    labels, pairs = test_split(records_dir)
    counts = rtp.triplet_counts(captions.read_captions(captions_path), benchmark_vocab())
    return scored_row(rtp.scores(counts, pairs), labels, pairs, grades)


def captions_path(config, workdir: str, given: str) -> str:
    """The caption corpus RTP reads: `given`, else the generated world's captions.json, else ""."""
    if given or config.data.source != "world":
        return given
    return os.path.join(config.data.world_dir or os.path.join(workdir, "world"), "captions.json")


def table(rows: dict[str, dict]) -> str:
    """A Markdown table of the rows' METRICS (% but Spearman's ρ; "—" where a row has none)."""
    header = "| Method | " + " | ".join(HEADERS.get(m, m.upper()) for m in METRICS) + " |"
    lines = [header, "|" + "---|" * (len(METRICS) + 1)]
    for name, row in rows.items():
        cells = ["—" if m not in row else f"{row[m]:.3f}" if m.startswith("spearman") else f"{row[m]:.2f}"
                 for m in METRICS]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def paper_table(names: list[str]) -> str:
    """The paper's Table 1 rows of `names` (those it has) as a Markdown table of the held-out metrics."""
    metric_names = METRICS[:6]
    lines = ["| Method (paper) | " + " | ".join(m.upper() for m in metric_names) + " |",
             "|" + "---|" * (len(metric_names) + 1)]
    lines += [f"| {name} | " + " | ".join(f"{v:.2f}" for v in PAPER_TABLE1[name]) + " |"
              for name in names if name in PAPER_TABLE1]
    return "\n".join(lines)


def run_all(config, workdir: str, heads: list[str], clever_from_avg: bool, captions_file: str = "") -> dict:
    """Trains (or reuses) one run per head; returns the table rows (test metrics): Random, RTP (from
    `captions_file`, or the world's captions), then the heads."""
    rows, curves = {}, {}
    base = config.copy_and_resolve_references()
    base.data.world_dir = config.data.world_dir or os.path.join(workdir, "world")
    for head in heads:
        run_dir = os.path.join(workdir, head)
        run_config = base.copy_and_resolve_references()
        run_config.model.head = head
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
    records_workdir = os.path.join(workdir, heads[-1]) if heads else workdir  # Reuses a head run's records.
    records_dir = prepare.prepare(base, records_workdir)
    grades = evaluate.world_grades(base, records_workdir)
    baselines = {}
    baselines["Random"], curves["Random"] = random_row(records_dir, grades)
    corpus = captions_path(base, workdir, captions_file)
    if corpus:
        baselines["RTP"], curves["RTP"] = rtp_row(records_dir, grades, corpus)
    else:
        logging.warning("No RTP row: %s", captions.HELP)
    rows = {**baselines, **rows}
    files.write_json(os.path.join(workdir, "results.json"), rows)
    with files.atomic_write(os.path.join(workdir, "results.md")) as f:
        f.write(f"{table(rows)}\n\nThe paper's Table 1 (Visual Genome, test split):\n\n{paper_table(list(rows))}\n")
    metrics.precision_recall_plot(curves, os.path.join(workdir, "pr_curves.png"))
    return rows


def define_flags() -> None:
    """The command line's flags; defined only when run as a program (see clever_jax.bench)."""
    config_flags.DEFINE_config_file("config", None, "Config file (configs/*.py).", lock_config=False)
    flags.DEFINE_string("workdir", "runs/results", "Folder for the runs and the table.")
    flags.DEFINE_list("heads", ["avg", "one", "att", "clever"], "Heads to train, in order (none: --heads=).")
    flags.DEFINE_bool("clever_from_avg", True, "Initialise CLEVER from the AVG run.")
    flags.DEFINE_string("captions", "", "Caption corpus of the RTP row (default: the generated world's captions.json).")
    flags.mark_flags_as_required(["config"])


def main(argv: list[str]) -> None:
    del argv
    job.start_command()
    args = flags.FLAGS
    rows = run_all(args.config, args.workdir, args.heads, args.clever_from_avg, args.captions)
    print(table(rows) + "\n\n" + paper_table(list(rows)))


if __name__ == "__main__":
    define_flags()
    job.reject_renamed_flags(sys.argv)
    app.run(main)
