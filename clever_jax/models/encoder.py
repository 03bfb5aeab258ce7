"""The instance encoder: a BERT over an instance's tag word pieces followed by its region features.

One instance is `[CLS] tags [SEP]` (Lt word pieces, position + token-type-0 embeddings) followed by
Lr region features (a linear map, no position or segment embedding); a standard post-LN BERT
encoder runs over the joint sequence under one attention mask. The pair representation
v [4H] = [region 0 (subject), mean over the subject's tag pieces, region 1 (object), mean over the
object's tag pieces] (DESIGN.md section 3).

Parameter tree (checkpoint import in clever_jax/models/weights.py relies on these names):

  embeddings/{word_embeddings,position_embeddings,token_type_embeddings}/embedding, embeddings/layer_norm
  region_embedding/{kernel,bias}, region_layer_norm (only with config.region_layer_norm)
  pair_embedding/{kernel,bias}, pair_layer_norm (only with config.pair_geometry; no checkpoint has them)
  encoder/layer_{i}/attention/{query,key,value,output}/{kernel,bias}, encoder/layer_{i}/attention_layer_norm,
  encoder/layer_{i}/{intermediate,output}/{kernel,bias}, encoder/layer_{i}/output_layer_norm

Leading dimensions of every input are free ([B, N] for bags); params are float32, the compute
dtype is config.dtype, the attention softmax and LayerNorm statistics are float32.

Dropout is models/dropout.py's (hashed masks; packed batches give each element its unpacked index).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import einops
import flax.linen as nn
import jax
import jax.numpy as jnp

from clever_jax.models.bert_ops import LayerNorm, gelu
from clever_jax.models.dropout import Dropout, row_index
from clever_jax.models.geometry import pair_geometry, query_geometry
from clever_jax.models.packing import Packing, gather_rows, locate, take_rows


@dataclasses.dataclass(frozen=True)
class EncoderConfig:
    """Sizes and options of the BERT instance encoder.

    Attributes:
      vocab_size, hidden_size (H), num_layers, num_heads, intermediate_size, max_position_embeddings,
      type_vocab_size, layer_norm_eps, hidden_dropout, attention_dropout: as in a BERT config.json.
      region_dim: F, size of one region feature (appearance + 6 box geometry values).
      region_layer_norm: LayerNorm after the region projection (Oscar's `use_img_layernorm`).
      region_layer_norm_eps: its epsilon (Oscar's `img_layer_norm_eps`, not `layer_norm_eps`).
      pair_geometry: add an embedding of the query pair's relative geometry (`pair_geometry`, 18
        numbers) to the subject and object region embeddings (not in the published encoder).
      initializer_range: stddev of the normal initialiser of kernels and embeddings.
      dtype: compute dtype (params are always float32); a name such as "bfloat16" is accepted.
      remat: recompute each layer's activations in the backward pass (nn.remat).
      freeze_word_embeddings: no gradient flows into the word-embedding table (training keeps it
        frozen): its [vocab_size, H] gradient, all zeros, is then never computed.
    """

    vocab_size: int = 30522
    hidden_size: int = 768
    num_layers: int = 12
    num_heads: int = 12
    intermediate_size: int = 3072
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    hidden_dropout: float = 0.1
    attention_dropout: float = 0.1
    region_dim: int = 2054
    region_layer_norm: bool = False
    region_layer_norm_eps: float = 1e-12
    pair_geometry: bool = False
    initializer_range: float = 0.02
    dtype: Any = jnp.float32
    remat: bool = False
    freeze_word_embeddings: bool = False

    def __post_init__(self):
        object.__setattr__(self, "dtype", jnp.dtype(self.dtype))
        if self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not a multiple of num_heads {self.num_heads}")

    @classmethod
    def from_hf(cls, hf_config: Mapping[str, Any], region_dim: int, num_layers: int | None = None,
                **overrides: Any) -> EncoderConfig:
        """The configuration of a HuggingFace BERT config.json (a dict).

        Args:
          hf_config: the parsed config.json of a BERT (or Oscar/VinVL) checkpoint.
          region_dim: F, size of the region features of the data.
          num_layers: keep only the first `num_layers` layers (default: all of them).
          **overrides: any other EncoderConfig field (dtype, remat, region_layer_norm, dropouts...).
            region_layer_norm defaults to the checkpoint's `use_img_layernorm` (False if absent), its
            epsilon to `img_layer_norm_eps` (else `layer_norm_eps`, as for a plain BERT config).
        """
        model_type = hf_config.get("model_type", "bert")
        if model_type != "bert":
            raise ValueError(f"model_type {model_type!r} is not supported; expected a BERT checkpoint")
        if hf_config.get("hidden_act", "gelu") != "gelu":
            raise ValueError(f"hidden_act {hf_config['hidden_act']!r} is not supported; expected 'gelu' (exact erf)")
        if hf_config.get("position_embedding_type", "absolute") != "absolute":
            raise ValueError(f"position_embedding_type {hf_config['position_embedding_type']!r} is not supported")
        available = int(hf_config["num_hidden_layers"])
        num_layers = available if num_layers is None else int(num_layers)
        if not 1 <= num_layers <= available:
            raise ValueError(f"num_layers={num_layers}: the checkpoint has {available} layers")
        fields = {
            "vocab_size": int(hf_config["vocab_size"]),
            "hidden_size": int(hf_config["hidden_size"]),
            "num_layers": num_layers,
            "num_heads": int(hf_config["num_attention_heads"]),
            "intermediate_size": int(hf_config["intermediate_size"]),
            "max_position_embeddings": int(hf_config["max_position_embeddings"]),
            "type_vocab_size": int(hf_config.get("type_vocab_size", 2)),
            "layer_norm_eps": float(hf_config.get("layer_norm_eps", 1e-12)),
            "hidden_dropout": float(hf_config.get("hidden_dropout_prob", 0.1)),
            "attention_dropout": float(hf_config.get("attention_probs_dropout_prob", 0.1)),
            "initializer_range": float(hf_config.get("initializer_range", 0.02)),
            "region_dim": int(region_dim),
            "region_layer_norm": bool(hf_config.get("use_img_layernorm", False)),
            "region_layer_norm_eps": float(hf_config.get("img_layer_norm_eps", hf_config.get("layer_norm_eps", 1e-12))),
        }
        unknown = set(overrides) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise TypeError(f"unknown EncoderConfig fields: {sorted(unknown)}")
        return cls(**{**fields, **overrides})


def dense_layer(config: EncoderConfig, features: int, name: str) -> nn.Dense:
    """A Dense of `features` outputs with the config's dtype and BERT's normal(initializer_range) kernels."""
    return nn.Dense(features, dtype=config.dtype, kernel_init=nn.initializers.normal(config.initializer_range),
                    name=name)


def norm_layer(config: EncoderConfig, name: str, epsilon: float | None = None) -> LayerNorm:
    """BERT's LayerNorm (exact two-pass variance) with `epsilon`, default config.layer_norm_eps."""
    return LayerNorm(epsilon=config.layer_norm_eps if epsilon is None else epsilon, dtype=config.dtype, name=name)


def attention_bias(mask: jax.Array) -> jax.Array:
    """Additive float32 attention bias [..., 1, 1, L] from a key mask bool [..., L] (True = attend)."""
    return jnp.where(mask, 0.0, jnp.finfo(jnp.float32).min).astype(jnp.float32)[..., None, None, :]


class BertEmbeddings(nn.Module):
    """Word + position + token-type embeddings, LayerNorm, dropout: ids int [..., L] -> [..., L, H].

    Token types int [..., L] (segments); None: type 0 everywhere. Positions int [..., L]: None: 0..L-1;
    a packed batch gives each token's position in its instance, and its dropout index (models/packing.py)."""

    config: EncoderConfig

    @nn.compact
    def __call__(self, ids: jax.Array, token_types: jax.Array | None = None, *, deterministic: bool,
                 positions: jax.Array | None = None, token_index: jax.Array | None = None) -> jax.Array:
        cfg = self.config
        length = ids.shape[-1]
        if positions is None and length > cfg.max_position_embeddings:
            raise ValueError(f"text length {length} > max_position_embeddings {cfg.max_position_embeddings}")
        init = nn.initializers.normal(cfg.initializer_range)
        embed = lambda num, name: nn.Embed(num, cfg.hidden_size, dtype=cfg.dtype, embedding_init=init, name=name)  # noqa: E731
        x = embed(cfg.vocab_size, "word_embeddings")(ids)
        if cfg.freeze_word_embeddings:
            x = jax.lax.stop_gradient(x)
        # Positions 0..L-1 and token type 0 are slices of their tables (a gather costs more on CPU).
        position_table = embed(cfg.max_position_embeddings, "position_embeddings")
        x = x + (position_table(positions) if positions is not None
                 else position_table.embedding[:length].astype(cfg.dtype))
        types = embed(cfg.type_vocab_size, "token_type_embeddings")
        x = x + (types.embedding[0].astype(cfg.dtype) if token_types is None else types(token_types))
        x = norm_layer(cfg, "layer_norm")(x)
        index = None if token_index is None else row_index(token_index, cfg.hidden_size)
        return Dropout(cfg.hidden_dropout)(x, deterministic=deterministic, index=index)


class DenseParams(nn.Module):
    """The parameters of a dense layer as dense_layer makes them, kernel float32 [in, features] and bias
    [features], for layers applied together in one product (SelfAttention's query, key and value)."""

    config: EncoderConfig
    features: int

    @nn.compact
    def __call__(self, in_features: int) -> tuple[jax.Array, jax.Array]:
        init = nn.initializers.normal(self.config.initializer_range)
        return (self.param("kernel", init, (in_features, self.features), jnp.float32),
                self.param("bias", nn.initializers.zeros_init(), (self.features,), jnp.float32))


class SelfAttention(nn.Module):
    """Multi-head self-attention: x [..., L, H], bias float32 [..., 1, 1, L] -> [..., L, H].

    Packed (models/packing.py): x and the output are compact [G C, H] and bias is None; queries, keys
    and values are gathered into the rows of the length classes, each attended at its own length."""

    config: EncoderConfig

    @nn.compact
    def __call__(self, x: jax.Array, bias: jax.Array | None, *, deterministic: bool, packing: Packing | None = None
                 ) -> jax.Array:
        cfg = self.config
        head_dim = cfg.hidden_size // cfg.num_heads
        # Query, key and value in one product [..., L, 3H] (and, packed, one gather). The 1/sqrt(D) scale goes on
        # the queries [..., L, H] rather than on the scores [..., heads, L, L].
        kernels, biases = zip(*(DenseParams(cfg, cfg.hidden_size, name=n)(x.shape[-1])
                                for n in ("query", "key", "value")), strict=True)
        qkv = (jnp.dot(x.astype(cfg.dtype), jnp.concatenate(kernels, axis=1).astype(cfg.dtype))
               + jnp.concatenate(biases).astype(cfg.dtype))
        qkv = qkv * jnp.array([head_dim**-0.5, 1.0, 1.0], cfg.dtype).repeat(cfg.hidden_size)
        if packing is None:
            rows, masks, index = [qkv], [bias], None
        else:  # Each length class's rows [G, n_k, R_k, 3H], their key masks and dropout indices.
            rows = packing.to_rows(qkv)
            masks = [attention_bias(slots < packing.index.shape[1]) for slots in packing.rows]
            index = [queries[..., None] + keys[..., None, None, :]
                     for queries, keys in zip(packing.row_queries, packing.row_keys, strict=True)]
        rows = [einops.rearrange(r, "... l (p h d) -> p ... h l d", p=3, h=cfg.num_heads) for r in rows]
        probs = [jax.nn.softmax(jnp.einsum("...hqd,...hkd->...hqk", q, k).astype(jnp.float32) + b,
                                axis=-1).astype(cfg.dtype) for (q, k, _), b in zip(rows, masks, strict=True)]
        probs = Dropout(cfg.attention_dropout)(probs, deterministic=deterministic, index=index)
        context = [einops.rearrange(jnp.einsum("...hqk,...hkd->...hqd", p, v), "... h l d -> ... l (h d)")
                   for p, (_, _, v) in zip(probs, rows, strict=True)]
        context = context[0] if packing is None else packing.from_rows(context)
        return dense_layer(cfg, cfg.hidden_size, "output")(context)


class BertLayer(nn.Module):
    """One post-LN BERT layer: x [..., L, H], bias float32 [..., 1, 1, L] -> [..., L, H] (packed: x compact
    [G C, H], bias None: SelfAttention).

    `deterministic` is positional so that nn.remat can treat it as static (argument 3).
    """

    config: EncoderConfig

    @nn.compact
    def __call__(self, x: jax.Array, bias: jax.Array | None, deterministic: bool, packing: Packing | None = None
                 ) -> jax.Array:
        cfg = self.config
        hidden_dropout = Dropout(cfg.hidden_dropout)  # One module: its two calls draw two seeds, as before packing.
        index = None if packing is None else row_index(packing.token_index, cfg.hidden_size)
        dropout = lambda t: hidden_dropout(t, deterministic=deterministic, index=index)  # noqa: E731
        h = SelfAttention(cfg, name="attention")(x, bias, deterministic=deterministic, packing=packing)
        x = norm_layer(cfg, "attention_layer_norm")(x + dropout(h))
        h = gelu(dense_layer(cfg, cfg.intermediate_size, "intermediate")(x))
        h = dense_layer(cfg, cfg.hidden_size, "output")(h)
        return norm_layer(cfg, "output_layer_norm")(x + dropout(h))


class BertStack(nn.Module):
    """config.num_layers BERT layers: x [..., L, H], mask bool [..., L] (True = real) -> [..., L, H].

    Packed: x compact [G C, H] -> [G C, H], mask None (models/packing.py)."""

    config: EncoderConfig

    @nn.compact
    def __call__(self, x: jax.Array, mask: jax.Array | None, *, deterministic: bool, packing: Packing | None = None
                 ) -> jax.Array:
        layer_cls = nn.remat(BertLayer, static_argnums=(3,)) if self.config.remat else BertLayer
        bias = None if mask is None else attention_bias(mask)
        for i in range(self.config.num_layers):
            x = layer_cls(self.config, name=f"layer_{i}")(x, bias, deterministic, packing)
        return x


class BertTextModel(nn.Module):
    """Text-only BERT: ids int [..., L], mask bool [..., L], token types int [..., L] (None: all 0) ->
    last hidden states [..., L, H].

    Same parameter names as InstanceEncoder minus the region projection, so the same imported
    checkpoint fits both.
    """

    config: EncoderConfig

    @nn.compact
    def __call__(self, text_ids: jax.Array, text_mask: jax.Array, token_types: jax.Array | None = None, *,
                 deterministic: bool) -> jax.Array:
        x = BertEmbeddings(self.config, name="embeddings")(text_ids, token_types, deterministic=deterministic)
        return BertStack(self.config, name="encoder")(x, text_mask, deterministic=deterministic)


def span_mean(hidden: jax.Array, span: jax.Array) -> jax.Array:
    """Mean of hidden [..., L, H] over positions [start, end) of span int [..., 2]; 0 if empty. -> [..., H]."""
    positions = jnp.arange(hidden.shape[-2])
    inside = (positions >= span[..., :1]) & (positions < span[..., 1:])  # [..., L]
    total = jnp.einsum("...lh,...l->...h", hidden.astype(jnp.float32), inside.astype(jnp.float32))
    count = jnp.maximum(inside.sum(axis=-1, keepdims=True), 1).astype(jnp.float32)
    return (total / count).astype(hidden.dtype)


def pair_representation(hidden: jax.Array, text_len: int, subject_span: jax.Array,
                        object_span: jax.Array) -> jax.Array:
    """v [..., 4H] from the joint hidden states [..., Lt+Lr, H] (regions start at text_len).

    v = [hidden of region 0 (subject), mean over subject_span, hidden of region 1 (object),
    mean over object_span]; spans index the text part.
    """
    if hidden.shape[-2] < text_len + 2:
        raise ValueError(f"{hidden.shape[-2] - text_len} regions; the subject and object regions need 2")
    text = hidden[..., :text_len, :]
    return jnp.concatenate([
        hidden[..., text_len, :], span_mean(text, subject_span),
        hidden[..., text_len + 1, :], span_mean(text, object_span),
    ], axis=-1)


class InstanceEncoder(nn.Module):
    """Pair representations of instances (tags + regions through one BERT).

    Inputs (leading dims `...` free, typically [B, N]):
      text_ids int [..., Lt], text_mask bool [..., Lt]: `[CLS] tags [SEP]` word pieces, 0-padded.
      regions float [..., Lr, F], region_mask bool [..., Lr]: region 0 = subject, region 1 = object.
      subject_span, object_span int [..., 2]: [start, end) of the subject's / object's tag pieces.
    Output: v [..., 4H] in config.dtype.
    """

    config: EncoderConfig

    def setup(self) -> None:
        cfg = self.config
        self.embeddings = BertEmbeddings(cfg)
        self.region_embedding = dense_layer(cfg, cfg.hidden_size, "region_embedding")
        if cfg.region_layer_norm:
            self.region_layer_norm = norm_layer(cfg, "region_layer_norm", cfg.region_layer_norm_eps)
        if cfg.pair_geometry:
            self.pair_embedding = dense_layer(cfg, cfg.hidden_size, "pair_embedding")
            self.pair_layer_norm = norm_layer(cfg, "pair_layer_norm")
        self.region_dropout = Dropout(cfg.hidden_dropout)
        self.encoder = BertStack(cfg)

    def encode(self, text_ids: jax.Array, text_mask: jax.Array, regions: jax.Array, region_mask: jax.Array, *,
               deterministic: bool, packed: tuple[jax.Array, ...] | None = None) -> jax.Array:
        """Final hidden states of the joint sequence [..., Lt+Lr, H] (text first, then regions).

        packed: a packed batch's PACKING_KEYS arrays, in that order (models/packing.py; inputs [B, N, ...]): the
        tokens are computed compact, the result is the same padded array."""
        cfg = self.config
        if regions.shape[-1] != cfg.region_dim:
            raise ValueError(f"regions have {regions.shape[-1]} features; config.region_dim={cfg.region_dim}")
        pair = None
        if cfg.pair_geometry:  # The same pair embedding joins the subject's and the object's region.
            pair = self.pair_layer_norm(self.pair_embedding(pair_geometry(*query_geometry(regions, region_mask))))
        mask = jnp.concatenate([text_mask, region_mask], axis=-1).astype(bool)
        if packed is not None:
            packing = Packing.of(*packed, heads=cfg.num_heads)
            tokens = self._packed_tokens(text_ids, regions, pair, *packed[:3], deterministic=deterministic)
            hidden = self.encoder(tokens, None, deterministic=deterministic, packing=packing)
            return packing.to_padded(hidden, mask.shape)
        text = self.embeddings(text_ids, deterministic=deterministic)
        r = self.region_embedding(regions)
        if cfg.region_layer_norm:
            r = self.region_layer_norm(r)
        if pair is not None:
            r = jnp.concatenate([r[..., :2, :] + pair[..., None, :].astype(r.dtype), r[..., 2:, :]], axis=-2)
        r = self.region_dropout(r, deterministic=deterministic)
        x = jnp.concatenate([text, r.astype(text.dtype)], axis=-2)
        return self.encoder(x, mask, deterministic=deterministic)

    def _packed_tokens(self, text_ids: jax.Array, regions: jax.Array, pair: jax.Array | None, packed_text: jax.Array,
                       packed_regions: jax.Array, token_slots: jax.Array, *, deterministic: bool) -> jax.Array:
        """The encoder's input for the compact slots [G (Ct + Cr), H]: what `encode` computes for each real token,
        with each token's own text position and dropout index (text_ids [B, N, Lt], regions [B, N, Lr, F])."""
        cfg = self.config
        b, n, lt = text_ids.shape
        lr, groups = regions.shape[-2], packed_text.shape[0]
        if b % groups or token_slots.shape != (b, n, lt + lr):
            raise ValueError(f"packing arrays of {groups} groups and token_slots {token_slots.shape} do not fit a "
                             f"batch of {b} bags x {n} instances x {lt} + {lr} tokens")
        if lt > cfg.max_position_embeddings:
            raise ValueError(f"text length {lt} > max_position_embeddings {cfg.max_position_embeddings}")
        most = token_slots.size * max(cfg.hidden_size, cfg.num_heads * (lt + lr))
        if most >= 2**32:  # The dropout masks' index runs over the padded layout (hidden states, attention).
            raise ValueError(f"{token_slots.size} padded tokens x {most // token_slots.size}: the dropout masks' "
                             "32-bit element index allows < 2^32")
        instances = b // groups * n  # per group
        first = jnp.arange(groups)[:, None] * instances  # The group's first instance in the batch.

        used, instance, position = locate(packed_text, instances * (lt + lr), lt + lr)
        ids = take_rows(text_ids.reshape(groups, -1), jnp.where(used, instance * lt + position, instances * lt))
        text = self.embeddings(ids, positions=position, deterministic=deterministic,
                               token_index=(first + instance) * lt + position)

        used, instance, position = locate(packed_regions, instances * (lt + lr), lt + lr)
        slot = position - lt  # The region's slot in its instance.
        features = take_rows(regions.reshape(groups, instances * lr, -1), jnp.where(used, instance * lr + slot,
                                                                                    instances * lr))
        r = self.region_embedding(features)
        if cfg.region_layer_norm:
            r = self.region_layer_norm(r)
        if pair is not None:  # Added at region slots 0 and 1; each instance's compact slot is its gradient's source.
            slots = token_slots.reshape(groups, instances, lt + lr) - packed_text.shape[1]
            pair = pair.reshape(groups, instances, -1).astype(r.dtype)
            r = r + sum(gather_rows(pair, jnp.where(used & (slot == j), instance, instances), slots[:, :, lt + j])
                        for j in (0, 1))
        r = self.region_dropout(r, deterministic=deterministic,
                                index=row_index((first + instance) * lr + slot, cfg.hidden_size))
        return jnp.concatenate([text, r.astype(text.dtype)], axis=1).reshape(-1, cfg.hidden_size)

    def __call__(self, text_ids: jax.Array, text_mask: jax.Array, regions: jax.Array, region_mask: jax.Array,
                 subject_span: jax.Array, object_span: jax.Array, *, deterministic: bool,
                 packed: tuple[jax.Array, ...] | None = None) -> jax.Array:
        hidden = self.encode(text_ids, text_mask, regions, region_mask, deterministic=deterministic, packed=packed)
        return pair_representation(hidden, text_ids.shape[-1], subject_span, object_span)
