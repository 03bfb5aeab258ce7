"""Every instance of a detector's output scored alone: what the model says one image shows of a pair.

An instance (image, subject object, object object) is scored as a bag of one. For CLEVER that is
the instance's own relation distribution: with one instance the contrastive attention is 1, so
B_r = v and s = classifier(v); the bag score is softmax(s), the scale of every triplet score of
the knowledge base. (avg, att, one and max give the same: each reduces to softmax(classifier(v))
on one instance.) Unlike the attention weights, which are normalised within a bag, these scores
compare across bags and images, which is what ranking the images of a triplet (kb/build.py's
image index) and a scene graph per image (kb/scene_graphs.py) need.

The instances are every ordered pair of distinct vocabulary objects of the chosen images (data.bags
enumerate_candidates), written as one-instance bags into records under a folder named by their
settings (reused when nothing changed), and scored with the run's evaluation step at
data.eval_batch_size x data.bag_size instances per batch: the instances an evaluation batch holds.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import shutil

import ml_collections
import numpy as np
from absl import logging

from clever_jax import files
from clever_jax.data import detections, prepare, text
from clever_jax.data.bags import Bags, Candidates, enumerate_candidates
from clever_jax.data.benchmark import SPLITS, Benchmark
from clever_jax.data.jsonio import DataError
from clever_jax.data.vg import GEOMETRY_DIM, Corpus, ingest
from clever_jax.data.vocab import benchmark_vocab
from clever_jax.evaluation import evaluate
from clever_jax.training import builder

DONE = "instances.json"  # Written last into a records folder: the instances' identities.


@dataclasses.dataclass
class InstanceScores:
    """Scored instances, image by image (M of them).

    Attributes:
      image_ids: int64 [M]. subject_slots, object_slots: int32 [M] the two regions' positions in the
        image's features line. subject_classes, object_classes: int32 [M] entity ids.
      subject_boxes, object_boxes: float32 [M, 4] x1, y1, x2, y2 pixels.
      image_sizes: int32 [M, 2] width, height.
      probabilities: float32 [M, R + 1] the one-instance bag's relation scores (module docstring).
    """

    image_ids: np.ndarray
    subject_slots: np.ndarray
    object_slots: np.ndarray
    subject_classes: np.ndarray
    object_classes: np.ndarray
    subject_boxes: np.ndarray
    object_boxes: np.ndarray
    image_sizes: np.ndarray
    probabilities: np.ndarray


def one_instance_bags(corpus: Corpus, num_entities: int, image_rows: np.ndarray) -> tuple[Benchmark, Bags]:
    """One unlabelled bag (split detections.SPLIT) per instance of the images `image_rows` (sorted)."""
    chosen = np.zeros(corpus.num_images, bool)
    chosen[image_rows] = True
    candidates = enumerate_candidates(corpus, num_entities)
    candidates = candidates.select(chosen[candidates.images])
    count, empty = len(candidates.images), np.zeros(0, np.int64)
    if not count:
        raise DataError(f"{corpus.feature_paths[0]}: no instance to score (none of the {len(image_rows)} images "
                        "chosen has two vocabulary objects)")
    classes = corpus.object_classes
    benchmark = Benchmark(
        pairs=np.stack([classes[candidates.subjects], classes[candidates.objects]], axis=1).astype(np.int64),
        split=np.full(count, SPLITS.index(detections.SPLIT), np.int32),
        label_start=np.arange(count + 1, dtype=np.int64), labels=np.zeros(count, np.int64),
        image_split=np.where(chosen, SPLITS.index(detections.SPLIT), -1).astype(np.int32),
        bag_index=np.zeros(0, np.int32), dropped_pairs=0)
    bags = Bags(start=np.arange(count + 1, dtype=np.int64), subjects=candidates.subjects.astype(np.int64),
                objects=candidates.objects.astype(np.int64), images=candidates.images.astype(np.int64),
                available=np.ones(count, np.int64), annotation_instance=empty, annotation_relation=empty,
                truth_instance=empty, truth_relation=empty)
    return benchmark, bags


def instance_records(config: ml_collections.ConfigDict, out_dir: str, corpus: Corpus,
                     image_rows: np.ndarray) -> str:
    """Builds (or reuses) the one-instance bags of `image_rows` of the corpus of
    config.extract.features_path under OUT_DIR/records/<hash>; returns that folder."""
    path = config.extract.features_path
    inputs = detections.release_files(path) if os.path.isdir(path) else [path]
    model_dir = text.pretrained_dir(config)
    settings = config.copy_and_resolve_references()
    with settings.unlocked():  # The fingerprint's data part: the file and the images chosen.
        settings.data.update(source="instances", features_path=path,
                             images=hashlib.sha256(np.sort(corpus.image_ids[image_rows]).tobytes()).hexdigest())
    build_dir = os.path.join(out_dir, "records",
                             prepare.fingerprint(settings, [*inputs, os.path.join(model_dir, "vocab.txt")]))
    if os.path.isfile(os.path.join(build_dir, DONE)):
        logging.info("Reusing the instance records in %s", build_dir)
        return build_dir
    vocab = benchmark_vocab()
    benchmark, bags = one_instance_bags(corpus, len(vocab.entities), np.sort(image_rows))
    shutil.rmtree(build_dir, ignore_errors=True)  # An interrupted earlier build.
    prepare.write_build(build_dir, corpus, benchmark, bags, model_dir)
    files.write_json(os.path.join(build_dir, DONE), {"instances": len(bags.subjects), "images": len(image_rows)})
    logging.info("Wrote %d one-instance bags of %d images to %s", len(bags.subjects), len(image_rows), build_dir)
    return build_dir


def score(config: ml_collections.ConfigDict, load_params, region_dim: int, corpus: Corpus, image_rows: np.ndarray,
          out_dir: str) -> InstanceScores:
    """Scores every instance of the corpus's images `image_rows` (module docstring).

    Args:
      config: the model's settings (build.ModelSource.config) with extract.features_path the corpus's file.
      load_params: abstract parameters of the built run -> the trained parameters.
      region_dim: the region size (appearance + 6) the model was trained on.
      corpus: the detector's output (detections.read_detections or read_release of that file).
      out_dir: where the records go (OUT_DIR/records/<hash>).

    Raises:
      DataError: the corpus's regions are not of `region_dim` values.
    """
    if corpus.feature_dim + GEOMETRY_DIM != region_dim:
        raise DataError(f"{config.extract.features_path}: regions of {corpus.feature_dim + GEOMETRY_DIM} values "
                        f"(appearance + 6), the model was trained on {region_dim}: score with the features it reads")
    records_dir = instance_records(config, out_dir, corpus, image_rows)
    one = config.copy_and_resolve_references()
    one.data.update(bag_size=1, eval_batch_size=config.data.eval_batch_size * config.data.bag_size)
    run = builder.build(one, records_dir)
    outputs = evaluate.split_outputs(run.scorer(detections.SPLIT), load_params(run.abstract_params))
    vocab = benchmark_vocab()
    benchmark, bags = one_instance_bags(corpus, len(vocab.entities), np.sort(image_rows))
    if not np.array_equal(outputs.bags, np.arange(len(bags.subjects))):
        raise RuntimeError(f"{records_dir}: scored {len(outputs.bags)} bags, not each of the {len(bags.subjects)}")
    return InstanceScores(
        image_ids=corpus.image_ids[bags.images], subject_slots=corpus.feature_slots[bags.subjects],
        object_slots=corpus.feature_slots[bags.objects], subject_classes=benchmark.pairs[:, 0].astype(np.int32),
        object_classes=benchmark.pairs[:, 1].astype(np.int32), subject_boxes=corpus.boxes[bags.subjects],
        object_boxes=corpus.boxes[bags.objects], image_sizes=corpus.image_sizes[bags.images],
        probabilities=outputs.scores.astype(np.float32))


def instance_key(image_ids: np.ndarray, subject_slots: np.ndarray, object_slots: np.ndarray) -> np.ndarray:
    """int64 [M]: one number per (image id, subject region, object region) (regions below 2^20)."""
    return (image_ids.astype(np.int64) << 40) | (subject_slots.astype(np.int64) << 20) | object_slots.astype(np.int64)


def world_pairs(config: ml_collections.ConfigDict, workdir: str) -> tuple[Corpus, Candidates]:
    """The run's generated world with its annotations and latent truth, and every instance of it."""
    vg_dir, features = prepare.input_paths(config, workdir)
    world = ingest(vg_dir, features, benchmark_vocab(), config.data.feature_dim or None,
                   truth_path=os.path.join(vg_dir, "interactions.json"))
    return world, enumerate_candidates(world, len(benchmark_vocab().entities))


def locate(scores: InstanceScores, corpus: Corpus, pairs: Candidates) -> np.ndarray:
    """int64 [K]: the row of `scores` of each of the corpus's instances `pairs` [K] (DataError when one is missing:
    the scores are of another features file)."""
    wanted = instance_key(corpus.image_ids[pairs.images], corpus.feature_slots[pairs.subjects],
                          corpus.feature_slots[pairs.objects])
    have = instance_key(scores.image_ids, scores.subject_slots, scores.object_slots)
    order = np.argsort(have)
    at = order[np.minimum(np.searchsorted(have[order], wanted), len(have) - 1)]
    missing = int(np.sum(have[at] != wanted))
    if missing:
        raise DataError(f"{corpus.feature_paths[0]}: {missing} of the world's instances were not scored (was the "
                        "features file changed after the world was read?)")
    return at
