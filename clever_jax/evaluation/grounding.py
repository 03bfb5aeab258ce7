"""Where a model's evidence falls: attention against the annotations and against the world's truth.

Every head gives, per bag and relation, weights over the bag's instances (attention for att and
clever; the instance's probability of the relation, normalised over the bag, for the others).
These functions measure how much of that weight lands on the instances that show the relation:
those whose annotations relate the pair (any data), or those that truly show the relation (the
generated world's latent truth). Fractions in [0, 1]; evaluate.split_metrics reports them in %.
"""

from __future__ import annotations

import numpy as np

__all__ = ["attention_on_annotated", "gold_relations", "TRUTH_MEASURES", "attention_against_truth"]


def attention_on_annotated(attention: np.ndarray, annotated: np.ndarray,
                           instance_mask: np.ndarray) -> dict[str, float]:
    """How much attention lands on instances whose image annotates the pair's relation.

    Args:
      attention: float [B, N]: each bag's attention over its instances, for the relation of
        interest (e.g. the bag's gold relation). It is renormalised over the valid instances, so
        mass a model left on padding does not count (a no-op when it already sums to 1 there).
      annotated: bool [B, N]: the instance's image annotates the relation between its boxes.
      instance_mask: bool [B, N]: valid (non-padding) instances.

    Returns:
      {"attention_on_annotated": mean over bags with at least one valid annotated instance of the
       attention mass on those instances,
       "chance": mean over the same bags of (#annotated valid) / (#valid), the value uniform
       attention would get,
       "num_bags": how many bags were counted}.
      Both means are NaN when no bag has an annotated instance.
    """
    attention = np.asarray(attention, dtype=np.float64)
    valid = np.asarray(instance_mask, dtype=bool)
    hit = np.asarray(annotated, dtype=bool) & valid
    if attention.ndim != 2 or attention.shape != valid.shape or attention.shape != hit.shape:
        raise ValueError(f"attention {attention.shape}, annotated and instance_mask must all be [B, N]")
    counted = hit.any(axis=1)
    if not counted.any():
        return {"attention_on_annotated": float("nan"), "chance": float("nan"), "num_bags": 0}
    attention, valid, hit = attention[counted], valid[counted], hit[counted]
    total = np.sum(np.where(valid, attention, 0.0), axis=1)
    on_hit = np.sum(np.where(hit, attention, 0.0), axis=1)
    mass = np.divide(on_hit, total, out=np.zeros_like(total), where=total > 0)
    chance = hit.sum(axis=1) / valid.sum(axis=1)
    return {"attention_on_annotated": float(mass.mean()), "chance": float(chance.mean()),
            "num_bags": int(counted.sum())}


def gold_relations(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The facts of bags: labels [P, R+1] multi-hot -> (bag [K], relation id [K], 1..R), NA left out."""
    bag, relation = np.nonzero(np.asarray(labels)[:, 1:] > 0)
    return bag, relation + 1


# The measures of `attention_against_truth`, in the order of its last axis.
TRUTH_MEASURES = ("attention_on_true", "attention_true_chance", "top_evidence_true", "attention_true_auc")


def attention_against_truth(attention: np.ndarray, truth: np.ndarray, instance_mask: np.ndarray) -> np.ndarray:
    """How well each row's attention picks the instances that truly show its relation.

    Args:
      attention: float [K, N]: a bag's weights over its instances for one relation (e.g. a gold
        relation), renormalised over the valid instances.
      truth: bool [K, N]: the instance truly shows that relation (the world's latent truth).
      instance_mask: bool [K, N]: valid (non-padding) instances.

    Returns:
      float64 [K, 4] in the order of TRUTH_MEASURES, fractions: the attention mass on the true
      instances; what uniform attention puts there (#true / #valid); 1 if the highest-weight
      instance (the first of equal ones) is true, else 0; and the ranking AUC, the probability
      that a true instance outweighs a non-true one (ties count half). A row without a true
      instance is NaN throughout; the AUC is NaN where every valid instance is true.
    """
    attention = np.asarray(attention, dtype=np.float64)
    valid = np.asarray(instance_mask, dtype=bool)
    true = np.asarray(truth, dtype=bool) & valid
    if attention.ndim != 2 or attention.shape != valid.shape or attention.shape != true.shape:
        raise ValueError(f"attention {attention.shape}, truth and instance_mask must all be [K, N]")
    weights = np.where(valid, attention, 0.0)
    total = weights.sum(axis=1)
    mass = np.divide(np.where(true, weights, 0.0).sum(axis=1), total, out=np.zeros_like(total), where=total > 0)
    num_true, num_valid = true.sum(axis=1), valid.sum(axis=1)
    chance = num_true / np.maximum(num_valid, 1)
    top = np.take_along_axis(true, np.argmax(np.where(valid, attention, -np.inf), axis=1)[:, None], axis=1)[:, 0]
    other = valid & ~true
    pairs = true[:, :, None] & other[:, None, :]  # [K, N true, N other]
    wins = (attention[:, :, None] > attention[:, None, :]) + 0.5 * (attention[:, :, None] == attention[:, None, :])
    num_pairs = pairs.sum(axis=(1, 2))
    auc = np.divide((wins * pairs).sum(axis=(1, 2)), num_pairs, out=np.full(len(mass), np.nan), where=num_pairs > 0)
    out = np.stack([mass, chance, top.astype(np.float64), auc], axis=1)
    out[num_true == 0] = np.nan
    return out
