"""The multi-source ensemble (baselines/ensemble.py): weights chosen on validation only."""

from __future__ import annotations

import numpy as np
import pytest

from clever_jax.evaluation import metrics
from clever_jax.experiments.baselines import ensemble


def test_the_weight_grid():
    grid = ensemble.simplex_grid(3, 10)
    assert grid.shape == (66, 3) and np.allclose(grid.sum(axis=1), 1) and (grid >= 0).all()


def facts(rng: np.random.Generator, shape=(200, 6)) -> np.ndarray:
    return rng.random(shape) < 0.1


def test_the_weights_come_from_validation_only():
    """The source that is informative on validation takes the weight even where it is noise on test."""
    rng = np.random.default_rng(0)
    val_labels, test_labels = facts(rng), facts(rng)
    informative = lambda labels: 0.5 * labels + rng.random(labels.shape)  # noqa: E731  (AUC well below 100)
    val = {"oracle_on_val": informative(val_labels), "noise": rng.random(val_labels.shape)}
    test = {"oracle_on_val": rng.random(test_labels.shape), "noise": informative(test_labels)}
    fitted = ensemble.fit(val, val_labels, mauc_weight=1.0)
    assert fitted.weights["oracle_on_val"] >= 0.8
    on_test = metrics.held_out_metrics(fitted.combine(test), test_labels)["auc"]
    assert on_test < metrics.held_out_metrics(test["noise"], test_labels)["auc"] / 2
    with pytest.raises(KeyError, match="noise"):
        fitted.combine({"oracle_on_val": test["oracle_on_val"]})


def test_complementary_sources_beat_each_alone_on_different_scales():
    """Source a knows relations 0-2, source b (caption-like counts) knows 3-5: the ensemble knows all."""
    rng = np.random.default_rng(1)
    labels = facts(rng)
    a, b = rng.random(labels.shape), rng.poisson(1.0, labels.shape).astype(np.float64)
    a[:, :3] += labels[:, :3]
    b[:, 3:] += 50 * labels[:, 3:]
    fitted = ensemble.fit({"a": a, "b": b}, labels, mauc_weight=1.0)
    alone = [metrics.held_out_metrics(s, labels) for s in (a, b)]
    assert 0.2 <= fitted.weights["a"] <= 0.8 and fitted.scale == {"a": a.max(), "b": b.max()}
    assert fitted.val_score > max(m["auc"] + m["mauc"] for m in alone) + 50
    ranks = [np.argsort(np.argsort(s, axis=None)).reshape(s.shape) for s in (a, b)]  # A rank average loses both.
    rank_average = metrics.held_out_metrics(ranks[0] + ranks[1], labels)
    assert rank_average["auc"] + rank_average["mauc"] < min(m["auc"] + m["mauc"] for m in alone)


def test_mismatched_sources_are_named():
    labels = np.zeros((4, 3), bool)
    with pytest.raises(ValueError, match="differ in shape"):
        ensemble.fit({"a": np.zeros((4, 3)), "b": np.zeros((5, 3))}, labels, 1.0)
    with pytest.raises(ValueError, match=r"non-negative scores; \['b'\]"):
        ensemble.fit({"a": np.zeros((4, 3)), "b": -np.ones((4, 3))}, labels, 1.0)
