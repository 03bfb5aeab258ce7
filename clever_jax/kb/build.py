"""A knowledge base from unannotated images: `--mode=kb` with `config.extract.features_path`.

  python -m clever_jax.main --mode=kb --config=CONFIG --workdir=TRAINED_WORKDIR \
      --config.extract.features_path=FEATURES.tsv [--config.extract.bundle=EXPORT_DIR]

reads a detector's output alone (data/detections.py: boxes and class names, no annotations),
builds an unlabelled bag for every entity pair seen in at least `extract.min_images` images into
WORKDIR/kb/records/<hash> (reused when nothing changed), scores every relation of every bag with
the workdir's best checkpoint, or with an exported bundle (export.py; then WORKDIR is only where
the knowledge base goes, and the model's settings are the bundle's config.json), and writes
WORKDIR/kb/:

  kb.jsonl      one triplet per line, best first (`extract.top_k`; 0: all): subject, relation,
                object, score, in_training_kb (a fact of the model's training split), evidence:
                up to `extract.num_evidence` instances with image_id, subject_box and object_box
                (x1, y1, x2, y2 pixels) and weight
  kb.csv        the same triplets without evidence (subject, relation, object, score, in_training_kb)
  kb_meta.json  what made it: the features file, the checkpoint, the settings, the counts
  negatives.jsonl  informative negatives (kb/negatives.py; empty without `extract.negatives`), lines as
                kb.jsonl's, lowest score first; kb_meta.json -> negatives has their count and pool
  images.npz    with `extract.image_index`, every instance of the collection scored alone: the index
                `query --images S R O` ranks a triplet's images with (kb/image_index.py; else empty);
                on the generated world kb_meta.json -> retrieval measures it on the test facts

The files are replaced together or not at all (files.atomic_folder: WORKDIR/kb/kb.jsonl links to
current/kb.jsonl, `current` to the complete version under WORKDIR/kb/versions/), so a killed
extraction leaves the previous knowledge base whole.

Scoring streams: each batch keeps only its scores and each relation's `extract.num_evidence`
best instances (evaluate.run_eval's num_evidence), with progress and ETA in the log.

With `extract.target_precision` the triplets first pass the calibrated filters of kb/filters.py
(thresholds chosen on the run's, or the bundle's, val_scores.npz before any other work; what each
stage removed is in kb_meta.json under "filters"). When the features file is the generated
world's own, kb_meta.json's "world_truth" holds the precision and recall against the world's
graded truth of all the candidates and of what is left after each stage.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
from collections.abc import Callable
from typing import Any

import jax
import ml_collections
import numpy as np
from absl import logging

from clever_jax import distributed, files
from clever_jax.config_checks import ConfigError
from clever_jax.data import detections, prepare, text
from clever_jax.data.bags import true_relations
from clever_jax.data.jsonio import DataError, load_json
from clever_jax.data.records import open_records, read_manifest, split_facts
from clever_jax.data.vocab import benchmark_vocab
from clever_jax.evaluation import evaluate
from clever_jax.kb import export, filters, image_index, instances, negatives
from clever_jax.kb.triplets import ranked_triplets, write_triplets
from clever_jax.training import builder
from clever_jax.training.checkpoints import Checkpoints

KB_DIR = "kb"
# Written as a whole (files.atomic_folder).
KB_FILES = ("kb.jsonl", "kb.csv", "kb_meta.json", "negatives.jsonl", image_index.FILE)


def prepare_detections(config: ml_collections.ConfigDict, workdir: str) -> str:
    """Builds (or reuses) the extraction records of config.extract.features_path; returns their folder."""
    path, vocab = config.extract.features_path, benchmark_vocab()
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no features file (config.extract.features_path: a VinVL-style TSV, "
                                "README 'Input formats', or the authors' release folder)")
    inputs = detections.release_files(path) if os.path.isdir(path) else [path]
    model_dir = text.pretrained_dir(config)
    settings = config.copy_and_resolve_references()
    settings.data.update(source="detections", features_path=path)  # The fingerprint's data part.
    settings.data.min_fact_count = config.extract.min_images
    build_dir = os.path.join(workdir, KB_DIR, "records",
                             prepare.fingerprint(settings, [*inputs, os.path.join(model_dir, "vocab.txt")]))
    if os.path.isfile(os.path.join(build_dir, "kb_stats.json")):
        logging.info("Reusing the extraction records in %s", build_dir)
        return build_dir
    read = detections.read_release if os.path.isdir(path) else detections.read_detections
    corpus = read(path, vocab, config.data.feature_dim or None)
    benchmark, bags = detections.pair_bags(corpus, len(vocab.entities), config.extract.min_images,
                                           config.data.bag_size, config.data.sampler, config.data.seed)
    prepare.write_build(build_dir, corpus, benchmark, bags, model_dir)
    stats = {"images": corpus.num_images, "objects": len(corpus.object_classes), "pairs": benchmark.num_bags,
             "instances": len(bags.subjects), "candidate_instances": int(bags.available.sum()),
             "skipped": corpus.skipped}
    files.write_json(os.path.join(build_dir, "kb_stats.json"), stats)
    logging.info("Extraction bags: %s", " ".join(f"{k}={v}" for k, v in stats.items() if k != "skipped"))
    return build_dir


@dataclasses.dataclass
class ModelSource:
    """The trained model that scores the knowledge base: a workdir's best checkpoint or a bundle.

    Attributes:
      config: the settings the model is built with (the bundle's config.json with this command's
        extract, mesh, distributed and eval batch settings; else the command's config).
      load_params: abstract parameters of the built run -> the trained parameters.
      facts: bool [E, R + 1, E] the facts of its training split (what in_training_kb says).
      region_dim: the region size (appearance + 6) it was trained on.
      val_scores: the validation scores its filters are calibrated on. name: where it comes from.
    """

    config: ml_collections.ConfigDict
    load_params: Callable[[Any], Any]
    facts: np.ndarray
    region_dim: int
    val_scores: str
    name: str


def model_source(config: ml_collections.ConfigDict, workdir: str) -> ModelSource:
    """The model of config.extract.bundle, or of `workdir` (its benchmark records built or reused first).

    Raises:
      DataError: a bundle that is damaged, older than format 3, of another vocabulary, or whose
        parameters are not those of the model its config.json builds (checked before any records
        are built).
    """
    vocab, path = benchmark_vocab(), config.extract.bundle
    if not path:
        records_dir = prepare.prepare_records(config, workdir)
        checkpoint = os.path.join(os.path.abspath(workdir), "checkpoints", "best")
        return ModelSource(config, lambda abstract: Checkpoints(workdir).restore_params("best", abstract),
                           split_facts(records_dir, "train", len(vocab.entities), vocab.num_relations),
                           read_manifest(records_dir)["region_dim"], os.path.join(workdir, "val_scores.npz"),
                           checkpoint)
    if not os.path.isfile(os.path.join(path, "model.json")):
        raise FileNotFoundError(f"{path}: not an exported bundle (no model.json; --mode=export writes WORKDIR/export)")
    bundle = export.load_bundle(path)  # Checks the files against checksums.json.
    if bundle.vocab != vocab:
        raise DataError(f"{os.path.join(path, 'vocab')}: the bundle's vocabulary is not this package's "
                        "(clever_jax/data/vocab): its relation and entity ids would not match the names written")
    run_config = ml_collections.ConfigDict(load_json(os.path.join(path, "config.json")))
    for name in ("extract", "mesh", "distributed"):
        run_config[name] = config[name]
    run_config.data.eval_batch_size = config.data.eval_batch_size
    run_config.model.update(pretrained_dir=os.path.join(os.path.abspath(path), "tokenizer"), pretrained=False)
    export.check_params(bundle, run_config, path)

    def load_params(abstract: Any) -> Any:
        return jax.tree.map(lambda value, like: jax.device_put(value.astype(like.dtype), like.sharding),
                            bundle.params, abstract)

    return ModelSource(run_config, load_params, export.read_training_facts(path, vocab),
                       bundle.description["region_dim"], os.path.join(path, "val_scores.npz"), os.path.abspath(path))


def thresholds_of_run(config: ml_collections.ConfigDict, val_scores: str) -> filters.Thresholds:
    """The score thresholds for config.extract.target_precision, from the model's validation scores."""
    if not os.path.isfile(val_scores):
        raise FileNotFoundError(f"{val_scores}: extract.target_precision chooses thresholds on the model's "
                                "validation scores; run --mode=eval in its workdir first (and export again)")
    with np.load(val_scores) as val:
        try:
            thresholds = filters.choose_thresholds(val["scores"], val["labels"], config.extract.target_precision,
                                                   config.extract.min_val_facts)
        except ValueError as e:
            raise ConfigError(f"{val_scores}: {e}") from e
    summary = thresholds.summary()
    if summary["relations_global"] or summary["relations_unreachable"]:
        names = lambda ids: ", ".join(benchmark_vocab().relations[r] for r in ids) or "none"  # noqa: E731
        logging.info("Score thresholds for precision %.2f: %d relations with fewer than %d validation facts take the "
                     "global threshold %.4f (%s); %d never reach it and keep nothing (%s)", thresholds.target,
                     len(summary["relations_global"]), config.extract.min_val_facts, thresholds.global_value,
                     names(summary["relations_global"]), len(summary["relations_unreachable"]),
                     names(summary["relations_unreachable"]))
    return thresholds


def negative_thresholds_of_run(config: ml_collections.ConfigDict, val_scores: str) -> np.ndarray:
    """float [R + 1]: the negatives' score thresholds (negatives.fact_quantile_thresholds) on the model's
    validation scores (thresholds_of_run has checked that they exist)."""
    with np.load(val_scores) as val:
        try:
            return negatives.fact_quantile_thresholds(val["scores"], val["labels"], config.extract.negative_quantile,
                                                      config.extract.min_val_facts)
        except ValueError as e:
            raise ConfigError(f"{val_scores}: {e}") from e


def reads_world(config: ml_collections.ConfigDict, workdir: str) -> bool:
    """Whether config.extract.features_path is the features file of the run's generated world."""
    world_dir = config.data.world_dir or os.path.join(workdir, "world")
    features = os.path.join(world_dir, "features.tsv")
    return (config.data.source == "world" and os.path.isfile(features)
            and os.path.samefile(features, config.extract.features_path))


def world_truth(config: ml_collections.ConfigDict, workdir: str) -> np.ndarray | None:
    """The generated world's graded truth when config.extract.features_path is that world's features file."""
    if not reads_world(config, workdir):
        return None  # Not the world's features: its grades are neither needed nor, in a fresh workdir, there.
    return evaluate.world_grades(config, workdir)


def world_retrieval(config: ml_collections.ConfigDict, workdir: str, scores: instances.InstanceScores) -> dict:
    """`image_index.retrieval` of the trained run's test facts over the generated world's images (scores:
    every instance of them)."""
    vocab = benchmark_vocab()
    world, pairs = instances.world_pairs(config, workdir)
    truth = np.zeros(scores.probabilities.shape, bool)
    instance, relation = true_relations(world, pairs.subjects, pairs.objects)
    truth[instances.locate(scores, world, pairs)[instance], relation] = True
    test = split_facts(prepare.prepare_records(config, workdir), "test", len(vocab.entities), vocab.num_relations)
    facts = np.argwhere(test[:, 1:])  # (subject, relation - 1, object) of every test fact
    facts[:, 1] += 1
    return image_index.retrieval(scores, truth, facts, len(vocab.entities), config.seed)


def extract(config: ml_collections.ConfigDict, workdir: str, source: ModelSource | None = None,
            out_dir: str | None = None) -> str:
    """Builds and writes the knowledge base of config.extract.features_path (module docstring).

    Args:
      config: this command's config. workdir: the trained run's folder (with a bundle: any folder); its
        kb/records hold the extraction records.
      source: the model (default: model_source(config, workdir)). out_dir: where the knowledge base goes
        (default: WORKDIR/kb).

    Returns:
      The folder written.
    """
    ex = config.extract
    source = source or model_source(config, workdir)
    thresholds = thresholds_of_run(config, source.val_scores) if ex.target_precision else None  # Before any work.
    rules = filters.read_rules(ex.predicate_relations, benchmark_vocab()) if ex.target_precision else []
    negative_thresholds = negative_thresholds_of_run(config, source.val_scores) if ex.negatives else None
    kb_records = prepare_detections(source.config, workdir)  # The model's bag size, sampler, tokenizer.
    features_dim = read_manifest(kb_records)["region_dim"]
    if source.region_dim != features_dim:
        raise DataError(f"{ex.features_path}: regions of {features_dim} values (appearance + 6), the model in "
                        f"{source.name} was trained on {source.region_dim}: extract with the features the model reads")
    run = builder.build(source.config, kb_records)
    params = source.load_params(run.abstract_params)
    outputs = evaluate.split_outputs(run.scorer(detections.SPLIT), params, num_evidence=ex.num_evidence)
    out_dir = out_dir or os.path.join(workdir, KB_DIR)
    instance_scores = None
    if ex.image_index:  # Every instance of the collection scored alone (kb/image_index.py).
        corpus = (detections.read_release if os.path.isdir(ex.features_path) else detections.read_detections)(
            ex.features_path, benchmark_vocab(), source.config.data.feature_dim or None)
        instance_scores = instances.score(source.config, source.load_params, source.region_dim, corpus,
                                          np.arange(corpus.num_images), out_dir)
    if not distributed.is_main_process():
        return out_dir
    vocab = benchmark_vocab()
    known = source.facts[outputs.pairs[:, 0], :, outputs.pairs[:, 1]]  # [P, R + 1]
    candidates = np.ones(outputs.scores.shape, bool)
    candidates[:, 0] = False
    keep, stages, filter_summary = None, [("candidates", candidates)], {}
    if thresholds is not None:
        filtered, counts = filters.cascade(outputs.scores, outputs.above_uniform, outputs.pairs, thresholds,
                                           ex.min_evidence, rules, ex.consistency_quantile)
        logging.info("Filters: %s", " ".join(f"{k}={v}" for k, v in counts.items()))
        filter_summary = {**thresholds.summary(), **counts, "min_evidence": ex.min_evidence,
                          "consistency_quantile": ex.consistency_quantile}
        stages, keep = stages + filtered, filtered[-1][1]
    grades = world_truth(config, workdir)
    truth = filters.truth_of_stages(stages, outputs.pairs, grades) if grades is not None else None
    if truth:
        logging.info("Against the world's truth: %s", "; ".join(
            f"{name} {t['triplets']} triplets, precision {t['precision']:.1f} recall {t['recall']:.1f}"
            for name, t in truth.items()))
    ranked = ranked_triplets(outputs.scores, ex.top_k, keep)
    negative_meta, negative_rows = {}, None
    if negative_thresholds is not None:
        pool = negatives.proposals(keep, outputs.pairs, negatives.entity_kinds(vocab)) & ~keep & ~known
        negative_rows = negatives.select(outputs.scores, pool, negative_thresholds, ex.negatives)
        negative_meta = {"count": len(negative_rows[0]), "pool": int(pool.sum()), "quantile": ex.negative_quantile,
                         **(negatives.truth(*negative_rows, pool, outputs.pairs, grades) if grades is not None else {})}
        logging.info("Negatives: %s", " ".join(f"{k}={v}" for k, v in negative_meta.items()))
    retrieval = {}
    if instance_scores is not None and grades is not None:
        retrieval = world_retrieval(config, workdir, instance_scores)
        logging.info("Images of the test facts: %s", " ".join(f"{k}={v:.4g}" for k, v in retrieval.items()))
    rows, relations = ranked
    with open(os.path.join(kb_records, "kb_stats.json")) as f:
        stats = json.load(f)
    with files.atomic_folder(out_dir, KB_FILES) as partial:  # All the files replaced at once.
        images = open_records(kb_records)[0]
        count = write_triplets(os.path.join(partial, "kb.jsonl"), outputs, images, vocab, ex.top_k, ex.num_evidence,
                               known=known, known_key="in_training_kb", with_annotations=False, ranked=ranked)
        empty = np.zeros(0, np.int64)  # Without extract.negatives an empty file: every name a version lists exists.
        write_triplets(os.path.join(partial, "negatives.jsonl"), outputs, images, vocab, 0, ex.num_evidence,
                       known=known, known_key="in_training_kb", with_annotations=False,
                       ranked=negative_rows if negative_rows is not None else (empty, empty))
        image_index.write(os.path.join(partial, image_index.FILE), instance_scores, len(vocab.entities),
                          vocab.num_relations)
        with files.atomic_write(os.path.join(partial, "kb.csv")) as f:
            writer = csv.writer(f)
            writer.writerow(("subject", "relation", "object", "score", "in_training_kb"))
            for row, relation in zip(rows.tolist(), relations.tolist(), strict=True):
                subject, obj = outputs.pairs[row]
                writer.writerow((vocab.entities[subject], vocab.relations[relation], vocab.entities[obj],
                                 f"{outputs.scores[row, relation]:.6f}", int(known[row, relation])))
        files.write_json(os.path.join(partial, "kb_meta.json"), {
            "features_path": os.path.abspath(ex.features_path), "model": source.name,
            "head": source.config.model.head, "eval_head": source.config.model.eval_head or source.config.model.head,
            "min_images": ex.min_images, "bag_size": source.config.data.bag_size,
            "sampler": source.config.data.sampler,
            "top_k": ex.top_k, "num_evidence": ex.num_evidence, "triplets": count,
            "in_training_kb": int(known[rows, relations].sum()), **stats,
            **({"filters": filter_summary} if filter_summary else {}),
            **({"world_truth": truth} if truth else {}),
            **({"negatives": negative_meta} if negative_meta else {}),
            **({"retrieval": retrieval} if retrieval else {}),
        })
    logging.info("Wrote a knowledge base of %d triplets (%d pairs from %d images) to %s", count, stats["pairs"],
                 stats["images"], out_dir)
    return out_dir
