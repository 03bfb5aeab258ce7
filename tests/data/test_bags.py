"""Candidate enumeration, bag ranking and benchmark splits, checked against direct loops."""

import itertools

import numpy as np
import pytest
from conftest import random_images, write_vg

from clever_jax.data import bags as bags_lib
from clever_jax.data import benchmark as benchmark_lib
from clever_jax.data import vg
from clever_jax.data.vocab import benchmark_vocab

VOCAB = benchmark_vocab()
E = len(VOCAB.entities)


NAMES = ("man", "dog", "umbrella", "tree", "car", "sky")


def random_vg(root, num_images=60, seed=0, names=NAMES):
    """Random images over a few entities (and an out-of-vocabulary name) with random relations."""
    return vg.ingest(*write_vg(root, random_images(num_images, seed, names)), VOCAB)


@pytest.fixture
def corpus(tmp_path):
    return random_vg(tmp_path)


def test_candidates_are_all_ordered_pairs_of_distinct_vocabulary_objects(corpus):
    candidates = bags_lib.enumerate_candidates(corpus, E)
    expected = []
    for image in range(corpus.num_images):
        rows = range(corpus.object_start[image], corpus.object_start[image + 1])
        for s, o in itertools.permutations(rows, 2):
            if corpus.object_classes[s] >= 0 and corpus.object_classes[o] >= 0:
                expected.append((s, o, image, corpus.object_classes[s] * E + corpus.object_classes[o]))
    got = list(zip(candidates.subjects, candidates.objects, candidates.images, candidates.pair_codes, strict=True))
    assert sorted(got) == sorted(expected)


def _reference_bags(corpus, candidates, bag_index, bag_size):
    """Loop version of the overlap ranking: IoU > 0 first by IoU descending, then by distance."""
    ranked = {}
    for c in range(len(bag_index)):
        if bag_index[c] < 0:
            continue
        a, b = corpus.boxes[candidates.subjects[c]], corpus.boxes[candidates.objects[c]]
        iou = float(vg.box_iou(a, b))
        distance = float(np.hypot(*((a[:2] + a[2:]) / 2 - (b[:2] + b[2:]) / 2)))
        key = (0, -iou, 0.0) if iou > 0 else (1, 0.0, distance)
        ranked.setdefault(int(bag_index[c]), []).append((key, c))
    return {bag: [c for _, c in sorted(items)[:bag_size]] for bag, items in ranked.items()}


def test_overlap_ranking_matches_a_direct_sort(corpus):
    candidates = bags_lib.enumerate_candidates(corpus, E)
    codes, bag_index = np.unique(candidates.pair_codes, return_inverse=True)
    bags = bags_lib.build_bags(corpus, candidates, bag_index, len(codes), 3, "overlap", 0)
    reference = _reference_bags(corpus, candidates, bag_index, 3)
    for bag in range(len(codes)):
        lo, hi = bags.start[bag], bags.start[bag + 1]
        want = reference[bag]
        assert bags.subjects[lo:hi].tolist() == candidates.subjects[want].tolist()
        assert bags.objects[lo:hi].tolist() == candidates.objects[want].tolist()
        assert bags.available[bag] == np.sum(bag_index == bag)
    # The annotated flag says whether a relationship record links subject -> object.
    linked = set(zip(corpus.rel_subjects.tolist(), corpus.rel_objects.tolist(), strict=True))
    flags = [(s, o) in linked for s, o in zip(bags.subjects.tolist(), bags.objects.tolist(), strict=True)]
    assert bags.annotated.tolist() == flags and any(flags)


def test_true_relations_of_instances_match_a_loop(tmp_path):
    """Instances get every relation a truth file (relationships.json's format) states for subject -> object."""
    vg_dir, features_path = write_vg(tmp_path, random_images(60, 3, NAMES))
    assert vg.ingest(vg_dir, features_path, VOCAB).true_relations is None  # Real data: no latent truth.
    corpus = vg.ingest(vg_dir, features_path, VOCAB, truth_path=f"{vg_dir}/relationships.json")
    candidates = bags_lib.enumerate_candidates(corpus, E)
    instance, relation = bags_lib.true_relations(corpus, candidates.subjects, candidates.objects)
    truth = {}
    for s, o, r in zip(corpus.true_subjects.tolist(), corpus.true_objects.tolist(), corpus.true_relations.tolist(),
                       strict=True):
        truth.setdefault((s, o), []).append(r)
    want = [(c, r) for c, (s, o) in enumerate(zip(candidates.subjects.tolist(), candidates.objects.tolist(),
                                                   strict=True)) for r in truth.get((s, o), [])]
    assert sorted(zip(instance.tolist(), relation.tolist(), strict=True)) == sorted(want) and want
    assert np.all(np.diff(instance) >= 0)


def test_random_sampler_keeps_a_seeded_subset(corpus):
    candidates = bags_lib.enumerate_candidates(corpus, E)
    codes, bag_index = np.unique(candidates.pair_codes, return_inverse=True)
    one = bags_lib.build_bags(corpus, candidates, bag_index, len(codes), 2, "random", 1)
    same = bags_lib.build_bags(corpus, candidates, bag_index, len(codes), 2, "random", 1)
    other = bags_lib.build_bags(corpus, candidates, bag_index, len(codes), 2, "random", 2)
    np.testing.assert_array_equal(one.subjects, same.subjects)
    assert not np.array_equal(one.subjects, other.subjects)
    for bag in range(len(codes)):
        lo, hi = one.start[bag], one.start[bag + 1]
        assert hi - lo == min(2, np.sum(bag_index == bag))
        pool = set(zip(candidates.subjects[bag_index == bag].tolist(), candidates.objects[bag_index == bag].tolist(),
                       strict=True))
        assert set(zip(one.subjects[lo:hi].tolist(), one.objects[lo:hi].tolist(), strict=True)) <= pool
    with pytest.raises(ValueError, match="unknown bag sampler"):
        bags_lib.build_bags(corpus, candidates, bag_index, len(codes), 2, "clip", 0)


def _benchmark(corpus, na_ratio=1.0, seed=0, min_fact_count=1):
    candidates = bags_lib.enumerate_candidates(corpus, E)
    triplets = np.stack([corpus.object_classes[corpus.rel_subjects], corpus.rel_relations,
                         corpus.object_classes[corpus.rel_objects]], axis=1).astype(np.int64)
    return candidates, triplets, benchmark_lib.build_benchmark(
        candidates, triplets, corpus.num_images, E, (0.6, 0.2, 0.2), na_ratio, seed, min_fact_count)


def test_splits_are_disjoint_by_pair_and_by_image(tmp_path):
    corpus = random_vg(tmp_path, num_images=150)
    candidates, triplets, bench = _benchmark(corpus)
    pair_codes = bench.pairs[:, 0] * E + bench.pairs[:, 1]
    assert len(np.unique(pair_codes)) == bench.num_bags  # each pair is one bag, in one split
    assert set(np.unique(bench.split)) == {0, 1, 2}
    member = bench.bag_index >= 0
    # Every instance comes from an image of its bag's split, and no image serves two splits.
    np.testing.assert_array_equal(bench.image_split[candidates.images[member]], bench.split[bench.bag_index[member]])
    # A bag's labels are exactly the KB facts of its pair; NA bags are pairs without facts.
    facts = {tuple(t) for t in np.unique(triplets, axis=0).tolist()}
    for bag in range(bench.num_bags):
        s, o = bench.pairs[bag].tolist()
        labels = bench.labels[bench.label_start[bag]:bench.label_start[bag + 1]].tolist()
        want = sorted(r for (fs, r, fo) in facts if (fs, fo) == (s, o))
        assert labels == (want or [0])
    total_facts = sum(len(bench.facts(s)) for s in range(3))
    assert total_facts == len(facts) - sum(1 for (s, r, o) in facts if (s * E + o) not in set(pair_codes.tolist()))
    # Same seed, same benchmark.
    _, _, again = _benchmark(corpus)
    np.testing.assert_array_equal(again.pairs, bench.pairs)


def test_na_ratio_bounds_the_na_bags(tmp_path):
    corpus = random_vg(tmp_path, num_images=150, names=NAMES + ("bus", "hat", "cup", "book", "lamp", "bird"))
    for ratio in (0.0, 0.5):
        _, _, bench = _benchmark(corpus, na_ratio=ratio)
        na = bench.labels[bench.label_start[:-1]] == 0
        for split in range(3):
            positives = np.sum((bench.split == split) & ~na)
            assert np.sum((bench.split == split) & na) <= round(ratio * positives)
        if ratio == 0.0:
            assert not na.any()
    _, _, bench = _benchmark(corpus, na_ratio=0.5)
    assert (bench.labels[bench.label_start[:-1]] == 0).any()


def test_min_fact_count_keeps_triplets_stated_often_enough(tmp_path):
    corpus = random_vg(tmp_path, num_images=150)
    _, triplets, bench = _benchmark(corpus, min_fact_count=3)
    unique, counts = np.unique(triplets, axis=0, return_counts=True)
    frequent = {tuple(t) for t in unique[counts >= 3].tolist()}
    kept = {tuple(t) for s in range(3) for t in bench.facts(s).tolist()}
    assert kept and kept <= frequent and len(frequent) < len(unique)


@pytest.mark.parametrize("sampler", bags_lib.SAMPLERS)
def test_streamed_bags_equal_one_pass(corpus, sampler):
    """Candidates enumerated and ranked a few images at a time give build_bags of all of them."""
    candidates = bags_lib.enumerate_candidates(corpus, E)
    codes, bag_index = np.unique(candidates.pair_codes, return_inverse=True)
    chunks = [bags_lib.enumerate_candidates(corpus, E, slice(lo, lo + 7)) for lo in range(0, corpus.num_images, 7)]
    for field in ("subjects", "objects", "images", "pair_codes"):
        np.testing.assert_array_equal(np.concatenate([getattr(c, field) for c in chunks]), getattr(candidates, field))
    whole = bags_lib.build_bags(corpus, candidates, bag_index, len(codes), 2, sampler, 3)
    streamed = bags_lib.stream_bags(corpus, [(c, np.searchsorted(codes, c.pair_codes)) for c in chunks], len(codes),
                                    2, sampler, 3)
    for field in ("start", "subjects", "objects", "images", "available", "annotation_instance", "annotation_relation"):
        np.testing.assert_array_equal(getattr(streamed, field), getattr(whole, field), err_msg=field)


def _bags_by_pair(bench, candidates):
    """pair code -> (split, labels, candidate instances) of every bag."""
    members = [[] for _ in range(bench.num_bags)]
    for candidate in np.flatnonzero(bench.bag_index >= 0):
        members[bench.bag_index[candidate]].append(int(candidate))
    return {int(s * E + o): (int(bench.split[b]), bench.labels[bench.label_start[b]:bench.label_start[b + 1]].tolist(),
                             members[b]) for b, (s, o) in enumerate(bench.pairs.tolist())}


def test_added_facts_label_training_pairs_only(tmp_path):
    """Bootstrapping's facts turn a training NA bag positive and give a new pair a training bag of its
    training-image instances; every other bag, validation and test whole, stays as it was."""
    corpus = random_vg(tmp_path, num_images=150, names=NAMES + ("bus", "hat", "cup", "book", "lamp", "bird"))
    candidates, _, bench = _benchmark(corpus, na_ratio=0.5)
    before = _bags_by_pair(bench, candidates)
    na_train = [code for code, (split, labels, _) in before.items() if split == 0 and labels == [0]]
    in_train = bench.image_split[candidates.images] == 0
    held_out_images = bench.image_split[candidates.images] > 0
    free = np.setdiff1d(candidates.pair_codes[in_train], list(before))
    free = free[np.isin(free, candidates.pair_codes[held_out_images])]  # Also seen in validation or test images.
    (s, o), (ns, no) = divmod(na_train[0], E), divmod(int(free[0]), E)
    added = np.array([[s, 7, o], [s, 3, o], [ns, 3, no], [ns, 3, no]])
    after = _bags_by_pair(benchmark_lib.add_train_facts(bench, candidates, added, E), candidates)
    assert after.pop(na_train[0]) == (0, [3, 7], before.pop(na_train[0])[2])
    new_instances = np.flatnonzero(in_train & (candidates.pair_codes == free[0]))
    assert after.pop(int(free[0])) == (0, [3], new_instances.tolist())
    assert after == before
    out = benchmark_lib.add_train_facts(bench, candidates, added, E)
    na = out.labels[out.label_start[:-1]] == 0
    assert not np.any(na[:-1] & ~na[1:])  # Positive bags first, then the NA bags.
    assert len(out.facts(0)) == len(bench.facts(0)) + 3
    for split in (1, 2):
        np.testing.assert_array_equal(out.facts(split), bench.facts(split))
    validation, test = (next(code for code, (split, _, _) in before.items() if split == s) for s in (1, 2))
    positive = next(code for code, (split, labels, _) in before.items() if split == 0 and labels != [0])
    for code in (validation, test, positive):
        with pytest.raises(ValueError, match="pairs with a fact or with a validation or test bag"):
            benchmark_lib.add_train_facts(bench, candidates, np.array([[code // E, 3, code % E]]), E)
    unseen = np.setdiff1d(np.arange(E * E), candidates.pair_codes)[0]
    with pytest.raises(ValueError, match="no instance in a training image"):
        benchmark_lib.add_train_facts(bench, candidates, np.array([[unseen // E, 3, unseen % E]]), E)
    with pytest.raises(ValueError, match="relation ids >= 1"):
        benchmark_lib.add_train_facts(bench, candidates, np.array([[ns, 0, no]]), E)
