"""The language-model baselines of Table 1: relation scores of an entity pair from its names alone.

`PairTextModel` reads only a bag's entity pair (batch["pair"] int [B, 2]); no image is looked at,
so its evidence is uniform over the bag's instances. Its input is built inside the step from
word-piece tables of the vocabulary (`name_tables`), with fixed shapes:

  cls     Vanilla-FT (Peng et al. 2020): `[CLS] subject [SEP] object [SEP]`, the object and its
          [SEP] in segment 1, through BERT; BERT's pooler (tanh of a dense layer) on the [CLS]
          state, dropout, then a linear classifier over NA + R relations.
  prompt  Prompt-FT (Lin et al. 2020) and LAMA (Petroni et al. 2019): `[CLS] subject [MASK]
          object [SEP]`; relation r scores the mean, over the word pieces of its verbalisation
          (its predicate; NA: "background"), of their masked-LM log-probability at [MASK]. BERT's
          masked-LM head: transform (dense, GELU, LayerNorm), then the word embeddings as the
          decoder (tied) plus a bias. Prompt-FT fine-tunes it all; LAMA scores with the
          checkpoint's own head, untrained (config.train.max_epochs=0).

Either way the R + 1 scores are logits: cross-entropy on the sampled gold relation in training
(as the bag heads), softmax in evaluation. Parameters: text/{embeddings,encoder} (BertTextModel:
the names of models/encoder.py, so the same checkpoint import fits), then pooler and classifier
(cls) or transform, transform_layer_norm and decoder_bias (prompt; weights.text_head_params).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from clever_jax.data import text
from clever_jax.data.vocab import Vocab
from clever_jax.models.bert_ops import gelu
from clever_jax.models.dropout import Dropout
from clever_jax.models.encoder import BertTextModel, EncoderConfig, dense_layer, norm_layer

HEADS = ("cls", "prompt")
NA_VERBALISATION = "background"
# The batch arrays the model and its loss read (the loader sends no text or regions to it).
INPUTS = ("pair", "instance_mask")
BATCH_KEYS = (*INPUTS, "labels", "target", "bag_mask")

Table = tuple[tuple[int, ...], ...]


def name_tables(tokenizer, vocab: Vocab) -> tuple[Table, Table]:
    """Word pieces of every entity name [E][k] and of every relation's verbalisation [R + 1][k]
    (relation 0, NA, as NA_VERBALISATION), as nested tuples (PairTextModel's static fields)."""
    def pieces(names):
        flat, lengths = text.tokenize_names(tokenizer, list(names))
        if not lengths.all():
            raise ValueError(f"names without word pieces: {[n for n, k in zip(names, lengths, strict=True) if not k]}")
        return tuple(tuple(int(p) for p in part) for part in np.split(flat, np.cumsum(lengths)[:-1]))
    return pieces(vocab.entities), pieces((NA_VERBALISATION, *vocab.predicates))


def padded(table: Table) -> tuple[np.ndarray, np.ndarray]:
    """A ragged table as int32 [rows, longest] (0-padded) and its lengths int32 [rows]."""
    lengths = np.array([len(row) for row in table], np.int32)
    out = np.zeros((len(table), max(lengths)), np.int32)
    out[np.arange(out.shape[1]) < lengths[:, None]] = np.concatenate(table)
    return out, lengths


def pair_sequences(pair: jax.Array, entity_pieces: Table, cls_id: int, middle_id: int, sep_id: int
                   ) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """`[CLS] subject <middle> object [SEP]` of each pair int [B, 2], packed from position 0.

    Returns:
      ids int32 [B, L] (L = 3 + 2 x the longest name, 0-padded), mask bool [B, L], segments int32
      [B, L] (1 from the object on), middle int32 [B] (the position of <middle>).
    """
    table, lengths = (jnp.asarray(a) for a in padded(entity_pieces))
    longest = table.shape[1]
    subject_len, object_len = lengths[pair[:, 0]], lengths[pair[:, 1]]  # [B]
    position = jnp.arange(3 + 2 * longest)[None, :]  # [1, L]
    middle, end = 1 + subject_len[:, None], 2 + subject_len[:, None] + object_len[:, None]  # [B, 1]
    subject_piece = jnp.take_along_axis(table[pair[:, 0]], jnp.clip(position - 1, 0, longest - 1), axis=1)
    object_piece = jnp.take_along_axis(table[pair[:, 1]], jnp.clip(position - middle - 1, 0, longest - 1), axis=1)
    ids = jnp.select([position == 0, position < middle, position == middle, position < end, position == end],
                     [cls_id, subject_piece, middle_id, object_piece, sep_id], 0)
    return ids.astype(jnp.int32), position <= end, (position > middle).astype(jnp.int32), middle[:, 0]


class PairTextModel(nn.Module):
    """Relation scores of entity pairs from their names (see the module docstring).

    Attributes:
      encoder: BERT's sizes (hidden size H; the region fields are unused).
      num_relations: R + 1.
      head: "cls" (Vanilla-FT) or "prompt" (Prompt-FT, LAMA).
      entity_pieces: word pieces of each entity name ([E][k], `name_tables`).
      relation_pieces: word pieces of each relation's verbalisation ([R + 1][k]; prompt only).
      cls_id, sep_id, mask_id: the special tokens.
    """

    encoder: EncoderConfig
    num_relations: int
    head: str
    entity_pieces: Table
    relation_pieces: Table
    cls_id: int
    sep_id: int
    mask_id: int

    def setup(self) -> None:
        if self.head not in HEADS:
            raise ValueError(f"unknown language-model head {self.head!r}; expected one of {HEADS}")
        if len(self.relation_pieces) != self.num_relations:
            raise ValueError(f"{len(self.relation_pieces)} relation verbalisations for {self.num_relations} relations")
        cfg = self.encoder
        self.text = BertTextModel(cfg)
        if self.head == "cls":
            self.pooler = dense_layer(cfg, cfg.hidden_size, "pooler")
            self.dropout = Dropout(cfg.hidden_dropout)
            self.classifier = dense_layer(cfg, self.num_relations, "classifier")
        else:
            self.transform = dense_layer(cfg, cfg.hidden_size, "transform")
            self.transform_layer_norm = norm_layer(cfg, "transform_layer_norm")
            self.decoder_bias = self.param("decoder_bias", nn.initializers.zeros, (cfg.vocab_size,))

    def logits(self, pair: jax.Array, *, train: bool) -> jax.Array:
        """Relation logits [B, R + 1] (float32) of entity pairs int [B, 2]."""
        middle_id = self.sep_id if self.head == "cls" else self.mask_id
        ids, mask, segments, middle = pair_sequences(pair, self.entity_pieces, self.cls_id, middle_id, self.sep_id)
        hidden = self.text(ids, mask, segments if self.head == "cls" else None, deterministic=not train)  # [B, L, H]
        if self.head == "cls":
            pooled = jnp.tanh(self.pooler(hidden[:, 0]))
            return self.classifier(self.dropout(pooled, deterministic=not train)).astype(jnp.float32)
        at_mask = jnp.take_along_axis(hidden, middle[:, None, None], axis=1)[:, 0]  # [B, H]
        h = self.transform_layer_norm(gelu(self.transform(at_mask)))
        table = self.text.variables["params"]["embeddings"]["word_embeddings"]["embedding"]  # [V, H]: tied decoder
        if self.encoder.freeze_word_embeddings:
            table = jax.lax.stop_gradient(table)
        log_probs = jax.nn.log_softmax((h @ table.T.astype(h.dtype)).astype(jnp.float32) + self.decoder_bias)
        pieces, lengths = (jnp.asarray(a) for a in padded(self.relation_pieces))  # [R + 1, K], [R + 1]
        piece_mask = jnp.arange(pieces.shape[1])[None, :] < lengths[:, None]
        per_piece = log_probs[:, pieces] * piece_mask  # [B, R + 1, K]
        return per_piece.sum(axis=-1) / lengths

    def train_logits(self, batch: dict, target: jax.Array) -> jax.Array:
        """Logits [B, R + 1] for the cross-entropy with target [B] (dropout on; target unused)."""
        del target
        return self.logits(batch["pair"], train=True)

    def __call__(self, batch: dict) -> tuple[jax.Array, jax.Array]:
        """Evaluation: scores [B, R + 1] (softmax) and evidence [B, R + 1, N], uniform over instance_mask."""
        scores = jax.nn.softmax(self.logits(batch["pair"], train=False))
        mask = batch["instance_mask"].astype(jnp.float32)
        evidence = mask / jnp.maximum(mask.sum(axis=1, keepdims=True), 1)
        return scores, jnp.broadcast_to(evidence[:, None, :], (*scores.shape, mask.shape[1]))
