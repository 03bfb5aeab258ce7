"""The knowledge base's calibrated filters (clever_jax/kb/filters.py)."""

from __future__ import annotations

import numpy as np
import pytest

from clever_jax.data.jsonio import DataError
from clever_jax.data.vocab import benchmark_vocab
from clever_jax.evaluation import evaluate
from clever_jax.kb import filters


def test_the_lowest_threshold_that_reaches_the_precision():
    scores, labels = np.array([0.9, 0.8, 0.8, 0.5, 0.3]), np.array([1, 1, 0, 1, 0])
    assert filters.precision_threshold(scores, labels, 0.75) == 0.5  # 3 of the top 4.
    assert filters.precision_threshold(scores, labels, 0.8) == 0.9  # The tie at 0.8 goes together: 2 of 3.
    assert filters.precision_threshold(scores, labels, 1.01) is None
    assert filters.precision_threshold(scores, np.zeros(5), 0.1) is None


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
    thresholds = filters.choose_thresholds(scores, labels, target=0.8, min_facts=5)
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
        filters.choose_thresholds(scores[:, [0, 6]], labels[:, [0, 6]], target=0.99, min_facts=5)


def test_the_cascade_counts_what_each_stage_removes():
    scores = np.array([[0.1, 0.9, 0.2], [0.1, 0.8, 0.7]])
    thresholds = filters.Thresholds(np.array([np.inf, 0.5, 0.5]), ("relation",) * 3, 0.8, 0.5)
    evidence = np.array([[[0.5, 0.5], [0.9, 0.1], [0.5, 0.5]], [[0.5, 0.5], [0.5, 0.5], [0.6, 0.4]]])
    above = evaluate.above_uniform(evidence, np.ones((2, 2), bool))
    assert above.tolist() == [[0, 1, 0], [0, 0, 1]]
    pairs = np.array([[0, 1], [1, 0]])
    stages, counts = filters.cascade(scores, above, pairs, thresholds, 1, [], 0.5)
    assert [name for name, _ in stages] == ["score", "evidence", "consistency"]
    assert stages[-1][1].tolist() == [[False, True, False], [False, False, True]]  # (1, 1): only uniform evidence.
    assert counts == {"candidates": 4, "removed_by_score": 1, "removed_by_evidence": 1, "removed_by_consistency": 0,
                      "kept": 2}
    _, counts = filters.cascade(scores, above, pairs, thresholds, 0, [], 0.5)
    assert counts["kept"] == 3 and counts["removed_by_evidence"] == 0
    # Relation 1 entails relation 2 on the swapped pair: (1, r1, 0) needs (0, r2, 1), the lower half of r2.
    _, counts = filters.cascade(scores, above, pairs, thresholds, 0, [(1, 2, True)], 0.5)
    assert counts["removed_by_consistency"] == 1 and counts["kept"] == 2


def test_consistency_needs_what_a_triplet_entails_to_rank_high():
    scores = np.zeros((4, 3))
    scores[:, 1] = [0.9, 0.1, 0.8, 0.2]  # Relation 1 ("on"): high for rows 0 and 2.
    scores[:, 2] = 1.0  # Relation 2 ("standing on") entails 1 on the same pair.
    pairs = np.array([[0, 1], [1, 0], [0, 2], [5, 6]])
    ok = filters.consistent(scores, pairs, [(2, 1, False)], quantile=0.5)
    assert ok[:, 2].tolist() == [True, False, True, False] and ok[:, 1].all()
    # Inverse: (s, 1, o) needs (o, 2, s) in the top quarter of relation 2; rows 2 and 3's swapped pairs are
    # not in the KB: nothing against them.
    scores[:, 2] = [0.1, 0.9, 0.5, 0.5]
    ok = filters.consistent(scores, pairs, [(1, 2, True)], quantile=0.25)
    assert ok[:, 1].tolist() == [True, False, True, True]


def test_the_packaged_predicate_table_and_bad_tables(tmp_path):
    vocab = benchmark_vocab()
    rules = filters.read_rules("", vocab)
    r = vocab.relation_index
    assert (r["standing on"], r["on"], False) in rules and (r["on"], r["standing on"], False) not in rules
    assert {(r["wearing"], r["worn by"], True), (r["worn by"], r["wearing"], True)} <= set(rules)
    assert {(r["wears"], r["wearing"], False), (r["wearing"], r["wears"], False)} <= set(rules)
    path = tmp_path / "relations.tsv"
    path.write_text("# comment\nimplies\tstanding on\ton\nimplies\tstanding on\tonn\n")
    with pytest.raises(DataError, match=r"relations.tsv, line 3: 'onn' is not a predicate of the vocabulary"):
        filters.read_rules(str(path), vocab)
    path.write_text("entails standing on on\n")
    with pytest.raises(DataError, match=r"line 1: expected one of \('implies', 'synonym', 'inverse'\)"):
        filters.read_rules(str(path), vocab)


def test_precision_and_recall_of_each_stage_against_graded_truth():
    grades = np.zeros((3, 3, 3), np.int8)
    grades[0, 1, 1] = 2
    grades[1, 2, 0] = 1
    grades[0, 2, 1] = 1
    pairs = np.array([[0, 1], [1, 0]])
    everything = np.array([[False, True, True], [False, True, True]])
    kept = np.array([[False, True, False], [False, True, False]])
    truth = filters.truth_of_stages([("candidates", everything), ("score", kept)], pairs, grades)
    assert truth["candidates"] == {"triplets": 4, "precision": 75.0, "recall": 100.0}
    assert truth["score"] == {"triplets": 2, "precision": 50.0, "recall": pytest.approx(100 / 3)}
