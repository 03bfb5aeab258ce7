"""Instances of entity pairs in images, and bag construction (top-N by overlap, random or as listed).

An instance is (image, subject object, object object) with two distinct objects whose classes
are the pair's. All functions are vectorised over candidates: no Python loop per instance.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

import numpy as np

from clever_jax.data.vg import Corpus, box_iou

SAMPLERS = ("overlap", "random", "listed")


@dataclasses.dataclass
class Candidates:
    """Every ordered pair of distinct vocabulary objects that share an image.

    Attributes:
      subjects, objects: int32 [C] object rows.
      images: int32 [C] image rows.
      pair_codes: int32 [C] subject class * num_entities + object class.
    """

    subjects: np.ndarray
    objects: np.ndarray
    images: np.ndarray
    pair_codes: np.ndarray

    def select(self, mask: np.ndarray) -> Candidates:
        return Candidates(*(getattr(self, f.name)[mask] for f in dataclasses.fields(self)))


def enumerate_candidates(corpus: Corpus, num_entities: int, image_rows: slice = slice(None)) -> Candidates:
    """All instances of all entity pairs in the corpus's images `image_rows` (a range; default
    all), image by image, in object order."""
    lo, hi, _ = image_rows.indices(corpus.num_images)
    begin, end = corpus.object_start[lo], corpus.object_start[hi]
    local_rows = np.flatnonzero(corpus.object_classes[begin:end] >= 0)
    vocab_rows = (begin + local_rows).astype(np.int32)
    # Image of each vocabulary object, counted from `lo`.
    images = np.repeat(np.arange(hi - lo, dtype=np.int32), np.diff(corpus.object_start[lo:hi + 1]))[local_rows]
    per_image = np.bincount(images, minlength=hi - lo).astype(np.int32)
    partners = per_image[images]  # how many objects each vocabulary object pairs with (itself included)
    total = int(partners.sum(dtype=np.int64))
    if total >= 2**31:
        raise ValueError(f"{total} candidate instances: more than int32 indices address; split the corpus")
    first = np.cumsum(per_image, dtype=np.int32) - per_image  # position in vocab_rows of each image's first
    subject_pos = np.repeat(np.arange(len(vocab_rows), dtype=np.int32), partners)
    # Each subject's run pairs it with its image's objects: first of the image + rank in the run.
    object_pos = np.repeat(first[images] - (np.cumsum(partners, dtype=np.int32) - partners), partners)
    object_pos += np.arange(total, dtype=np.int32)
    distinct = subject_pos != object_pos
    subjects, objects = vocab_rows[subject_pos[distinct]], vocab_rows[object_pos[distinct]]
    classes = corpus.object_classes
    return Candidates(
        subjects=subjects,
        objects=objects,
        images=images[subject_pos[distinct]] + np.int32(lo),
        pair_codes=classes[subjects] * np.int32(num_entities) + classes[objects],
    )


def instance_relations(
    num_objects: int, pair_subjects: np.ndarray, pair_objects: np.ndarray, pair_relations: np.ndarray,
    subjects: np.ndarray, objects: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """The relations stated between two objects, for every instance subject -> object.

    Args:
      num_objects: O, object rows are 0..O-1.
      pair_subjects, pair_objects, pair_relations: [L] statements (subject row, object row, relation id).
      subjects, objects: [M] the instances' object rows.

    Returns:
      instance int64 [T] (ascending) and relation id int64 [T]: one entry per statement about an
      instance's two objects (in that direction).
    """
    stated = pair_subjects.astype(np.int64) * num_objects + pair_objects
    order = np.argsort(stated, kind="stable")
    stated = stated[order]
    key = subjects.astype(np.int64) * num_objects + objects
    low = np.searchsorted(stated, key, side="left")
    count = np.searchsorted(stated, key, side="right") - low
    instance = np.repeat(np.arange(len(key)), count)
    within = np.arange(instance.size) - np.repeat(np.cumsum(count) - count, count)
    return instance, pair_relations[order][low[instance] + within].astype(np.int64)


def annotated_relations(corpus: Corpus, subjects: np.ndarray, objects: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(instance [T], relation id [T]): the relationship records of each instance subject -> object."""
    return instance_relations(len(corpus.object_ids), corpus.rel_subjects, corpus.rel_objects, corpus.rel_relations,
                              subjects, objects)


def true_relations(corpus: Corpus, subjects: np.ndarray, objects: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(instance [T], relation id [T]): what each instance subject -> object truly shows (the generated
    world's latent truth); both empty for real data (corpus.true_relations is None)."""
    if corpus.true_relations is None:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return instance_relations(len(corpus.object_ids), corpus.true_subjects, corpus.true_objects,
                              corpus.true_relations, subjects, objects)


@dataclasses.dataclass
class Bags:
    """Instances kept for each bag, grouped by bag.

    Attributes:
      start: int64 [P + 1]: bag p owns instances start[p]:start[p + 1] (ranked best first).
      subjects, objects, images: int64 [M] object and image rows of the kept instances.
      available: int64 [P] candidate instances of each bag before truncation to the bag size.
      annotation_instance, annotation_relation: int64 [A] the relationship records of each kept
        instance (`annotated_relations`).
      truth_instance, truth_relation: int64 [T] the relations each kept instance truly shows
        (`true_relations`; empty for real data).
    """

    start: np.ndarray
    subjects: np.ndarray
    objects: np.ndarray
    images: np.ndarray
    available: np.ndarray
    annotation_instance: np.ndarray
    annotation_relation: np.ndarray
    truth_instance: np.ndarray
    truth_relation: np.ndarray

    @property
    def annotated(self) -> np.ndarray:
        """bool [M]: whether the annotations relate the instance's two objects."""
        flags = np.zeros(len(self.subjects), bool)
        flags[self.annotation_instance] = True
        return flags


def overlap_key(boxes: np.ndarray, subjects: np.ndarray, objects: np.ndarray, chunk: int = 1 << 22) -> np.ndarray:
    """float32 [C] sort key: -IoU for overlapping boxes (best first), else the centre distance.

    Computed in chunks so that the box temporaries stay small at Visual Genome scale.
    """
    key = np.empty(len(subjects), np.float32)
    for lo in range(0, len(subjects), chunk):
        a, b = boxes[subjects[lo:lo + chunk]], boxes[objects[lo:lo + chunk]]
        iou = box_iou(a, b)
        gap = (a[:, :2] + a[:, 2:]) / 2 - (b[:, :2] + b[:, 2:]) / 2
        key[lo:lo + chunk] = np.where(iou > 0, -iou, np.hypot(gap[:, 0], gap[:, 1]))
    return key


def build_bags(
    corpus: Corpus,
    candidates: Candidates,
    bag_index: np.ndarray,
    num_bags: int,
    bag_size: int,
    sampler: str,
    seed: int,
) -> Bags:
    """Ranks each bag's candidates and keeps the top `bag_size`.

    Args:
      corpus: the ingested annotations.
      candidates: instances to choose from.
      bag_index: int [C] bag of each candidate, -1 for candidates of no bag.
      num_bags: P.
      bag_size: N, instances kept per bag.
      sampler: "overlap": overlapping boxes first by IoU (descending), then the others by
        distance between box centres (ascending); "random": a uniformly random subset; "listed":
        the candidates' own order (the authors' release lists each bag's ranked instances).
      seed: for the random sampler.
    """
    return stream_bags(corpus, [(candidates, bag_index)], num_bags, bag_size, sampler, seed)


def stream_bags(
    corpus: Corpus,
    chunks: Iterable[tuple[Candidates, np.ndarray]],
    num_bags: int,
    bag_size: int,
    sampler: str,
    seed: int,
) -> Bags:
    """build_bags of candidates that come in consecutive chunks, holding one chunk at a time.

    chunks: (candidates, bag_index [C_k]) in candidate order. Each chunk is ranked together with
    each bag's best `bag_size` so far, so the result equals build_bags of the concatenated
    candidates (ties keep candidate order), with memory bounded by a chunk plus P * N instances.
    """
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown bag sampler {sampler!r}; expected one of {SAMPLERS}")
    rng = np.random.default_rng(seed)
    best, best_key, best_bag = None, None, None  # The best bag_size of each bag so far, by bag then rank.
    available, seen = np.zeros(num_bags, np.int64), 0
    for candidates, bag_index in chunks:
        member = bag_index >= 0
        candidates, bag_index = candidates.select(member), bag_index[member]
        if sampler == "overlap":
            key = overlap_key(corpus.boxes, candidates.subjects, candidates.objects)
        elif sampler == "listed":
            key = np.arange(seen, seen + len(bag_index))
        else:
            key = rng.random(len(bag_index), dtype=np.float32)  # Drawn in sequence: the same as one draw.
        seen += len(bag_index)
        available += np.bincount(bag_index, minlength=num_bags)
        if best is not None:  # Earlier candidates first, so that ties keep candidate order.
            candidates = Candidates(*(np.concatenate([getattr(best, f.name), getattr(candidates, f.name)])
                                      for f in dataclasses.fields(Candidates)))
            key, bag_index = np.concatenate([best_key, key]), np.concatenate([best_bag, bag_index])
        order = np.lexsort((key, bag_index))
        bag_sorted = bag_index[order]
        in_bag = np.bincount(bag_sorted, minlength=num_bags)
        rank = np.arange(len(order)) - (np.cumsum(in_bag) - in_bag)[bag_sorted]
        kept = order[rank < bag_size]
        best, best_key, best_bag = candidates.select(kept), key[kept], bag_index[kept]
    if best is None:
        raise ValueError("stream_bags: no chunk of candidates given")
    annotation_instance, annotation_relation = annotated_relations(corpus, best.subjects, best.objects)
    truth_instance, truth_relation = true_relations(corpus, best.subjects, best.objects)
    return Bags(
        start=np.concatenate([[0], np.cumsum(np.minimum(available, bag_size))]).astype(np.int64),
        subjects=best.subjects,
        objects=best.objects,
        images=best.images,
        available=available,
        annotation_instance=annotation_instance,
        annotation_relation=annotation_relation,
        truth_instance=truth_instance,
        truth_relation=truth_relation,
    )
