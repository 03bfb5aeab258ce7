"""Scene-graph recall per image, as predicate classification measures it (Lu et al., 2016; Zellers et
al., 2018), and mean recall over relations (Tang et al., 2019 / Chen et al., 2019).

Every pair of an image is given (boxes and classes); a model scores its relations. With the graph
constraint each pair predicts its best relation other than NA; without it every (pair, relation)
is a prediction. An image's K best predictions are kept, and a record (pair, relation) to recall
is found when that prediction is among them. recall@K is the share of an image's records found,
averaged over the images with a record; mean recall@K averages, for each relation, the share of
its records found per image over the images that have one, then over the relations.
"""

from __future__ import annotations

import numpy as np


def prediction_ranks(image: np.ndarray, probabilities: np.ndarray, graph_constraint: bool
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The predictions and their rank within their image (0 = best; equal scores in random order, seed 0).

    Args:
      image: int [M] each pair's image. probabilities: [M, R + 1] its relation scores (0 is NA).

    Returns:
      pair int64 [Q], relation int64 [Q] (1..R) and rank int64 [Q] of the Q predictions (Q = M with
      the graph constraint, M x R without).
    """
    m, classes = probabilities.shape
    if graph_constraint:
        pair = np.arange(m)
        relation = 1 + np.argmax(probabilities[:, 1:], axis=1)
        score = probabilities[pair, relation]
    else:
        pair = np.repeat(np.arange(m), classes - 1)
        relation = np.tile(np.arange(1, classes), m)
        score = probabilities[:, 1:].ravel()
    ties = np.random.default_rng(0).random(len(score))
    order = np.lexsort((ties, -score, image[pair]))
    sorted_image = image[pair][order]
    rank = np.empty(len(order), np.int64)
    rank[order] = np.arange(len(order)) - np.searchsorted(sorted_image, sorted_image, side="left")
    return pair, relation.astype(np.int64), rank


def recall(image: np.ndarray, probabilities: np.ndarray, record_pair: np.ndarray, record_relation: np.ndarray,
           ks: tuple[int, ...], graph_constraint: bool) -> dict[str, float]:
    """recall@K and mean_recall@K (%) for each K of `ks` (module docstring).

    Args:
      image: int [M] each pair's image. probabilities: [M, R + 1].
      record_pair, record_relation: int [L] the distinct records to recall, as pair indices and relation ids.
    """
    classes = probabilities.shape[1]
    pair, relation, rank = prediction_ranks(image, probabilities, graph_constraint)
    if graph_constraint:
        found_rank = np.where(relation[record_pair] == record_relation, rank[record_pair], np.iinfo(np.int64).max)
    else:
        found_rank = rank[record_pair * (classes - 1) + record_relation - 1]
    record_image = image[record_pair]
    images = image.max(initial=0) + 1
    cell = record_image.astype(np.int64) * classes + record_relation  # (image, relation) of each record
    out = {}
    for k in ks:
        found = found_rank < k
        records, hits = (np.bincount(record_image, weights=w, minlength=images) for w in (None, found))
        out[f"recall@{k}"] = float(100 * np.mean(hits[records > 0] / records[records > 0]))
        records, hits = (np.bincount(cell, weights=w, minlength=images * classes).reshape(images, classes)
                         for w in (None, found))
        share = hits / np.maximum(records, 1)  # [images, R + 1]: per image and relation
        shown = (records > 0).sum(axis=0)
        out[f"mean_recall@{k}"] = float(100 * np.mean(share.sum(axis=0)[shown > 0] / shown[shown > 0]))
    return out
