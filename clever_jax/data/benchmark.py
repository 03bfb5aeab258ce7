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


def add_train_facts(benchmark: Benchmark, candidates: Candidates, facts: np.ndarray, num_entities: int) -> Benchmark:
    """The benchmark with `facts` added as distant labels of the training split (bootstrapping).

    A fact of a training NA bag turns that bag positive; a fact of a pair with no bag gets a new training
    bag of the pair's instances in training images. The validation and test splits are untouched.

    Args:
      benchmark: a built benchmark whose bag_index covers `candidates`.
      candidates: the candidate instances it was built from.
      facts: int64 [A, 3] (subject class, relation id >= 1, object class); repeats allowed.
      num_entities: E.

    Raises:
      ValueError: a fact of a pair with a positive bag, or with a validation or test bag, or (for a pair
        with no bag) with no instance in a training image.
    """
    facts = np.unique(np.asarray(facts, np.int64).reshape(-1, 3), axis=0)
    num_bags = benchmark.num_bags
    bag_codes = benchmark.pairs[:, 0] * num_entities + benchmark.pairs[:, 1]
    na_bag = benchmark.labels[benchmark.label_start[:-1]] == 0
    fact_codes = facts[:, 0] * num_entities + facts[:, 2]
    bag_of_code = np.full(num_entities * num_entities, -1, np.int64)
    bag_of_code[bag_codes] = np.arange(num_bags)
    hit = bag_of_code[fact_codes]
    refused = (hit >= 0) & (~na_bag[np.maximum(hit, 0)] | (benchmark.split[np.maximum(hit, 0)] != 0))
    if refused.any():
        raise ValueError(f"{int(refused.sum())} added facts (the first: {facts[refused][0].tolist()}) are of pairs "
                         "with a fact or with a validation or test bag: only training NA bags and new pairs take them")
    if (facts[:, 1] < 1).any():
        raise ValueError(f"added facts need relation ids >= 1 (0 is NA); found {facts[facts[:, 1] < 1][0].tolist()}")
    new_codes = np.setdiff1d(fact_codes, bag_codes)
    in_train = benchmark.image_split[candidates.images] == 0
    new_instance = in_train & np.isin(candidates.pair_codes, new_codes)
    missing = np.setdiff1d(new_codes, candidates.pair_codes[new_instance])
    if len(missing):
        raise ValueError(f"{len(missing)} added pairs (the first: {np.divmod(missing[0], num_entities)}) have no "
                         "instance in a training image")
    codes = np.concatenate([bag_codes, new_codes])
    bag_of_code[new_codes] = num_bags + np.arange(len(new_codes))
    labelled = np.zeros(len(codes), bool)  # The bags that take added facts: training NA bags and new ones.
    labelled[bag_of_code[fact_codes]] = True
    # Positive bags first (old positives, converted NA bags, new bags in that order), then the NA bags left.
    order = np.argsort(np.concatenate([na_bag, np.zeros(len(new_codes), bool)]) & ~labelled, kind="stable")
    new_id = np.empty(len(codes), np.int64)
    new_id[order] = np.arange(len(codes))
    label_bag = np.repeat(np.arange(num_bags), np.diff(benchmark.label_start))
    kept = ~labelled[label_bag]
    label_bag = new_id[np.concatenate([label_bag[kept], bag_of_code[fact_codes]])]
    labels = np.concatenate([benchmark.labels[kept], facts[:, 1]])
    by_bag = np.lexsort((labels, label_bag))
    bag_index = np.where(benchmark.bag_index >= 0, new_id[np.maximum(benchmark.bag_index, 0)], -1)
    bag_index[new_instance] = new_id[bag_of_code[candidates.pair_codes[new_instance]]]
    codes = codes[order]
    return Benchmark(
        pairs=np.stack([codes // num_entities, codes % num_entities], axis=1),
        split=np.concatenate([benchmark.split, np.zeros(len(new_codes), np.int32)])[order],
        label_start=np.concatenate([[0], np.cumsum(np.bincount(label_bag, minlength=len(codes)))]).astype(np.int64),
        labels=labels[by_bag],
        image_split=benchmark.image_split,
        bag_index=bag_index.astype(np.int32),
        dropped_pairs=benchmark.dropped_pairs,
    )
