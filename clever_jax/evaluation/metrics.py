"""Held-out metrics as the published evaluator computes them, and the commonsense correlation.

Held-out evaluation follows the published evaluator. The candidates are every test entity pair
× every non-NA relation. Sort them by score, descending, and walk down the list:
precision_i = correct_i / (i + 1) and recall_i = correct_i / |test facts|.

* Ties: candidates with equal scores keep their order in the flattened pair-major ``[P, R]``
  matrix (pair 0 relation 1, pair 0 relation 2, ..., pair 1 relation 1, ...). A stable argsort
  of ``-score`` gives this order, and so does Python's ``sorted(..., reverse=True)`` over a list
  built pair by pair, which is what the published evaluator sorts.
* AUC: trapezoidal area under the (recall, precision) points, in curve order, from the first
  point to the last, like ``sklearn.metrics.auc(recall, precision)``. No (0, 1) point is
  prepended, so the area left of recall_0 = correct_0 / |facts| is never counted. A relation
  with a single test fact therefore has AUC 0 however it is ranked, because its recall is 1/1
  from the first point on. The published numbers include this quirk and we keep it.
* F1: the maximum over the curve of 2PR / (P + R), taken as 0 where P + R = 0.
* P@2%: precision at index ``int(0.02 * #candidates)``, the number of candidates P × R taken
  first: ``int((0.02 * P) * R)`` is one rank earlier for some sizes (P = 29, 58 or 205 with
  R = 100, where 0.02 * P is just below its decimal value).
* Macro (m-) metrics: the same curve for each relation over that relation's P candidates (ties
  in pair order), for every relation with at least one test fact. Relations without test facts
  are left out of the means. mAUC and mF1 are the means of the per-relation values. mP@2% is the
  mean of per-relation precision at index ``int(0.02 * P)``.

All metrics are returned in %. Everything is vectorised with numpy: one stable sort for the micro
curve, and one stable column-wise sort for all relations' macro curves together. Every relation
has the same number of candidates (P), so the per-relation "segments" are the columns of a
[P, R] matrix, and cumulative sums, trapezoids and maxima run along axis 0.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping

import numpy as np

from clever_jax import files
from clever_jax.data.vocab import Vocab, benchmark_vocab

__all__ = [
    "micro_curve",
    "macro_curves",
    "auc",
    "best_f1",
    "precision_at",
    "held_out_metrics",
    "spearman",
    "load_grades",
    "commonsense_correlation",
    "spearman_top",
    "precision_recall_plot",
]

TOP_FRACTION = 0.02  # P@2% and mP@2%.


def _check_scores_labels(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    scores = np.asarray(scores)
    labels = np.asarray(labels).astype(bool)
    if scores.ndim != 2 or scores.shape != labels.shape:
        raise ValueError(f"scores {scores.shape} and labels {labels.shape} must both be [pairs, relations]")
    if scores.size == 0:
        raise ValueError("no candidates to evaluate (scores is empty)")
    if not np.all(np.isfinite(scores)):
        raise ValueError("scores contain NaN or infinite values")
    return scores, labels


def micro_curve(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The micro precision-recall curve over all P × R candidates.

    Args:
      scores: float [P, R]: the score of every test pair (NA pairs included) for every non-NA
        relation; column j is relation j + 1.
      labels: bool [P, R]: the test facts.

    Returns:
      (precision [K], recall [K]) with K = P * R, as float64. Candidates are sorted by score,
      descending; equal scores keep flattened pair-major order (stable argsort of -score).

    Raises:
      ValueError: shapes differ or are not 2-D, no candidates, non-finite scores, or no facts.
    """
    scores, labels = _check_scores_labels(scores, labels)
    num_facts = int(labels.sum())
    if num_facts == 0:
        raise ValueError("labels hold no test facts: recall is undefined")
    order = np.argsort(-scores.ravel(), kind="stable")
    correct = np.cumsum(labels.ravel()[order], dtype=np.int64)
    precision = correct / np.arange(1, correct.size + 1, dtype=np.float64)
    recall = correct / float(num_facts)
    return precision, recall


def macro_curves(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-relation precision-recall curves, all relations at once.

    Args:
      scores: float [P, R]; labels: bool [P, R] (as in `micro_curve`).

    Returns:
      precision [P, R] and recall [P, R] (float64; column r is relation r + 1's curve over its P
      candidates, sorted by score descending, ties in pair order), and `evaluated` bool [R]:
      the relations with at least one test fact. Columns of relations without facts have
      recall 0 and take no part in the macro metrics.
    """
    scores, labels = _check_scores_labels(scores, labels)
    order = np.argsort(-scores, axis=0, kind="stable")  # stable per column: ties stay in pair order
    correct = np.cumsum(np.take_along_axis(labels, order, axis=0), axis=0, dtype=np.int64)
    num_facts = correct[-1]
    precision = correct / np.arange(1, scores.shape[0] + 1, dtype=np.float64)[:, None]
    recall = correct / np.maximum(num_facts, 1).astype(np.float64)
    return precision, recall, num_facts > 0


def _auc(precision: np.ndarray, recall: np.ndarray) -> np.ndarray:
    """Trapezoidal area along axis 0, in %; 0 for a curve of one point."""
    return 100.0 * np.sum(np.diff(recall, axis=0) * (precision[1:] + precision[:-1]) / 2.0, axis=0)


def _best_f1(precision: np.ndarray, recall: np.ndarray) -> np.ndarray:
    """Maximum of 2PR / (P + R) along axis 0, in %; 0 where P + R = 0."""
    total = precision + recall
    f1 = np.divide(2.0 * precision * recall, total, out=np.zeros_like(total, dtype=np.float64), where=total > 0)
    return 100.0 * np.max(f1, axis=0)


def _check_curve(precision: np.ndarray, recall: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    precision = np.asarray(precision, dtype=np.float64)
    recall = np.asarray(recall, dtype=np.float64)
    if precision.ndim != 1 or precision.shape != recall.shape or precision.size == 0:
        raise ValueError(f"precision {precision.shape} and recall {recall.shape} must be the same non-empty [K]")
    return precision, recall


def auc(precision: np.ndarray, recall: np.ndarray) -> float:
    """Area under the curve, in %: trapezoids between consecutive (recall, precision) points.

    Args:
      precision, recall: float [K], in curve order (recall non-decreasing for our curves).

    Returns:
      Σ_i (recall_{i+1} - recall_i) (precision_{i+1} + precision_i) / 2 × 100, the value
      ``sklearn.metrics.auc(recall, precision)`` gives for a non-decreasing recall. No point is
      added before the first one (see the module docstring).
    """
    precision, recall = _check_curve(precision, recall)
    return float(_auc(precision, recall))


def best_f1(precision: np.ndarray, recall: np.ndarray) -> float:
    """The maximum F1 over the curve, in %: max_i 2 P_i R_i / (P_i + R_i) (0 where P_i + R_i = 0).

    Args:
      precision, recall: float [K].
    """
    precision, recall = _check_curve(precision, recall)
    return float(_best_f1(precision, recall))


def precision_at(precision: np.ndarray, index: int) -> float:
    """Precision at position `index` of the curve, in %; an index past the end is clamped to K - 1.

    Args:
      precision: float [K].
      index: non-negative position (e.g. ``int(0.02 * K)``).
    """
    precision = np.asarray(precision, dtype=np.float64)
    if precision.ndim != 1 or precision.size == 0:
        raise ValueError(f"precision must be a non-empty [K] array, got shape {precision.shape}")
    if index < 0:
        raise ValueError(f"index must be non-negative, got {index}")
    return float(100.0 * precision[min(int(index), precision.size - 1)])


def held_out_metrics(scores: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """The six held-out metrics of the paper's Table 1, all in %.

    Args:
      scores: float [P, R]: every test pair (NA pairs included) × every non-NA relation;
        column j is relation j + 1.
      labels: bool [P, R]: the test facts.

    Returns:
      {"auc", "f1", "p@2%"}: micro curve over the P * R candidates, P@2% at index
      ``int(0.02 * (P * R))``; {"mauc", "mf1", "mp@2%"}: means over the relations with at least
      one test fact of the per-relation AUC, best F1 and precision at index ``int(0.02 * P)``.
      Indices past the end of a curve are clamped to its last point (which only happens for
      a curve of length 0, rejected anyway, since int(0.02 K) <= K - 1 for K >= 1).
    """
    scores, labels = _check_scores_labels(scores, labels)
    num_pairs, num_relations = scores.shape
    precision, recall = micro_curve(scores, labels)
    mprecision, mrecall, evaluated = macro_curves(scores, labels)
    mprecision, mrecall = mprecision[:, evaluated], mrecall[:, evaluated]
    macro_index = min(int(TOP_FRACTION * num_pairs), num_pairs - 1)
    return {
        "auc": auc(precision, recall),
        "f1": best_f1(precision, recall),
        "p@2%": precision_at(precision, int(TOP_FRACTION * (num_pairs * num_relations))),
        "mauc": float(np.mean(_auc(mprecision, mrecall))),
        "mf1": float(np.mean(_best_f1(mprecision, mrecall))),
        "mp@2%": float(100.0 * np.mean(mprecision[macro_index])),
    }


# ----------------------------------------------------------------------------- correlation


def _average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks of a 1-D array; tied values share the mean of the ranks they span."""
    order = np.argsort(values, kind="stable")
    ordered = values[order]
    starts_group = np.empty(values.size, dtype=bool)
    starts_group[:1] = True
    np.not_equal(ordered[1:], ordered[:-1], out=starts_group[1:])
    group = np.cumsum(starts_group) - 1
    starts = np.flatnonzero(starts_group)
    counts = np.diff(np.append(starts, values.size))
    mean_rank = starts + (counts + 1) / 2.0  # ranks start + 1 .. start + count
    ranks = np.empty(values.size, dtype=np.float64)
    ranks[order] = mean_rank[group]
    return ranks


def spearman(predicted: np.ndarray, truth: np.ndarray) -> float:
    """Spearman's rank correlation ρ: Pearson correlation of average ranks (ties share ranks).

    Args:
      predicted, truth: [n] numbers (flattened if not 1-D), n >= 2, finite.

    Returns:
      ρ in [-1, 1], or NaN when either input is constant (its ranks have no variance).
    """
    predicted = np.asarray(predicted, dtype=np.float64).ravel()
    truth = np.asarray(truth, dtype=np.float64).ravel()
    if predicted.shape != truth.shape:
        raise ValueError(f"predicted {predicted.shape} and truth {truth.shape} differ in size")
    if predicted.size < 2:
        raise ValueError("Spearman's rho needs at least two observations")
    if not (np.all(np.isfinite(predicted)) and np.all(np.isfinite(truth))):
        raise ValueError("spearman inputs contain NaN or infinite values")
    a = _average_ranks(predicted)
    b = _average_ranks(truth)
    a -= a.mean()
    b -= b.mean()
    denominator = np.sqrt(np.dot(a, a) * np.dot(b, b))
    if denominator == 0.0:
        return float("nan")
    return float(np.clip(np.dot(a, b) / denominator, -1.0, 1.0))


def load_grades(commonsense_json_path: str | os.PathLike, vocab: Vocab | None = None) -> np.ndarray:
    """Graded ground truth from a world's ``commonsense.json``.

    The file is ``{"entities": [...], "predicates": [...], "triplets": [{"subject", "predicate",
    "object", "grade", "commonness"}, ...]}`` with vocabulary names; only "triplets" is read.

    Args:
      commonsense_json_path: the file.
      vocab: names → ids (default: `benchmark_vocab()`); names must match exactly
        (`vocab.entity_index`, `vocab.relation_index`).

    Returns:
      int8 [E, R + 1, E]: grades[s, r, o] is the grade (0 implausible / absent, 1 plausible but
      rare, 2 common) of (subject class s, relation id r, object class o); r = 0 (NA) is all 0.
      A triplet listed twice keeps its highest grade.

    Raises:
      ValueError: naming the file and the triplet index, for an unknown entity or predicate, a
        missing key, or a grade outside 0..2.
    """
    vocab = benchmark_vocab() if vocab is None else vocab
    path = os.fspath(commonsense_json_path)
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    if not isinstance(data, Mapping) or not isinstance(data.get("triplets"), list):
        raise ValueError(f"{path}: expected an object with a 'triplets' list")
    triplets = data["triplets"]
    n = len(triplets)
    subj, rel, obj, grade = (np.zeros(n, dtype=np.int64) for _ in range(4))
    for i, t in enumerate(triplets):  # parsing JSON records; the arithmetic below is vectorised
        try:
            names = (t["subject"], t["predicate"], t["object"])
            value = t["grade"]
        except (KeyError, TypeError) as e:
            raise ValueError(f"{path}: triplet {i} lacks subject/predicate/object/grade: {t!r}") from e
        for name, index, kind in ((names[0], vocab.entity_index, "entity"),
                                  (names[1], vocab.relation_index, "predicate"),
                                  (names[2], vocab.entity_index, "entity")):
            if name not in index:
                raise ValueError(f"{path}: triplet {i}: unknown {kind} name {name!r}")
        if isinstance(value, bool) or not isinstance(value, int | float) or value not in (0, 1, 2):
            raise ValueError(f"{path}: triplet {i}: grade must be 0, 1 or 2, got {value!r}")
        subj[i] = vocab.entity_index[names[0]]
        rel[i] = vocab.relation_index[names[1]]
        obj[i] = vocab.entity_index[names[2]]
        grade[i] = int(value)
    num_entities = len(vocab.entities)
    grades = np.zeros((num_entities, vocab.num_relations, num_entities), dtype=np.int8)
    np.maximum.at(grades, (subj, rel, obj), grade.astype(np.int8))
    return grades


def _candidate_grades(scores: np.ndarray, pairs: np.ndarray, grades: np.ndarray) -> np.ndarray:
    """The grade of every candidate: int [P, R] (see `commonsense_correlation` for the arguments)."""
    scores = np.asarray(scores)
    pairs = np.asarray(pairs)
    grades = np.asarray(grades)
    if scores.ndim != 2 or pairs.shape != (scores.shape[0], 2):
        raise ValueError(f"scores {scores.shape} must be [P, R] and pairs {pairs.shape} [P, 2]")
    if grades.ndim != 3 or grades.shape[1] != scores.shape[1] + 1 or grades.shape[0] != grades.shape[2]:
        raise ValueError(f"grades {grades.shape} must be [E, R + 1, E] with R = {scores.shape[1]}")
    if pairs.size and (pairs.min() < 0 or pairs.max() >= grades.shape[0]):
        raise ValueError(f"pairs hold entity classes outside 0..{grades.shape[0] - 1}")
    # Advanced indices split by a slice put the pair axis first: [P, R + 1].
    return grades[pairs[:, 0], :, pairs[:, 1]][:, 1:]


def commonsense_correlation(scores: np.ndarray, pairs: np.ndarray, grades: np.ndarray) -> float:
    """Spearman's ρ between the predicted scores of all P × R candidates and their grades.

    Args:
      scores: float [P, R]: predictions for the test pairs; column j is relation j + 1.
      pairs: int [P, 2]: (subject class, object class) of each row of `scores`.
      grades: int [E, R + 1, E] from `load_grades` (index 1 is relation id 1; absent = 0).

    Returns:
      ρ, NaN when the scores or grades are all equal.
    """
    return spearman(np.asarray(scores).ravel(), _candidate_grades(scores, pairs, grades).ravel())


def spearman_top(scores: np.ndarray, pairs: np.ndarray, grades: np.ndarray, top_fraction: float = 0.1,
                 stride: int = 50) -> tuple[float, int]:
    """The paper's human evaluation with the graded truth in place of the annotators.

    From the top `top_fraction` of the P × R candidates by score (ties in pair-major order, as in
    `micro_curve`), every `stride`-th one (ranks 0, stride, 2 stride, ...; the paper grades
    1,200 triplets over three models, about 400 per model) is graded, and ρ is taken between
    their scores and grades.

    Args:
      scores, pairs, grades: as in `commonsense_correlation`.

    Returns:
      (ρ, the number of triplets sampled); ρ is NaN when fewer than two are sampled or their
      scores or grades are all equal.
    """
    truth = _candidate_grades(scores, pairs, grades).ravel()
    flat = np.asarray(scores, dtype=np.float64).ravel()
    if not np.all(np.isfinite(flat)):
        raise ValueError("scores contain NaN or infinite values")
    chosen = np.argsort(-flat, kind="stable")[:int(top_fraction * flat.size)][::stride]
    if chosen.size < 2:
        return float("nan"), int(chosen.size)
    return spearman(flat[chosen], truth[chosen]), int(chosen.size)


# ----------------------------------------------------------------------------- plot


def precision_recall_plot(curves: Mapping[str, tuple[np.ndarray, np.ndarray]], path: str | os.PathLike,
                          title: str = "Held-out precision-recall") -> None:
    """Writes a PNG with one precision-recall line per method.

    Args:
      curves: method name → (precision [K], recall [K]) as fractions (e.g. from `micro_curve`);
        the legend shows each curve's AUC.
      path: the PNG file; its folder is created if missing.
      title: the plot title.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # lazy: matplotlib is slow to import
    from matplotlib.figure import Figure

    if not curves:
        raise ValueError("no curves to plot")
    figure = Figure(figsize=(6.0, 4.5), dpi=120)
    FigureCanvasAgg(figure)  # Agg rendering without touching pyplot's global backend
    axes = figure.add_subplot()
    for name, (precision, recall) in curves.items():
        precision, recall = _check_curve(precision, recall)
        axes.plot(recall, precision, linewidth=1.5, label=f"{name} (AUC {auc(precision, recall):.2f})")
    axes.set_xlabel("Recall")
    axes.set_ylabel("Precision")
    axes.set_xlim(0.0, 1.0)
    axes.set_ylim(0.0, 1.02)
    axes.set_title(title)
    axes.grid(True, alpha=0.3)
    axes.legend(loc="upper right", fontsize="small")
    figure.tight_layout()
    with files.atomic_write(path, "wb") as f:
        figure.savefig(f, format="png")
