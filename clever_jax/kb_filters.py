"""Calibrated, cascaded filters of an extracted knowledge base (the idea of CN-AutoMIC's cascade).

1. Score: a threshold per relation, chosen on the validation split (the trained run's
   val_scores.npz) as the lowest score whose candidates at or above it reach
   `extract.target_precision` there (the most recall at that precision). A relation with fewer than
   `extract.min_val_facts` validation facts takes the global threshold (the same rule over every
   relation's candidates together); a relation whose candidates never reach the target keeps none.
2. Evidence: at least `extract.min_evidence` of the bag's instances weigh more than uniform
   (1 / the bag's instances) for the relation.

Each stage reports how many triplets it removes (kb_meta.json, "filters").
"""

from __future__ import annotations

import dataclasses

import numpy as np

SOURCES = ("relation", "global", "unreachable")


def precision_threshold(scores: np.ndarray, labels: np.ndarray, target: float) -> float | None:
    """The lowest score t with precision >= `target` among the candidates scoring >= t (scores, labels
    [K]); None when no t reaches it. Tied scores are kept or dropped together."""
    order = np.argsort(-scores, kind="stable")
    ranked, hits = scores[order], np.cumsum(labels[order])
    precision = hits / np.arange(1, len(ranked) + 1)
    tie_end = np.append(ranked[1:] != ranked[:-1], True)  # A cut only after the last of equal scores.
    ok = np.flatnonzero((precision >= target) & tie_end & (hits > 0))
    return float(ranked[ok[-1]]) if len(ok) else None


@dataclasses.dataclass(frozen=True)
class Thresholds:
    """Per-relation score thresholds.

    Attributes:
      values: float [R + 1] threshold of each relation (index 0, NA, unused; inf: keeps nothing).
      source: [R + 1] how each was chosen: "relation", "global" (too few validation facts) or
        "unreachable" (the relation's validation candidates never reach the target).
      target: the precision aimed at. global_value: the global threshold.
    """

    values: np.ndarray
    source: tuple[str, ...]
    target: float
    global_value: float

    def summary(self) -> dict:
        """Counts of each source and the relations that fell back or cannot reach the target."""
        named = lambda kind: [r for r, s in enumerate(self.source) if s == kind and r > 0]  # noqa: E731
        return {"target_precision": self.target, "global_threshold": self.global_value,
                "relations_own_threshold": len(named("relation")), "relations_global": named("global"),
                "relations_unreachable": named("unreachable")}


def choose_thresholds(val_scores: np.ndarray, val_labels: np.ndarray, target: float, min_facts: int) -> Thresholds:
    """Thresholds for `target` precision from validation scores and facts [P, R + 1] (column 0 NA).

    Raises:
      ValueError: when not even the global threshold reaches `target` on validation.
    """
    scores, labels = np.asarray(val_scores)[:, 1:], np.asarray(val_labels)[:, 1:].astype(bool)
    global_value = precision_threshold(scores.ravel(), labels.ravel(), target)
    if global_value is None:
        best = labels.ravel()[np.argsort(-scores.ravel(), kind="stable")][:1].mean() if labels.size else 0
        raise ValueError(f"no score threshold reaches precision {target} on the validation split (the top candidate "
                         f"alone has precision {best:.2f}); lower extract.target_precision")
    values, source = [np.inf], ["relation"]
    for r in range(scores.shape[1]):
        if labels[:, r].sum() < min_facts:
            values.append(global_value)
            source.append("global")
            continue
        value = precision_threshold(scores[:, r], labels[:, r], target)
        values.append(np.inf if value is None else value)
        source.append("unreachable" if value is None else "relation")
    return Thresholds(np.array(values), tuple(source), target, global_value)


def keep_mask(scores: np.ndarray, evidence: np.ndarray, instance_mask: np.ndarray, thresholds: Thresholds,
              min_evidence: int) -> tuple[np.ndarray, dict[str, int]]:
    """Which candidates pass both stages, and how many each stage removes.

    Args:
      scores: [P, R + 1]. evidence: [P, R + 1, N] instance weights. instance_mask: bool [P, N].
      thresholds: stage 1. min_evidence: stage 2 (0 turns it off).

    Returns:
      keep bool [P, R + 1] (NA never kept) and {"candidates", "removed_by_score", "removed_by_evidence", "kept"}.
    """
    by_score = scores >= thresholds.values[None, :]
    by_score[:, 0] = False
    uniform = 1.0 / np.maximum(instance_mask.sum(axis=1), 1)  # [P]
    above = ((evidence.astype(np.float32) > uniform[:, None, None] + 1e-6) & instance_mask[:, None, :]).sum(axis=2)
    keep = by_score & (above >= min_evidence)
    candidates = scores[:, 1:].size
    counts = {"candidates": candidates, "removed_by_score": int(candidates - by_score.sum()),
              "removed_by_evidence": int(by_score.sum() - keep.sum()), "kept": int(keep.sum())}
    return keep, counts
