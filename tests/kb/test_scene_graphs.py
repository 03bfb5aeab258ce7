"""Every instance scored alone (kb/instances.py) and the scene graphs of `--mode=scene_graphs`."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from clever_jax import job
from clever_jax.config_checks import ConfigError
from clever_jax.data import detections, prepare
from clever_jax.data.bags import enumerate_candidates
from clever_jax.data.jsonio import DataError
from clever_jax.data.vocab import benchmark_vocab
from clever_jax.evaluation import evaluate
from clever_jax.kb import build, instances, scene_graphs
from clever_jax.training import builder
from tests.conftest import random_images, write_vg


@pytest.mark.slow  # Two record builds and two scorings.
def test_an_instance_scores_as_a_bag_of_it_alone(tmp_path, trained):
    """The one-instance scores of a pair seen once equal the knowledge base's score of its bag (of that
    one instance), for every relation; every instance of the chosen images is scored once."""
    config, workdir = trained
    config = config.copy_and_resolve_references()
    features = tmp_path / "thirty.tsv"  # Fewer instances and bags to score.
    features.write_text("".join(open(config.extract.features_path).readlines()[:30]))
    config.extract.features_path = str(features)
    corpus = detections.read_detections(config.extract.features_path, benchmark_vocab())
    rows = np.arange(0, corpus.num_images, 3)
    source = build.model_source(config, workdir)
    scores = instances.score(source.config, source.load_params, source.region_dim, corpus, rows, str(tmp_path))
    candidates = enumerate_candidates(corpus, len(benchmark_vocab().entities))
    expected = np.isin(candidates.images, rows)
    assert len(scores.image_ids) == expected.sum()
    assert set(scores.image_ids.tolist()) == set(corpus.image_ids[rows].tolist())
    assert np.allclose(scores.probabilities.sum(axis=1), 1, atol=1e-5)
    # The knowledge base's bags: a pair whose only instance is one of these has a bag of just it.
    run = builder.build(source.config, build.prepare_detections(source.config, str(tmp_path)))
    bags = evaluate.split_outputs(run.scorer(detections.SPLIT), source.load_params(run.abstract_params))
    codes = candidates.pair_codes
    once = np.flatnonzero(np.bincount(codes, minlength=100 * 100) == 1)
    alone = np.flatnonzero(np.isin(codes, once) & expected)
    assert len(alone) >= 5
    pair_codes = scores.subject_classes.astype(np.int64) * 100 + scores.object_classes
    bag_codes = bags.pairs[:, 0] * 100 + bags.pairs[:, 1]
    for code in codes[alone][:5]:
        row, bag = np.flatnonzero(pair_codes == code), np.flatnonzero(bag_codes == code)
        assert len(row) == len(bag) == 1
        np.testing.assert_allclose(scores.probabilities[row[0]], bags.scores[bag[0]], rtol=2e-5, atol=1e-7)


@pytest.mark.slow
def test_scene_graphs_of_the_test_images_against_the_worlds_truth(trained):
    config, workdir = trained
    config = config.copy_and_resolve_references()
    config.scene_graphs.update(images="test", top_k=5, baseline_epochs=2)
    job.run(config, workdir, "scene_graphs")
    out = os.path.join(workdir, "scene_graphs")
    metrics = json.load(open(os.path.join(out, "metrics.json")))
    lines = [json.loads(line) for line in open(os.path.join(out, "scene_graphs.jsonl"))]
    test_ids = scene_graphs.split_image_ids(prepare.prepare_records(config, workdir), "test")
    assert [line["image_id"] for line in lines] == sorted(line["image_id"] for line in lines)
    assert {line["image_id"] for line in lines} <= set(test_ids.tolist())
    assert metrics["images"] == len(test_ids)
    assert metrics["relations_written"] == sum(len(graph["relations"]) for graph in lines)
    for graph in lines:
        relations = graph["relations"]
        assert 1 <= len(relations) <= 5
        assert [r["score"] for r in relations] == sorted((r["score"] for r in relations), reverse=True)
        boxes = [(tuple(r["subject_box"]), tuple(r["object_box"])) for r in relations]
        assert len(set(boxes)) == len(boxes)  # One relation per pair: the graph constraint.
        assert set(relations[0]) == {"subject", "subject_box", "relation", "object", "object_box", "score"}
    world = metrics["world"]
    assert world["pairs"] == metrics["pairs"] and world["true_records"] > 0
    for name in ("model", "frequency", "vrd_boxes", "vrd_boxes_appearance"):
        for constraint in ("graph_constraint", "no_graph_constraint"):
            got = world[name][constraint]
            assert set(got) == {"recall@20", "mean_recall@20", "recall@50", "mean_recall@50"}
            assert 0 <= got["recall@20"] <= got["recall@50"] <= 100
    # Without the world's truth (another features file), every image and no "world" entry.
    features = os.path.join(os.path.dirname(workdir), "some.tsv")
    with open(config.extract.features_path) as f, open(features, "w") as out_file:
        out_file.writelines(f.readlines()[:10])
    config.extract.features_path = features
    config.scene_graphs.images = "all"
    job.run(config, workdir, "scene_graphs")
    metrics = json.load(open(os.path.join(out, "metrics.json")))
    assert "world" not in metrics and metrics["images"] <= 10 and metrics["top_k"] == 5


def test_scene_graphs_refuse_what_they_cannot_do(tmp_path, trained):
    config, workdir = trained
    config = config.copy_and_resolve_references()
    config.extract.features_path = ""
    with pytest.raises(ConfigError, match="--mode=scene_graphs reads a detector's output"):
        job.run(config, str(tmp_path), "scene_graphs")
    _, other_size = write_vg(tmp_path / "four", random_images(3, seed=0, names=["man", "horse"]), feature_dim=4)
    config.extract.features_path = other_size  # Regions of 4 + 6 values; the tiny model reads 8 + 6.
    with pytest.raises(DataError, match=r"regions of 10 values \(appearance \+ 6\), the model was trained on 14"):
        job.run(config, workdir, "scene_graphs")
    config.scene_graphs.images = "train"
    with pytest.raises(ConfigError, match="scene_graphs.images"):
        job.run(config, str(tmp_path), "scene_graphs")
    config.scene_graphs.images = "test"
    config.extract.update(features_path=os.path.join(workdir, "world", "features.tsv"), bundle=str(tmp_path))
    with pytest.raises(ConfigError, match="'all' with extract.bundle"):
        job.run(config, str(tmp_path / "elsewhere"), "scene_graphs")
    assert not os.path.exists(tmp_path / "elsewhere")  # Refused before anything is written.
