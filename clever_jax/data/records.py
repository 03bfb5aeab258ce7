"""TFDS datasets in array_record format: one of images (stored once), one of bags.

Both are built and read by TFDS without TensorFlow. Bags reference images by record index, so
a bag of 50 instances costs a few hundred bytes instead of megabytes of region features.

Image record: image_id int64, size int32 [2] (width, height), boxes float32 [K, 4] (x1, y1, x2,
y2 pixels), classes int32 [K] (entity id, -1 outside the vocabulary), regions float32 [K, D + 6]
(appearance + geometry), tag_pieces int32 [T] (word pieces of all tags in object order),
tag_lengths int32 [K] (pieces per tag).

Bag record (splits train/val/test): split int32 (its index in SPLITS), bag int64, pair int32 [2]
(subject, object class), labels int32 [L] (relation ids; [0] for NA), images int32 [N] (image
record index), subjects and objects int32 [N] (object index within that image record),
annotations int32 [A, 2] (instance, relation id) for every relationship record of an instance's
two objects, truth int32 [T, 2] the same for every relation an instance truly shows (the
generated world's latent truth; none for real data, and manifest["has_truth"] says which).

The manifest (written last) keeps every record file's size and SHA-256 and each split's number of
bags; `open_records` checks them (the sizes and counts every time, the contents once per process
and file version: about 1 s for the demo's 413 MB of records on the development machine) and that
each split's first record belongs to that split.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator

import numpy as np
import tensorflow_datasets as tfds

from clever_jax import files
from clever_jax.data.bags import Bags
from clever_jax.data.benchmark import SPLITS, Benchmark
from clever_jax.data.jsonio import DataError
from clever_jax.data.vg import GEOMETRY_DIM, Corpus

RECORDS_VERSION = "1.2.0"
MANIFEST = "manifest.json"


class _GeneratedRecords(tfds.core.GeneratorBasedBuilder):
    """A TFDS builder whose examples come from iterators handed to it (one per split)."""

    VERSION = tfds.core.Version(RECORDS_VERSION)
    DESCRIPTION = ""

    def __init__(self, *, sources: dict[str, Iterator[tuple[int, dict]]] | None = None, **kwargs):
        self._sources = sources or {}
        super().__init__(file_format="array_record", **kwargs)

    def _features(self) -> tfds.features.FeaturesDict:
        raise NotImplementedError

    def _info(self) -> tfds.core.DatasetInfo:
        # No shuffling: record i is the i-th example generated, so bags can address images by index.
        return tfds.core.DatasetInfo(
            builder=self, description=self.DESCRIPTION, disable_shuffling=True, features=self._features()
        )

    def _split_generators(self, dl_manager):
        del dl_manager
        return {name: self._generate_examples(name) for name in self._sources}

    def _generate_examples(self, split: str):
        yield from self._sources[split]


class ImageRecords(_GeneratedRecords):
    """Per-image features, boxes, classes and tag word pieces (one split, "images")."""

    DESCRIPTION = "CLEVER images: region features, boxes, classes and tag word pieces."

    def __init__(self, *, region_dim: int, **kwargs):
        self._region_dim = region_dim
        super().__init__(**kwargs)
        self._original_state["region_dim"] = region_dim  # TFDS re-creates builders from this when unpickling.

    def _features(self) -> tfds.features.FeaturesDict:
        return tfds.features.FeaturesDict({
            "image_id": tfds.features.Scalar(np.int64),
            "size": tfds.features.Tensor(shape=(2,), dtype=np.int32),
            "boxes": tfds.features.Tensor(shape=(None, 4), dtype=np.float32),
            "classes": tfds.features.Tensor(shape=(None,), dtype=np.int32),
            "regions": tfds.features.Tensor(shape=(None, self._region_dim), dtype=np.float32),
            "tag_pieces": tfds.features.Tensor(shape=(None,), dtype=np.int32),
            "tag_lengths": tfds.features.Tensor(shape=(None,), dtype=np.int32),
        })


class BagRecords(_GeneratedRecords):
    """Per-bag entity pair, labels and instances (splits train/val/test)."""

    DESCRIPTION = "CLEVER bags: entity pair, relation labels, instances as image references."

    def _features(self) -> tfds.features.FeaturesDict:
        return tfds.features.FeaturesDict({
            "split": tfds.features.Scalar(np.int32),
            "bag": tfds.features.Scalar(np.int64),
            "pair": tfds.features.Tensor(shape=(2,), dtype=np.int32),
            "labels": tfds.features.Tensor(shape=(None,), dtype=np.int32),
            "images": tfds.features.Tensor(shape=(None,), dtype=np.int32),
            "subjects": tfds.features.Tensor(shape=(None,), dtype=np.int32),
            "objects": tfds.features.Tensor(shape=(None,), dtype=np.int32),
            "annotations": tfds.features.Tensor(shape=(None, 2), dtype=np.int32),
            "truth": tfds.features.Tensor(shape=(None, 2), dtype=np.int32),
        })


def _image_examples(corpus: Corpus, image_rows: np.ndarray, pieces: np.ndarray, lengths: np.ndarray):
    piece_start = np.concatenate([[0], np.cumsum(lengths)])
    for record, row in enumerate(image_rows):
        lo, hi = corpus.object_start[row], corpus.object_start[row + 1]
        yield record, {
            "image_id": corpus.image_ids[row],
            "size": corpus.image_sizes[row],
            "boxes": corpus.boxes[lo:hi],
            "classes": corpus.object_classes[lo:hi],
            "regions": corpus.regions(row),
            "tag_pieces": pieces[piece_start[lo]:piece_start[hi]],
            "tag_lengths": lengths[lo:hi],
        }


def _bag_statements(instance: np.ndarray, relation: np.ndarray, lo: int, hi: int) -> np.ndarray:
    """int32 [k, 2] (instance within the bag, relation id) of the statements about instances lo..hi-1
    (`instance` ascending)."""
    first, last = np.searchsorted(instance, [lo, hi])
    return np.stack([instance[first:last] - lo, relation[first:last]], 1).astype(np.int32)


def _bag_examples(corpus: Corpus, benchmark: Benchmark, bags: Bags, record_of_image: np.ndarray, split: int):
    for bag in np.flatnonzero(benchmark.split == split):
        lo, hi = bags.start[bag], bags.start[bag + 1]
        images = bags.images[lo:hi]
        first_object = corpus.object_start[images]
        yield int(bag), {
            "split": split,
            "bag": bag,
            "pair": benchmark.pairs[bag].astype(np.int32),
            "labels": benchmark.labels[benchmark.label_start[bag]:benchmark.label_start[bag + 1]].astype(np.int32),
            "images": record_of_image[images].astype(np.int32),
            "subjects": (bags.subjects[lo:hi] - first_object).astype(np.int32),
            "objects": (bags.objects[lo:hi] - first_object).astype(np.int32),
            "annotations": _bag_statements(bags.annotation_instance, bags.annotation_relation, lo, hi),
            "truth": _bag_statements(bags.truth_instance, bags.truth_relation, lo, hi),
        }


def write_records(
    data_dir: str,
    corpus: Corpus,
    benchmark: Benchmark,
    bags: Bags,
    pieces: np.ndarray,
    lengths: np.ndarray,
    meta: dict,
) -> np.ndarray:
    """Writes the image and bag datasets under `data_dir`; returns the image rows stored, in order.

    `pieces`/`lengths` are the tag word pieces of every corpus object (see text.tokenize_names).
    A manifest of file sizes and `meta` (e.g. special token ids) is written last; `open_records`
    checks it to catch truncated files.
    """
    tfds.disable_progress_bar()
    image_rows = np.unique(bags.images)
    record_of_image = np.full(corpus.num_images, -1, np.int64)
    record_of_image[image_rows] = np.arange(len(image_rows))
    region_dim = corpus.feature_dim + GEOMETRY_DIM
    image_source = {"images": _image_examples(corpus, image_rows, pieces, lengths)}
    ImageRecords(region_dim=region_dim, sources=image_source, data_dir=data_dir).download_and_prepare()
    sources = {
        name: _bag_examples(corpus, benchmark, bags, record_of_image, split)
        for split, name in enumerate(SPLITS)
        if np.any(benchmark.split == split)
    }
    BagRecords(sources=sources, data_dir=data_dir).download_and_prepare()
    paths = [os.path.join(root, name) for root, _, names in os.walk(data_dir) for name in names
             if ".array_record-" in name]
    record_files = {os.path.relpath(path, data_dir): {"size": os.path.getsize(path), "sha256": files.sha256(path)}
                    for path in paths}
    counts = {name: int(np.sum(benchmark.split == split)) for split, name in enumerate(SPLITS)}
    manifest = {"version": RECORDS_VERSION, "region_dim": region_dim, "files": record_files, "splits": counts, **meta}
    with files.atomic_write(os.path.join(data_dir, MANIFEST)) as f:
        json.dump(manifest, f, indent=1, sort_keys=True)
    return image_rows


_VERIFIED: set[tuple[str, int, int]] = set()  # (path, size, mtime_ns) of record files whose digest matched.


def read_manifest(data_dir: str) -> dict:
    """The build's manifest: record file sizes, region_dim and the meta given at build time."""
    manifest_path = os.path.join(data_dir, MANIFEST)
    if not os.path.isfile(manifest_path):
        raise DataError(f"{data_dir}: no {MANIFEST}: the records were never completely built; run --mode=prepare")
    with open(manifest_path) as f:
        manifest = json.load(f)
    if manifest.get("version") != RECORDS_VERSION:
        raise DataError(f"{manifest_path}: records of format {manifest.get('version')}, this version of clever_jax "
                        f"reads {RECORDS_VERSION}; delete {data_dir} and run --mode=prepare again")
    return manifest


def open_records(data_dir: str) -> tuple[object, dict[str, object]]:
    """TFDS data sources (random access) of the images and of each split's bags.

    Raises DataError when a record file is missing, or its size or content differs from the
    manifest written at build time (a truncated, overwritten or swapped file), or a split holds
    another number of bags or another split's bags.
    """
    manifest = read_manifest(data_dir)
    fix = f"delete {data_dir} and run --mode=prepare again"
    for name, entry in manifest["files"].items():
        path = os.path.join(data_dir, name)
        actual = os.path.getsize(path) if os.path.exists(path) else None
        if actual != entry["size"]:
            raise DataError(
                f"{path}: record file is {'missing' if actual is None else f'{actual} bytes'}, the build wrote "
                f"{entry['size']} bytes (truncated or replaced?); {fix}"
            )
        version = (os.path.abspath(path), actual, os.stat(path).st_mtime_ns)
        if version not in _VERIFIED:
            if files.sha256(path) != entry["sha256"]:
                raise DataError(f"{path}: record file's content differs from what the build wrote (SHA-256; "
                                f"overwritten, or another build's file?); {fix}")
            _VERIFIED.add(version)
    images = ImageRecords(region_dim=manifest["region_dim"], data_dir=data_dir).as_data_source(split="images")
    bag_builder = BagRecords(data_dir=data_dir)
    bags = {name: bag_builder.as_data_source(split=name) for name in bag_builder.info.splits}
    for name, source in bags.items():
        holds = SPLITS[int(source[0]["split"])] if len(source) else name
        if len(source) != manifest["splits"][name] or holds != name:
            raise DataError(f"{data_dir}: split {name!r} holds {len(source)} bags of split {holds!r}; the build "
                            f"wrote {manifest['splits'][name]} of {name!r}; {fix}")
    return images, bags


def split_facts(data_dir: str, split: str, num_entities: int, num_relations: int) -> np.ndarray:
    """bool [E, R + 1, E]: the facts (labelled relations of the bags) of one split of the records."""
    facts = np.zeros((num_entities, num_relations, num_entities), bool)
    bags = open_records(data_dir)[1][split]
    for record in bags.__getitems__(list(range(len(bags)))):
        labels = record["labels"][record["labels"] > 0]
        facts[record["pair"][0], labels, record["pair"][1]] = True
    return facts
