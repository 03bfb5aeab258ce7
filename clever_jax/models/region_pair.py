"""The paper's CNN-based instance encoder (Table 2, "VLP -> CNN"): no Transformer over the image.

The paper's appendix adapts Neural Motifs: the detector features of the two query regions are
concatenated and fed through an MLP with LayerNorm and ReLU, and static word vectors (GloVe) of
the two entity categories are used as extra text information; no box geometry. Here:

  v [..., 4H] = [MLP([appearance of region 0 ; appearance of region 1]) (2H),
                 mean input word embedding of the subject's tag pieces (H), the same for the object (H)]

with MLP = Dense(2H) -> LayerNorm -> ReLU -> dropout -> Dense(2H), so that v has the size of the
VLP encoder's and the same classifier and heads apply. The word vectors are the pretrained
encoder's input word-embedding table (frozen with config.freeze_word_embeddings, as in training),
in place of GloVe, which is not available offline (random, like every weight, when the run does
not start from pretrained weights). With config.pair_geometry the 18 pair-geometry numbers join
the MLP's input, so that an ablation compares encoders on the same input.

Parameter tree: embeddings/word_embeddings/embedding (the checkpoint's), pair_mlp_in, pair_mlp_norm,
pair_mlp_out.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from clever_jax.data.vg import GEOMETRY_DIM
from clever_jax.models.dropout import Dropout
from clever_jax.models.encoder import EncoderConfig, dense_layer, norm_layer, span_mean
from clever_jax.models.geometry import pair_geometry


class _WordVectors(nn.Module):
    """The word-embedding table under the BERT's parameter names: ids int [..., L] -> [..., L, H]."""

    config: EncoderConfig

    @nn.compact
    def __call__(self, ids: jax.Array) -> jax.Array:
        cfg = self.config
        table = nn.Embed(cfg.vocab_size, cfg.hidden_size, dtype=cfg.dtype,
                         embedding_init=nn.initializers.normal(cfg.initializer_range), name="word_embeddings")
        x = table(ids)
        return jax.lax.stop_gradient(x) if cfg.freeze_word_embeddings else x


class RegionPairEncoder(nn.Module):
    """Pair representations from the two query regions and the entity names' word vectors.

    Same inputs and output as InstanceEncoder (text_mask is not needed): text_ids [..., Lt],
    regions [..., Lr, F] (region 0 = subject, 1 = object), region_mask [..., Lr], subject_span and
    object_span int [..., 2] -> v [..., 4H].
    """

    config: EncoderConfig

    @nn.compact
    def __call__(self, text_ids: jax.Array, text_mask: jax.Array, regions: jax.Array, region_mask: jax.Array,
                 subject_span: jax.Array, object_span: jax.Array, *, deterministic: bool) -> jax.Array:
        del text_mask  # The spans pick the tags' pieces.
        cfg = self.config
        if regions.shape[-1] != cfg.region_dim:
            raise ValueError(f"regions have {regions.shape[-1]} features; config.region_dim={cfg.region_dim}")
        query = jnp.where(region_mask[..., :2, None], regions[..., :2, :], 0).astype(jnp.float32)  # [..., 2, F]
        parts = [query[..., 0, :-GEOMETRY_DIM], query[..., 1, :-GEOMETRY_DIM]]
        if cfg.pair_geometry:
            parts.append(pair_geometry(query[..., 0, -GEOMETRY_DIM:], query[..., 1, -GEOMETRY_DIM:]))
        x = dense_layer(cfg, 2 * cfg.hidden_size, "pair_mlp_in")(jnp.concatenate(parts, axis=-1).astype(cfg.dtype))
        x = nn.relu(norm_layer(cfg, "pair_mlp_norm")(x))
        x = Dropout(cfg.hidden_dropout)(x, deterministic=deterministic)
        x = dense_layer(cfg, 2 * cfg.hidden_size, "pair_mlp_out")(x)
        words = _WordVectors(cfg, name="embeddings")(text_ids)  # [..., Lt, H]
        return jnp.concatenate([x, span_mean(words, subject_span), span_mean(words, object_span)], axis=-1)
