"""The images of a triplet (kb/image_index.py), their measurement and `query --images`."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from clever_jax import job
from clever_jax.data import prepare
from clever_jax.data.bags import true_relations
from clever_jax.data.jsonio import DataError
from clever_jax.data.records import split_facts
from clever_jax.data.vocab import benchmark_vocab
from clever_jax.kb import build, image_index, instances, query, report
from clever_jax.kb.instances import InstanceScores


def scores_of(image_ids, subject_classes, object_classes, probabilities, boxes=None) -> InstanceScores:
    m = len(image_ids)
    boxes = np.tile([[0, 0, 10, 10], [5, 5, 20, 20]], (m, 1)).reshape(m, 2, 4) if boxes is None else boxes
    return InstanceScores(np.asarray(image_ids, np.int64), np.zeros(m, np.int32), np.ones(m, np.int32),
                          np.asarray(subject_classes, np.int32), np.asarray(object_classes, np.int32),
                          np.asarray(boxes[:, 0], np.float32), np.asarray(boxes[:, 1], np.float32),
                          np.full((m, 2), 100, np.int32), np.asarray(probabilities, np.float32))


def test_each_image_ranks_by_its_best_instance():
    image_ids, score = np.array([3, 3, 5, 7, 7]), np.array([0.1, 0.6, 0.5, 0.2, 0.6])
    rows, best = image_index.best_per_image(image_ids, score)
    assert rows.tolist() == [1, 4, 2] and best.tolist() == [0.6, 0.6, 0.5]  # Ties: lower image id first.
    assert image_index.average_precision(np.array([True, False, True])) == pytest.approx((1 + 2 / 3) / 2)
    assert image_index.average_precision(np.array([False, False, True])) == pytest.approx(1 / 3)


def test_the_index_ranks_every_image_of_the_pair(tmp_path):
    vocab = benchmark_vocab()
    man, horse, riding = vocab.entity_index["man"], vocab.entity_index["horse"], vocab.relation_index["riding"]
    probabilities = np.full((5, vocab.num_relations), 0.01)
    probabilities[:, riding] = [0.2, 0.9, 0.4, 0.3, 0.8]
    # Images 10 (two instances of man-horse), 11, 12 of man-horse; image 13 of horse-man.
    scores = scores_of([10, 10, 11, 13, 12], [man, man, man, horse, man], [horse, horse, horse, man, horse],
                       probabilities)
    path = str(tmp_path / image_index.FILE)
    image_index.write(path, scores, len(vocab.entities), vocab.num_relations)
    ranked = image_index.rank(image_index.load(path), vocab, "man", "riding", "horse", top=10)
    assert [(r["image_id"], r["score"]) for r in ranked] == [(10, 0.899902), (12, 0.799805), (11, 0.399902)]
    assert ranked[0]["subject_box"] == [0, 0, 10, 10] and ranked[0]["object_box"] == [5, 5, 20, 20]
    assert ranked[0]["image_size"] == [100, 100]
    assert len(image_index.rank(image_index.load(path), vocab, "man", "riding", "horse", top=2)) == 2
    assert image_index.rank(image_index.load(path), vocab, "man", "riding", "dog", top=2) == []
    image_index.write(path, None, len(vocab.entities), vocab.num_relations)  # Built without extract.image_index.
    with pytest.raises(FileNotFoundError, match="built without its image index"):
        image_index.load(path)
    (tmp_path / "bad.npz").write_text("not an index")
    with pytest.raises(DataError, match="not an image index"):
        image_index.load(str(tmp_path / "bad.npz"))


def test_retrieval_against_the_truth():
    # One fact (0, 1, 1): images 1..4 of pair (0, 1); images 2 and 4 truly show relation 1.
    probabilities = np.zeros((5, 3))
    probabilities[:, 1] = [0.9, 0.8, 0.1, 0.7, 0.5]
    truth = np.zeros((5, 3), bool)
    truth[[1, 3], 1] = True
    # Image 1's boxes overlap most, image 4's least: the overlap order is 1, 2, 3, 4.
    boxes = np.array([[[0, 0, 10, 10], [0, 0, 10, 10]], [[0, 0, 10, 10], [0, 0, 10, 8]],
                      [[0, 0, 10, 10], [0, 0, 10, 5]], [[0, 0, 10, 10], [0, 0, 10, 2]], [[0, 0, 1, 1], [0, 0, 1, 1]]])
    scores = scores_of([1, 2, 3, 4, 9], [0, 0, 0, 0, 1], [1, 1, 1, 1, 0], probabilities, boxes.astype(float))
    facts = np.array([[0, 1, 1], [1, 1, 0], [0, 2, 1]])  # The last two: no image truly shows them.
    got = image_index.retrieval(scores, truth, facts, num_entities=2, seed=0)
    # The model's order 1, 2, 4, 3: relevant at ranks 2 and 3 -> (1/2 + 2/3) / 2; P@5 over all four: 2/4.
    assert got["map"] == pytest.approx(100 * (1 / 2 + 2 / 3) / 2) and got["p@5"] == pytest.approx(50)
    assert got["map_overlap_order"] == pytest.approx(100 * (1 / 2 + 2 / 4) / 2)  # relevant at ranks 2 and 4
    assert 0 < got["map_random"] <= 100 and got["facts"] == 1 and got["facts_skipped"] == 2


@pytest.mark.slow  # The knowledge base of 20 images with every instance scored, and the command.
def test_kb_with_an_image_index_and_the_query_command(tmp_path, trained):
    config, workdir = trained
    config = config.copy_and_resolve_references()
    features = tmp_path / "twenty.tsv"
    features.write_text("".join(open(config.extract.features_path).readlines()[:20]))
    config.extract.update(features_path=str(features), image_index=True, top_k=50)
    job.run(config, workdir, "kb")
    kb = os.path.join(workdir, "kb", "kb.jsonl")
    first = json.loads(open(kb).readline())
    triplet = (first["subject"], first["relation"], first["object"])
    images = query.images_of(kb, benchmark_vocab(), triplet, top=100)
    index = image_index.load(os.path.join(workdir, "kb", image_index.FILE))
    assert len(images) == len(set(index["image_ids"][image_index.pair_rows(
        index, benchmark_vocab().entity_index[triplet[0]], benchmark_vocab().entity_index[triplet[2]])]))
    assert {e["image_id"] for e in first["evidence"]} <= {i["image_id"] for i in images}
    assert [i["score"] for i in images] == sorted((i["score"] for i in images), reverse=True)
    meta = json.load(open(os.path.join(workdir, "kb", "kb_meta.json")))
    assert "retrieval" not in meta  # Not the world's own features: no truth to measure against.
    command = [sys.executable, "-m", "clever_jax.kb.query", f"--kb={kb}", "--images", *triplet, "--top=3"]
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout.splitlines()
    assert len(out) == min(3, len(images)) and out[0].startswith(f"image {images[0]['image_id']}  score")
    wrong = subprocess.run([*command[:5], "man", "ridng", "horse"], capture_output=True, text=True)
    assert wrong.returncode and "did you mean 'riding'" in wrong.stderr
    report.write_report(kb, str(tmp_path / "report.html"), per_relation=1)
    page = (tmp_path / "report.html").read_text()
    assert page.count('<details class="ranked">') == page.count('<article class="triplet"') > 0
    config.extract.image_index = False  # The next version has an empty index, which the query names.
    job.run(config, workdir, "kb")
    with pytest.raises(FileNotFoundError, match="without its image index"):
        query.images_of(kb, benchmark_vocab(), triplet, top=3)
    report.write_report(kb, str(tmp_path / "report.html"), per_relation=1)
    assert "ranked" not in (tmp_path / "report.html").read_text()


def test_world_retrieval_of_an_oracle_is_perfect(trained):
    """Scores that are the world's truth rank every truly showing image first: mAP 100 on every test fact
    some image shows; the overlap order and random order do worse."""
    config, workdir = trained
    world, pairs = instances.world_pairs(config, workdir)
    truth = np.zeros((len(pairs.images), benchmark_vocab().num_relations), np.float32)
    instance, relation = true_relations(world, pairs.subjects, pairs.objects)
    truth[instance, relation] = 1
    oracle = InstanceScores(world.image_ids[pairs.images], world.feature_slots[pairs.subjects],
                            world.feature_slots[pairs.objects], world.object_classes[pairs.subjects],
                            world.object_classes[pairs.objects], world.boxes[pairs.subjects],
                            world.boxes[pairs.objects], world.image_sizes[pairs.images], truth)
    got = build.world_retrieval(config, workdir, oracle)
    assert got["map"] == 100 and got["facts"] > 10
    assert got["map_overlap_order"] < 100 and got["map_random"] < 100
    assert got["facts"] + got["facts_skipped"] == int(
        split_facts(prepare.prepare_records(config, workdir), "test", 100, truth.shape[1])[:, 1:].sum())
