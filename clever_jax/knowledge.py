"""A knowledge base from unannotated images: `--mode=extract` with `config.extract.features_path`.

  python -m clever_jax.main --mode=extract --config=CONFIG --workdir=TRAINED_WORKDIR \
      --config.extract.features_path=FEATURES.tsv

reads a detector's output alone (data/detections.py: boxes and class names, no annotations),
builds an unlabelled bag for every entity pair seen in at least `extract.min_images` images into
WORKDIR/kb/records/<hash> (reused when nothing changed), scores every relation of every bag with
the workdir's best checkpoint and writes WORKDIR/kb/:

  kb.jsonl      one triplet per line, best first (`extract.top_k`; 0: all): subject, relation,
                object, score, in_training_kb (a fact of the model's training split), evidence:
                up to `extract.num_evidence` instances with image_id, subject_box and object_box
                (x1, y1, x2, y2 pixels) and weight
  kb.csv        the same triplets without evidence (subject, relation, object, score, in_training_kb)
  kb_meta.json  what made it: the features file, the checkpoint, the settings, the counts

With `extract.target_precision` the triplets first pass the calibrated filters of kb_filters
(thresholds chosen on the run's val_scores.npz before any other work; what each stage removed is
in kb_meta.json under "filters").
"""

from __future__ import annotations

import csv
import json
import os

import ml_collections
import numpy as np
from absl import logging

from clever_jax import distributed, evaluate, files, kb_filters
from clever_jax.checkpoints import Checkpoints
from clever_jax.config_checks import ConfigError
from clever_jax.data import detections, prepare, text
from clever_jax.data.jsonio import DataError
from clever_jax.data.records import open_records, read_manifest, write_records
from clever_jax.data.vocab import benchmark_vocab
from clever_jax.extract import ranked_triplets, write_triplets

KB_DIR = "kb"


def prepare_detections(config: ml_collections.ConfigDict, workdir: str) -> str:
    """Builds (or reuses) the extraction records of config.extract.features_path; returns their folder."""
    path, vocab = config.extract.features_path, benchmark_vocab()
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no features file (config.extract.features_path: a VinVL-style TSV, "
                                "README 'Input formats')")
    model_dir = text.pretrained_dir(config)
    settings = config.copy_and_resolve_references()
    settings.data.update(source="detections", features_path=path)  # The fingerprint's data part.
    settings.data.min_fact_count = config.extract.min_images
    build_dir = os.path.join(workdir, KB_DIR, "records",
                             prepare.fingerprint(settings, [path, os.path.join(model_dir, "vocab.txt")]))
    if os.path.isfile(os.path.join(build_dir, "kb_stats.json")):
        logging.info("Reusing the extraction records in %s", build_dir)
        return build_dir
    corpus = detections.read_detections(path, vocab, config.data.feature_dim or None)
    benchmark, bags = detections.pair_bags(corpus, len(vocab.entities), config.extract.min_images,
                                           config.data.bag_size, config.data.sampler, config.data.seed)
    tokenizer = text.load_tokenizer(model_dir)
    pieces, lengths = text.tokenize_names(tokenizer, corpus.object_names)
    meta = {"cls_id": tokenizer.cls_token_id, "sep_id": tokenizer.sep_token_id,
            "num_relations": vocab.num_relations, "has_truth": False}
    write_records(build_dir, corpus, benchmark, bags, pieces, lengths, meta)
    stats = {"images": corpus.num_images, "objects": len(corpus.object_classes), "pairs": benchmark.num_bags,
             "instances": len(bags.subjects), "candidate_instances": int(bags.available.sum()),
             "skipped": corpus.skipped}
    files.write_json(os.path.join(build_dir, "kb_stats.json"), stats)
    logging.info("Extraction bags: %s", " ".join(f"{k}={v}" for k, v in stats.items() if k != "skipped"))
    return build_dir


def training_facts(records_dir: str, num_entities: int, num_relations: int) -> np.ndarray:
    """bool [E, R + 1, E]: the facts of the training split of `records_dir` (the model's knowledge base)."""
    known = np.zeros((num_entities, num_relations, num_entities), bool)
    _, bags = open_records(records_dir)
    train = bags["train"]
    for record in train.__getitems__(list(range(len(train)))):
        labels = record["labels"][record["labels"] > 0]
        known[record["pair"][0], labels, record["pair"][1]] = True
    return known


def thresholds_of_run(config: ml_collections.ConfigDict, workdir: str) -> kb_filters.Thresholds:
    """The score thresholds for config.extract.target_precision, from the run's validation scores."""
    path = os.path.join(workdir, "val_scores.npz")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: extract.target_precision chooses thresholds on the run's validation "
                                f"scores; run --mode=eval in {workdir} first")
    with np.load(path) as val:
        try:
            thresholds = kb_filters.choose_thresholds(val["scores"], val["labels"], config.extract.target_precision,
                                                      config.extract.min_val_facts)
        except ValueError as e:
            raise ConfigError(f"{path}: {e}") from e
    summary = thresholds.summary()
    if summary["relations_global"] or summary["relations_unreachable"]:
        names = lambda ids: ", ".join(benchmark_vocab().relations[r] for r in ids) or "none"  # noqa: E731
        logging.info("Score thresholds for precision %.2f: %d relations with fewer than %d validation facts take the "
                     "global threshold %.4f (%s); %d never reach it and keep nothing (%s)", thresholds.target,
                     len(summary["relations_global"]), config.extract.min_val_facts, thresholds.global_value,
                     names(summary["relations_global"]), len(summary["relations_unreachable"]),
                     names(summary["relations_unreachable"]))
    return thresholds


def extract(run_for, config: ml_collections.ConfigDict, workdir: str, records_dir: str) -> str:
    """Builds and writes the knowledge base of config.extract.features_path (module docstring).

    Args:
      run_for: builder.build (records folder -> a built run of `config`).
      config: the run's config. workdir: the trained run's folder. records_dir: its benchmark records
        (their training facts mark in_training_kb; their region size must be the features').

    Returns:
      The folder written (WORKDIR/kb).
    """
    ex = config.extract
    thresholds = thresholds_of_run(config, workdir) if ex.target_precision else None  # Before any work.
    kb_records = prepare_detections(config, workdir)
    trained_dim, features_dim = read_manifest(records_dir)["region_dim"], read_manifest(kb_records)["region_dim"]
    if trained_dim != features_dim:
        raise DataError(f"{config.extract.features_path}: regions of {features_dim} values (appearance + 6), the "
                        f"model in {workdir} was trained on {trained_dim}: extract with the features the model reads")
    run = run_for(config, kb_records)
    params = Checkpoints(workdir).restore_params("best", run.abstract_params)
    outputs = evaluate.split_outputs(run, params, detections.SPLIT, keep_evidence=True)
    out_dir = os.path.join(workdir, KB_DIR)
    if not distributed.is_main_process():
        return out_dir
    vocab = benchmark_vocab()
    facts = training_facts(records_dir, len(vocab.entities), vocab.num_relations)
    known = facts[outputs.pairs[:, 0], :, outputs.pairs[:, 1]]  # [P, R + 1]
    keep, filters = None, {}
    if thresholds is not None:
        keep, counts = kb_filters.keep_mask(outputs.scores, outputs.evidence, outputs.instance_mask, thresholds,
                                            ex.min_evidence)
        logging.info("Filters: %s", " ".join(f"{k}={v}" for k, v in counts.items()))
        filters = {**thresholds.summary(), **counts, "min_evidence": ex.min_evidence}
    count = write_triplets(os.path.join(out_dir, "kb.jsonl"), outputs, open_records(kb_records)[0], vocab, ex.top_k,
                           ex.num_evidence, known=known, known_key="in_training_kb", with_annotations=False,
                           keep=keep)
    rows, relations = ranked_triplets(outputs.scores, ex.top_k, keep)
    with files.atomic_write(os.path.join(out_dir, "kb.csv")) as f:
        writer = csv.writer(f)
        writer.writerow(("subject", "relation", "object", "score", "in_training_kb"))
        for row, relation in zip(rows.tolist(), relations.tolist(), strict=True):
            subject, obj = outputs.pairs[row]
            writer.writerow((vocab.entities[subject], vocab.relations[relation], vocab.entities[obj],
                             f"{outputs.scores[row, relation]:.6f}", int(known[row, relation])))
    with open(os.path.join(kb_records, "kb_stats.json")) as f:
        stats = json.load(f)
    files.write_json(os.path.join(out_dir, "kb_meta.json"), {
        "features_path": os.path.abspath(ex.features_path), "checkpoint": os.path.join(os.path.abspath(workdir),
                                                                                      "checkpoints", "best"),
        "head": config.model.head, "eval_head": config.model.eval_head or config.model.head,
        "min_images": ex.min_images, "bag_size": config.data.bag_size, "sampler": config.data.sampler,
        "top_k": ex.top_k, "num_evidence": ex.num_evidence, "triplets": count,
        "in_training_kb": int(known[rows, relations].sum()), **stats, **({"filters": filters} if filters else {}),
    })
    logging.info("Wrote a knowledge base of %d triplets (%d pairs from %d images) to %s", count, stats["pairs"],
                 stats["images"], out_dir)
    return out_dir
