"""The CLEVER model: instance encoder + shared relation classifier + a bag head."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from clever_jax.models import heads
from clever_jax.models.dropout import Dropout
from clever_jax.models.encoder import EncoderConfig, InstanceEncoder
from clever_jax.models.packing import PACKING_KEYS
from clever_jax.models.region_pair import RegionPairEncoder

ENCODER_INPUTS = ("text_ids", "text_mask", "regions", "region_mask", "subject_span", "object_span")
ENCODERS = {"vlp": InstanceEncoder, "cnn": RegionPairEncoder}


class Clever(nn.Module):
    """Scores the relations of bags of instances.

    Batch keys (see clever_jax.data.pipeline): text_ids/text_mask [B, N, Lt], regions [B, N, Lr, F],
    region_mask [B, N, Lr], subject_span/object_span [B, N, 2], instance_mask [B, N].

    Attributes:
      encoder: the instance encoder's configuration (hidden size H).
      num_relations: R + 1.
      head: training head, one of heads.TRAIN_HEADS.
      eval_head: evaluation head, one of heads.EVAL_HEADS.
      temperature: tau of the contrastive attention.
      bag_dropout: dropout on the bag representation of avg, one and att in training (clever has none).
      classifier_width: the classifier's hidden layer has classifier_width x H units.
      encoder_type: "vlp" (InstanceEncoder: a BERT over tags and regions, the paper's) or "cnn"
        (RegionPairEncoder: the paper's CNN-based ablation, an MLP over the two query regions).
    """

    encoder: EncoderConfig
    num_relations: int
    head: str = "clever"
    eval_head: str = "clever"
    temperature: float = 1.0
    bag_dropout: float = 0.2
    classifier_width: int = 8
    encoder_type: str = "vlp"

    def setup(self) -> None:
        if self.encoder_type not in ENCODERS:
            raise ValueError(f"unknown encoder {self.encoder_type!r}; expected one of {sorted(ENCODERS)}")
        self.instance_encoder = ENCODERS[self.encoder_type](self.encoder)
        width = self.classifier_width * self.encoder.hidden_size
        self.classifier = heads.RelationClassifier(width, self.num_relations, dtype=self.encoder.dtype)
        self.dropout = Dropout(self.bag_dropout)

    def encode(self, batch: dict, *, train: bool) -> jax.Array:
        """Pair representations v [B, N, 4H]; a packed batch (its PACKING_KEYS) computes real tokens only."""
        inputs = [batch[k] for k in ENCODER_INPUTS]
        if PACKING_KEYS[0] not in batch:
            return self.instance_encoder(*inputs, deterministic=not train)
        if self.encoder_type != "vlp":
            raise ValueError(f"packed batches are for the VLP encoder, not {self.encoder_type!r}")
        return self.instance_encoder(*inputs, deterministic=not train, packed=tuple(batch[k] for k in PACKING_KEYS))

    def train_logits(self, batch: dict, target: jax.Array) -> jax.Array:
        """Bag logits [B, R+1] for the cross-entropy with target [B] (dropout on); vrd: instance logits [B, N, R+1]."""
        v = self.encode(batch, train=True)
        return heads.train_logits(
            self.head, self.classifier, v, batch["instance_mask"], target,
            lambda x: self.dropout(x, deterministic=False), self.temperature,
        )

    def __call__(self, batch: dict) -> tuple[jax.Array, jax.Array]:
        """Evaluation: scores [B, R+1] and evidence weights [B, R+1, N]."""
        v = self.encode(batch, train=False)
        return heads.eval_scores(self.eval_head, self.classifier, v, batch["instance_mask"], self.temperature)


def instance_loss(logits: jax.Array, annotations: jax.Array, instance_mask: jax.Array) -> jax.Array:
    """The vrd head's loss: mean over real instances of the cross-entropy with their annotated
    relations (the mean over them; NA for an instance without annotations). With gradient
    accumulation it is the mean of the micro-batches' means, which weighs instances equally only
    when the micro-batches hold as many real instances.

    Args:
      logits: [B, N, R+1]. annotations: bool [B, N, R+1] (relation 0 unused). instance_mask: bool [B, N]
        real instances of real bags.
    """
    log_probs = jax.nn.log_softmax(logits.astype(jnp.float32))
    annotations = jnp.asarray(annotations)
    targets = annotations.at[..., 0].set(~annotations[..., 1:].any(axis=-1)).astype(jnp.float32)
    per_instance = -(log_probs * targets).sum(axis=-1) / targets.sum(axis=-1)
    return (per_instance * instance_mask).sum() / jnp.maximum(instance_mask.sum(), 1)


def bag_loss(logits: jax.Array, labels: jax.Array, target: jax.Array, bag_mask: jax.Array, mode: str) -> jax.Array:
    """Mean cross-entropy over real bags.

    Args:
      logits: [B, R+1] (float32). labels: [B, R+1] multi-hot. target: [B] sampled gold relation.
      bag_mask: [B] False for padding bags.
      mode: "sampled" (the paper: the sampled gold relation) or "all_gold" (mean over the bag's gold
        relations; for heads whose bag representation depends on the target it is the sampled one).
    """
    log_probs = jax.nn.log_softmax(logits.astype(jnp.float32))
    if mode == "sampled":
        per_bag = -jnp.take_along_axis(log_probs, target[:, None], axis=1)[:, 0]
    elif mode == "all_gold":
        per_bag = -(log_probs * labels).sum(axis=1) / jnp.maximum(labels.sum(axis=1), 1)
    else:
        raise ValueError(f"unknown loss {mode!r}; expected 'sampled' or 'all_gold'")
    return (per_bag * bag_mask).sum() / jnp.maximum(bag_mask.sum(), 1)
