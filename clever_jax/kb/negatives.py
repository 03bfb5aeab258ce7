"""Informative negatives: triplets one entity away from a kept triplet that the model scores low.

NegatER's idea on CLEVER's scores. A kept triplet (s, r, o) proposes (s', r, o) for every other
entity s' of s's kind and (s, r, o') for every o' of o's kind (`entity_kinds`: person, animal,
vehicle, ...), wherever the knowledge base scored that pair (its images show it at least
`extract.min_images` times); the proposals that are neither kept nor facts of the model's training
split are the pool. A proposal is a negative when it scores below what all but
`extract.negative_quantile` of the relation's validation facts score (`fact_quantile_thresholds`,
chosen on the model's val_scores.npz as the filters' thresholds are; relations with fewer than
`extract.min_val_facts` validation facts take the quantile over all relations' facts). The
`extract.negatives` lowest-scoring negatives are written, most certain first.
"""

from __future__ import annotations

import numpy as np

from clever_jax.data import world_commonsense
from clever_jax.data.vocab import Vocab


def entity_kinds(vocab: Vocab) -> np.ndarray:
    """int [E]: each vocabulary entity's kind, as an index (the world's entity table: world_commonsense)."""
    kinds = world_commonsense.entity_kinds()
    missing = [name for name in vocab.entities if name not in kinds]
    if missing:
        raise ValueError(f"entities without a kind in the world's entity table: {', '.join(missing)}")
    names = sorted(set(kinds.values()))
    return np.array([names.index(kinds[name]) for name in vocab.entities])


def proposals(kept: np.ndarray, pairs: np.ndarray, kinds: np.ndarray) -> np.ndarray:
    """bool [P, R + 1]: the candidates one entity away from a kept one, replaced by another of its kind.

    Args:
      kept: bool [P, R + 1] the kept triplets (column 0, NA, is ignored). pairs: int [P, 2] each row's
        (subject, object). kinds: int [E] each entity's kind.
    """
    num_entities = len(kinds)
    row_of = np.full((num_entities, num_entities), -1)
    row_of[pairs[:, 0], pairs[:, 1]] = np.arange(len(pairs))
    alike = (kinds[:, None] == kinds[None, :]) & ~np.eye(num_entities, dtype=bool)  # [E, E]
    rows, relations = np.nonzero(kept[:, 1:])
    relations = relations + 1
    subjects, objects = pairs[rows, 0], pairs[rows, 1]
    out = np.zeros(kept.shape, bool)
    for other_rows, other in ((row_of[:, objects].T, alike[subjects]),   # [K, E]: (s', o) for every s'.
                              (row_of[subjects], alike[objects])):       # [K, E]: (s, o') for every o'.
        hit = other & (other_rows >= 0)
        out[other_rows[hit], np.broadcast_to(relations[:, None], hit.shape)[hit]] = True
    out[:, 0] = False
    return out


def fact_quantile_thresholds(val_scores: np.ndarray, val_labels: np.ndarray, quantile: float,
                             min_facts: int) -> np.ndarray:
    """float [R + 1]: each relation's `quantile` of its validation facts' scores (scores, labels [P, R + 1]);
    relations with fewer than `min_facts` facts take the quantile of all facts' scores; column 0 is -inf.

    Raises:
      ValueError: when the validation split has no fact.
    """
    scores, labels = np.asarray(val_scores)[:, 1:], np.asarray(val_labels)[:, 1:].astype(bool)
    if not labels.any():
        raise ValueError("the validation split has no fact to choose the negatives' thresholds on")
    global_value = float(np.quantile(scores[labels], quantile))
    counts = labels.sum(0)
    values = [float(np.quantile(scores[labels[:, r], r], quantile)) if counts[r] >= min_facts else global_value
              for r in range(scores.shape[1])]
    return np.array([-np.inf, *values])


def select(scores: np.ndarray, pool: np.ndarray, thresholds: np.ndarray,
           limit: int) -> tuple[np.ndarray, np.ndarray]:
    """The rows and relations [K] of the pool's candidates scoring below their relation's threshold,
    lowest score first, at most `limit`: scores and pool [P, R + 1], thresholds [R + 1]."""
    negative = pool & (scores < thresholds[None, :])
    rows, relations = np.nonzero(negative)
    order = np.argsort(scores[rows, relations], kind="stable")[:limit]
    return rows[order], relations[order]


def truth(rows: np.ndarray, relations: np.ndarray, pool: np.ndarray, pairs: np.ndarray,
          grades: np.ndarray) -> dict[str, float]:
    """Against a generated world's graded truth (int [E, R + 1, E]; grade 0 is false): the share (%) of
    the negatives that are false, and of the whole pool."""
    false = grades[pairs[:, 0], :, pairs[:, 1]] == 0  # [P, R + 1]
    return {"precision_vs_truth": 100 * float(false[rows, relations].mean()) if len(rows) else 0.0,
            "pool_false_rate": 100 * float(false[pool].mean()) if pool.any() else 0.0}
