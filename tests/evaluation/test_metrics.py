"""Tests of clever_jax.evaluation.metrics: hand-worked curves, an independent loop implementation, Spearman."""

from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.stats

from clever_jax.data.vocab import benchmark_vocab
from clever_jax.evaluation import metrics

# ----------------------------------------------------------------------------- hand-worked example
#
# P = 50 pairs, R = 3 relations (columns 0, 1, 2 = relation ids 1, 2, 3), K = 150 candidates.
# Non-zero scores (flattened pair-major index = 3 * pair + column):
#   (pair 0, col 0) 0.9 fact      flat 0
#   (pair 1, col 0) 0.8 no        flat 3
#   (pair 2, col 1) 0.8 fact      flat 7   (ties with flat 3; flat 3 comes first)
#   (pair 3, col 2) 0.7 no        flat 11
#   (pair 4, col 0) 0.5 fact      flat 12
# All other scores are 0. One more fact sits in the zero block: (pair 10, col 0), flat 30.
# Facts: col 0 has 3 (pairs 0, 4, 10); col 1 has 1 (pair 2, the single-fact relation);
# col 2 has none (it is left out of the macro means). 4 facts in all.
#
# Micro: sorted list = flat 0, 3, 7, 11, 12, then the zeros in flat order. Flat 30 is preceded in
# the zero block by the 30 - 5 = 25 zero-scored indices below it, so it sits at position 30.
#   i:  0    1    2    3    4    5..29      30     31..149
#   ok: 1    1    2    2    3    3          4      4
#   P:  1   1/2  2/3  1/2  3/5   3/(i+1)    4/31   4/(i+1)
#   R: 1/4  1/4  1/2  1/2  3/4   3/4        1      1
# AUC: recall only rises at 1→2, 3→4 and 29→30:
#   (1/4)(1/2 + 2/3)/2 + (1/4)(1/2 + 3/5)/2 + (1/4)(3/30 + 4/31)/2
#   = 7/48 + 11/80 + (1/8)(1/10 + 4/31) = 0.311962365...  → 31.1962 %
# F1 at the points where recall rises: i0 2·1·(1/4)/(5/4) = 2/5; i2 2·(2/3)(1/2)/(7/6) = 4/7;
#   i4 2·(3/5)(3/4)/(27/20) = 2/3; i30 (8/31)/(35/31) = 8/35. Best: 2/3 → 66.667 %.
# P@2%: index int(0.02 · 150) = 3 → precision 1/2 → 50 %.
#
# Macro, column 0 (3 facts): sorted pairs 0, 1, 4, then zeros in pair order 2, 3, 5, ..., so pair
# 10 is at position 3 + |{2, 3, 5, 6, 7, 8, 9}| = 10.
#   i:  0    1    2    3..9      10     11..49
#   P:  1   1/2  2/3   2/(i+1)   3/11   3/(i+1)
#   R: 1/3  1/3  2/3   2/3       1      1
#   AUC = (1/3)(1/2 + 2/3)/2 + (1/3)(2/10 + 3/11)/2 = 7/36 + 13/165 = 541/1980 → 27.3232 %
#   F1: i0 1/2; i2 2/3; i10 (6/11)/(14/11) = 3/7. Best 2/3.
#   P at index int(0.02 · 50) = 1: 1/2.
# Macro, column 1 (single fact, ranked first): P = 1/(i+1), R = 1 at every point, so the
#   trapezoids have zero width: AUC = 0 (published sklearn.metrics.auc behaviour). F1 at i0 = 1.
#   P at index 1: 1/2.
# Means over columns 0 and 1: mAUC = (27.3232 + 0)/2, mF1 = (66.667 + 100)/2, mP@2% = 50.

MICRO_AUC = 100 * (7 / 48 + 11 / 80 + (1 / 8) * (1 / 10 + 4 / 31))
COL0_AUC = 100 * 541 / 1980


def hand_example() -> tuple[np.ndarray, np.ndarray]:
    scores = np.zeros((50, 3))
    labels = np.zeros((50, 3), dtype=bool)
    for pair, col, score, fact in [(0, 0, 0.9, True), (1, 0, 0.8, False), (2, 1, 0.8, True),
                                   (3, 2, 0.7, False), (4, 0, 0.5, True), (10, 0, 0.0, True)]:
        scores[pair, col] = score
        labels[pair, col] = fact
    return scores, labels


def test_hand_micro_curve():
    scores, labels = hand_example()
    precision, recall = metrics.micro_curve(scores, labels)
    assert precision.shape == recall.shape == (150,)
    np.testing.assert_allclose(precision[:5], [1, 1 / 2, 2 / 3, 1 / 2, 3 / 5])
    np.testing.assert_allclose(recall[:5], [1 / 4, 1 / 4, 1 / 2, 1 / 2, 3 / 4])
    np.testing.assert_allclose(precision[29:31], [3 / 30, 4 / 31])
    np.testing.assert_allclose(recall[29:31], [3 / 4, 1])
    np.testing.assert_allclose(precision[-1], 4 / 150)
    assert metrics.auc(precision, recall) == pytest.approx(MICRO_AUC, rel=1e-12)
    assert metrics.best_f1(precision, recall) == pytest.approx(200 / 3)
    assert metrics.precision_at(precision, int(0.02 * 150)) == pytest.approx(50.0)


def test_hand_macro_curves():
    scores, labels = hand_example()
    precision, recall, evaluated = metrics.macro_curves(scores, labels)
    assert precision.shape == recall.shape == (50, 3)
    np.testing.assert_array_equal(evaluated, [True, True, False])
    np.testing.assert_allclose(precision[[0, 1, 2, 9, 10], 0], [1, 1 / 2, 2 / 3, 2 / 10, 3 / 11])
    np.testing.assert_allclose(recall[[0, 1, 2, 9, 10], 0], [1 / 3, 1 / 3, 2 / 3, 2 / 3, 1])
    assert metrics.auc(precision[:, 0], recall[:, 0]) == pytest.approx(COL0_AUC, rel=1e-12)
    assert metrics.auc(precision[:, 1], recall[:, 1]) == 0.0
    assert metrics.best_f1(precision[:, 1], recall[:, 1]) == pytest.approx(100.0)


def test_hand_held_out_metrics():
    scores, labels = hand_example()
    result = metrics.held_out_metrics(scores, labels)
    expected = {"auc": MICRO_AUC, "f1": 200 / 3, "p@2%": 50.0,
                "mauc": COL0_AUC / 2, "mf1": (200 / 3 + 100) / 2, "mp@2%": 50.0}
    assert result.keys() == expected.keys()
    for key, value in expected.items():
        assert result[key] == pytest.approx(value, rel=1e-12), key
    assert all(isinstance(v, float) for v in result.values())


def test_tie_order_is_pair_major():
    # Two tied candidates: the fact has the larger flattened index, so it comes second.
    scores = np.array([[0.5, 0.5]])
    precision, recall = metrics.micro_curve(scores, np.array([[False, True]]))
    np.testing.assert_allclose(precision, [0, 1 / 2])
    np.testing.assert_allclose(recall, [0, 1])
    precision, _ = metrics.micro_curve(scores, np.array([[True, False]]))
    np.testing.assert_allclose(precision, [1, 1 / 2])


def test_relation_without_facts_is_excluded():
    scores, labels = hand_example()
    base = metrics.held_out_metrics(scores, labels)
    # Changing the scores of the fact-less column changes the micro metrics but no macro one.
    scores[:, 2] = np.linspace(1.0, 2.0, 50)
    changed = metrics.held_out_metrics(scores, labels)
    for key in ("mauc", "mf1", "mp@2%"):
        assert changed[key] == pytest.approx(base[key])
    assert changed["auc"] < base["auc"]


# ----------------------------------------------------------------------------- independent reference


def reference_metrics(scores: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """The published evaluator written out literally: Python sort, loops, explicit trapezoids."""

    def curve(items, num_facts):
        items = sorted(items, key=lambda item: item[0], reverse=True)  # stable, like the original
        precision, recall, correct = [], [], 0
        for i, (_, fact) in enumerate(items):
            correct += fact
            precision.append(correct / (i + 1))
            recall.append(correct / num_facts)
        return precision, recall

    def area(precision, recall):
        total = 0.0
        for i in range(1, len(recall)):
            total += (recall[i] - recall[i - 1]) * (precision[i] + precision[i - 1]) / 2
        return 100 * total

    def f1(precision, recall):
        return 100 * max(2 * p * r / (p + r) if p + r > 0 else 0.0 for p, r in zip(precision, recall, strict=True))

    num_pairs, num_relations = scores.shape
    items = [(scores[p, r], bool(labels[p, r])) for p in range(num_pairs) for r in range(num_relations)]
    precision, recall = curve(items, int(labels.sum()))
    out = {"auc": area(precision, recall), "f1": f1(precision, recall),
           "p@2%": 100 * precision[int(0.02 * len(items))]}
    per_relation = []
    for r in range(num_relations):
        if labels[:, r].sum() == 0:
            continue
        p, rc = curve([(scores[i, r], bool(labels[i, r])) for i in range(num_pairs)], int(labels[:, r].sum()))
        per_relation.append((area(p, rc), f1(p, rc), 100 * p[int(0.02 * num_pairs)]))
    out["mauc"], out["mf1"], out["mp@2%"] = (float(np.mean(v)) for v in zip(*per_relation, strict=True))
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_reference_loop(seed):
    rng = np.random.default_rng(seed)
    num_pairs, num_relations = 120, 9
    labels = rng.random((num_pairs, num_relations)) < rng.uniform(0.02, 0.2, size=num_relations)
    labels[:, 0] = False  # a relation without facts
    labels[:, 1] = False
    labels[rng.integers(num_pairs), 1] = True  # a relation with a single fact
    # Coarse scores so ties are frequent, with facts scoring somewhat higher.
    scores = np.round(rng.random((num_pairs, num_relations)) + 0.5 * labels, 1)
    ours = metrics.held_out_metrics(scores, labels)
    reference = reference_metrics(scores, labels)
    for key, value in reference.items():
        assert ours[key] == pytest.approx(value, rel=1e-9, abs=1e-9), key


@pytest.mark.parametrize("num_pairs", [29, 58, 205])
def test_top_two_percent_index_at_sizes_where_the_product_order_matters(num_pairs):
    """P@2% indexes at int(0.02 * (P * R)); int((0.02 * P) * R) is one rank earlier at these sizes."""
    num_relations = 100
    index = int(0.02 * (num_pairs * num_relations))
    assert int((0.02 * num_pairs) * num_relations) == index - 1  # the sizes the issue names
    scores = -np.arange(num_pairs * num_relations, dtype=np.float64).reshape(num_pairs, num_relations)
    labels = np.zeros(scores.shape, bool)
    labels.flat[index] = True  # the only fact is exactly at the P@2% rank: precision 1 / (index + 1)
    rng = np.random.default_rng(num_pairs)
    more = 3 * num_relations // 4  # other facts, for the macro metrics
    labels[rng.integers(num_pairs, size=more), rng.integers(num_relations, size=more)] = True
    ours = metrics.held_out_metrics(scores, labels)
    assert ours["p@2%"] == pytest.approx(100 * labels.flat[:index + 1].sum() / (index + 1))
    reference = reference_metrics(scores, labels)
    for key, value in reference.items():
        assert ours[key] == pytest.approx(value, rel=1e-9, abs=1e-9), key
    macro_index = int(0.02 * num_pairs)  # the per-relation curves' index
    column = np.argsort(-scores, axis=0, kind="stable")
    per_relation = [100 * labels[column[:macro_index + 1, r], r].mean()
                    for r in range(num_relations) if labels[:, r].any()]
    assert ours["mp@2%"] == pytest.approx(float(np.mean(per_relation)))


def test_perfect_ranking():
    rng = np.random.default_rng(3)
    labels = rng.random((400, 20)) < 0.05
    scores = labels + 0.1 * rng.random(labels.shape)  # every fact above every non-fact
    num_facts = int(labels.sum())
    result = metrics.held_out_metrics(scores, labels)
    # Precision is 1 from recall 1/F to 1; the area left of the first point is not counted.
    assert result["auc"] == pytest.approx(100 * (1 - 1 / num_facts))
    assert result["f1"] == pytest.approx(100.0)
    assert result["mf1"] == pytest.approx(100.0)


def test_random_scores_give_fact_rate():
    rng = np.random.default_rng(4)
    labels = rng.random((2000, 100)) < 0.02
    result = metrics.held_out_metrics(rng.random(labels.shape), labels)
    rate = 100 * labels.mean()
    assert result["auc"] == pytest.approx(rate, abs=0.3)
    assert result["p@2%"] == pytest.approx(rate, abs=0.5)


def test_input_errors():
    with pytest.raises(ValueError, match="no test facts"):
        metrics.micro_curve(np.zeros((3, 2)), np.zeros((3, 2), bool))
    with pytest.raises(ValueError, match="must both be"):
        metrics.held_out_metrics(np.zeros((3, 2)), np.zeros((2, 3), bool))
    with pytest.raises(ValueError, match="NaN"):
        metrics.micro_curve(np.array([[np.nan, 1.0]]), np.array([[True, False]]))
    assert metrics.precision_at(np.array([1.0, 0.5]), 10) == 50.0  # clamped to the last point


# ----------------------------------------------------------------------------- Spearman / commonsense


@pytest.mark.parametrize("seed", [0, 1])
def test_spearman_matches_scipy_with_ties(seed):
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, 3, size=500)  # graded 0/1/2: heavy ties
    predicted = np.round(truth + rng.normal(size=500), 1)  # ties too
    expected = scipy.stats.spearmanr(predicted, truth).statistic
    assert metrics.spearman(predicted, truth) == pytest.approx(expected, rel=1e-12)
    assert metrics.spearman(predicted, predicted) == pytest.approx(1.0)
    assert metrics.spearman(predicted, -predicted) == pytest.approx(-1.0)
    assert np.isnan(metrics.spearman(predicted, np.ones(500)))


def test_load_grades_and_correlation(tmp_path):
    vocab = benchmark_vocab()
    e, p = vocab.entities, vocab.predicates
    triplets = [
        {"subject": e[0], "predicate": p[0], "object": e[1], "grade": 2, "commonness": 3.0},
        {"subject": e[0], "predicate": p[3], "object": e[1], "grade": 1, "commonness": 1.0},
        {"subject": e[2], "predicate": p[99], "object": e[0], "grade": 1, "commonness": 0.5},
    ]
    path = tmp_path / "commonsense.json"
    path.write_text(json.dumps({"entities": list(e), "predicates": list(p), "triplets": triplets}))
    grades = metrics.load_grades(path)
    num_e, num_r = len(e), len(p)
    assert grades.shape == (num_e, num_r + 1, num_e) and grades.dtype == np.int8
    assert grades[0, 1, 1] == 2 and grades[0, 4, 1] == 1 and grades[2, 100, 0] == 1
    assert grades.sum() == 4 and grades[:, 0].sum() == 0

    pairs = np.array([[0, 1], [2, 0], [5, 6]])
    scores = np.zeros((3, num_r))
    scores[0, 0], scores[0, 3], scores[1, 99] = 0.9, 0.6, 0.5
    truth = np.zeros((3, num_r))
    truth[0, 0], truth[0, 3], truth[1, 99] = 2, 1, 1
    expected = scipy.stats.spearmanr(scores.ravel(), truth.ravel()).statistic
    assert metrics.commonsense_correlation(scores, pairs, grades) == pytest.approx(expected)

    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"triplets": [triplets[0], {**triplets[1], "predicate": "levitating over"}]}))
    with pytest.raises(ValueError, match=r"bad\.json.*triplet 1.*levitating over"):
        metrics.load_grades(bad)


def test_spearman_top_samples_every_fiftieth_of_the_top_tenth():
    """The paper's protocol: of the top 10 % of candidates by score, ranks 0, 50, 100, ... are graded."""
    rng = np.random.default_rng(5)
    num_e = 8
    grades = rng.integers(0, 3, size=(num_e, 101, num_e)).astype(np.int8)
    grades[:, 0] = 0
    pairs = rng.integers(0, num_e, size=(300, 2))
    scores = np.round(rng.random((300, 100)), 3)  # ties: pair-major order decides
    got, count = metrics.spearman_top(scores, pairs, grades)
    flat = scores.ravel()
    ranked = sorted(range(flat.size), key=lambda i: -flat[i])  # stable: ties keep pair-major order
    sample = ranked[:3000][::50]
    truth = np.array([grades[pairs[i // 100, 0], i % 100 + 1, pairs[i // 100, 1]] for i in sample])
    assert count == 60
    assert got == pytest.approx(scipy.stats.spearmanr(flat[sample], truth).statistic)
    assert np.isnan(metrics.spearman_top(scores[:10, :10], pairs[:10], grades[:, :11])[0])  # fewer than two


# ----------------------------------------------------------------------------- plot


def test_plot_writes_png(tmp_path):
    rng = np.random.default_rng(0)
    labels = rng.random((100, 10)) < 0.05
    curves = {"random": metrics.micro_curve(rng.random(labels.shape), labels),
              "oracle": metrics.micro_curve(labels + rng.random(labels.shape), labels)}
    path = tmp_path / "plots" / "pr.png"
    metrics.precision_recall_plot(curves, path)
    data = path.read_bytes()
    assert len(data) > 1000 and data[:8] == b"\x89PNG\r\n\x1a\n"
