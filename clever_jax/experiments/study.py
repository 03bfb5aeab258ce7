"""The paper's ablations on one benchmark, with CLEVER against AVG over several seeds.

  python -m clever_jax.experiments.study --config=configs/demo.py --workdir=runs/study [--seeds=0,1]
      [--parts=seeds,table2,table3,fig4,sparse] [--bag_sizes=1,2,4,8,16,32]

* seeds: AVG and CLEVER for every seed s. Seed s sets the world's images (data.world.seed), the
  splits (data.seed), the parameter initialisation (seed) and the bag order (data.shuffle_seed);
  each seed has its own world in WORKDIR/world-s<s>. The latent commonsense stays the same.
* table2 (first seed): the paper's Table 2 — CLEVER, VLP -> CNN (CLEVER on the CNN-style encoder,
  clever_jax/models/region_pair.py), CST-ATT -> AVG, ONE, ATT (the contrastive attention replaced
  by the other bag heads).
* table3 (first seed): bag samplers, overlap (paper) and random. The paper's third, CLIP
  similarity, is not run (SIMILARITY_NOTE says why), and the results say so.
* fig4 (first seed): CLEVER with bags of each of --bag_sizes instances (1 to 32), train and test
  alike.
* sparse: CLEVER against AVG where fewer of a bag's instances show its relation than with the
  overlap sampler's bags of the config's size: bags twice as large (every seed, with the mean
  over seeds) and the random sampler (first seed). Contrastive attention is meant to pay off
  there, averaging to dilute the evidence.

Every cell starts from the study's config with the cell's seed, the VLP encoder, the overlap
sampler, no initialisation from another run (CLEVER starts from scratch like AVG: the same budget
for both; `clever_jax.experiments.results` has the paper's initialisation from AVG), then the cell's own
settings; everything else is the config's (with configs/demo.py: pair_geometry on, also for the
CNN-style encoder, whose paper version had no box input). A cell is trained in WORKDIR/<name> with
clever_jax.job (an interrupted cell resumes from its latest checkpoint); a cell whose test scores
exist is reused, after checking that its result settings are the cell's (clever_jax.workdir), so
a study longer than a session completes over several. WORKDIR/<name>/study_time.json keeps the
wall time of the call that finished the cell (of a resumed cell, its last part only; the first
cell of a seed includes generating that seed's world). Writes WORKDIR/study.json (every cell's test
metrics, the tables, the seed means with min and max), WORKDIR/study.md and the figures
WORKDIR/fig4_bag_size.png and WORKDIR/seeds.png. Metrics that need the world's truth are "—"
on other data.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time

import ml_collections
import numpy as np
from absl import flags, logging
from ml_collections import config_flags

from clever_jax import cli, files, job
from clever_jax import workdir as workdir_lib

PARTS = ("seeds", "table2", "table3", "fig4", "sparse")
SEED_METRICS = ("auc", "mauc", "attention_on_true", "attention_true_chance", "top_evidence_true",
                "attention_true_auc", "spearman_top")
TABLE_METRICS = ("auc", "f1", "p@2%", "mauc", "mf1", "mp@2%", "attention_true_chance", "top_evidence_true",
                 "attention_true_auc")
SIMILARITY_NOTE = ("CLIP similarity sampler: not run; no CLIP model is available offline, the generated world "
                   "has no pixels (its regions are feature vectors), and our encoder has no image-text matching "
                   "score to stand in for it (it is not vision-language pre-trained)")
BASE_SETTINGS = (("model.encoder", "vlp"), ("data.sampler", "overlap"), ("train.init_from", ""))


@dataclasses.dataclass(frozen=True)
class Cell:
    """One training run of the study: its folder name, its seed and its config settings."""

    name: str
    seed: int
    settings: tuple[tuple[str, object], ...] = ()  # (dotted config path, value)


def cells(parts: list[str], seeds: list[int], bag_sizes: list[int], default_bag_size: int) -> list[Cell]:
    """The runs the parts need, in order, without repeats (the first seed's CLEVER serves every
    part, its AVG the seeds, table2 and sparse)."""
    unknown = set(parts) - set(PARTS)
    if unknown or not seeds:
        raise ValueError(f"parts {sorted(unknown)} unknown (expected some of {PARTS})" if unknown else "no seeds")
    if len(set(seeds)) != len(seeds) or len(set(bag_sizes)) != len(bag_sizes):
        raise ValueError(f"seeds {seeds} and bag sizes {bag_sizes} must not repeat")
    first, large = seeds[0], 2 * default_bag_size
    heads = ("avg", "clever") if {"seeds", "table2", "sparse"} & set(parts) else ("clever",)
    out = [Cell(f"{head}-s{first}", first, (("model.head", head),)) for head in heads]
    if {"seeds", "sparse"} & set(parts):
        out += [Cell(f"{head}-s{s}", s, (("model.head", head),)) for s in seeds[1:] for head in ("avg", "clever")]
    if "table2" in parts:
        out += [Cell(f"{head}-s{first}", first, (("model.head", head),)) for head in ("one", "att")]
        out.append(Cell(f"cnn-clever-s{first}", first, (("model.head", "clever"), ("model.encoder", "cnn"))))
    if "table3" in parts:
        out.append(Cell(f"random-clever-s{first}", first, (("model.head", "clever"), ("data.sampler", "random"))))
    if "fig4" in parts:
        out += [Cell(f"bag{n}-clever-s{first}", first, (("model.head", "clever"), ("data.bag_size", n)))
                for n in bag_sizes if n != default_bag_size]
    if "sparse" in parts:
        out += [Cell(f"random-{head}-s{first}", first, (("model.head", head), ("data.sampler", "random")))
                for head in ("clever", "avg")]
        out += [Cell(f"bag{large}-{head}-s{s}", s, (("model.head", head), ("data.bag_size", large)))
                for s in seeds for head in ("clever", "avg")]
    return list({cell.name: cell for cell in out}.values())  # The first of each name, in order.


def cell_config(config: ml_collections.ConfigDict, workdir: str, cell: Cell) -> ml_collections.ConfigDict:
    """The config of a cell: the study's, with the cell's seed, BASE_SETTINGS and the cell's settings."""
    c = config.copy_and_resolve_references()
    c.seed = c.data.seed = c.data.shuffle_seed = c.data.world.seed = cell.seed
    c.data.world_dir = os.path.join(workdir, f"world-s{cell.seed}")
    for path, value in (*BASE_SETTINGS, *cell.settings):
        *parents, leaf = path.split(".")
        node = c
        for name in parents:
            node = node[name]
        node[leaf] = value
    return c


def run_cell(config: ml_collections.ConfigDict, workdir: str, cell: Cell) -> dict:
    """Trains and tests the cell unless its test scores exist; returns its test metrics, wall time
    and whether this call trained it."""
    run_dir = os.path.join(workdir, cell.name)
    timing = os.path.join(run_dir, "study_time.json")
    run_config = cell_config(config, workdir, cell)
    trained = not os.path.isfile(os.path.join(run_dir, "test_scores.npz"))
    if trained:
        logging.info("Study cell %s in %s", cell.name, run_dir)
        start = time.time()
        job.run(run_config, run_dir, "all")
        files.write_json(timing, {"seconds": time.time() - start})
    else:
        workdir_lib.check_settings(run_config, run_dir, write=False)
    with open(os.path.join(run_dir, "metrics.json")) as f:
        test = json.load(f)["test"]
    seconds = None
    if os.path.isfile(timing):
        with open(timing) as f:
            seconds = json.load(f)["seconds"]
    return {"test": test, "seconds": seconds, "trained": trained}


def seed_summary(results: dict[str, dict], seeds: list[int]) -> dict:
    """Per head (AVG, CLEVER) and metric (those every cell has): each seed's value, their mean, min and max."""
    out = {}
    for head in ("avg", "clever"):
        tests = [results[f"{head}-s{s}"]["test"] for s in seeds]
        values = {m: [t[m] for t in tests] for m in SEED_METRICS if all(m in t for t in tests)}
        out[head.upper()] = {m: {"values": v, "mean": float(np.mean(v)), "min": float(np.min(v)),
                                 "max": float(np.max(v))} for m, v in values.items()}
    differences = {m: [results[f"clever-s{s}"]["test"][m] - results[f"avg-s{s}"]["test"][m] for s in seeds]
                   for m in ("auc", "mauc")}
    out["CLEVER - AVG"] = {m: {"values": v, "mean": float(np.mean(v)), "min": float(np.min(v)),
                               "max": float(np.max(v))} for m, v in differences.items()}
    return out


def tables(results: dict[str, dict], parts: list[str], seeds: list[int], bag_sizes: list[int],
           default_bag_size: int) -> dict[str, dict[str, str]]:
    """The tables' rows: table name -> row name -> cell name."""
    s = seeds[0]
    out: dict[str, dict[str, str]] = {}
    if "table2" in parts:
        out["table2"] = {"CLEVER": f"clever-s{s}", "VLP -> CNN": f"cnn-clever-s{s}", "CST-ATT -> AVG": f"avg-s{s}",
                         "CST-ATT -> ONE": f"one-s{s}", "CST-ATT -> ATT": f"att-s{s}"}
    if "table3" in parts:
        out["table3"] = {"Random": f"random-clever-s{s}", "Overlap": f"clever-s{s}"}
    if "fig4" in parts:
        out["fig4"] = {f"bag {n}": f"clever-s{s}" if n == default_bag_size else f"bag{n}-clever-s{s}"
                       for n in bag_sizes}
    if "sparse" in parts:
        large = 2 * default_bag_size
        settings = [(f"random sampler, seed {s}", "random-", s)]
        settings += [(f"overlap, bag {n}, seed {seed}", prefix, seed) for n, prefix in
                     ((default_bag_size, ""), (large, f"bag{large}-")) for seed in seeds]
        out["sparse"] = {f"{setting}, {head.upper()}": f"{prefix}{head}-s{seed}"
                         for setting, prefix, seed in settings for head in ("clever", "avg")}
    return out


def sparse_differences(results: dict[str, dict], rows: dict[str, str]) -> dict[str, dict[str, float]]:
    """CLEVER - AVG test AUC and mAUC per setting of the sparse table (rows "<setting>, seed <s>,
    CLEVER" / "..., AVG"), and per setting over its seeds, their mean ("<setting>, mean")."""
    out, by_setting = {}, {}
    for row, cell in rows.items():
        setting, head = row.rsplit(", ", 1)
        if head == "CLEVER":
            clever, avg = results[cell]["test"], results[rows[f"{setting}, AVG"]]["test"]
            out[setting] = {m: clever[m] - avg[m] for m in ("auc", "mauc")}
            by_setting.setdefault(setting.rsplit(", seed ", 1)[0], []).append(out[setting])
    for setting, values in by_setting.items():
        if len(values) > 1:
            out[f"{setting}, mean"] = {m: float(np.mean([v[m] for v in values])) for m in ("auc", "mauc")}
    return out


def markdown(summary: dict | None, rows: dict[str, dict[str, str]], results: dict[str, dict],
             seeds: list[int]) -> str:
    """study.md: the seed comparison and each table (metrics in %, Spearman's rho as is)."""
    lines = []
    if summary is not None:
        lines = [f"## CLEVER and AVG over seeds {', '.join(map(str, seeds))} (mean, min to max)", "",
                 "| Method | " + " | ".join(SEED_METRICS) + " |", "|" + "---|" * (len(SEED_METRICS) + 1)]
        for head, row in summary.items():
            values = [f"{row[m]['mean']:.2f} ({row[m]['min']:.2f} to {row[m]['max']:.2f})" if m in row else "—"
                      for m in SEED_METRICS]
            lines.append(f"| {head} | " + " | ".join(values) + " |")
    for name, table in rows.items():
        lines += ["", f"## {name} (seed {seeds[0]})", "", "| Row | " + " | ".join(TABLE_METRICS) + " | minutes |",
                  "|" + "---|" * (len(TABLE_METRICS) + 2)]
        for row, cell in table.items():
            r = results[cell]
            minutes = "—" if r["seconds"] is None else f"{r['seconds'] / 60:.1f}"
            values = [f"{r['test'][m]:.2f}" if m in r["test"] and r["test"][m] == r["test"][m] else "—"
                      for m in TABLE_METRICS]  # "—" also for NaN (bags of 1: no instance to rank against).
            lines.append(f"| {row} | " + " | ".join(values) + f" | {minutes} |")
        if name == "table3":
            lines += ["", SIMILARITY_NOTE + "."]
        if name == "sparse":
            lines += ["", "CLEVER - AVG: " + "; ".join(
                f"{setting}: AUC {d['auc']:+.2f}, mAUC {d['mauc']:+.2f}"
                for setting, d in sparse_differences(results, table).items()) + "."]
    return "\n".join(lines) + "\n"


def _save(figure, path: str) -> None:
    figure.tight_layout()
    with files.atomic_write(path, "wb") as f:
        figure.savefig(f, format="png", dpi=120)


def plots(summary: dict | None, rows: dict[str, dict[str, str]], results: dict[str, dict], seeds: list[int],
          workdir: str) -> None:
    """fig4_bag_size.png (AUC, mAUC and their mean against the bag size) and seeds.png (AUC and
    mAUC of AVG and CLEVER for each seed; with the seeds part)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if "fig4" in rows:
        sizes = [int(name.split()[1]) for name in rows["fig4"]]
        tests = [results[cell]["test"] for cell in rows["fig4"].values()]
        figure = Figure(figsize=(5, 3.5))
        FigureCanvasAgg(figure)  # Agg rendering without touching pyplot's global backend.
        ax = figure.add_subplot()
        for label, values in (("AUC", [t["auc"] for t in tests]), ("mAUC", [t["mauc"] for t in tests]),
                              ("average", [(t["auc"] + t["mauc"]) / 2 for t in tests])):
            ax.plot(sizes, values, marker="o", label=label)
        ax.set(xscale="log", xlabel="bag size (instances)", ylabel="test (%)", title="CLEVER by bag size")
        ax.set_xticks(sizes, [str(n) for n in sizes])
        ax.legend()
        _save(figure, os.path.join(workdir, "fig4_bag_size.png"))
    if summary is None:
        return
    figure = Figure(figsize=(7, 3.5))
    FigureCanvasAgg(figure)
    for k, metric in enumerate(("auc", "mauc")):
        ax = figure.add_subplot(1, 2, k + 1)
        for x, head in enumerate(("AVG", "CLEVER")):
            ax.scatter([x] * len(seeds), summary[head][metric]["values"], label=head)
            ax.hlines(summary[head][metric]["mean"], x - 0.2, x + 0.2)
        ax.set(xticks=[0, 1], xticklabels=["AVG", "CLEVER"], ylabel=f"test {metric.upper()} (%)",
               title=f"{metric.upper()} over seeds {', '.join(map(str, seeds))}")
    _save(figure, os.path.join(workdir, "seeds.png"))


def run_study(config: ml_collections.ConfigDict, workdir: str, parts: list[str], seeds: list[int],
              bag_sizes: list[int]) -> dict:
    """Runs (or reuses) every cell, then writes study.json, study.md and the figures; returns study.json's content."""
    default_bag_size = int(config.data.bag_size)
    todo = cells(parts, seeds, bag_sizes, default_bag_size)
    results = {cell.name: run_cell(config, workdir, cell) for cell in todo}
    summary = seed_summary(results, seeds) if "seeds" in parts else None
    rows = tables(results, parts, seeds, bag_sizes, default_bag_size)
    known = [r["seconds"] for r in results.values() if r["seconds"] is not None]
    notes = [SIMILARITY_NOTE] if "table3" in parts else []
    differences = sparse_differences(results, rows["sparse"]) if "sparse" in rows else None
    study = {"cells": results, "seeds": summary, "tables": rows, "sparse_differences": differences, "notes": notes,
             "total_minutes": sum(known) / 60, "timed_cells": len(known), "num_cells": len(results),
             "trained_now": sum(r["trained"] for r in results.values())}
    files.write_json(os.path.join(workdir, "study.json"), study)
    with files.atomic_write(os.path.join(workdir, "study.md")) as f:
        f.write(markdown(summary, rows, results, seeds))
    plots(summary, rows, results, seeds, workdir)
    return study


def define_flags() -> None:
    """The command line's flags; defined only when run as a program (see clever_jax.perf.throughput)."""
    config_flags.DEFINE_config_file("config", None, "Config file (configs/*.py).", lock_config=False)
    flags.DEFINE_string("workdir", "runs/study", "Folder for the runs, study.json, study.md and the figures.")
    flags.DEFINE_list("parts", list(PARTS), f"Parts of the study, among {', '.join(PARTS)}.")
    flags.DEFINE_list("seeds", ["0", "1"], "Seeds of the AVG/CLEVER comparison (the first serves the other parts).")
    flags.DEFINE_list("bag_sizes", ["1", "2", "4", "8", "16", "32"], "Bag sizes of fig4.")
    flags.mark_flags_as_required(["config"])


def main(argv: list[str]) -> None:
    del argv
    args = flags.FLAGS
    os.makedirs(args.workdir, exist_ok=True)
    study = run_study(args.config, args.workdir, args.parts, [int(s) for s in args.seeds],
                      [int(n) for n in args.bag_sizes])
    with open(os.path.join(args.workdir, "study.md")) as f:
        print(f.read())
    print(f"{study['num_cells']} cells ({study['trained_now']} trained by this call), "
          f"{study['total_minutes']:.1f} minutes of training and testing over the {study['timed_cells']} timed")


if __name__ == "__main__":
    define_flags()
    cli.run(main, stop_signals=True)
