"""The knowledge base's calibrated filters (clever_jax/kb_filters.py)."""

from __future__ import annotations

import numpy as np
import pytest

from clever_jax import kb_filters


def test_the_lowest_threshold_that_reaches_the_precision():
    scores, labels = np.array([0.9, 0.8, 0.8, 0.5, 0.3]), np.array([1, 1, 0, 1, 0])
    assert kb_filters.precision_threshold(scores, labels, 0.75) == 0.5  # 3 of the top 4.
    assert kb_filters.precision_threshold(scores, labels, 0.8) == 0.9  # The tie at 0.8 goes together: 2 of 3.
    assert kb_filters.precision_threshold(scores, labels, 1.01) is None
    assert kb_filters.precision_threshold(scores, np.zeros(5), 0.1) is None


def validation(seed: int = 0, pairs: int = 400, relations: int = 6):
    """Scores [P, R + 1] informative about facts [P, R + 1], relation 5 with a single fact, relation 6
    with scores that tell nothing."""
    rng = np.random.default_rng(seed)
    labels = np.zeros((pairs, relations + 1), bool)
    labels[:, 1:] = rng.random((pairs, relations)) < 0.15
    labels[:, 5] = False
    labels[0, 5] = True
    scores = rng.random(labels.shape) + 1.5 * labels
    scores[:, 6] = rng.random(pairs)
    return scores, labels


def test_thresholds_reach_their_target_on_validation():
    scores, labels = validation()
    thresholds = kb_filters.choose_thresholds(scores, labels, target=0.8, min_facts=5)
    assert thresholds.source[1:] == ("relation",) * 4 + ("global", "unreachable")
    for r in range(1, 5):
        kept = scores[:, r] >= thresholds.values[r]
        assert labels[kept, r].mean() >= 0.8 and kept.sum() > 10
    assert thresholds.values[5] == thresholds.global_value and np.isinf(thresholds.values[6])
    everything = scores[:, 1:] >= thresholds.global_value
    assert labels[:, 1:][everything].mean() >= 0.8
    summary = thresholds.summary()
    assert summary["relations_global"] == [5] and summary["relations_unreachable"] == [6]
    with pytest.raises(ValueError, match="no score threshold reaches precision 0.99 on the validation split"):
        kb_filters.choose_thresholds(scores[:, [0, 6]], labels[:, [0, 6]], target=0.99, min_facts=5)


def test_the_cascade_counts_what_each_stage_removes():
    scores = np.array([[0.1, 0.9, 0.2], [0.1, 0.8, 0.7]])
    thresholds = kb_filters.Thresholds(np.array([np.inf, 0.5, 0.5]), ("relation",) * 3, 0.8, 0.5)
    evidence = np.array([[[0.5, 0.5], [0.9, 0.1], [0.5, 0.5]], [[0.5, 0.5], [0.5, 0.5], [0.6, 0.4]]])
    instance_mask = np.ones((2, 2), bool)
    keep, counts = kb_filters.keep_mask(scores, evidence, instance_mask, thresholds, min_evidence=1)
    assert keep.tolist() == [[False, True, False], [False, False, True]]  # (1, 1): only uniform evidence.
    assert counts == {"candidates": 4, "removed_by_score": 1, "removed_by_evidence": 1, "kept": 2}
    keep, counts = kb_filters.keep_mask(scores, evidence, instance_mask, thresholds, min_evidence=0)
    assert counts["kept"] == 3 and counts["removed_by_evidence"] == 0
