"""Bag heads: how a bag of instance representations becomes relation scores.

All heads share one classifier (`RelationClassifier`: 4H -> 8H -> ReLU -> R + 1). Shapes: B bags,
N instances, D = 4H pair features, R + 1 relations (0 is NA).

  avg     bag = mean of v                       train: CE(classifier(bag))   eval: softmax
  one     bag = the instance most confident in the gold relation (train); eval: per relation,
          max over instances of the instance probability
  att     selective attention with the gold relation as query (train); eval: for each relation
          r, attention by logits[:, r], B_r = sum_j a_j^r v_j, score_r = classifier(B_r)[r]
  clever  contrastive attention: the att eval path in training too, a_j^r = softmax_j(logits_j[r] / tau),
          s_r = classifier(B_r)[r], loss = CE over s (InfoNCE over relations); as published, no
          dropout on the bags B_r (the other heads apply bag dropout to their bag)
  max     (eval only) per relation, max over instances of the instance probability
  vrd     the instance-level baseline (not distantly supervised): the classifier trained on every
          instance with the relations its own annotations state (NA when none), as a visual
          relation detector is; eval: max

Computing s_r needs only the classifier's hidden layer per relation and one column of its output
layer (`RelationClassifier.output_diagonal`, used by `contrastive_logits`): the R x R logits
matrix is never formed. In evaluation the
hidden layer is linear up to its ReLU, so W B_r + b = sum_j a_j^r (W v_j + b) where the attention
sums to 1 (a bag with at least one instance; a padding bag, with none, gets 0 instead of b): the
per-relation pre-activations mix the instances' pre-activations (N weights each) instead of
multiplying R + 1 bags of D features by W. CLEVER trains through the same path (it has no bag
dropout, which would act on B_r itself).
"""

from __future__ import annotations

import einops
import flax.linen as nn
import jax
import jax.numpy as jnp

TRAIN_HEADS = ("avg", "one", "att", "clever", "vrd")
EVAL_HEADS = (*TRAIN_HEADS, "max")
_NEG = -1e30


class RelationClassifier(nn.Module):
    """The shared MLP: [..., D] -> [..., R + 1]."""

    hidden_size: int
    num_relations: int
    dtype: jnp.dtype = jnp.float32

    def setup(self) -> None:
        self.hidden = nn.Dense(self.hidden_size, dtype=self.dtype, name="hidden")
        init = nn.initializers.lecun_normal()
        self.out_kernel = self.param("out_kernel", init, (self.hidden_size, self.num_relations))
        self.out_bias = self.param("out_bias", nn.initializers.zeros, (self.num_relations,))

    def __call__(self, x: jax.Array) -> jax.Array:
        """Logits of every relation: [..., D] -> [..., R + 1]."""
        return self.output(self.hidden(x))

    def output(self, pre: jax.Array) -> jax.Array:
        """Logits from the hidden layer's pre-activations: [..., C] -> [..., R + 1]."""
        h = nn.relu(pre)
        return (h @ self.out_kernel.astype(h.dtype)).astype(jnp.float32) + self.out_bias

    def output_diagonal(self, pre: jax.Array) -> jax.Array:
        """Logit of relation r from pre-activations r: [..., R + 1, C] -> [..., R + 1]."""
        h = nn.relu(pre)
        s = jnp.einsum("...rk,kr->...r", h, self.out_kernel.astype(h.dtype))
        return s.astype(jnp.float32) + self.out_bias


def masked_softmax(x: jax.Array, mask: jax.Array, axis: int) -> jax.Array:
    """Softmax over `axis` with masked-out entries at zero weight (float32)."""
    x = jnp.where(mask, x.astype(jnp.float32), _NEG)
    return jax.nn.softmax(x, axis=axis) * mask


def relation_attention(logits: jax.Array, mask: jax.Array, temperature: float = 1.0) -> jax.Array:
    """Per-relation attention over instances: logits [B, N, R+1], mask [B, N] -> [B, R+1, N]."""
    return masked_softmax(einops.rearrange(logits, "b n r -> b r n") / temperature, mask[:, None, :], axis=-1)


def per_relation_bags(attention: jax.Array, v: jax.Array) -> jax.Array:
    """B_r = sum_j a_j^r v_j: attention [B, R+1, N], v [B, N, D] -> [B, R+1, D] (any feature size D)."""
    return jnp.einsum("brn,bnd->brd", attention.astype(v.dtype), v)


def mean_bag(v: jax.Array, mask: jax.Array) -> jax.Array:
    """Mean of the valid instances: v [B, N, D], mask [B, N] -> [B, D]."""
    weights = mask / jnp.maximum(mask.sum(axis=1, keepdims=True), 1)
    return jnp.einsum("bn,bnd->bd", weights.astype(v.dtype), v)


def train_logits(
    head: str,
    classifier: RelationClassifier,
    v: jax.Array,
    mask: jax.Array,
    target: jax.Array,
    dropout,
    temperature: float,
) -> jax.Array:
    """Bag logits [B, R+1] whose cross-entropy with `target` [B] is the training loss; for vrd the
    instance logits [B, N, R+1] (clever.instance_loss).

    Args:
      head: one of TRAIN_HEADS.
      classifier: the shared classifier (bound).
      v: [B, N, D] instance representations. mask: bool [B, N].
      target: int [B] the gold relation the bag is trained on.
      dropout: callable applied to bag representations (avg, one, att; clever has none).
      temperature: tau of the contrastive attention.
    """
    if head == "avg":
        return classifier(dropout(mean_bag(v, mask)))
    if head == "clever":  # No bag dropout: the published CLEVER's dropout branch is unreachable.
        return contrastive_logits(classifier, v, mask, temperature)[0]
    logits = classifier(v)  # [B, N, R+1]
    if head == "vrd":
        return logits
    if head == "one":
        gold_prob = jnp.take_along_axis(jax.nn.softmax(logits), target[:, None, None], axis=2)[..., 0]  # [B, N]
        best = jnp.argmax(jnp.where(mask, gold_prob, -1.0), axis=1)
        return classifier(dropout(jnp.take_along_axis(v, best[:, None, None], axis=1)[:, 0]))
    if head == "att":
        gold_logit = jnp.take_along_axis(logits, target[:, None, None], axis=2)[..., 0]  # [B, N]
        attention = masked_softmax(gold_logit, mask, axis=1)
        return classifier(dropout(jnp.einsum("bn,bnd->bd", attention.astype(v.dtype), v)))
    raise ValueError(f"unknown training head {head!r}; expected one of {TRAIN_HEADS}")


def contrastive_logits(classifier: RelationClassifier, v: jax.Array, mask: jax.Array,
                       temperature: float) -> tuple[jax.Array, jax.Array]:
    """s_r = classifier(B_r)[r] with B_r = sum_j a_j^r v_j, a^r = softmax_j(logits_j[r] / temperature).

    Args:
      v: [B, N, D] instance representations. mask: bool [B, N].

    Returns:
      s [B, R+1] (float32; 0 pre-activations, not the hidden bias, for a bag without instances) and
      the attention a [B, R+1, N]. B_r is never formed: its pre-activations are the attention-
      weighted instance pre-activations (see the module docstring).
    """
    pre = classifier.hidden(v)  # [B, N, C]
    attention = relation_attention(classifier.output(pre), mask, temperature)
    return classifier.output_diagonal(per_relation_bags(attention, pre)), attention


def eval_scores(
    head: str, classifier: RelationClassifier, v: jax.Array, mask: jax.Array, temperature: float
) -> tuple[jax.Array, jax.Array]:
    """Relation scores of each bag and the instance weights behind them.

    Returns:
      scores: [B, R+1] (probabilities: softmax over relations, or per-relation maxima for
        one/max).
      evidence: [B, R+1, N] how much each instance supports each relation (attention for
        att/clever; the instance's probability, normalised over the bag, otherwise).
    """
    if head in ("att", "clever"):
        s, attention = contrastive_logits(classifier, v, mask, temperature if head == "clever" else 1.0)
        return jax.nn.softmax(s), attention
    logits = classifier(v)  # [B, N, R+1]
    instance_prob = einops.rearrange(jax.nn.softmax(logits), "b n r -> b r n") * mask[:, None, :]  # [B, R+1, N]
    evidence = instance_prob / jnp.maximum(instance_prob.sum(axis=-1, keepdims=True), 1e-12)
    if head == "avg":
        return jax.nn.softmax(classifier(mean_bag(v, mask))), evidence
    if head in ("one", "max", "vrd"):
        return instance_prob.max(axis=-1), evidence
    raise ValueError(f"unknown evaluation head {head!r}; expected one of {EVAL_HEADS}")
