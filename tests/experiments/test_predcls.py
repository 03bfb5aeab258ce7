"""The PredCls measurement: pairs, records, the frequency prior, recall@K and the command on the tiny world."""

import json

import numpy as np

from clever_jax.data.bags import enumerate_candidates
from clever_jax.data.vg import ingest
from clever_jax.data.vocab import benchmark_vocab
from clever_jax.experiments import predcls
from configs import demo


def test_pairs_are_every_ordered_pair_of_vocabulary_objects_and_records_point_into_them(small_vg):
    vocab = benchmark_vocab()
    corpus = ingest(*small_vg, vocab)
    pairs = enumerate_candidates(corpus, len(vocab.entities))  # The pairs predcls scores.
    image, subject, obj = pairs.images, pairs.subjects, pairs.objects
    names = np.asarray(corpus.object_names)
    # Image 1: man, umbrella, dog (sky is out of the vocabulary); image 2: men, dog, dogs (the
    # umbrella's box is degenerate, blorp unknown). 3 * 2 ordered pairs each.
    assert np.bincount(image).tolist() == [6, 6]
    assert not (subject == obj).any() and (corpus.object_image[subject] == image).all()
    assert len(set(zip(subject.tolist(), obj.tolist(), strict=True))) == 12
    pair, relation = predcls.annotated_records(corpus, subject, obj)
    stated = {(names[subject[p]], vocab.relations[r], names[obj[p]]) for p, r in zip(pair, relation, strict=True)}
    assert stated == {("man", "holding", "umbrella"), ("dog", "near", "man"), ("man", "near", "dog")}
    classes = predcls.pair_classes(len(image), pair, relation, vocab.num_relations)
    assert classes[pair, relation].all() and classes[:, 0].sum() == 12 - 3 and (classes.sum(axis=1) == 1).all()


def test_frequency_prior_counts_relations_and_no_relation_per_class_pair():
    classes = np.zeros((4, 3), bool)
    classes[0, 1] = classes[1, 1] = classes[2, 0] = True  # pair (0, 1): relation 1 twice, NA once
    classes[3, 2] = True  # pair (1, 0): relation 2
    prior = predcls.frequency_prior(np.array([0, 0, 0, 1]), np.array([1, 1, 1, 0]), classes, num_entities=2)
    assert prior.shape == (2, 2, 3)
    np.testing.assert_allclose(prior[0, 1], [1 / 3, 2 / 3, 0], atol=1e-3)
    np.testing.assert_allclose(prior[1, 0], [0, 0, 1], atol=1e-2)
    np.testing.assert_allclose(prior[0, 0], [1 / 3] * 3)  # never seen: uniform


def test_a_train_pairs_prior_is_counted_without_its_own_image():
    image = np.repeat(np.arange(40), 2)
    train = image < 30
    classes = np.zeros((80, 3), bool)
    classes[::2, 1] = classes[1::2, 0] = True
    classes[image == 7, :] = [False, False, True]  # Only image 7 states relation 2 for this class pair.
    same = np.zeros(80, np.int64)
    prior = predcls.cross_fitted_prior(image, train, same, same, classes, num_entities=1, seed=0)
    assert prior[image == 7, 2].max() < 1e-3  # Its own label never reaches its own prior...
    assert prior[~train, 2].min() > 0.02  # ...the test pairs' prior counts it (2 of 60 train pairs).


def test_the_command_on_the_tiny_world(tmp_path):
    result = predcls.measure(demo.get_config("tiny"), str(tmp_path), test_fraction=0.3, hidden=32, epochs=20,
                             appearance_dim=4)
    assert json.loads((tmp_path / "predcls.json").read_text()) == json.loads(json.dumps(result))
    assert set(result["recall"]) == {"freq", "boxes", "boxes_appearance"}
    for row in result["recall"].values():
        values = [row[f"R@{k}"] for k in predcls.RECALL_AT]
        assert 0 < values[0] <= values[1] <= values[2] <= 100
    assert 0 < result["corpus"]["test_images"] < result["corpus"]["images"]
