"""Calibrated, cascaded filters of an extracted knowledge base (the idea of CN-AutoMIC's cascade).

1. Score: a threshold per relation, chosen on the validation split (the trained run's
   val_scores.npz) as the lowest score whose candidates at or above it reach
   `extract.target_precision` there (the most recall at that precision). A relation with fewer than
   `extract.min_val_facts` validation facts takes the global threshold (the same rule over every
   relation's candidates together); a relation whose candidates never reach the target keeps none.
2. Evidence: at least `extract.min_evidence` of the bag's instances weigh more than uniform
   (1 / the bag's instances) for the relation.
3. Consistency: every triplet that the predicate table (`extract.predicate_relations`, default
   the packaged data/vocab/predicate_relations.tsv) says a triplet entails, its broader wording
   on the same pair (standing on -> on), its synonym, or its inverse on the swapped pair
   (wearing -> worn by), must rank within the top `extract.consistency_quantile` of that
   relation's scores over the knowledge base's pairs (0 turns the stage off). An entailed triplet
   of a pair the knowledge base does not hold does not count against it.

Each stage reports how many triplets it removes (kb_meta.json, "filters").
"""

from __future__ import annotations

import dataclasses
import importlib.resources

import numpy as np

from clever_jax.data.jsonio import DataError
from clever_jax.data.vocab import Vocab

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


RULE_KINDS = ("implies", "synonym", "inverse")


def read_rules(path: str, vocab: Vocab) -> list[tuple[int, int, bool]]:
    """The entailments of a predicate table (module docstring; "" = the packaged one) as
    (relation, entailed relation, swapped pair) triples.

    Raises:
      DataError: naming the file and line of a line that is not `kind<TAB>predicate<TAB>predicate`
        with a kind of RULE_KINDS and two of the vocabulary's predicates.
    """
    if path:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    else:
        path = "data/vocab/predicate_relations.tsv"
        text = importlib.resources.files("clever_jax.data").joinpath("vocab", "predicate_relations.tsv").read_text()
    rules = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        fields = line.split("\t")
        if len(fields) != 3 or fields[0] not in RULE_KINDS:
            raise DataError(f"{path}, line {number}: expected one of {RULE_KINDS}, a predicate and a predicate "
                            f"separated by tabs, got {line!r}")
        a, b = (vocab.relation_index.get(name, -1) for name in fields[1:])
        if min(a, b) < 0:
            unknown = [name for name in fields[1:] if name not in vocab.relation_index]
            raise DataError(f"{path}, line {number}: {unknown[0]!r} is not a predicate of the vocabulary")
        kind = fields[0]
        rules.append((a, b, kind == "inverse"))
        if kind != "implies":
            rules.append((b, a, kind == "inverse"))
    return rules


def consistent(scores: np.ndarray, pairs: np.ndarray, rules: list[tuple[int, int, bool]],
               quantile: float) -> np.ndarray:
    """Stage 3: bool [P, R + 1], whether every entailed triplet of each candidate ranks within the top
    `quantile` of its relation's scores (scores [P, R + 1] of the ordered entity pairs [P, 2])."""
    ranks = np.argsort(np.argsort(-scores, axis=0, kind="stable"), axis=0, kind="stable")  # 0 = best of its column.
    high = ranks < quantile * len(scores)
    row_of = {pair: row for row, pair in enumerate(map(tuple, pairs.tolist()))}
    swapped = np.array([row_of.get((o, s), -1) for s, o in pairs.tolist()])
    ok = np.ones(scores.shape, bool)
    for relation, entailed, swap in rules:
        if not swap:
            ok[:, relation] &= high[:, entailed]
        else:
            ok[:, relation] &= np.where(swapped >= 0, high[np.maximum(swapped, 0), entailed], True)
    return ok


def cascade(scores: np.ndarray, above_uniform: np.ndarray, pairs: np.ndarray, thresholds: Thresholds,
            min_evidence: int, rules: list[tuple[int, int, bool]],
            quantile: float) -> tuple[list[tuple[str, np.ndarray]], dict[str, int]]:
    """The three stages in turn, and how many candidates each removes.

    Args:
      scores: [P, R + 1]. above_uniform: int [P, R + 1] instances weighing more than uniform
        (evaluate.above_uniform). pairs: [P, 2] entity pairs. thresholds: stage 1. min_evidence:
        stage 2 (0 turns it off). rules, quantile: stage 3 (read_rules; quantile 0 turns it off).

    Returns:
      The bool [P, R + 1] candidates left after each stage, as ("score" | "evidence" |
      "consistency", mask) in order (NA never kept; the last is what passes), and {"candidates",
      "removed_by_score", "removed_by_evidence", "removed_by_consistency", "kept"}.
    """
    by_score = scores >= thresholds.values[None, :]
    by_score[:, 0] = False
    by_evidence = by_score & (above_uniform >= min_evidence)
    by_consistency = by_evidence & consistent(scores, pairs, rules, quantile) if quantile else by_evidence
    stages = [("score", by_score), ("evidence", by_evidence), ("consistency", by_consistency)]
    counts, left = {"candidates": scores[:, 1:].size}, scores[:, 1:].size
    for name, mask in stages:
        counts[f"removed_by_{name}"], left = int(left - mask.sum()), int(mask.sum())
    counts["kept"] = left
    return stages, counts


def truth_of_stages(stages: list[tuple[str, np.ndarray]], pairs: np.ndarray,
                    grades: np.ndarray) -> dict[str, dict[str, float]]:
    """Precision and recall (%) of the candidates left after each stage against a generated world's
    graded truth (grades int [E, R + 1, E]; a triplet is true at grade 1 or 2), recall over the true
    triplets among all the candidates."""
    true = grades[pairs[:, 0], :, pairs[:, 1]] > 0  # [P, R + 1]
    true[:, 0] = False
    total = max(int(true.sum()), 1)
    out = {}
    for name, mask in stages:
        hits = int((mask & true).sum())
        out[name] = {"triplets": int(mask.sum()), "precision": 100 * hits / max(int(mask.sum()), 1),
                     "recall": 100 * hits / total}
    return out
