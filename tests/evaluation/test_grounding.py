"""Where the evidence falls: attention against the annotations and against the world's truth."""

import numpy as np
import pytest

from clever_jax.evaluation import grounding


def test_attention_against_truth_by_hand():
    attention = np.array([
        [0.5, 0.3, 0.2, 0.0],  # 3 valid, instance 0 true: mass 0.5, chance 1/3, top true, AUC 1
        [0.1, 0.9, 7.0, 7.0],  # 2 valid (junk on padding ignored), instance 0 true: 0.1, 1/2, top false, AUC 0
        [0.4, 0.4, 0.2, 0.0],  # instance 1 true: tie with a non-true one for top -> the first (false), AUC 3/4
        [0.6, 0.4, 0.0, 0.0],  # nothing true: NaN
        [0.5, 0.5, 0.0, 0.0],  # every valid instance true: AUC NaN
    ])
    truth = np.array([[1, 0, 0, 0], [1, 0, 0, 1], [0, 1, 0, 0], [0, 0, 0, 1], [1, 1, 0, 0]], dtype=bool)
    mask = np.array([[1, 1, 1, 0], [1, 1, 0, 0], [1, 1, 1, 0], [1, 1, 0, 0], [1, 1, 0, 0]], dtype=bool)
    got = grounding.attention_against_truth(attention, truth, mask)
    want = np.array([[0.5, 1 / 3, 1, 1.0], [0.1, 0.5, 0, 0.0], [0.4, 1 / 3, 0, 0.75],
                     [np.nan] * 4, [1.0, 1.0, 1, np.nan]])
    np.testing.assert_allclose(got, want, equal_nan=True)
    assert grounding.TRUTH_MEASURES[0] == "attention_on_true"


def test_attention_against_truth_of_uniform_and_perfect_attention():
    rng = np.random.default_rng(0)
    truth = rng.random((200, 8)) < 0.3
    mask = np.ones_like(truth)
    uniform = grounding.attention_against_truth(np.full(truth.shape, 1 / 8), truth, mask)
    rows = truth.any(axis=1)
    np.testing.assert_allclose(uniform[rows, 0], uniform[rows, 1])  # mass = chance
    assert np.nanmean(uniform[:, 3]) == pytest.approx(0.5)
    perfect = grounding.attention_against_truth(truth / truth.sum(axis=1, keepdims=True).clip(1), truth, mask)
    assert np.all(perfect[rows, 0] == 1) and np.all(perfect[rows, 2] == 1)
    assert np.all(np.isnan(perfect[~rows]))


def test_attention_on_annotated_with_padding():
    attention = np.array([
        [0.5, 0.3, 0.2, 0.0],  # 3 valid, instance 0 annotated: mass 0.5, chance 1/3
        [0.1, 0.9, 7.0, 7.0],  # 2 valid (junk on padding, ignored), instance 1 annotated: 0.9, chance 1/2
        [0.6, 0.4, 0.0, 0.0],  # nothing annotated: not counted
        [0.25, 0.25, 0.25, 0.25],  # annotated flag only on padding: not counted
    ])
    annotated = np.array([[1, 0, 0, 0], [0, 1, 0, 1], [0, 0, 0, 0], [0, 0, 0, 1]], dtype=bool)
    mask = np.array([[1, 1, 1, 0], [1, 1, 0, 0], [1, 1, 0, 0], [1, 1, 1, 0]], dtype=bool)
    out = grounding.attention_on_annotated(attention, annotated, mask)
    assert out["num_bags"] == 2
    assert out["attention_on_annotated"] == pytest.approx((0.5 + 0.9) / 2)
    assert out["chance"] == pytest.approx((1 / 3 + 1 / 2) / 2)
    none = grounding.attention_on_annotated(attention, np.zeros_like(annotated), mask)
    assert none["num_bags"] == 0 and np.isnan(none["attention_on_annotated"])
