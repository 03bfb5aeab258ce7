"""A scene graph per image from the distantly trained model alone: `--mode=scene_graphs`.

  python -m clever_jax.main --mode=scene_graphs --config=CONFIG --workdir=TRAINED_WORKDIR \
      --config.extract.features_path=FEATURES.tsv [--config.extract.bundle=EXPORT_DIR]

scores every ordered pair of vocabulary objects of every image of a detector's output (or, with
`scene_graphs.images="test"`, of the trained run's test images only) as a one-instance bag
(kb/instances.py: the model's relation distribution for that pair of boxes), and writes
WORKDIR/scene_graphs/:

  scene_graphs.jsonl  one line per image: image_id and relations, each pair's best relation other
                      than NA (the graph constraint) with subject, subject_box, object, object_box
                      (x1, y1, x2, y2 pixels) and score, best first (`scene_graphs.top_k` per
                      image; 0: every pair)
  metrics.json        the counts; when the features file is the generated world's own, the test
                      images scored against the world's true interactions (`world`)

The model never sees an annotated relationship: it was trained on bag labels only. `world` scores
it as predicate classification does (evaluation/recall.py: recall@20, recall@50 and
mean_recall@50, with and without the graph constraint) on the trained run's test images, whose
pairs no training bag drew from, beside three predictors fitted on every other image's annotated
relationships (experiments/predcls.py): `frequency`, the class pair's most frequent relation, and
the instance-supervised heads `vrd_boxes` (frequency prior and box geometry) and
`vrd_boxes_appearance` (and both objects' appearance): upper bounds that see annotations.

The files are replaced together or not at all (files.atomic_folder).
"""

from __future__ import annotations

import json
import os

import ml_collections
import numpy as np
from absl import logging

from clever_jax import distributed, files
from clever_jax.data import detections, prepare
from clever_jax.data.bags import true_relations
from clever_jax.data.records import open_records
from clever_jax.data.vocab import benchmark_vocab
from clever_jax.evaluation import recall
from clever_jax.experiments import predcls
from clever_jax.kb import build, instances

OUT_DIR = "scene_graphs"
FILES = ("scene_graphs.jsonl", "metrics.json")
RECALL_AT = (20, 50)


def split_image_ids(records_dir: str, split: str) -> np.ndarray:
    """int64 [I]: the ids of the images the bags of one split of the records draw from, ascending."""
    images, bags = open_records(records_dir)
    source = bags[split]
    rows = np.unique(np.concatenate([r["images"] for r in source.__getitems__(list(range(len(source))))]))
    return np.sort([int(r["image_id"]) for r in images.__getitems__(rows.tolist())]).astype(np.int64)


def best_relations(probabilities: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each pair's best relation other than NA and its score: probabilities [M, R + 1] -> ([M], [M])."""
    relation = 1 + np.argmax(probabilities[:, 1:], axis=1)
    return relation, probabilities[np.arange(len(relation)), relation]


def write_graphs(path: str, scores: instances.InstanceScores, top_k: int) -> int:
    """Writes scene_graphs.jsonl (module docstring); returns the number of relations written."""
    vocab = benchmark_vocab()
    relation, score = best_relations(scores.probabilities)
    order = np.lexsort((-score, scores.image_ids))
    image = scores.image_ids[order]
    first = np.searchsorted(image, image, side="left")
    order = order[(np.arange(len(order)) - first < top_k) if top_k else slice(None)]
    bounds = np.flatnonzero(np.diff(scores.image_ids[order])) + 1
    box = lambda b: [round(float(x), 1) for x in b]  # noqa: E731
    with files.atomic_write(path) as f:
        for rows in np.split(order, bounds) if len(order) else []:  # One line per image, written once.
            f.write(json.dumps({"image_id": int(scores.image_ids[rows[0]]), "relations": [
                {"subject": vocab.entities[scores.subject_classes[i]], "subject_box": box(scores.subject_boxes[i]),
                 "relation": vocab.relations[relation[i]], "object": vocab.entities[scores.object_classes[i]],
                 "object_box": box(scores.object_boxes[i]), "score": round(float(score[i]), 6)} for i in rows]}) + "\n")
    return len(order)


def world_metrics(config: ml_collections.ConfigDict, workdir: str, scores: instances.InstanceScores,
                  test_ids: np.ndarray) -> dict:
    """The `world` entry of metrics.json (module docstring) on the images `test_ids`."""
    sg, vocab = config.scene_graphs, benchmark_vocab()
    world, pairs = instances.world_pairs(config, workdir)
    test = np.isin(world.image_ids, test_ids)[pairs.images]
    model = scores.probabilities[instances.locate(scores, world, pairs.select(test))]
    baselines = predcls.baseline_probabilities(world, pairs, ~test, test, sg.baseline_hidden, sg.baseline_epochs,
                                               sg.appearance_dim, config.seed)
    found = {"model": model, "frequency": baselines["freq"],
             "vrd_boxes": baselines["boxes"], "vrd_boxes_appearance": baselines["boxes_appearance"]}
    instance, relation = true_relations(world, pairs.subjects[test], pairs.objects[test])
    record = np.unique(instance * vocab.num_relations + relation)
    record_pair, record_relation = np.divmod(record, vocab.num_relations)
    image = pairs.images[test]
    out = {"test_images": int(len(np.unique(image))), "pairs": int(test.sum()), "true_records": int(len(record)),
           "pairs_with_a_true_relation": float(100 * len(np.unique(record_pair)) / max(int(test.sum()), 1))}
    for name, probabilities in found.items():
        out[name] = {constraint: recall.recall(image, probabilities, record_pair, record_relation, RECALL_AT,
                                               graph_constraint=constraint == "graph_constraint")
                     for constraint in ("graph_constraint", "no_graph_constraint")}
    return out


def run(config: ml_collections.ConfigDict, workdir: str) -> str:
    """Writes WORKDIR/scene_graphs (module docstring); returns that folder."""
    sg, path = config.scene_graphs, config.extract.features_path
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no features file (config.extract.features_path: a VinVL-style TSV, "
                                "README 'Input formats', or the authors' release folder)")
    source = build.model_source(config, workdir)
    corpus = (detections.read_release if os.path.isdir(path) else detections.read_detections)(
        path, benchmark_vocab(), source.config.data.feature_dim or None)
    test_ids = None
    if sg.images == "test":
        test_ids = split_image_ids(prepare.prepare_records(config, workdir), "test")
        rows = np.flatnonzero(np.isin(corpus.image_ids, test_ids))
    else:
        rows = np.arange(corpus.num_images)
    out_dir = os.path.join(workdir, OUT_DIR)
    scores = instances.score(source.config, source.load_params, source.region_dim, corpus, rows, out_dir)
    if not distributed.is_main_process():
        return out_dir
    metrics = {"features_path": os.path.abspath(path), "model": source.name, "images": int(len(rows)),
               "pairs": int(len(scores.image_ids)), "top_k": sg.top_k}
    if test_ids is not None and build.reads_world(config, workdir):
        metrics["world"] = world_metrics(config, workdir, scores, test_ids)
        logging.info("Against the world's truth: %s", json.dumps(metrics["world"]))
    with files.atomic_folder(out_dir, FILES) as partial:
        metrics["relations_written"] = write_graphs(os.path.join(partial, "scene_graphs.jsonl"), scores, sg.top_k)
        files.write_json(os.path.join(partial, "metrics.json"), metrics)
    logging.info("Wrote the scene graphs of %d images (%d pairs) to %s", len(rows), len(scores.image_ids), out_dir)
    return out_dir
