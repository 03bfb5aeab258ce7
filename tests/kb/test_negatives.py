"""Informative negatives (clever_jax/kb/negatives.py): proposals, thresholds, selection, truth."""

from __future__ import annotations

import numpy as np
import pytest

from clever_jax.data.vocab import benchmark_vocab
from clever_jax.kb import negatives


def test_every_vocabulary_entity_has_a_kind() -> None:
    vocab = benchmark_vocab()
    kinds = negatives.entity_kinds(vocab)
    assert kinds.shape == (len(vocab.entities),)
    index = vocab.entity_index
    assert kinds[index["man"]] == kinds[index["woman"]] != kinds[index["horse"]] == kinds[index["dog"]]


def test_proposals_replace_one_entity_by_another_of_its_kind() -> None:
    kinds = np.array([0, 0, 1, 1, 2])  # Entities 0, 1 alike; 2, 3 alike; 4 alone.
    pairs = np.array([[0, 2], [1, 2], [0, 3], [1, 3], [4, 2], [2, 0]])
    kept = np.zeros((len(pairs), 4), bool)
    kept[0, 2] = True  # (0, r2, 2) proposes (1, r2, 2) and (0, r2, 3); (0, r2, 4) is not a pair.
    kept[4, 1] = True  # (4, r1, 2) proposes (4, r1, 3), not a pair; entity 4 has no other of its kind.
    kept[:, 0] = True  # NA is never a triplet.
    out = negatives.proposals(kept, pairs, kinds)
    assert sorted(zip(*np.nonzero(out), strict=True)) == [(1, 2), (2, 2)]


def test_thresholds_are_a_quantile_of_each_relations_validation_facts() -> None:
    rng = np.random.default_rng(0)
    scores = rng.uniform(size=(200, 4))
    labels = np.zeros((200, 4), bool)
    labels[:100, 1] = True  # Relation 1: 100 facts; relation 2: 2 facts (global quantile); relation 3: none.
    labels[:2, 2] = True
    values = negatives.fact_quantile_thresholds(scores, labels, 0.1, min_facts=5)
    assert values[0] == -np.inf
    assert values[1] == pytest.approx(np.quantile(scores[:100, 1], 0.1))
    assert values[2] == values[3] == pytest.approx(np.quantile(np.concatenate([scores[:100, 1], scores[:2, 2]]), 0.1))
    with pytest.raises(ValueError, match="no fact"):
        negatives.fact_quantile_thresholds(scores, np.zeros_like(labels), 0.1, 5)


def test_selection_keeps_the_pools_low_scores_lowest_first() -> None:
    scores = np.array([[0.0, 0.1, 0.5], [0.0, 0.05, 0.3], [0.0, 0.2, 0.01]])
    pool = np.array([[False, True, True], [False, True, False], [False, True, True]])
    thresholds = np.array([-np.inf, 0.15, 0.4])
    rows, relations = negatives.select(scores, pool, thresholds, limit=10)
    assert list(zip(rows.tolist(), relations.tolist(), strict=True)) == [(2, 2), (1, 1), (0, 1)]
    rows, _ = negatives.select(scores, pool, thresholds, limit=2)
    assert len(rows) == 2


def test_truth_is_the_false_share_of_negatives_and_pool() -> None:
    grades = np.zeros((3, 3, 3), int)
    grades[0, 1, 1] = 2  # (0, r1, 1) true.
    pairs = np.array([[0, 1], [1, 2]])
    pool = np.array([[False, True, True], [False, True, True]])
    result = negatives.truth(np.array([0, 1]), np.array([1, 1]), pool, pairs, grades)
    assert result == {"precision_vs_truth": 50.0, "pool_false_rate": 75.0}
