"""Synthetic batches in the pipeline's layout, with the demo world's statistics, for benchmarks.

The throughput benchmark and the memory estimate need batches (or only their shapes) without
preparing records: `instance_shape` takes the sizes from the config alone and `synthetic_batch`
fills `pipeline.empty_batch` with realistic masks. On the demo config the synthetic batches have
52.3% real tokens of the padded Lt + Lr in `make bench` (20 batches), the prepared demo records 53.3%.
"""

from __future__ import annotations

import dataclasses
import json
import os

import ml_collections
import numpy as np

from clever_jax.data.pipeline import InstanceShape, empty_batch
from clever_jax.data.vg import GEOMETRY_DIM
from clever_jax.data.vocab import benchmark_vocab

# Synthetic instances, like the demo world's (60 training batches of runs/demo: 14.1 real word
# pieces of 32, 11.8 regions of 12, 7.2 instances of 8 per bag; 53% of the tokens are real).
OBJECTS_PER_INTERACTION = 1.3  # Objects per image ~ 1.3 x interactions + extra (demo 14.9, vg preset 35.2).
PIECES_PER_TAG = 1.05  # Word pieces per object tag.
CANDIDATES_MEDIAN, CANDIDATES_SIGMA = 28.0, 1.5  # Candidate instances per pair: log-normal.
VG_OBJECTS_PER_IMAGE = 35.0  # Visual Genome: 3.8 M objects in 108 k images.
BERT_CLS_ID, BERT_SEP_ID = 101, 102  # [CLS] and [SEP] in BERT's uncased WordPiece vocabulary.


def instance_shape(data: ml_collections.ConfigDict) -> InstanceShape:
    """The sizes records of config.data would have: F = appearance (the world's feature_dim, or
    data.feature_dim, 2048 if unset) + 6 box geometry values; the benchmark's R + 1 = 101 relations."""
    appearance = data.world.feature_dim if data.source == "world" else (data.feature_dim or 2048)
    return InstanceShape(bag_size=data.bag_size, text_len=data.text_len, num_regions=data.num_regions,
                         region_dim=appearance + GEOMETRY_DIM, num_relations=benchmark_vocab().num_relations,
                         cls_id=BERT_CLS_ID, sep_id=BERT_SEP_ID)


def objects_per_image(data: ml_collections.ConfigDict) -> float:
    """Mean objects per image of config.data's source (the world's preset, or Visual Genome's)."""
    if data.source == "world":
        w = data.world
        return OBJECTS_PER_INTERACTION * w.interactions_per_image + w.extra_objects_per_image
    return VG_OBJECTS_PER_IMAGE


def with_vocabulary(shape: InstanceShape, pretrained_dir: str) -> tuple[InstanceShape, int]:
    """`shape` with the [CLS] and [SEP] ids of the BERT folder's vocab.txt (a folder with only a
    config.json, as configs/bert_base, keeps BERT's), and the vocab_size of its config.json."""
    with open(os.path.join(pretrained_dir, "config.json"), encoding="utf-8") as f:
        size = json.load(f)["vocab_size"]
    path = os.path.join(pretrained_dir, "vocab.txt")
    if not os.path.isfile(path):
        return shape, size
    with open(path, encoding="utf-8") as f:
        words = [line.rstrip("\n") for line in f]
    return dataclasses.replace(shape, cls_id=words.index("[CLS]"), sep_id=words.index("[SEP]")), size


def region_features(region_mask: np.ndarray, dim: int, rng: np.random.Generator) -> np.ndarray:
    """float32 [..., Lr, dim]: standard normal features where `region_mask` [..., Lr] is set, else 0."""
    return rng.standard_normal((*region_mask.shape, dim), dtype=np.float32) * region_mask[..., None]


def synthetic_batch(shape: InstanceShape, batch_size: int, rng: np.random.Generator, objects_per_image: float,
                    vocab_size: int, features: bool = True) -> dict[str, np.ndarray]:
    """A batch of `batch_size` bags in the pipeline's layout (pipeline.bag_layout) with realistic masks.

    Per bag, the instance count is min(N, candidates) with log-normal candidates; per instance,
    the image has 2 + Poisson(objects_per_image - 2) objects, of which the first Lr are regions,
    and the text is [CLS] + their tags (1 + Poisson(0.05) pieces each) + [SEP], cut to Lt, the
    tags' ids drawn from the ids above [CLS] and [SEP] below `vocab_size` (`with_vocabulary`).
    Without `features` the regions stay zero (batches for token counts only: at the paper's shapes
    the features are most of a batch's 0.7 s and 160 MB).
    """
    batch = empty_batch(shape, batch_size)
    b, n, lt, lr = batch_size, shape.bag_size, shape.text_len, shape.num_regions
    candidates = np.exp(rng.normal(np.log(CANDIDATES_MEDIAN), CANDIDATES_SIGMA, b))
    instances = np.clip(candidates.astype(np.int64), 1, n)
    instance_mask = np.arange(n)[None, :] < instances[:, None]  # [B, N]

    objects = 2 + rng.poisson(max(objects_per_image - 2, 0), (b, n))
    region_mask = (np.arange(lr) < np.minimum(objects, lr)[..., None]) & instance_mask[..., None]  # [B, N, Lr]
    pieces = (1 + rng.poisson(PIECES_PER_TAG - 1, (b, n, lr))) * region_mask  # Tag length of each slot.
    starts = 1 + np.cumsum(pieces, axis=-1) - pieces  # [B, N, Lr]
    sep = np.minimum(1 + pieces.sum(-1), lt - 1)  # [B, N]
    positions = np.arange(lt)
    text_mask = (positions <= sep[..., None]) & instance_mask[..., None]  # [B, N, Lt]
    text_ids = np.where(text_mask, rng.integers(max(shape.cls_id, shape.sep_id) + 1, vocab_size, (b, n, lt)), 0)
    text_ids = np.where(positions == 0, shape.cls_id, np.where(positions == sep[..., None], shape.sep_id, text_ids))
    batch["text_ids"][:] = text_ids * text_mask
    batch["text_mask"][:], batch["region_mask"][:], batch["instance_mask"][:] = text_mask, region_mask, instance_mask
    for key, j in (("subject_span", 0), ("object_span", 1)):
        batch[key][..., 0] = np.minimum(starts[..., j], lt - 1) * instance_mask
        batch[key][..., 1] = np.minimum(starts[..., j] + pieces[..., j], lt - 1) * instance_mask

    if features:
        batch["regions"][:] = region_features(region_mask, shape.region_dim, rng)
    target = rng.integers(1, shape.num_relations, b)
    batch["target"][:] = target
    batch["labels"][np.arange(b), target] = 1.0
    index = lambda high: rng.integers(0, high, (b, n)) * instance_mask  # noqa: E731
    batch["annotated"][:] = instance_mask & (rng.random((b, n)) < 0.1)
    shows = batch["annotated"] | (instance_mask & (rng.random((b, n)) < 0.2))  # More truly shown than annotated.
    for key, flags in (("annotations", batch["annotated"]), ("truth", shows)):
        batch[key][np.arange(b)[:, None], np.arange(n), target[:, None]] = flags
    batch["images"][:], batch["subjects"][:] = index(1000), index(2)
    batch["objects"][:] = index(2) + 2 * instance_mask
    batch["pair"][:] = rng.integers(0, 100, (b, 2))
    batch["bag"][:] = np.arange(b)
    batch["bag_mask"][:] = True
    return batch
