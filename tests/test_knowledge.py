"""A knowledge base from a detector's output alone (data/detections.py, clever_jax/knowledge.py)."""

from __future__ import annotations

import csv
import json
import os

import numpy as np
import pytest

from clever_jax import builder, evaluate, job, knowledge
from clever_jax.data import detections, prepare
from clever_jax.data.jsonio import DataError
from clever_jax.data.records import open_records
from clever_jax.data.vocab import benchmark_vocab
from configs import demo
from tests.conftest import feature_b64


def tiny_config(tmp_path):
    config = demo.get_config("tiny")
    config.data.world_dir = str(tmp_path / "world")
    return config


def test_extraction_from_detections_alone_scores_like_the_benchmark(tmp_path):
    """The world's features file alone, cut to the test split's images and with each region's class
    the annotated object's name (a detector that names as the annotators do), gives the test pairs
    the bags and scores the annotated benchmark gives them."""
    config = tiny_config(tmp_path)
    records = prepare.prepare(config, str(tmp_path / "bench"))
    built = prepare.assemble(config, str(tmp_path / "bench"))
    test_images = set(built.corpus.image_ids[built.benchmark.image_split == 2].tolist())
    name_of = {o["object_id"]: o["names"][0] for record in json.load(open(tmp_path / "world" / "objects.json"))
               for o in record["objects"]}
    features = tmp_path / "test_features.tsv"
    with open(tmp_path / "world" / "features.tsv") as f, open(features, "w") as out:
        for line in f:
            image_id, record = line.split("\t", 1)
            if int(image_id) in test_images:
                record = json.loads(record)
                for region in record["objects"]:
                    region["class"] = name_of[region["object_id"]]
                out.write(f"{image_id}\t{json.dumps(record)}\n")
    config.extract.features_path = str(features)
    kb_records = knowledge.prepare_detections(config, str(tmp_path / "kb"))
    assert knowledge.prepare_detections(config, str(tmp_path / "kb")) == kb_records  # Reused.
    bench_run, kb_run = builder.build(config, records), builder.build(config, kb_records)
    params = bench_run.init_params()
    bench = evaluate.split_outputs(bench_run, params, "test", keep_evidence=True)
    kb = evaluate.split_outputs(kb_run, params, detections.SPLIT, keep_evidence=True)
    image_ids = {}
    for name, folder in (("bench", records), ("kb", kb_records)):
        images = open_records(folder)[0]
        image_ids[name] = np.array([r["image_id"] for r in images.__getitems__(list(range(len(images))))])
    row_of_pair = {tuple(p): i for i, p in enumerate(kb.pairs.tolist())}
    for i, pair in enumerate(bench.pairs.tolist()):
        j = row_of_pair[tuple(pair)]  # Every test pair, fact or NA, is among the extracted pairs.
        for a, b in ((image_ids["bench"][bench.images[i]] * bench.instance_mask[i],
                      image_ids["kb"][kb.images[j]] * kb.instance_mask[j]),
                     (bench.subjects[i], kb.subjects[j]), (bench.objects[i], kb.objects[j])):
            np.testing.assert_array_equal(a, b)
        np.testing.assert_allclose(kb.scores[j], bench.scores[i], atol=1e-6)
        np.testing.assert_allclose(kb.evidence[j], bench.evidence[i], atol=1e-3)  # Kept as float16.
    assert not kb.labels[:, 1:].any()


def write_features(path, images: list[tuple[int, list[tuple[str, list[float]]]]], dim: int = 4) -> str:
    """A features TSV of (image id, [(class, rect)]) with random features of `dim` values."""
    rng = np.random.default_rng(0)
    with open(path, "w") as f:
        for image_id, regions in images:
            objects = [{"rect": rect, "class": name, "feature": feature_b64(rng.normal(size=dim))}
                       for name, rect in regions]
            f.write(f"{image_id}\t{json.dumps({'image_h': 100, 'image_w': 100, 'objects': objects})}\n")
    return str(path)


def test_detections_become_pair_bags(tmp_path):
    path = write_features(tmp_path / "f.tsv", [
        (1, [("Men", [0, 0, 50, 50]), ("horse", [10, 10, 90, 90]), ("sky", [0, 0, 100, 20])]),
        (2, [("man", [0, 0, 30, 30]), ("horse", [20, 20, 60, 60]), ("man", [5, 5, 5, 40])]),  # A degenerate box.
        (3, [("dog", [0, 0, 10, 10])]),
    ])
    vocab = benchmark_vocab()
    corpus = detections.read_detections(path, vocab)
    assert corpus.num_images == 2 and corpus.object_names == ["man", "horse", "sky", "man", "horse"]
    assert corpus.skipped == {"image_with_fewer_than_two_vocabulary_objects": 1, "region_out_of_vocabulary": 1,
                              "region_degenerate_or_outside_image": 1}
    benchmark, bags = detections.pair_bags(corpus, len(vocab.entities), 2, 8, "overlap", 0)
    man, horse = vocab.entity_index["man"], vocab.entity_index["horse"]
    assert sorted(map(tuple, benchmark.pairs.tolist())) == sorted([(man, horse), (horse, man)])
    assert (benchmark.labels == 0).all() and np.diff(bags.start).tolist() == [2, 2]
    with pytest.raises(DataError, match=r"no entity pair is seen in 3 or more images \(the most: 2\)"):
        detections.pair_bags(corpus, len(vocab.entities), 3, 8, "overlap", 0)


@pytest.mark.parametrize("line, message", [
    ('1\t{"image_h": 9, "image_w": 9, "objects": [{"rect": [0, 0, 5, 5], "feature": "AAAAAA=="}]}',
     r"line 1 \(image 1\), region 0: .*'class'"),
    ('1\t{"image_w": 9, "objects": []}', r"line 1 \(image 1\).*'image_h'"),
    ('1\t{"image_h": 9, "image_w": 9, "objects": [{"rect": [0, 0], "class": "man", "feature": "AAAAAA=="}]}',
     r"region 0: 'rect' should be \[x1, y1, x2, y2\]"),
])
def test_bad_detections_are_named(tmp_path, line, message):
    (tmp_path / "f.tsv").write_text(line + "\n")
    with pytest.raises(DataError, match=message):
        detections.read_detections(str(tmp_path / "f.tsv"), benchmark_vocab())


def test_other_feature_sizes_and_no_pairs_are_named(tmp_path):
    path = write_features(tmp_path / "f.tsv", [(1, [("man", [0, 0, 9, 9]), ("horse", [1, 1, 8, 8])])], dim=4)
    with pytest.raises(DataError, match="feature has 4 values, expected 6"):
        detections.read_detections(path, benchmark_vocab(), feature_dim=6)
    path = write_features(tmp_path / "g.tsv", [(1, [("man", [0, 0, 9, 9]), ("sky", [1, 1, 8, 8])])])
    with pytest.raises(DataError, match="no image has two or more regions of vocabulary classes"):
        detections.read_detections(path, benchmark_vocab())


@pytest.mark.slow
def test_extract_mode_writes_the_knowledge_base(tmp_path):
    config = tiny_config(tmp_path)
    config.train.max_epochs = 1
    workdir = str(tmp_path / "run")
    job.run(config, workdir, "train")
    features = tmp_path / "some_images.tsv"  # A third of the world's images: fewer pairs to score.
    features.write_text("".join(open(tmp_path / "world" / "features.tsv").readlines()[:50]))
    config.extract.update(features_path=str(features), top_k=500, min_images=2)
    job.run(config, workdir, "extract")
    lines = [json.loads(line) for line in open(tmp_path / "run" / "kb" / "kb.jsonl")]
    rows = list(csv.DictReader(open(tmp_path / "run" / "kb" / "kb.csv")))
    meta = json.load(open(tmp_path / "run" / "kb" / "kb_meta.json"))
    assert len(lines) == len(rows) == meta["triplets"] == 500
    assert [r["score"] for r in rows] == sorted((r["score"] for r in rows), reverse=True)
    assert lines[0]["evidence"] and set(lines[0]["evidence"][0]) == {"image_id", "subject_box", "object_box", "weight"}
    assert 0 < meta["in_training_kb"] == sum(r["in_training_kb"] == "1" for r in rows) < 500
    assert meta["min_images"] == 2 and meta["pairs"] < 100 * 100

    small = tmp_path / "small.tsv"
    write_features(small, [(1, [("man", [0, 0, 9, 9]), ("horse", [1, 1, 8, 8])])], dim=3)
    config.extract.update(features_path=str(small), min_images=1)
    with pytest.raises(DataError, match=r"regions of 9 values .* trained on 14"):
        job.run(config, workdir, "extract")
    assert os.path.isfile(tmp_path / "run" / "kb" / "kb.jsonl")  # The earlier knowledge base stays.
