"""The input pipeline: Grain over the TFDS bag and image records, to fixed-shape numpy batches.

Each instance (image, subject, object) becomes one encoder input: the image's objects are
re-ordered subject first, object second, the rest after; the text is `[CLS] tags [SEP]` of the
objects in that order and the regions are their feature vectors, both truncated and padded.

`bag_layout` states every batch array's name, shape and dtype (for B bags, N instances, Lt text
positions, Lr regions, F region features, R + 1 relations); the loader, the builder's abstract
shapes and the synthetic batches of the benchmark all follow it:
  text_ids int32 [B, N, Lt], text_mask bool [B, N, Lt]
  regions float32 [B, N, Lr, F], region_mask bool [B, N, Lr]
  subject_span, object_span int32 [B, N, 2]: [start, end) of the subject's and object's tag
    word pieces in the text (subject's region is region 0, object's is region 1)
  instance_mask bool [B, N], annotated bool [B, N] (do the annotations relate the pair there?)
  annotations bool [B, N, R + 1]: the relations the annotations state between each instance's
    two objects; truth bool [B, N, R + 1]: the relations each instance truly shows (the generated
    world's latent truth; all False for real data)
  images int32 [B, N] image record index, subjects/objects int32 [B, N] object index in it
  labels float32 [B, R + 1] multi-hot (NA bags: relation 0), target int32 [B] a gold relation
    sampled anew at every visit, pair int32 [B, 2] entity classes, bag int64 [B], bag_mask bool [B]

The loader pads every batch to Lt and Lr; `bucket_lengths` and `trim_padding` cut a batch's
trailing padding to multiples of config.data.length_multiple (builder.Run.device_batch does).
"""

from __future__ import annotations

import dataclasses
import os

import grain
import numpy as np
from absl import flags

from clever_jax.data.records import open_records, read_manifest

# Threads that read and assemble bags: one per core this process may use, at most Grain's default 16. Grain's
# 16 threads on two cores took 1.9x as long per batch (docs/performance.md, "Reading a bag's images").
READ_THREADS = min(16, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)


@dataclasses.dataclass(frozen=True)
class InstanceShape:
    """Fixed sizes of one bag's arrays and the special token ids.

    Attributes:
      bag_size: N, instances per bag.
      text_len: Lt, word pieces per instance including [CLS] and [SEP].
      num_regions: Lr, regions per instance.
      region_dim: F, features per region (appearance + 6 box geometry values).
      num_relations: R + 1.
      cls_id, sep_id: token ids of [CLS] and [SEP] (padding is 0).
    """

    bag_size: int
    text_len: int
    num_regions: int
    region_dim: int
    num_relations: int
    cls_id: int
    sep_id: int


# The arrays the model reads; the others carry labels and bookkeeping.
MODEL_INPUTS = ("text_ids", "text_mask", "regions", "region_mask", "subject_span", "object_span", "instance_mask")


# The arrays made from the instances' image records; a loader without images (the language-model
# baselines read only the entity pair) leaves them out.
IMAGE_KEYS = ("text_ids", "text_mask", "regions", "region_mask", "subject_span", "object_span")


def bag_layout(shape: InstanceShape, with_images: bool = True) -> dict[str, tuple[tuple[int, ...], type]]:
    """Every array of one bag: name -> (shape, numpy dtype); a batch adds a leading B axis. Without
    images: all but IMAGE_KEYS."""
    n, lt, lr = shape.bag_size, shape.text_len, shape.num_regions
    layout = {
        "text_ids": ((n, lt), np.int32), "text_mask": ((n, lt), np.bool_),
        "regions": ((n, lr, shape.region_dim), np.float32), "region_mask": ((n, lr), np.bool_),
        "subject_span": ((n, 2), np.int32), "object_span": ((n, 2), np.int32),
        "instance_mask": ((n,), np.bool_), "annotated": ((n,), np.bool_),
        "annotations": ((n, shape.num_relations), np.bool_), "truth": ((n, shape.num_relations), np.bool_),
        "images": ((n,), np.int32), "subjects": ((n,), np.int32), "objects": ((n,), np.int32),
        "labels": ((shape.num_relations,), np.float32), "target": ((), np.int32), "pair": ((2,), np.int32),
        "bag": ((), np.int64), "bag_mask": ((), np.bool_),
    }
    return layout if with_images else {k: v for k, v in layout.items() if k not in IMAGE_KEYS}


def empty_batch(shape: InstanceShape, batch_size: int) -> dict[str, np.ndarray]:
    """A batch of `batch_size` empty bags in the layout of `bag_layout` (zeros; bag_mask False)."""
    return {k: np.zeros((batch_size, *s), d) for k, (s, d) in bag_layout(shape).items()}


def instance_shape(data_config, records_dir: str) -> InstanceShape:
    """Sizes from config.data (bag_size, text_len, num_regions), F and ids from the build's manifest."""
    manifest = read_manifest(records_dir)
    return InstanceShape(
        bag_size=data_config.bag_size,
        text_len=data_config.text_len,
        num_regions=data_config.num_regions,
        region_dim=manifest["region_dim"],
        num_relations=manifest["num_relations"],
        cls_id=manifest["cls_id"],
        sep_id=manifest["sep_id"],
    )


def _ragged_positions(lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For runs of the given lengths laid end to end: run id and position within run of each item."""
    run = np.repeat(np.arange(lengths.size), lengths.ravel())
    within = np.arange(run.size) - np.repeat(np.cumsum(lengths.ravel()) - lengths.ravel(), lengths.ravel())
    return run, within


def assemble_bag(bag: dict, images: list[dict] | None, shape: InstanceShape, target: int = 0) -> dict[str, np.ndarray]:
    """The fixed-shape arrays of one bag, in `bag_layout` (without B).

    Args:
      bag: a bag record.
      images: the decoded image record of each of the bag's instances, in order; None: a bag
        without IMAGE_KEYS.
      shape: sizes.
      target: the gold relation the bag is trained on this visit.
    """
    out = {k: np.zeros(s, d) for k, (s, d) in bag_layout(shape, images is not None).items()}
    n = min(len(bag["images"]), shape.bag_size)
    subjects, objects = bag["subjects"][:n].astype(np.int64), bag["objects"][:n].astype(np.int64)
    if images is not None:
        _assemble_instances(out, images[:n], subjects, objects, shape)
    out["instance_mask"][:n] = True
    for key in ("annotations", "truth"):
        stated = bag[key][bag[key][:, 0] < n]  # (instance, relation id) pairs
        out[key][stated[:, 0], stated[:, 1]] = True
    out["annotated"][:] = out["annotations"].any(axis=1)
    out["images"][:n] = bag["images"][:n]
    out["subjects"][:n], out["objects"][:n] = subjects, objects
    out["labels"][bag["labels"]] = 1.0
    out["target"][...] = target
    out["pair"][:] = bag["pair"]
    out["bag"][...] = bag["bag"]
    out["bag_mask"][...] = True
    return out


def _assemble_instances(out: dict[str, np.ndarray], images: list[dict], subjects: np.ndarray, objects: np.ndarray,
                        shape: InstanceShape) -> None:
    """Fills IMAGE_KEYS of `out` for the n instances (images, subject and object indices [n])."""
    lt, lr, n = shape.text_len, shape.num_regions, len(images)
    num_objects = np.array([len(im["classes"]) for im in images], np.int64)  # K [n]
    region_base = np.cumsum(num_objects) - num_objects
    all_regions = np.concatenate([im["regions"] for im in images])
    all_lengths = np.concatenate([im["tag_lengths"] for im in images]).astype(np.int64)
    all_pieces = np.concatenate([im["tag_pieces"] for im in images])
    piece_start = np.cumsum(all_lengths) - all_lengths  # of each object, in all_pieces

    # Object index of every slot j: subject, object, then the others in their stored order.
    slot = np.arange(lr)[None, :]
    low, high = np.minimum(subjects, objects)[:, None], np.maximum(subjects, objects)[:, None]
    rest = slot - 2
    order = rest + (rest >= low) + (rest >= high - 1)
    order = np.where(slot == 0, subjects[:, None], np.where(slot == 1, objects[:, None], order))
    used = slot < np.minimum(num_objects, lr)[:, None]  # [n, Lr]
    flat = np.where(used, region_base[:, None] + order, 0)
    out["regions"][:n] = np.where(used[..., None], all_regions[flat], 0.0)
    out["region_mask"][:n] = used

    # Text: [CLS] + tags of the used slots in slot order, cut to fit, + [SEP].
    piece_lengths = np.where(used, all_lengths[flat], 0)  # [n, Lr]
    text_pos = 1 + np.cumsum(piece_lengths, axis=1) - piece_lengths  # where each slot's tag starts
    run, within = _ragged_positions(piece_lengths)
    destination = text_pos.ravel()[run] + within
    fits = destination < lt - 1
    text_ids = out["text_ids"]
    text_ids[(run // lr)[fits], destination[fits]] = all_pieces[piece_start[flat.ravel()[run]] + within][fits]
    sep = np.minimum(1 + piece_lengths.sum(axis=1), lt - 1)
    text_ids[:n, 0] = shape.cls_id
    text_ids[np.arange(n), sep] = shape.sep_id
    out["text_mask"][:n] = np.arange(lt)[None, :] <= sep[:, None]
    for key, j in (("subject_span", 0), ("object_span", 1)):
        out[key][:n, 0] = np.minimum(text_pos[:, j], lt - 1)
        out[key][:n, 1] = np.minimum(text_pos[:, j] + piece_lengths[:, j], lt - 1)


class AssembleBags(grain.transforms.RandomMap):
    """Grain transform: bag record -> fixed-shape arrays, with a freshly sampled gold target (images
    source None: without IMAGE_KEYS, no image record read)."""

    def __init__(self, images_source, shape: InstanceShape):
        self._images = images_source
        self._shape = shape
        self._last = (-1, None)  # (record index, decoded record) of the image read last

    def _image(self, index: int) -> dict:
        """An image record, decoded once for consecutive bags of one image (kb/instances.py's one-instance
        bags, in image order); records are only read, never changed."""
        last = self._last
        if last[0] != index:
            last = self._last = (index, self._images[index])
        return last[1]

    def random_map(self, bag: dict, rng: np.random.Generator) -> dict[str, np.ndarray]:
        images = None
        if self._images is not None:
            wanted = [int(i) for i in bag["images"][: self._shape.bag_size]]
            # Each image once, one by one: the source's __getitems__ starts a thread pool per call, which
            # costs more than the reads (docs/performance.md, "Input pipeline").
            read = {i: self._image(i) for i in dict.fromkeys(wanted)}
            images = [read[i] for i in wanted]
        return assemble_bag(bag, images, self._shape, target=rng.choice(bag["labels"]))


def pad_batch(batch: dict[str, np.ndarray], batch_size: int) -> dict[str, np.ndarray]:
    """Pads a short last batch with empty bags (zeros, bag_mask False) up to `batch_size`."""
    missing = batch_size - len(batch["bag_mask"])
    if missing <= 0:
        return batch
    return {k: np.concatenate([v, np.zeros((missing, *v.shape[1:]), v.dtype)]) for k, v in batch.items()}


def _used_length(mask: np.ndarray) -> int:
    """1 + the last position of the last axis that any row uses (mask bool [..., L]); 0 if none."""
    used = mask.reshape(-1, mask.shape[-1]).any(axis=0)
    return int((np.arange(1, used.size + 1) * used).max(initial=0))


def bucket_lengths(batch: dict[str, np.ndarray], multiple: int) -> np.ndarray:
    """The text positions and region slots a batch needs, rounded up to a multiple: int64 [2].

    Text: up to the last position any instance uses (text_mask, or a span end); regions: up to the
    last slot any instance uses, at least 2 (the subject's and object's regions are slots 0 and 1).
    Each is rounded up to a multiple of `multiple` and capped at the batch's Lt / Lr; `multiple`
    0 keeps (Lt, Lr). Rounding commutes with a max, so the max over processes of their buckets is
    the bucket of the processes' batches together.

    Args:
      batch: text_mask bool [..., Lt], region_mask bool [..., Lr], subject_span/object_span int [..., 2].
      multiple: config.data.length_multiple.
    """
    if multiple < 0:
        raise ValueError(f"config.data.length_multiple={multiple}: expected a positive multiple (0: keep Lt and Lr)")
    full = np.array([batch["text_mask"].shape[-1], batch["region_mask"].shape[-1]], np.int64)
    if multiple == 0:
        return full
    span_end = max(int(batch["subject_span"][..., 1].max(initial=0)), int(batch["object_span"][..., 1].max(initial=0)))
    needed = np.array([max(_used_length(batch["text_mask"]), span_end, 1), max(_used_length(batch["region_mask"]), 2)])
    return np.minimum(-(-needed // multiple) * multiple, full)


def trim_padding(batch: dict[str, np.ndarray], text_len: int, num_regions: int) -> dict[str, np.ndarray]:
    """The batch with its text axis cut to `text_len` positions and its region axis to `num_regions`.

    text_ids/text_mask [..., Lt] -> [..., text_len], regions [..., Lr, F] -> [..., num_regions, F],
    region_mask [..., Lr] -> [..., num_regions]; the other arrays unchanged. When the cut-off
    positions are all padding (lengths from `bucket_lengths`), the model computes the same outputs
    for the real tokens: text position embeddings are sliced to the text length, regions have none,
    padded keys get zero attention weight and the spans lie in the kept text.
    """
    return {
        **batch,
        "text_ids": batch["text_ids"][..., :text_len],
        "text_mask": batch["text_mask"][..., :text_len],
        "regions": batch["regions"][..., :num_regions, :],
        "region_mask": batch["region_mask"][..., :num_regions],
    }


def make_loader(
    records_dir: str,
    split: str,
    shape: InstanceShape,
    batch_size: int,
    *,
    train: bool,
    seed: int,
    num_epochs: int | None = None,
    worker_count: int = 0,
    shard_options: grain.sharding.ShardOptions | None = None,
    with_images: bool = True,
) -> grain.DataLoader:
    """A Grain loader of a split's bags (without images: no IMAGE_KEYS, see `bag_layout`).

    Training loaders shuffle, repeat (`num_epochs=None`) and drop the remainder; evaluation
    loaders read each bag once in order and keep a short last batch (see `pad_batch`). Each JAX
    process reads its own shard (`grain.sharding.ShardByJaxProcess` unless `shard_options`
    says otherwise); an evaluation shard is a contiguous range of the split, the first ones one
    bag longer when the split does not divide evenly. The iterator's position is
    `iter(loader).get_state()`.
    """
    if worker_count and not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()  # Grain's workers read absl flags; outside app.run take the defaults.
    images, bags = open_records(records_dir)
    if split not in bags:
        raise ValueError(f"{records_dir}: no bags in split {split!r}; splits built: {sorted(bags)}")
    source = bags[split]
    shard_options = shard_options or grain.sharding.ShardByJaxProcess(drop_remainder=train)
    if not train and shard_options.shard_count > 1:
        # grain.DataLoader gives every shard len // shard_count records, losing the remainder: read
        # this shard's contiguous range (the first len % shard_count shards one record more) instead.
        index, count = shard_options.shard_index, shard_options.shard_count
        size, extra = divmod(len(source), count)
        start = index * size + min(index, extra)
        source = grain.MapDataset.source(source)[start:start + size + (index < extra)]
        shard_options = grain.sharding.NoSharding()
    sampler = grain.samplers.IndexSampler(
        num_records=len(source),
        shard_options=shard_options,
        shuffle=train,
        num_epochs=num_epochs if (train or num_epochs) else 1,
        seed=seed,
    )
    return grain.DataLoader(
        data_source=source,
        sampler=sampler,
        operations=[AssembleBags(images if with_images else None, shape),
                    grain.transforms.Batch(batch_size, drop_remainder=train)],
        worker_count=worker_count,
        read_options=grain.ReadOptions(num_threads=READ_THREADS, prefetch_buffer_size=256),
    )
