"""The images of a triplet: every instance of the collection scored alone (kb/instances.py), by pair.

`--mode=kb` with `extract.image_index` writes WORKDIR/kb/images.npz (an empty index without it):

  pair_codes   int32 [M] subject entity id * E + object entity id, ascending
  image_ids    int64 [M] (within a pair, ascending)
  subject_boxes, object_boxes  float32 [M, 4] x1, y1, x2, y2 pixels
  image_sizes  int32 [M, 2] width, height
  probabilities  float16 [M, R + 1] the instance's relation scores (its one-instance bag's)
  num_entities   E

`rank` answers `python -m clever_jax.kb.query --kb=KB --images SUBJECT RELATION OBJECT`: every image
of the pair, each by its best instance's score of the relation, best first. `retrieval` measures
that order against the generated world's truth.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import numpy as np

from clever_jax.data.bags import overlap_key
from clever_jax.data.jsonio import DataError
from clever_jax.data.vocab import Vocab

if TYPE_CHECKING:  # The query and the report read the index without the model's imports.
    from clever_jax.kb.instances import InstanceScores

FILE = "images.npz"
KEYS = ("pair_codes", "image_ids", "subject_boxes", "object_boxes", "image_sizes", "probabilities",
        "num_entities")


def write(path: str, scores: InstanceScores | None, num_entities: int, num_relations: int) -> None:
    """Writes the index of `scores` (None: an empty index, which `load` names) to `path`."""
    if scores is None:
        empty = np.zeros(0, np.int64)
        arrays = dict(pair_codes=empty.astype(np.int32), image_ids=empty, subject_boxes=np.zeros((0, 4), np.float32),
                      object_boxes=np.zeros((0, 4), np.float32), image_sizes=np.zeros((0, 2), np.int32),
                      probabilities=np.zeros((0, num_relations), np.float16))
    else:
        order, codes = by_pair(scores, num_entities)
        arrays = dict(pair_codes=codes.astype(np.int32), image_ids=scores.image_ids[order],
                      subject_boxes=scores.subject_boxes[order], object_boxes=scores.object_boxes[order],
                      image_sizes=scores.image_sizes[order],
                      probabilities=scores.probabilities[order].astype(np.float16))
    with open(path, "wb") as f:
        np.savez(f, num_entities=np.int64(num_entities), **arrays)


def by_pair(scores: InstanceScores, num_entities: int) -> tuple[np.ndarray, np.ndarray]:
    """The index's row order of the scored instances: (order int64 [M], pair code int64 [M] of each row in it),
    by pair, then image id."""
    codes = scores.subject_classes.astype(np.int64) * num_entities + scores.object_classes
    order = np.lexsort((scores.image_ids, codes))
    return order, codes[order]


def load(path: str) -> dict[str, np.ndarray]:
    """The index at `path`; FileNotFoundError when absent or built without extract.image_index, DataError when
    it is not one."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no image index beside the knowledge base (run --mode=kb with "
                                "--config.extract.image_index=true)")
    try:
        with np.load(path) as index:
            arrays = {k: index[k] for k in KEYS}
    except (OSError, ValueError, KeyError) as e:
        raise DataError(f"{path}: not an image index of --mode=kb ({e}); run --mode=kb again") from e
    if not len(arrays["pair_codes"]):
        raise FileNotFoundError(f"{path}: the knowledge base was built without its image index (run --mode=kb with "
                                "--config.extract.image_index=true)")
    return arrays


def beside(real_kb_path: str) -> dict[str, np.ndarray] | None:
    """The index written with a knowledge base (beside its resolved path, so of the same version); None
    when it has none."""
    try:
        return load(os.path.join(os.path.dirname(real_kb_path), FILE))
    except FileNotFoundError:
        return None


def pair_rows(index: dict[str, np.ndarray], subject: int, obj: int) -> slice:
    """The rows of the index holding the pair (subject, obj)'s instances."""
    code = subject * int(index["num_entities"]) + obj
    return slice(*np.searchsorted(index["pair_codes"], [code, code + 1]))


def best_per_image(image_ids: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each image's best instance, images ranked by its score (ties: lower image id first).

    Args: image_ids [K] (ascending), score [K]. Returns (rows [I] into them, best first; image score [I])."""
    order = np.lexsort((-score, image_ids))
    first = order[np.diff(image_ids[order], prepend=-1) != 0]  # Each image's first: its best.
    ranked = first[np.lexsort((image_ids[first], -score[first]))]
    return ranked, score[ranked]


def rank(index: dict[str, np.ndarray], vocab: Vocab, subject: str, relation: str, obj: str, top: int) -> list[dict]:
    """The `top` images showing (subject, relation, obj) best, each with its best instance's boxes and score."""
    s, r, o = vocab.entity_index[subject], vocab.relation_index[relation], vocab.entity_index[obj]
    rows = pair_rows(index, s, o)
    image_ids = index["image_ids"][rows]
    best, score = best_per_image(image_ids, index["probabilities"][rows, r].astype(np.float32))
    box = lambda b: [round(float(x), 1) for x in b]  # noqa: E731
    return [{"image_id": int(image_ids[i]), "score": round(float(p), 6),
             "subject_box": box(index["subject_boxes"][rows][i]), "object_box": box(index["object_boxes"][rows][i]),
             "image_size": index["image_sizes"][rows][i].tolist()}
            for i, p in zip(best[:top], score[:top], strict=True)]


def average_precision(relevant: np.ndarray) -> float:
    """AP of a ranking given whether each ranked item is relevant (bool [K], at least one)."""
    hits = np.cumsum(relevant)
    return float(np.mean(hits[relevant] / (np.flatnonzero(relevant) + 1)))


def retrieval(scores: InstanceScores, truth: np.ndarray, facts: np.ndarray, num_entities: int, seed: int) -> dict:
    """mAP and P@5 (%) of ranking every image of each fact's pair by the fact's relation, beside the
    overlap sampler's order (each image by its best instance's overlap_key) and a random order.

    Args:
      scores: every instance of the collection. truth: bool [M, R + 1] the relations each truly shows.
      facts: int [F, 3] (subject, relation, object) to rank images for; those with no instance, or
        no image truly showing them, are skipped (and counted).
    """
    order, codes = by_pair(scores, num_entities)
    index = {"pair_codes": codes, "num_entities": num_entities}
    image_ids, truth = scores.image_ids[order], truth[order]
    boxes = np.concatenate([scores.subject_boxes[order], scores.object_boxes[order]])
    overlap = -overlap_key(boxes, np.arange(len(order)), np.arange(len(order)) + len(order))  # Higher is first.
    probabilities, rng = scores.probabilities[order], np.random.default_rng(seed)
    measured: dict[str, list[float]] = {k: [] for k in ("map", "p@5", "map_overlap_order", "map_random")}
    for s, r, o in facts:  # Once per extraction, over the test facts.
        rows = pair_rows(index, s, o)
        ids, shows = image_ids[rows], truth[rows, r]
        if not shows.any():
            continue
        orders = {"map": probabilities[rows, r], "map_overlap_order": overlap[rows],
                  "map_random": rng.random(len(ids))}
        _, image_of = np.unique(ids, return_inverse=True)
        image_shows = np.zeros(image_of.max() + 1, bool)
        np.logical_or.at(image_shows, image_of, shows)
        for name, score in orders.items():
            ranked = image_shows[image_of[best_per_image(ids, score)[0]]]  # bool [images], best first
            measured[name].append(100 * average_precision(ranked))
            if name == "map":
                measured["p@5"].append(100 * float(ranked[:5].mean()))
    out = {k: float(np.mean(v)) if v else float("nan") for k, v in measured.items()}
    return {**out, "facts": len(measured["map"]), "facts_skipped": int(len(facts) - len(measured["map"]))}

