"""A detector's output alone as a corpus, and a bag for every entity pair it shows often enough.

What a knowledge-base builder has for their own images: a VinVL-style features TSV (one line per
image, `image_id<TAB>{"image_h", "image_w", "objects": [{"rect", "class", "feature", ...}]}`; the
format ingestion reads, README "Input formats"), and no objects.json or relationships.json. Each
region is an object: its box is `rect` (clipped to the image), its name `class`, normalised onto
the vocabulary as ingestion normalises annotated names (names outside it stay as context tags,
as in ingestion). Or the authors' release folder (`read_release`): the `rect` and `class` of
each object of its label file with the features of obj_feat_{split}.tsv, its relationships,
bags and splits not read. `pair_bags` then makes one bag per ordered entity pair that co-occurs in at
least `min_images` images, ranked by the configured sampler, with no labels (NA: nothing is
known about them).
"""

from __future__ import annotations

import collections
import os

import numpy as np

from clever_jax.data import release
from clever_jax.data.bags import Bags, enumerate_candidates, stream_bags
from clever_jax.data.benchmark import SPLITS, Benchmark
from clever_jax.data.jsonio import DataError, field
from clever_jax.data.vg import GEOMETRY_DIM, Corpus, FeatureSizes, feature_lines, image_size
from clever_jax.data.vocab import Vocab, entity_classes
from clever_jax.progress import Progress

SPLIT = "test"  # The split the extraction bags are stored as (records hold train, val and test splits).
CHUNK_IMAGES = 4096  # Images whose candidate instances pair_bags holds at once.


def read_detections(path: str, vocab: Vocab, feature_dim: int | None = None) -> Corpus:
    """The corpus of a features TSV alone (see the module docstring): no relationships.

    Regions with a degenerate box or one outside the image are skipped and counted, as are images
    with fewer than two vocabulary objects.

    Raises:
      DataError: naming the file, line and region of a malformed record, an image size that is not
        a whole number of pixels from 1 to 2^31 - 1, an image id twice or a feature of another size
        (FeatureSizes), or when no image has two vocabulary objects.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no features file (a VinVL-style TSV, README 'Input formats')")
    class_of: dict[str, tuple[int, str]] = {}
    skipped: collections.Counter[str] = collections.Counter()
    image_ids, sizes, offsets, counts, classes, names, boxes, slots = [], [], [], [], [], [], [], []
    progress = Progress(os.path.getsize(path) / 1e6, f"Reading {path}", "MB")
    feature_sizes = FeatureSizes(path, feature_dim)
    for line_offset, where, image_id, record in feature_lines(path):
        progress.update(line_offset / 1e6)
        where = f"{where} (image {image_id})"
        width, height = image_size(record, ("image_w", "image_h"), where)
        rects, raw_names = [], []
        for k, region in enumerate(field(record, "objects", list, where)):
            rects.append(feature_sizes.rect(region, f"{where}, region {k}"))
            raw_names.append(field(region, "class", str, f"{where}, region {k}"))
        xyxy = np.asarray(rects, np.float32).reshape(-1, 4)
        clipped = np.clip(xyxy, 0, np.array([width, height, width, height], np.float32))
        keep = (clipped[:, 2] > clipped[:, 0]) & (clipped[:, 3] > clipped[:, 1])
        skipped["region_degenerate_or_outside_image"] += int((~keep).sum())
        cls = np.array(entity_classes(raw_names, vocab, class_of), np.int32).reshape(-1)
        skipped["region_out_of_vocabulary"] += int((keep & (cls < 0)).sum())
        if int((keep & (cls >= 0)).sum()) < 2:
            skipped["image_with_fewer_than_two_vocabulary_objects"] += 1
            continue
        kept = np.flatnonzero(keep)
        image_ids.append(image_id)
        sizes.append((width, height))
        offsets.append(line_offset)
        counts.append(len(kept))
        classes.append(cls[kept])
        names.extend(class_of[raw_names[k]][1] for k in kept)
        boxes.append(clipped[kept])
        slots.append(kept.astype(np.int32))
    feature_dim = feature_sizes.dim()
    if not image_ids:
        raise DataError(f"{path}: no image has two or more regions of vocabulary classes (skipped: {dict(skipped)})")
    empty = np.zeros(0, np.int64)
    return Corpus(
        image_ids=np.asarray(image_ids, np.int64), image_sizes=np.asarray(sizes, np.int32),
        feature_offsets=np.asarray(offsets, np.int64),
        object_start=np.concatenate([[0], np.cumsum(counts)]).astype(np.int64),
        object_ids=np.arange(sum(counts), dtype=np.int64), object_classes=np.concatenate(classes),
        object_names=names, boxes=np.concatenate(boxes), feature_slots=np.concatenate(slots),
        rel_subjects=empty, rel_objects=empty, rel_relations=np.zeros(0, np.int32),
        feature_paths=(os.fspath(path),), feature_file=np.zeros(len(image_ids), np.int32),
        feature_dim=feature_dim, skipped={k: v for k, v in sorted(skipped.items()) if v},
    )


def release_files(release_dir: str) -> list[str]:
    """The files of the authors' release that `read_release` reads; FileNotFoundError naming the missing."""
    needed = [os.path.join(release_dir, name) for name in (release.VOCAB_FILE, release.LABEL_FILE)]
    needed += [release.split_file(release_dir, kind, split) for split in SPLITS
               for kind in ("features", "feature_lines")]
    missing = [path for path in needed if not os.path.isfile(path)]
    if missing:
        raise FileNotFoundError(f"{release_dir}: a release folder as extract.features_path needs "
                                f"{', '.join(os.path.basename(p) for p in needed)}; missing: {', '.join(missing)}")
    return needed


def read_release(release_dir: str, vocab: Vocab, feature_dim: int | None = None) -> Corpus:
    """The corpus of the authors' release read as a detector's output: every object of the label
    file (its `rect` and `class`) with its region of obj_feat_{split}.tsv (appearance + geometry);
    the release's relationships are dropped. feature_dim: appearance values expected (None: the
    file's). DataError as release.read_corpus raises them."""
    release_files(release_dir)
    entity_of, _, _ = release.read_vocab_map(os.path.join(release_dir, release.VOCAB_FILE), vocab)
    stored = feature_dim + GEOMETRY_DIM if feature_dim else None
    corpus, _ = release.read_corpus(release_dir, vocab, set(entity_of.values()), stored)
    corpus.rel_subjects, corpus.rel_objects = np.zeros(0, np.int64), np.zeros(0, np.int64)
    corpus.rel_relations = np.zeros(0, np.int32)
    return corpus


def pair_bags(corpus: Corpus, num_entities: int, min_images: int, bag_size: int, sampler: str,
              seed: int, chunk_images: int = CHUNK_IMAGES) -> tuple[Benchmark, Bags]:
    """One unlabelled bag (split SPLIT) per ordered entity pair seen in at least `min_images` images.

    Streamed over `chunk_images` images at a time (two passes: images per pair, then
    bags.stream_bags), so memory holds one chunk's candidate instances and the bags, never every
    candidate of the collection.

    Returns the bags' Benchmark (pairs in pair-code order, every label NA; its per-candidate
    bag_index is empty, as no full candidate list exists) and their Bags (`bag_size` instances
    ranked by `sampler`: the same as bags.build_bags of every candidate).

    Raises:
      DataError: when no pair reaches `min_images`.
    """
    chunks = [slice(lo, lo + chunk_images) for lo in range(0, corpus.num_images, chunk_images)]
    images_per_code = np.zeros(num_entities**2, np.int64)
    counting = Progress(corpus.num_images, "Counting the images of every pair", unit="images")
    for image_rows in chunks:
        candidates = enumerate_candidates(corpus, num_entities, image_rows)
        code_image = np.unique(candidates.pair_codes.astype(np.int64) * corpus.num_images + candidates.images)
        images_per_code += np.bincount(code_image // corpus.num_images, minlength=num_entities**2)
        counting.update(min(image_rows.stop, corpus.num_images))
    codes = np.flatnonzero(images_per_code >= min_images)
    if not len(codes):
        raise DataError(f"{corpus.feature_paths[0]}: no entity pair is seen in {min_images} or more images "
                        f"(the most: {images_per_code.max(initial=0)}); lower extract.min_images")
    bag_of_code = np.full(num_entities**2, -1, np.int32)
    bag_of_code[codes] = np.arange(len(codes))
    used = np.zeros(corpus.num_images, bool)

    ranking = Progress(corpus.num_images, f"Ranking the instances of {len(codes)} bags", unit="images")

    def member_chunks():
        for image_rows in chunks:
            candidates = enumerate_candidates(corpus, num_entities, image_rows)
            bag_index = bag_of_code[candidates.pair_codes]
            used[candidates.images[bag_index >= 0]] = True
            yield candidates, bag_index
            ranking.update(min(image_rows.stop, corpus.num_images))

    bags = stream_bags(corpus, member_chunks(), len(codes), bag_size, sampler, seed)
    benchmark = Benchmark(
        pairs=np.stack(np.divmod(codes, num_entities), axis=1).astype(np.int64),
        split=np.full(len(codes), SPLITS.index(SPLIT), np.int32),
        label_start=np.arange(len(codes) + 1, dtype=np.int64), labels=np.zeros(len(codes), np.int64),
        image_split=np.where(used, SPLITS.index(SPLIT), -1).astype(np.int32), bag_index=np.zeros(0, np.int32),
        dropped_pairs=0)
    return benchmark, bags
