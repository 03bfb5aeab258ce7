"""Scene-graph recall and mean recall (evaluation/recall.py) on hand-counted cases."""

from __future__ import annotations

import numpy as np
import pytest

from clever_jax.evaluation import recall


def test_recall_with_and_without_the_graph_constraint():
    # Image 0: pairs 0, 1, 2; image 1: pair 3. Relations 1..3 (0 is NA).
    image = np.array([0, 0, 0, 1])
    probabilities = np.array([
        [0.1, 0.6, 0.3, 0.0],  # best 1 (0.6), then 2 (0.3)
        [0.5, 0.1, 0.0, 0.4],  # best 3 (0.4)
        [0.0, 0.2, 0.7, 0.1],  # best 2 (0.7)
        [0.9, 0.05, 0.05, 0.0],
    ])
    record_pair, record_relation = np.array([0, 0, 1, 3]), np.array([1, 2, 3, 2])
    pair, relation, rank = recall.prediction_ranks(image, probabilities, graph_constraint=True)
    assert relation.tolist() == [1, 3, 2, 1] and rank.tolist() == [1, 2, 0, 0]
    # Graph constraint: pair 0 predicts 1 only, so (0, 2) is never found; k=1 keeps pair 2 in image 0.
    got = recall.recall(image, probabilities, record_pair, record_relation, (1, 2, 3), graph_constraint=True)
    assert got["recall@1"] == 0  # image 0: 0 of 3; image 1: its one prediction is relation 1, not 2.
    assert got["recall@2"] == pytest.approx(100 * (1 / 3 + 0) / 2)
    assert got["recall@3"] == pytest.approx(100 * (2 / 3 + 0) / 2)
    # Mean recall@3: relation 1: 1/1 (image 0); 2: image 0 0/1, image 1 0/1 -> 0; 3: 1/1 -> (1 + 0 + 1) / 3.
    assert got["mean_recall@3"] == pytest.approx(100 * 2 / 3)
    # Without it, image 0 ranks 0.7 (2, r2), 0.6 (0, r1), 0.4 (1, r3), 0.3 (0, r2), ... and image 1's
    # (3, r1) and (3, r2) tie at 0.05 (random order), so (3, 2) is among its first two.
    free = recall.recall(image, probabilities, record_pair, record_relation, (3, 4), graph_constraint=False)
    assert free["recall@3"] == pytest.approx(100 * (2 / 3 + 1) / 2)
    assert free["recall@4"] == pytest.approx(100 * (3 / 3 + 1) / 2) == free["mean_recall@4"]


def test_recall_of_every_record_found_is_100_and_of_none_0():
    rng = np.random.default_rng(0)
    image = np.repeat(np.arange(5), 4)
    probabilities = rng.random((20, 6))
    best = 1 + np.argmax(probabilities[:, 1:], axis=1)
    everything = recall.recall(image, probabilities, np.arange(20), best, (4,), graph_constraint=True)
    assert everything == {"recall@4": 100.0, "mean_recall@4": 100.0}
    other = 1 + (best % 5)  # Never the predicted relation.
    assert recall.recall(image, probabilities, np.arange(20), other, (4,), graph_constraint=True)["recall@4"] == 0
    assert recall.recall(image, probabilities, np.arange(20), other, (20,), graph_constraint=False)["recall@20"] == 100


def test_recall_counts_records_among_each_images_k_best_pairs():
    image = np.array([0, 0, 0, 1, 1])
    probabilities = np.zeros((5, 5))
    probabilities[np.arange(5), [1, 2, 3, 1, 1]] = [0.9, 0.1, 0.5, 0.2, 0.8]  # Each pair's best relation.
    record_pair = np.array([0, 1, 2, 3, 3])  # image 0: three records; image 1: two on pair 3
    record_relation = np.array([1, 2, 4, 1, 2])
    got = recall.recall(image, probabilities, record_pair, record_relation, (1, 2, 3), graph_constraint=True)
    # k=1: image 0 keeps pair 0 (right), image 1 pair 4 (no record): (1/3 + 0) / 2.
    assert got["recall@1"] == pytest.approx(100 / 6)
    # k=2: image 0 adds pair 2 (wrong relation), image 1 pair 3 (one of its two): (1/3 + 1/2) / 2.
    assert got["recall@2"] == pytest.approx(250 / 6)
    # k=3: pair 1 of image 0 is right too.
    assert got["recall@3"] == pytest.approx(100 * (2 / 3 + 1 / 2) / 2)
