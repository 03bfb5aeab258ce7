"""The paper's Table 1 on one benchmark: every row scored by the same evaluator on the same test candidates.

  python -m clever_jax.experiments.results --config=configs/demo.py --workdir=runs/results \
      [--methods=rtp,vanilla_ft,...]

The rows (--methods, in this order; results.json keys them by the names in brackets):
  random      [Random] uniformly random scores (seeded).
  rtp         [RTP] each candidate's count in a caption corpus (--captions; by default the generated
              world's captions.json): baselines/rtp.py.
  lama        [LAMA] the prompt model's masked-LM probabilities, untrained. It needs a checkpoint with
              a masked-LM head (--config.model.pretrained_dir); without one the row gives the reason.
  vanilla_ft  [Vanilla-FT], prompt_ft [Prompt-FT]: the language-model baselines over the entity
              names (models/language.py), fine-tuned on the training pairs.
  avg, one, att, clever   [AVG] ... [CLEVER] the bag heads over images; CLEVER starts from the AVG
              run's best checkpoint, as in the paper (--clever_from_avg).
  ensemble    [Ensemble] the --ensemble sources (default CLEVER, RTP and Vanilla-FT, as the paper)
              with weights chosen on validation (baselines/ensemble.py).

Each trained row is one run of the main job in WORKDIR/<method>, with the config's settings and
the method's own (RUNS); finished runs are reused. Writes WORKDIR/results.json (each row's test
metrics and `wall_s`, the seconds the row took to make), WORKDIR/results.md (with the paper's
numbers of the same rows) and WORKDIR/pr_curves.png.
"""

from __future__ import annotations

import json
import os
import time

import numpy as np
from absl import app, flags, logging
from ml_collections import config_flags

from clever_jax import cli, files, job
from clever_jax import workdir as workdir_lib
from clever_jax.data import prepare, text
from clever_jax.data.records import open_records, read_manifest
from clever_jax.data.vocab import benchmark_vocab
from clever_jax.evaluation import evaluate, metrics
from clever_jax.experiments.baselines import captions, ensemble, rtp
from clever_jax.models import weights
from clever_jax.training import builder

METHODS = {"random": "Random", "rtp": "RTP", "lama": "LAMA", "vanilla_ft": "Vanilla-FT", "prompt_ft": "Prompt-FT",
           "avg": "AVG", "one": "ONE", "att": "ATT", "clever": "CLEVER", "ensemble": "Ensemble"}
# Each trained row's settings over the config's (its run is the main job in WORKDIR/<method>).
RUNS = {
    "lama": {"model.encoder": "text", "model.head": "prompt", "train.max_epochs": 0},
    "vanilla_ft": {"model.encoder": "text", "model.head": "cls"},
    "prompt_ft": {"model.encoder": "text", "model.head": "prompt"},
    **{head: {"model.head": head} for head in ("avg", "one", "att", "clever")},
}
ENSEMBLE = ("clever", "rtp", "vanilla_ft")  # The paper's.
# The metrics of a row's evidence, which a model that reads no image does not have.
GROUNDING = ("attention_on_annotated", "attention_chance", "attention_on_true", "attention_true_chance",
             "top_evidence_true", "attention_true_auc")
# The fine-tuned language-model rows' bound on epochs: the published 18 (configs/default.py), whatever
# the config's. Their epochs take seconds where the image heads' take minutes (the demo's 3 epochs
# are a departure for time), and at 3 their validation score still climbs (docs/baselines.md).
TEXT_EPOCHS = 18
TIME_FILE = "wall_time.json"  # In a trained row's run folder: the seconds its run took.

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
           "attention_true_chance": "(chance)", "top_evidence_true": "Top evidence true", "wall_s": "Time (s)"}


def split_labels(records_dir: str, split: str) -> tuple[np.ndarray, np.ndarray]:
    """A split's gold labels bool [P, R + 1] (NA included) and entity pairs int [P, 2], in bag order."""
    _, bags = open_records(records_dir)
    source = bags[split]
    records = source.__getitems__(list(range(len(source))))
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


def captions_path(config, workdir: str, given: str) -> str:
    """The caption corpus RTP reads: `given`, else the generated world's captions.json, else ""."""
    if given or config.data.source != "world":
        return given
    return os.path.join(config.data.world_dir or os.path.join(workdir, "world"), "captions.json")


def table(rows: dict[str, dict]) -> str:
    """A Markdown table of the rows' METRICS (% but Spearman's ρ; "—" where a row has none) and
    times, then the reason of each row that could not be made."""
    columns = (*METRICS, "wall_s")
    header = "| Method | " + " | ".join(HEADERS.get(m, m.upper()) for m in columns) + " |"
    lines = [header, "|" + "---|" * (len(columns) + 1)]
    for name, row in rows.items():
        cells = ["—" if m not in row else f"{row[m]:.3f}" if m.startswith("spearman") else
                 f"{row[m]:.0f}" if m == "wall_s" else f"{row[m]:.2f}" for m in columns]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += [f"\n{name}: {row['reason']}" for name, row in rows.items() if "reason" in row]
    return "\n".join(lines)


def paper_table(names: list[str]) -> str:
    """The paper's Table 1 rows of `names` (those it has) as a Markdown table of the held-out metrics."""
    metric_names = METRICS[:6]
    lines = ["| Method (paper) | " + " | ".join(m.upper() for m in metric_names) + " |",
             "|" + "---|" * (len(metric_names) + 1)]
    lines += [f"| {name} | " + " | ".join(f"{v:.2f}" for v in PAPER_TABLE1[name]) + " |"
              for name in names if name in PAPER_TABLE1]
    return "\n".join(lines)


def method_config(base, workdir: str, method: str, clever_from_avg: bool, text_epochs: int = TEXT_EPOCHS):
    """The config of a trained row's run: `base` with the method's settings (RUNS); a fine-tuned
    language-model row trains up to `text_epochs` and starts from the pretrained folder alone
    (train.init_from names bag models)."""
    config = base.copy_and_resolve_references()
    config.update_from_flattened_dict(RUNS[method])
    if config.model.encoder == "text":
        config.train.init_from = ""
        if method != "lama":  # LAMA is not trained (RUNS).
            config.train.max_epochs = text_epochs
    if method == "clever" and clever_from_avg:
        config.train.init_from = os.path.join(workdir, "avg")
    return config


def trained_row(config, run_dir: str, records: str) -> tuple[dict, dict[str, np.ndarray], float]:
    """Trains and evaluates the run of `config` in `run_dir` (or reuses it once finished): its test
    metrics, its scores of each split ({"val", "test"}: [P, R + 1]) and the seconds it took. Its
    records folder is a link to `records` (the rows share one build)."""
    done = [os.path.join(run_dir, name) for name in ("metrics.json", "val_scores.npz", "test_scores.npz", TIME_FILE)]
    if all(os.path.isfile(path) for path in done):  # Reused: it must have been made with these settings.
        workdir_lib.check_settings(config, run_dir, write=False)
    else:
        logging.info("Running %s", run_dir)
        os.makedirs(run_dir, exist_ok=True)
        if not os.path.lexists(os.path.join(run_dir, "records")):
            os.symlink(os.path.abspath(records), os.path.join(run_dir, "records"))
        start = time.perf_counter()
        job.run(config, run_dir, "all")
        files.write_json(os.path.join(run_dir, TIME_FILE), {"wall_s": time.perf_counter() - start})
    with open(os.path.join(run_dir, "metrics.json")) as f:
        row = json.load(f)["test"]
    with open(os.path.join(run_dir, TIME_FILE)) as f:
        seconds = json.load(f)["wall_s"]
    scores = {}
    for split in ("val", "test"):
        with np.load(os.path.join(run_dir, f"{split}_scores.npz")) as saved:
            scores[split] = saved["scores"]
    if config.model.encoder == "text":  # It reads no image: its (uniform) evidence measures nothing.
        row = {k: v for k, v in row.items() if k not in GROUNDING}
    return row, scores, seconds


def check_methods(methods: list[str], sources: list[str]) -> None:
    """ValueError for an unknown method or ensemble source, or a source the command does not make."""
    unknown = [m for m in (*methods, *sources) if m not in METHODS]
    if unknown:
        raise ValueError(f"unknown methods {unknown}; expected some of {list(METHODS)}")
    missing = [s for s in sources if s not in methods] if "ensemble" in methods else []
    if missing or {"random", "ensemble"} & set(sources):
        raise ValueError(f"the ensemble's sources {sources} must be rows of --methods other than random and "
                         f"ensemble (missing: {missing or 'none'})")


def run_all(config, workdir: str, methods: list[str], clever_from_avg: bool = True, captions_file: str = "",
            sources: tuple[str, ...] = ENSEMBLE, text_epochs: int = TEXT_EPOCHS) -> dict:
    """Makes (or reuses) the rows of `methods` (in METHODS' order) and writes the table; returns the
    rows by name (test metrics, `wall_s`; a row that cannot be made: its `reason`)."""
    check_methods(methods, list(sources))
    methods = [m for m in METHODS if m in methods]
    base = config.copy_and_resolve_references()
    base.data.world_dir = config.data.world_dir or os.path.join(workdir, "world")
    records_dir = prepare.prepare(base, workdir)
    grades = evaluate.world_grades(base, workdir)
    labels, pairs = {}, {}
    for split in ("val", "test"):
        labels[split], pairs[split] = split_labels(records_dir, split)
    rows, scores = {}, {}  # scores: method -> split -> [P, R] (non-NA relations)
    for method in methods:
        start, name = time.perf_counter(), METHODS[method]
        if method == "random":
            scores[method] = {"test": np.random.default_rng(0).random(labels["test"][:, 1:].shape)}
        elif method == "rtp":
            corpus = captions_path(base, workdir, captions_file)
            if not corpus:
                rows[name] = {"reason": captions.HELP}
                continue
            counts = rtp.triplet_counts(captions.read_captions(corpus), benchmark_vocab())
            scores[method] = {split: rtp.scores(counts, pairs[split]) for split in ("val", "test")}
        elif method == "ensemble":
            unscored = [METHODS[s] for s in sources if s not in scores]
            if unscored:
                rows[name] = {"reason": f"its sources {', '.join(unscored)} have no scores (see their rows)"}
                continue
            fitted = ensemble.fit({s: scores[s]["val"] for s in sources}, labels["val"][:, 1:],
                                  base.train.mauc_weight)
            logging.info("Ensemble weights (validation score %.2f): %s", fitted.val_score, fitted.weights)
            scores[method] = {"test": fitted.combine({s: scores[s]["test"] for s in sources})}
            rows[name] = {"weights": {METHODS[s]: w for s, w in fitted.weights.items()}}
        else:
            run_config = method_config(base, workdir, method, clever_from_avg and "avg" in methods, text_epochs)
            if method == "lama" and not (run_config.model.pretrained and
                                         weights.has_mlm_head(text.pretrained_dir(run_config))):
                rows[name] = {"reason": builder.LAMA_NEEDS_MLM.format(path=text.pretrained_dir(run_config))}
                continue
            row, run_scores, seconds = trained_row(run_config, os.path.join(workdir, method),
                                                   os.path.join(workdir, "records"))
            for split in ("val", "test"):
                run_pairs = np.load(os.path.join(workdir, method, f"{split}_scores.npz"))["pairs"]
                if not np.array_equal(run_pairs, pairs[split]):
                    raise ValueError(f"{workdir}/{method}: its {split} pairs are not the benchmark's; remove the run")
            scores[method] = {split: s[:, 1:] for split, s in run_scores.items()}
            rows[name] = {**row, "wall_s": seconds}
            continue
        row, _ = scored_row(scores[method]["test"], labels["test"], pairs["test"], grades)
        rows[name] = {**rows.get(name, {}), **row, "wall_s": time.perf_counter() - start}
    files.write_json(os.path.join(workdir, "results.json"), rows)
    with files.atomic_write(os.path.join(workdir, "results.md")) as f:
        f.write(f"{table(rows)}\n\nThe paper's Table 1 (Visual Genome, test split):\n\n{paper_table(list(rows))}\n")
    curves = {METHODS[m]: metrics.micro_curve(s["test"], labels["test"][:, 1:]) for m, s in scores.items()}
    metrics.precision_recall_plot(curves, os.path.join(workdir, "pr_curves.png"))
    return rows


def define_flags() -> None:
    """The command line's flags; defined only when run as a program (see clever_jax.perf.throughput)."""
    config_flags.DEFINE_config_file("config", None, "Config file (configs/*.py).", lock_config=False)
    flags.DEFINE_string("workdir", "runs/results", "Folder for the runs and the table.")
    flags.DEFINE_list("methods", list(METHODS), f"Rows to make, of {list(METHODS)}.")
    flags.DEFINE_list("ensemble", list(ENSEMBLE), "The ensemble's sources (rows of --methods).")
    flags.DEFINE_bool("clever_from_avg", True, "Initialise CLEVER from the AVG run (when avg is a row).")
    flags.DEFINE_integer("text_epochs", TEXT_EPOCHS, "Epochs (at most) of the Vanilla-FT and Prompt-FT rows.")
    flags.DEFINE_string("captions", "", "Caption corpus of the RTP row (default: the generated world's captions.json).")
    flags.mark_flags_as_required(["config"])


def main(argv: list[str]) -> None:
    del argv
    args = flags.FLAGS
    try:
        check_methods(args.methods, args.ensemble)
    except ValueError as e:
        raise app.UsageError(str(e)) from e
    rows = run_all(args.config, args.workdir, args.methods, args.clever_from_avg, args.captions, tuple(args.ensemble),
                   args.text_epochs)
    print(table(rows) + "\n\n" + paper_table(list(rows)))


if __name__ == "__main__":
    define_flags()
    cli.run(main, stop_signals=True)
