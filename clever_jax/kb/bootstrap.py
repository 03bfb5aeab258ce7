"""A knowledge base that grows: `--mode=bootstrap`, rounds of extraction whose kept triplets become labels.

  python -m clever_jax.main --mode=bootstrap --config=configs/demo.py --workdir=runs/demo \
      --config.extract.target_precision=0.8

starts from the run trained in WORKDIR (round 0: its best checkpoint, metrics.json and
val_scores.npz, as --mode=all writes them) and runs `bootstrap.rounds` rounds, each in
WORKDIR/bootstrap/round_K:

1. With round K-1's model, score one bag per candidate pair: every ordered entity pair seen in at
   least `extract.min_images` training-split images that no annotated relationship of any image
   relates and that is no validation or test bag (the training NA bags and the pairs no bag holds),
   its instances drawn from training images only (records in WORKDIR/bootstrap/candidates/).
2. Keep what the calibrated filters keep (kb/filters.py: thresholds for extract.target_precision on
   round K-1's val_scores.npz, evidence, consistency) and write them, with every earlier round's, to
   added_facts.tsv (subject, relation, object names).
3. Train from round K-1's best checkpoint for `bootstrap.max_epochs` (0: train.max_epochs) on the
   benchmark with those facts added to the training split (config.data.added_facts; data/benchmark.py
   add_train_facts): validation and test are untouched, so every round is scored on the same bags.
4. Evaluate on validation and test (metrics.json, val_scores.npz).

Every round, round 0 included, then extracts a knowledge base from extract.features_path (default:
the run's own features file) into round_K/kb as --mode=kb does. WORKDIR/bootstrap/rounds.json
lists the finished rounds: round, added_facts (new this round), added_facts_total,
added_precision_vs_truth (% of this round's new facts true in the generated world's graded truth),
test_auc, test_mauc, kb_triplets, kb_precision and kb_recall (% against the graded truth; the
truth's entries are null for real data), seconds.

Resumable: a round in rounds.json is not run again, an interrupted one resumes its training from
round_K/checkpoints/latest and keeps its added_facts.tsv. WORKDIR/bootstrap/settings.json holds the
settings the rounds depend on; other ones stop the command (more rounds may be asked for). With
bootstrap.add_facts=False nothing is added: the same training continued, the control for what the
added labels do.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time

import ml_collections
import numpy as np
from absl import logging

from clever_jax import files
from clever_jax import workdir as workdir_lib
from clever_jax.config_checks import ConfigError
from clever_jax.data import detections, prepare, text
from clever_jax.data.bags import Bags, build_bags
from clever_jax.data.benchmark import SPLITS, Benchmark
from clever_jax.data.jsonio import DataError, load_json
from clever_jax.data.vocab import benchmark_vocab, read_facts, write_facts
from clever_jax.evaluation import evaluate
from clever_jax.kb import build, filters
from clever_jax.training import builder, train
from clever_jax.training.checkpoints import Checkpoints

OUT_DIR = "bootstrap"
ROUNDS = "rounds.json"
ADDED = "added_facts.tsv"
# The settings the rounds depend on besides the run's own (which job.run checks against the workdir's).
SETTINGS = ("extract.features_path", "extract.min_images", "extract.target_precision", "extract.min_val_facts",
            "extract.min_evidence", "extract.consistency_quantile", "extract.predicate_relations",
            "extract.num_evidence", "extract.top_k", "bootstrap.max_epochs", "bootstrap.add_facts")


def candidate_bags(built: prepare.Assembled, num_entities: int, min_images: int, bag_size: int, sampler: str,
                   seed: int) -> tuple[Benchmark, Bags]:
    """One unlabelled bag (split detections.SPLIT) per candidate pair of the benchmark (module docstring, 1).

    Args:
      built: the run's corpus, candidate instances and benchmark (prepare.assemble).
      num_entities: E. min_images: training images a pair needs. bag_size, sampler, seed: as the run's bags.

    Returns:
      The candidate bags' Benchmark (P pairs, every label NA; image_split marks the images they draw from)
      and their Bags (up to bag_size instances each, from training images only).

    Raises:
      DataError: when no pair qualifies.
    """
    corpus, candidates, benchmark = built.corpus, built.candidates, built.benchmark
    codes = candidates.pair_codes.astype(np.int64)
    in_train = benchmark.image_split[candidates.images] == SPLITS.index("train")
    code_image = np.unique(codes[in_train] * corpus.num_images + candidates.images[in_train])
    images_per_code = np.bincount(code_image // corpus.num_images, minlength=num_entities**2)
    classes = corpus.object_classes.astype(np.int64)
    annotated = classes[corpus.rel_subjects] * num_entities + classes[corpus.rel_objects]
    held_out = benchmark.pairs[:, 0] * num_entities + benchmark.pairs[:, 1]
    held_out = held_out[benchmark.split != SPLITS.index("train")]
    pairs = np.setdiff1d(np.flatnonzero(images_per_code >= min_images), np.concatenate([annotated, held_out]))
    if not len(pairs):
        raise DataError(f"no candidate pair for bootstrapping: none without a fact or a validation or test bag is "
                        f"seen in {min_images} or more training images; lower extract.min_images")
    bag_of_code = np.full(num_entities**2, -1, np.int64)
    bag_of_code[pairs] = np.arange(len(pairs))
    bag_index = np.where(in_train, bag_of_code[codes], -1)
    bags = build_bags(corpus, candidates, bag_index, len(pairs), bag_size, sampler, seed)
    split = SPLITS.index(detections.SPLIT)
    used = np.zeros(corpus.num_images, bool)
    used[bags.images] = True
    return Benchmark(pairs=np.stack(np.divmod(pairs, num_entities), axis=1), split=np.full(len(pairs), split, np.int32),
                     label_start=np.arange(len(pairs) + 1, dtype=np.int64), labels=np.zeros(len(pairs), np.int64),
                     image_split=np.where(used, split, -1).astype(np.int32), bag_index=bag_index.astype(np.int32),
                     dropped_pairs=0), bags


def candidate_records(config: ml_collections.ConfigDict, workdir: str) -> str:
    """Builds (or reuses) the candidate bags' records in WORKDIR/bootstrap/candidates/<the run's records' name>."""
    records_dir = prepare.prepare_records(config, workdir)
    build_dir = os.path.join(workdir, OUT_DIR, "candidates", os.path.basename(records_dir))
    if os.path.isfile(os.path.join(build_dir, "candidates.json")):
        return build_dir
    built = prepare.assemble(config, workdir)
    data = config.data
    benchmark, bags = candidate_bags(built, len(benchmark_vocab().entities), config.extract.min_images,
                                     data.bag_size, data.sampler, data.seed)
    shutil.rmtree(build_dir, ignore_errors=True)  # An interrupted earlier build.
    os.makedirs(build_dir)
    prepare.write_build(build_dir, built.corpus, benchmark, bags, text.pretrained_dir(config))
    files.write_json(os.path.join(build_dir, "candidates.json"), {"pairs": benchmark.num_bags,
                                                                  "instances": len(bags.subjects)})
    logging.info("Bootstrapping candidates: %d pairs, %d instances, in %s", benchmark.num_bags, len(bags.subjects),
                 build_dir)
    return build_dir


def kept_candidates(config: ml_collections.ConfigDict, model_dir: str, records_dir: str) -> np.ndarray:
    """int64 [K, 3]: the (subject, relation, object) of the candidate bags in `records_dir` that the
    filters keep, scored by the best checkpoint of the run in `model_dir` (trained with `config`)."""
    ex, vocab = config.extract, benchmark_vocab()
    thresholds = build.thresholds_of_run(config, os.path.join(model_dir, "val_scores.npz"))
    rules = filters.read_rules(ex.predicate_relations, vocab)
    run = builder.build(config, records_dir)
    params = Checkpoints(model_dir).restore_params("best", run.abstract_params)
    outputs = evaluate.split_outputs(run.scorer(detections.SPLIT), params, num_evidence=ex.num_evidence)
    stages, counts = filters.cascade(outputs.scores, outputs.above_uniform, outputs.pairs, thresholds,
                                     ex.min_evidence, rules, ex.consistency_quantile)
    logging.info("Candidates kept by the filters: %s", " ".join(f"{k}={v}" for k, v in counts.items()))
    bag, relation = np.nonzero(stages[-1][1])
    return np.stack([outputs.pairs[bag, 0], relation, outputs.pairs[bag, 1]], axis=1).astype(np.int64)


def round_config(config: ml_collections.ConfigDict, workdir: str, number: int) -> ml_collections.ConfigDict:
    """The config that trains round `number` (>= 1) in WORKDIR/bootstrap/round_<number>."""
    out = config.copy_and_resolve_references()
    if config.data.source == "world":
        out.data.world_dir = os.path.abspath(config.data.world_dir or os.path.join(workdir, "world"))
    added = os.path.abspath(os.path.join(round_dir(workdir, number), ADDED))
    out.data.added_facts = added if config.bootstrap.add_facts else ""
    out.train.init_from = os.path.abspath(round_dir(workdir, number - 1))
    out.train.max_epochs = config.bootstrap.max_epochs or config.train.max_epochs
    return out


def round_dir(workdir: str, number: int) -> str:
    """Round 0 is the run itself."""
    return workdir if number == 0 else os.path.join(workdir, OUT_DIR, f"round_{number}")


def precision_vs_truth(facts: np.ndarray, grades: np.ndarray | None) -> float | None:
    """% of the triplets facts int [F, 3] that are true (grade 1 or 2) in the graded truth (None without one)."""
    if grades is None or not len(facts):
        return None
    return float(100 * np.mean(grades[facts[:, 0], facts[:, 1], facts[:, 2]] > 0))


def grow_facts(config: ml_collections.ConfigDict, workdir: str, number: int) -> tuple[np.ndarray, np.ndarray]:
    """Writes (or reuses) round `number`'s added_facts.tsv: the earlier rounds' facts and what the filters keep of
    the pairs still without one. Returns (every fact added so far, this round's new ones), int64 [F, 3] each."""
    vocab = benchmark_vocab()
    path = os.path.join(round_dir(workdir, number), ADDED)
    earlier = (read_facts(os.path.join(round_dir(workdir, number - 1), ADDED), vocab) if number > 1
               else np.zeros((0, 3), np.int64))
    if not os.path.isfile(path):
        found = np.zeros((0, 3), np.int64)
        if config.bootstrap.add_facts:
            previous = config if number == 1 else round_config(config, workdir, number - 1)
            found = kept_candidates(previous, round_dir(workdir, number - 1), candidate_records(config, workdir))
            pair = lambda facts: facts[:, 0] * len(vocab.entities) + facts[:, 2]  # noqa: E731
            found = found[~np.isin(pair(found), pair(earlier))]  # Pairs labelled by an earlier round have facts.
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with files.atomic_write(path) as f:
            write_facts(f, np.unique(np.concatenate([earlier, found]), axis=0), vocab)
    every = read_facts(path, vocab)
    code = lambda facts: (facts[:, 0] * vocab.num_relations + facts[:, 1]) * len(vocab.entities) + facts[:, 2]  # noqa: E731
    return every, every[~np.isin(code(every), code(earlier))]


def knowledge_base(config: ml_collections.ConfigDict, workdir: str, number: int) -> dict:
    """Extracts round `number`'s knowledge base into its kb/ (build.extract); returns its counts against the truth."""
    kb_config = config.copy_and_resolve_references()
    kb_config.extract.update(features_path=config.extract.features_path or prepare.input_paths(config, workdir)[1],
                             image_index=False, negatives=0)
    trained = config if number == 0 else round_config(config, workdir, number)
    source = dataclasses.replace(build.model_source(trained, round_dir(workdir, number)), config=kb_config)
    out_dir = os.path.join(workdir, OUT_DIR, f"round_{number}", build.KB_DIR)
    build.extract(kb_config, workdir, source=source, out_dir=out_dir)
    meta = load_json(os.path.join(out_dir, "kb_meta.json"))
    final = list(meta["world_truth"].values())[-1] if "world_truth" in meta else {}
    return {"kb_triplets": meta["triplets"], "kb_precision": final.get("precision"), "kb_recall": final.get("recall")}


def round_settings(config: ml_collections.ConfigDict, root: str) -> dict:
    """The rounds' settings (SETTINGS); ConfigError when ROOT/settings.json (written with the first finished
    round) holds others."""
    current = json.loads(json.dumps({name: config[name.split(".")[0]][name.split(".")[1]] for name in SETTINGS}))
    path = os.path.join(root, "settings.json")
    saved = load_json(path) if os.path.isfile(path) else current
    changed = [f"  {k}: {saved.get(k)!r} (the rounds') -> {v!r} (now)" for k, v in current.items() if saved.get(k) != v]
    if changed:
        raise ConfigError(f"{root} holds rounds made with other settings ({path}):\n" + "\n".join(changed) +
                          f"\nUse those, or delete {root} to start the rounds again.")
    return current


def run(config: ml_collections.ConfigDict, workdir: str) -> str:
    """Runs the rounds not yet in WORKDIR/bootstrap/rounds.json (module docstring); returns that file."""
    root = os.path.join(workdir, OUT_DIR)
    for name in ("checkpoints", "metrics.json", "val_scores.npz"):
        if not os.path.exists(os.path.join(workdir, name)):
            raise FileNotFoundError(f"{os.path.join(workdir, name)}: bootstrapping starts from a trained and "
                                    "evaluated run; run --mode=all (or --mode=train, then --mode=eval) there first")
    settings = round_settings(config, root)
    os.makedirs(root, exist_ok=True)
    rounds_path = os.path.join(root, ROUNDS)
    rounds = load_json(rounds_path) if os.path.isfile(rounds_path) else []
    grades = evaluate.world_grades(config, workdir)
    for number in range(len(rounds), config.bootstrap.rounds + 1):
        clock = time.perf_counter()
        every = new = np.zeros((0, 3), np.int64)
        if number:
            every, new = grow_facts(config, workdir, number)
            logging.info("Round %d: %d facts added to the training split (%d new)", number, len(every), len(new))
            trained = round_config(config, workdir, number)
            folder = round_dir(workdir, number)
            workdir_lib.check_settings(trained, folder, write=True)
            grown = builder.build(trained, prepare.prepare_records(trained, folder), workdir=folder)
            train.Trainer(grown, folder).train()
            evaluate.evaluate_run(grown, Checkpoints(folder).restore_params("best", grown.abstract_params), folder)
        test = load_json(os.path.join(round_dir(workdir, number), "metrics.json"))["test"]
        rounds.append({"round": number, "added_facts": len(new), "added_facts_total": len(every),
                       "added_precision_vs_truth": precision_vs_truth(new, grades),
                       "test_auc": test["auc"], "test_mauc": test["mauc"],
                       **knowledge_base(config, workdir, number),
                       "seconds": round(time.perf_counter() - clock, 1)})
        logging.info("Bootstrap round %d: %s", number, json.dumps(rounds[-1]))
        files.write_json(os.path.join(root, "settings.json"), settings)
        files.write_json(rounds_path, rounds)
    return rounds_path
