"""The multi-source ensemble of Table 1: a weighted sum of several sources' per-candidate scores.

The paper ensembles CLEVER, RTP and Vanilla-FT (its best row). Their scores live on different
scales (probabilities, caption counts), so each source's scores are first divided by that source's
largest validation score (scores are non-negative; the scale is fitted without labels and is the
same on validation and test). The combination sum_k w_k s_k / m_k takes its weights from the grid
of the simplex with step 1 / `steps`; the weights whose validation score AUC + w x mAUC (the
checkpoint selection's) is best are applied once to test. A sum of scaled scores, rather than
of ranks: a rank average spreads one source's noise over the candidates another source is sure
of, and loses both (tests/experiments/test_ensemble.py has such a pair).
"""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np

from clever_jax.evaluation import metrics


@dataclasses.dataclass(frozen=True)
class Ensemble:
    """Fitted ensemble weights.

    Attributes:
      weights: source name -> weight (they sum to 1).
      scale: source name -> its largest validation score m (1 where that is not positive).
      val_score: the chosen weights' validation AUC + w x mAUC.
    """

    weights: dict[str, float]
    scale: dict[str, float]
    val_score: float

    def combine(self, scores: dict[str, np.ndarray]) -> np.ndarray:
        """The ensemble's scores [P, R] from every source's scores [P, R] of one split."""
        missing = self.weights.keys() - scores.keys()
        if missing:
            raise KeyError(f"the ensemble needs the scores of {sorted(missing)}")
        return sum(w * np.asarray(scores[name], np.float64) / self.scale[name] for name, w in self.weights.items())


def simplex_grid(num_sources: int, steps: int) -> np.ndarray:
    """Every weight vector [G, num_sources] of non-negative multiples of 1 / steps that sum to 1."""
    grid = [c for c in itertools.product(range(steps + 1), repeat=num_sources) if sum(c) == steps]
    return np.array(grid, np.float64) / steps


def fit(val_scores: dict[str, np.ndarray], val_labels: np.ndarray, mauc_weight: float, steps: int = 10) -> Ensemble:
    """Chooses the ensemble weights on validation.

    Args:
      val_scores: source name -> its validation scores [P, R] (non-NA relations, the same candidates).
      val_labels: bool [P, R] the validation facts.
      mauc_weight: w of AUC + w x mAUC (config.train.mauc_weight).
      steps: the weight grid's resolution.

    Returns:
      The best weights (the first on the grid among equals) and each source's scale.

    Raises:
      ValueError: shapes that differ, or a negative score.
    """
    names = list(val_scores)
    shapes = {name: np.shape(s) for name, s in val_scores.items()}
    if len(set(shapes.values())) != 1 or next(iter(shapes.values())) != np.shape(val_labels):
        raise ValueError(f"the sources' validation scores {shapes} and labels {np.shape(val_labels)} differ in shape")
    negative = [name for name, s in val_scores.items() if np.min(s) < 0]
    if negative:
        raise ValueError(f"the ensemble sums non-negative scores; {negative} have negative ones")
    scale = {name: float(np.max(s)) if np.max(s) > 0 else 1.0 for name, s in val_scores.items()}
    scaled = np.stack([np.asarray(val_scores[name], np.float64) / scale[name] for name in names])  # [K, P, R]
    best, best_score = None, -np.inf
    for weights in simplex_grid(len(names), steps):
        result = metrics.held_out_metrics(np.einsum("k,kpr->pr", weights, scaled), val_labels)
        score = result["auc"] + mauc_weight * result["mauc"]
        if score > best_score:
            best, best_score = weights, score
    return Ensemble(weights={n: float(w) for n, w in zip(names, best, strict=True)}, scale=scale,
                    val_score=float(best_score))
