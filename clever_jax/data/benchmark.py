"""Benchmark construction: knowledge-base facts, held-out splits by entity pair, NA pairs.

Facts are the distinct (subject, relation, object) triplets of the annotations. Entity pairs
with facts are split into train/val/test; every image is given to exactly one split, so no image
serves two splits; a pair's bag only draws instances from images of its own split. Pairs of
vocabulary entities that co-occur in images but have no fact become NA bags.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from clever_jax.data.bags import Candidates

SPLITS = ("train", "val", "test")
# The paper's benchmark, for comparison in the statistics file.
PAPER_SIZES = {
    "train": {"facts": 13780, "entity_pairs": 6443, "images": 55911},
    "val": {"facts": 1166, "entity_pairs": 678, "images": 5224},
    "test": {"facts": 3496, "entity_pairs": 1964, "images": 13722},
}


@dataclasses.dataclass
class Benchmark:
    """Bags of the three splits.

    Attributes:
      pairs: int64 [P, 2] subject and object class of each bag (positive bags, then NA bags).
      split: int32 [P] index into SPLITS.
      label_start: int64 [P + 1]: bag p's relation ids are labels[label_start[p]:label_start[p+1]].
      labels: int64 relation ids (1..R), or the single id 0 for an NA bag.
      image_split: int32 [I] split of every image row, -1 for images no bag uses.
      bag_index: int32 [C] bag of each candidate instance, -1 when the candidate is in no bag
        (empty for knowledge-base bags, which are built streamed: detections.pair_bags).
      dropped_pairs: fact pairs dropped because no image of their split shows them.
    """

    pairs: np.ndarray
    split: np.ndarray
    label_start: np.ndarray
    labels: np.ndarray
    image_split: np.ndarray
    bag_index: np.ndarray
    dropped_pairs: int

    @property
    def num_bags(self) -> int:
        return len(self.pairs)

    def facts(self, split: int) -> np.ndarray:
        """int64 [F, 3]: (subject class, relation id, object class) of the split's positive bags."""
        bag_of_label = np.repeat(np.arange(self.num_bags), np.diff(self.label_start))
        keep = (self.split[bag_of_label] == split) & (self.labels > 0)
        bags, labels = bag_of_label[keep], self.labels[keep]
        return np.stack([self.pairs[bags, 0], labels, self.pairs[bags, 1]], axis=1)


def _choose_split(rng: np.random.Generator, allowed: np.ndarray, ratios: np.ndarray) -> np.ndarray:
    """int64 [K]: a split for each row of allowed bool [K, 3], drawn with weights `ratios`."""
    weights = allowed * ratios
    cumulative = np.cumsum(weights, axis=1)
    draw = rng.random(len(allowed)) * cumulative[:, -1]
    return (cumulative <= draw[:, None]).sum(axis=1).clip(0, len(ratios) - 1)


def build_benchmark(
    candidates: Candidates,
    fact_triplets: np.ndarray,
    num_images: int,
    num_entities: int,
    split_ratios: tuple[float, float, float],
    na_ratio: float,
    seed: int,
    min_fact_count: int = 1,
) -> Benchmark:
    """Splits fact pairs and images, picks NA pairs and assigns every candidate to a bag.

    Args:
      candidates: all instances of entity pairs in the corpus.
      fact_triplets: int64 [L, 3] (subject class, relation id, object class) of every
        annotated relationship (repeats allowed).
      num_images: I.
      num_entities: E.
      split_ratios: fractions of fact pairs for train, val and test.
      na_ratio: NA bags per positive bag, in each split.
      seed: randomness of the splits and of the NA pairs picked.
      min_fact_count: a triplet becomes a fact when at least this many relationships state it
        (1: every distinct triplet, as in the paper).
    """
    rng = np.random.default_rng(seed)
    ratios = np.asarray(split_ratios, np.float64) / np.sum(split_ratios)
    facts, counts = np.unique(fact_triplets, axis=0, return_counts=True)
    facts = facts[counts >= min_fact_count]
    codes = facts[:, 0] * num_entities + facts[:, 2]
    fact_pairs = np.unique(codes)
    pair_split = np.full(num_entities * num_entities, -1, np.int32)
    permuted = rng.permutation(fact_pairs)
    bounds = np.round(np.cumsum(ratios) * len(permuted)).astype(np.int64)
    pair_split[permuted] = np.searchsorted(bounds, np.arange(len(permuted)), side="right")

    # Images go to one split each: among the splits of the fact pairs they show, or any split
    # (by ratio) when they only show NA pairs.
    candidate_split = pair_split[candidates.pair_codes]
    shows = np.zeros((num_images, len(SPLITS)), bool)
    positive = candidate_split >= 0
    shows[candidates.images[positive], candidate_split[positive]] = True
    has_pairs = np.zeros(num_images, bool)
    has_pairs[candidates.images] = True
    allowed = np.where(shows.any(axis=1, keepdims=True), shows, True)
    image_split = np.where(has_pairs, _choose_split(rng, allowed, ratios), -1).astype(np.int32)

    # NA pairs: co-occurring pairs with no fact, each given a split at random.
    na_codes = np.setdiff1d(np.unique(candidates.pair_codes), fact_pairs)
    pair_split[na_codes] = _choose_split(rng, np.ones((len(na_codes), len(SPLITS)), bool), ratios)
    in_split = image_split[candidates.images] == pair_split[candidates.pair_codes]
    present = np.unique(candidates.pair_codes[in_split])
    kept_facts = np.isin(fact_pairs, present)
    positive_codes = fact_pairs[kept_facts]
    na_present = np.intersect1d(na_codes, present)
    na_kept = []
    for split in range(len(SPLITS)):
        pool = na_present[pair_split[na_present] == split]
        quota = int(round(na_ratio * np.sum(pair_split[positive_codes] == split)))
        na_kept.append(rng.permutation(pool)[:quota])
    na_kept_codes = np.sort(np.concatenate(na_kept)).astype(np.int64)

    bag_codes = np.concatenate([positive_codes, na_kept_codes])
    bag_of_code = np.full(num_entities * num_entities, -1, np.int32)
    bag_of_code[bag_codes] = np.arange(len(bag_codes))
    bag_index = np.where(in_split, bag_of_code[candidates.pair_codes], -1)

    fact_bag = bag_of_code[codes]
    keep = fact_bag >= 0
    labels_per_bag = np.bincount(fact_bag[keep], minlength=len(bag_codes))
    labels_per_bag[len(positive_codes):] = 1  # NA bags carry the single label 0
    by_bag = np.argsort(fact_bag[keep], kind="stable")
    labels = np.concatenate([facts[keep][by_bag, 1], np.zeros(len(na_kept_codes), np.int64)])

    used_images = np.zeros(num_images, bool)
    used_images[candidates.images[bag_index >= 0]] = True
    return Benchmark(
        pairs=np.stack([bag_codes // num_entities, bag_codes % num_entities], axis=1),
        split=pair_split[bag_codes],
        label_start=np.concatenate([[0], np.cumsum(labels_per_bag)]).astype(np.int64),
        labels=labels.astype(np.int64),
        image_split=np.where(used_images, image_split, -1),
        bag_index=bag_index,
        dropped_pairs=int((~kept_facts).sum()),
    )
