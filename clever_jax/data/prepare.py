"""Prepare mode: inputs -> corpus -> benchmark -> bags -> TFDS records + statistics.

A build lives in `WORKDIR/records/<fingerprint>/`, where the fingerprint hashes the data config
and the inputs' names, sizes and modification times: an unchanged build is reused, a changed
one is redone in a new folder.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import shutil
import time

import ml_collections
import numpy as np
from absl import logging

from clever_jax import distributed, files
from clever_jax.config_checks import ConfigError
from clever_jax.data import release, text, world
from clever_jax.data.bags import Bags, Candidates, build_bags, enumerate_candidates
from clever_jax.data.benchmark import PAPER_SIZES, SPLITS, Benchmark, add_train_facts, build_benchmark
from clever_jax.data.jsonio import DataError
from clever_jax.data.records import MANIFEST, RECORDS_VERSION, write_records
from clever_jax.data.vg import VG_FILES, Corpus, ingest
from clever_jax.data.vocab import Vocab, benchmark_vocab, read_facts

STATS = "stats.json"
# Settings of config.data that only the loader uses; changing them does not rebuild records.
LOADER_ONLY = ("batch_size", "eval_batch_size", "worker_count", "text_len", "num_regions", "length_multiple",
               "shuffle_seed")

VG_HELP = """\
Visual Genome input missing: {missing}
Put these files in config.data.vg_dir ({vg_dir}):
  image_data.json, objects.json, relationships.json   (Visual Genome v1.4 annotations, from
  the Visual Genome website's download page; unzip them there)
and the region features in config.data.features_path ({features_path}):
  a VinVL-style TSV, one line per image: "<image_id>\\t<json>", the json holding
  {{"objects": [{{"object_id": int (optional), "rect": [x1, y1, x2, y2], "class": str,
  "feature": base64 float32 appearance vector}}, ...]}} for the annotated boxes.
Then run again, e.g. --config.data.vg_dir=/data/vg --config.data.features_path=/data/vg/features.tsv"""


def truth_path(config: ml_collections.ConfigDict, vg_dir: str) -> str | None:
    """The latent truth (interactions.json) of the generated world; None for real data."""
    return os.path.join(vg_dir, "interactions.json") if config.data.source == "world" else None


def input_paths(config: ml_collections.ConfigDict, workdir: str) -> tuple[str, str]:
    """(Visual Genome folder, features file), generating the world first when it is the source and
    its folder holds none; ConfigError when the folder is a file or holds a world of other settings
    (world.check_settings)."""
    data = config.data
    if data.source == "world":
        world_dir = data.world_dir or os.path.join(workdir, "world")
        if os.path.exists(world_dir) and not os.path.isdir(world_dir):
            raise ConfigError(f"config.data.world_dir: {world_dir} is a file; the generated world is a folder (of "
                              f"{', '.join(world.WORLD_FILES)}): point it at a new folder or the world's")
        if not all(os.path.isfile(os.path.join(world_dir, name)) for name in world.WORLD_FILES):
            logging.info("Generating the %d-image world into %s", data.world.num_images, world_dir)
            world.generate(data.world, world_dir)
        world.check_settings(data.world, world_dir)
        return world_dir, os.path.join(world_dir, "features.tsv")
    if data.source != "vg":
        raise ValueError(f"config.data.source must be 'world' or 'vg' here, found {data.source!r}")
    needed = [os.path.join(data.vg_dir, name) for name in VG_FILES] + [data.features_path]
    missing = [path for path in needed if not (data.vg_dir and data.features_path and os.path.isfile(path))]
    if missing:
        raise FileNotFoundError(
            VG_HELP.format(
                missing=", ".join(missing), vg_dir=data.vg_dir or "unset", features_path=data.features_path or "unset"
            )
        )
    return data.vg_dir, data.features_path


def input_files(config: ml_collections.ConfigDict, workdir: str) -> list[str]:
    """Every input file of a build (its fingerprint covers them), generating the world first when it
    is the source; FileNotFoundError naming what is missing and where it goes."""
    if config.data.source == "release":
        return release.input_files(config.data.release_dir)
    vg_dir, features_path = input_paths(config, workdir)
    truth = truth_path(config, vg_dir)
    added = [config.data.added_facts] if config.data.added_facts else []
    if added and not os.path.isfile(added[0]):
        raise FileNotFoundError(f"config.data.added_facts: {added[0]} is not a file (a TSV of subject, relation and "
                                "object names, one triplet per line, as --mode=bootstrap writes)")
    return [os.path.join(vg_dir, name) for name in VG_FILES] + [features_path] + ([truth] if truth else []) + added


def fingerprint(config: ml_collections.ConfigDict, files: list[str]) -> str:
    """Hash of the build-relevant config and the inputs' paths, sizes and mtimes."""
    # data.added_facts only when set: builds from before it existed keep their names.
    data = {k: v for k, v in config.data.to_dict().items() if k not in LOADER_ONLY and (v or k != "added_facts")}
    inputs = [(os.path.abspath(p), os.path.getsize(p), os.stat(p).st_mtime_ns) for p in files]
    blob = json.dumps([RECORDS_VERSION, data, config.model.pretrained_dir, inputs], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def statistics(corpus: Corpus, benchmark: Benchmark, bags: Bags, vocab: Vocab) -> dict:
    """Per-split sizes shaped like the paper's benchmark numbers, predicate frequencies, skips; with the
    world's latent truth also the instances that truly show a gold relation of their bag and the facts
    (bag, gold relation) whose bag holds such an instance."""
    instances = np.diff(bags.start)
    bag_of_instance = np.repeat(np.arange(benchmark.num_bags), instances)
    na_bag = benchmark.labels[benchmark.label_start[:-1]] == 0
    num_relations = vocab.num_relations
    gold = np.repeat(np.arange(benchmark.num_bags), np.diff(benchmark.label_start)) * num_relations + benchmark.labels
    true_bag = bag_of_instance[bags.truth_instance]
    shown = np.isin(true_bag * num_relations + bags.truth_relation, gold[benchmark.labels > 0])
    shown_facts = np.unique(true_bag[shown] * num_relations + bags.truth_relation[shown])
    shows_gold = np.zeros(len(bag_of_instance), bool)
    shows_gold[bags.truth_instance[shown]] = True
    splits, frequency = {}, {}
    for s, name in enumerate(SPLITS):
        facts = benchmark.facts(s)
        in_split = benchmark.split == s
        splits[name] = {
            "facts": len(facts),
            "entity_pairs": int((in_split & ~na_bag).sum()),
            "na_pairs": int((in_split & na_bag).sum()),
            "images": int((benchmark.image_split == s).sum()),
            "instances": int(instances[in_split].sum()),
            "candidate_instances": int(bags.available[in_split].sum()),
            "annotated_instances": int(bags.annotated[in_split[bag_of_instance]].sum()),
        }
        if corpus.true_relations is not None:
            splits[name]["instances_showing_a_gold_relation"] = int(shows_gold[in_split[bag_of_instance]].sum())
            splits[name]["facts_with_an_instance_showing_them"] = int(in_split[shown_facts // num_relations].sum())
        counts = np.bincount(facts[:, 1], minlength=vocab.num_relations)[1:]
        frequency[name] = {p: int(c) for p, c in zip(vocab.predicates, counts, strict=True) if c}
    return {
        "corpus": {
            "images": corpus.num_images,
            "objects": len(corpus.object_ids),
            "vocabulary_objects": int((corpus.object_classes >= 0).sum()),
            "relationships": len(corpus.rel_relations),
            "feature_dim": corpus.feature_dim,
        },
        "splits": splits,
        "paper": PAPER_SIZES,
        "dropped_fact_pairs_without_images": benchmark.dropped_pairs,
        "skipped": corpus.skipped,
        "predicate_frequency": frequency,
    }


def prepare(config: ml_collections.ConfigDict, workdir: str) -> str:
    """Builds (or reuses) the records for `config`; returns the build folder.

    Writes `workdir/stats.json` (a copy of the build's statistics).
    """
    model_dir = text.pretrained_dir(config)
    inputs = input_files(config, workdir) + [os.path.join(model_dir, "vocab.txt")]
    build_dir = os.path.join(workdir, "records", fingerprint(config, inputs))
    if os.path.isfile(os.path.join(build_dir, STATS)) and os.path.isfile(os.path.join(build_dir, MANIFEST)):
        logging.info("Reusing the records in %s", build_dir)
    else:
        shutil.rmtree(build_dir, ignore_errors=True)  # an interrupted earlier build
        build(config, workdir, model_dir, build_dir)
    with open(os.path.join(build_dir, STATS), "rb") as source, \
            files.atomic_write(os.path.join(workdir, STATS), "wb") as f:
        shutil.copyfileobj(source, f)
    with open(os.path.join(build_dir, STATS)) as f:
        report = skip_report(json.load(f)["skipped"])
    if report:
        logging.info("%s", report)
    others = sorted(entry.path for entry in os.scandir(os.path.join(workdir, "records"))
                    if entry.is_dir() and entry.path != build_dir)
    if others:  # Builds from other settings or inputs: derived data, left for the user to delete.
        size = 0
        for root, _, names in (walked for path in others for walked in os.walk(path)):
            for name in names:
                with contextlib.suppress(FileNotFoundError):  # Being deleted meanwhile.
                    size += os.path.getsize(os.path.join(root, name))
        logging.info("%s also holds %d other record builds (%.2f GB; other data settings or inputs): %s",
                     os.path.join(workdir, "records"), len(others), size / 1e9, ", ".join(others))
    return build_dir


def prepare_records(config: ml_collections.ConfigDict, workdir: str) -> str:
    """`prepare` in a run of one process or several; returns the records' folder.

    With several processes, process 0 builds first; the others then reuse its records (a shared
    workdir) or build the same ones on their own disk.
    """

    def build_here() -> str:
        os.makedirs(workdir, exist_ok=True)
        return prepare(config, workdir)

    main = distributed.is_main_process()
    records_dir = build_here() if main else ""
    distributed.barrier("prepare")
    return records_dir if main else build_here()


def skip_report(skipped: dict[str, int]) -> str:
    """The counted skips of ingestion, largest first, one per line ("" when nothing was skipped)."""
    lines = [f"  {count:>10,d}  {name}" for name, count in sorted(skipped.items(), key=lambda kv: (-kv[1], kv[0]))]
    return "Skipped while reading the data (largest first; also in stats.json):\n" + "\n".join(lines) if lines else ""


def check_splits(benchmark: Benchmark, data: ml_collections.ConfigDict) -> None:
    """DataError unless every split has an entity pair with a fact (a positive bag)."""
    positive = benchmark.labels[benchmark.label_start[:-1]] > 0  # [P]
    counts = {name: int((positive & (benchmark.split == s)).sum()) for s, name in enumerate(SPLITS)}
    if min(counts.values()) == 0:
        raise DataError(
            f"positive bags per split {counts}: every split needs an entity pair with a fact. Facts are the "
            f"triplets with at least config.data.min_fact_count={data.min_fact_count} relationships between "
            f"vocabulary objects of an image with features; pairs are split by config.data.split_ratios="
            f"{tuple(data.split_ratios)}. Use more images, a lower min_fact_count or larger shares.")


@dataclasses.dataclass
class Assembled:
    """What the records are written from: the corpus, every candidate instance, the benchmark, the bags
    (kept instances) and, for the authors' release, the reader's report (release.read)."""

    corpus: Corpus
    candidates: Candidates
    benchmark: Benchmark
    bags: Bags
    report: dict


def assemble(config: ml_collections.ConfigDict, workdir: str, lap=lambda stage: None) -> Assembled:
    """Ingests the inputs and builds the benchmark and bags; calls lap(stage) after each stage."""
    data, vocab = config.data, benchmark_vocab()
    report = {}
    if data.source == "release":  # Splits, facts and instance lists as the release gives them.
        corpus, candidates, benchmark, report = release.read(data, vocab)
        lap("ingest")
    else:
        vg_dir, features_path = input_paths(config, workdir)
        corpus = ingest(vg_dir, features_path, vocab, data.feature_dim or None, truth_path(config, vg_dir))
        lap("ingest")
        num_entities = len(vocab.entities)
        candidates = enumerate_candidates(corpus, num_entities)
        triplets = np.stack([corpus.object_classes[corpus.rel_subjects], corpus.rel_relations,
                             corpus.object_classes[corpus.rel_objects]], axis=1).astype(np.int64)
        benchmark = build_benchmark(
            candidates, triplets, corpus.num_images, num_entities, tuple(data.split_ratios), data.na_ratio,
            data.seed, data.min_fact_count,
        )
        check_splits(benchmark, data)
        if data.added_facts:  # Bootstrapping (kb/bootstrap.py): more distant labels of the training split.
            try:
                benchmark = add_train_facts(benchmark, candidates, read_facts(data.added_facts, vocab), num_entities)
            except ValueError as e:
                raise DataError(f"config.data.added_facts={data.added_facts}: {e}") from e
        lap("benchmark")
    bags = build_bags(
        corpus, candidates, benchmark.bag_index, benchmark.num_bags, data.bag_size, data.sampler, data.seed
    )
    lap("bags")
    return Assembled(corpus, candidates, benchmark, bags, report)


def write_build(build_dir: str, corpus: Corpus, benchmark: Benchmark, bags: Bags, model_dir: str) -> None:
    """Writes the records of `bags` (data/records.py) with the tag word pieces of the tokenizer in `model_dir`."""
    tokenizer = text.load_tokenizer(model_dir)
    pieces, lengths = text.tokenize_names(tokenizer, corpus.object_names)
    meta = {"cls_id": tokenizer.cls_token_id, "sep_id": tokenizer.sep_token_id,
            "num_relations": benchmark_vocab().num_relations, "has_truth": corpus.true_relations is not None}
    write_records(build_dir, corpus, benchmark, bags, pieces, lengths, meta)


def build(config: ml_collections.ConfigDict, workdir: str, model_dir: str, build_dir: str) -> None:
    """Runs every stage into `build_dir`, writing the statistics file last."""
    timings = {}
    clock = time.perf_counter()

    def lap(stage: str) -> None:
        nonlocal clock
        timings[stage] = round(time.perf_counter() - clock, 2)
        logging.info("%s: %.1f s", stage, timings[stage])
        clock = time.perf_counter()

    built = assemble(config, workdir, lap)
    corpus = built.corpus
    os.makedirs(build_dir, exist_ok=True)
    write_build(build_dir, corpus, built.benchmark, built.bags, model_dir)
    lap("records")
    stats = statistics(corpus, built.benchmark, built.bags, benchmark_vocab())
    if built.report:
        stats["release"] = built.report
    stats["timings_s"] = timings
    files.write_json(os.path.join(build_dir, STATS), stats)
