"""Bootstrapping (`--mode=bootstrap`, kb/bootstrap.py): rounds whose kept triplets label the training split."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest

from clever_jax import job
from clever_jax.config_checks import ConfigError
from clever_jax.data import prepare
from clever_jax.data.jsonio import DataError
from clever_jax.data.records import open_records, split_facts
from clever_jax.data.vocab import benchmark_vocab, read_facts
from clever_jax.evaluation import evaluate
from clever_jax.kb import bootstrap
from clever_jax.training import builder, train
from clever_jax.training.checkpoints import Checkpoints

KEYS = {"round", "added_facts", "added_facts_total", "added_precision_vs_truth", "test_auc", "test_mauc",
        "kb_triplets", "kb_precision", "kb_recall", "seconds"}


@pytest.fixture
def evaluated(tmp_path, trained):
    """A run of the shared tiny world trained for an epoch and evaluated (metrics.json, val_scores.npz), and
    its config."""
    config, source = trained
    workdir = str(tmp_path / "run")
    shutil.copytree(os.path.join(source, "world"), os.path.join(workdir, "world"))
    config = config.copy_and_resolve_references()
    config.extract.update(features_path=os.path.join(workdir, "world", "features.tsv"), target_precision=0.5,
                          min_images=2)
    config.bootstrap.update(rounds=1, max_epochs=1)
    config.train.max_epochs = 1
    run = builder.build(config, prepare.prepare(config, workdir), workdir=workdir)
    train.Trainer(run, workdir).train()
    evaluate.evaluate_run(run, Checkpoints(workdir).restore_params("best", run.abstract_params), workdir)
    return config, workdir


def held_out_bags(records_dir: str) -> list[tuple]:
    """Every validation and test bag of a records build: (split, pair, labels, image ids, subjects, objects)."""
    images, bags = open_records(records_dir)
    out = []
    for split in ("val", "test"):
        for bag in bags[split].__getitems__(list(range(len(bags[split])))):
            ids = [int(r["image_id"]) for r in images.__getitems__(bag["images"].tolist())]
            out.append((split, *(bag[k].tolist() for k in ("pair", "labels")), ids,
                        *(bag[k].tolist() for k in ("subjects", "objects"))))
    return out


@pytest.mark.slow  # Two rounds of scoring, training and evaluation, and three knowledge bases.
def test_rounds_add_training_labels_of_pairs_without_facts(evaluated):
    config, workdir = evaluated
    job.run(config, workdir, "bootstrap")
    root = os.path.join(workdir, "bootstrap")
    rounds = json.load(open(os.path.join(root, "rounds.json")))
    assert [r["round"] for r in rounds] == [0, 1] and all(set(r) == KEYS for r in rounds)
    assert rounds[0]["added_facts"] == 0 and rounds[0]["added_precision_vs_truth"] is None
    assert rounds[1]["added_facts"] == rounds[1]["added_facts_total"] > 0
    assert 0 <= rounds[1]["added_precision_vs_truth"] <= 100 and rounds[1]["kb_triplets"] >= 0
    baseline = json.load(open(os.path.join(workdir, "metrics.json")))["test"]
    assert rounds[0]["test_auc"] == baseline["auc"] and rounds[0]["test_mauc"] == baseline["mauc"]
    for number in (0, 1):
        assert os.path.isfile(os.path.join(root, f"round_{number}", "kb", "kb_meta.json"))

    # The candidates are pairs no annotation relates and no validation or test bag holds, though such pairs
    # co-occur in training images too; their instances are in training images only.
    vocab = benchmark_vocab()
    entities, relations = len(vocab.entities), vocab.num_relations
    built = prepare.assemble(config, workdir)
    bench, candidates, classes = built.benchmark, built.candidates, built.corpus.object_classes
    annotated = classes[built.corpus.rel_subjects] * entities + classes[built.corpus.rel_objects]
    excluded = np.concatenate([annotated, (bench.pairs[:, 0] * entities + bench.pairs[:, 1])[bench.split > 0]])
    in_train = bench.image_split[candidates.images] == 0
    assert np.isin(candidates.pair_codes[in_train], excluded).any()
    pool, pool_bags = bootstrap.candidate_bags(built, entities, 1, 4, "overlap", 0)
    assert not np.isin(pool.pairs[:, 0] * entities + pool.pairs[:, 1], excluded).any()
    assert (bench.image_split[pool_bags.images] == 0).all()

    # The added facts are of such pairs; they are training facts of the round's records, whose validation and
    # test bags are the run's, instance for instance.
    added = read_facts(os.path.join(root, "round_1", "added_facts.tsv"), vocab)
    assert len(added) == rounds[1]["added_facts"]
    assert not np.isin(added[:, 0] * entities + added[:, 2], excluded).any()
    base = prepare.prepare_records(config, workdir)
    grown = prepare.prepare_records(bootstrap.round_config(config, workdir, 1), os.path.join(root, "round_1"))
    base_train, grown_train = (split_facts(path, "train", entities, relations) for path in (base, grown))
    assert grown_train[tuple(added.T)].all() and (grown_train.sum() == base_train.sum() + len(added))
    assert held_out_bags(grown) == held_out_bags(base)

    # More rounds continue where the finished ones end: round 1 is not run again, round 2 adds facts of pairs
    # that had none.
    metrics_1 = os.path.join(root, "round_1", "metrics.json")
    mtime = os.stat(metrics_1).st_mtime_ns
    config.bootstrap.rounds = 2
    job.run(config, workdir, "bootstrap")
    again = json.load(open(os.path.join(root, "rounds.json")))
    assert again[:2] == rounds and again[2]["round"] == 2 and os.stat(metrics_1).st_mtime_ns == mtime
    every = read_facts(os.path.join(root, "round_2", "added_facts.tsv"), vocab)
    assert again[2]["added_facts_total"] == len(every) == len(added) + again[2]["added_facts"]
    new_pairs = np.setdiff1d(every[:, 0] * entities + every[:, 2], added[:, 0] * entities + added[:, 2])
    assert len(new_pairs) == len(np.unique(new_pairs)) and not np.isin(new_pairs, excluded).any()
    triplet = lambda facts: (facts[:, 0] * relations + facts[:, 1]) * entities + facts[:, 2]  # noqa: E731
    assert len(every) == len(np.unique(every, axis=0)) and np.isin(triplet(added), triplet(every)).all()
    config.extract.target_precision = 0.6
    with pytest.raises(ConfigError, match=r"holds rounds made with other settings(.|\n)*extract.target_precision"):
        job.run(config, workdir, "bootstrap")


def test_a_bad_line_of_an_added_facts_file_is_named(tmp_path):
    path = tmp_path / "added.tsv"
    path.write_text("man\triding\thorse\nman\triding\tunicorn\n")
    with pytest.raises(DataError, match=r"added.tsv, line 2: expected subject, relation \(not NA\) and object"):
        read_facts(str(path), benchmark_vocab())
    path.write_text("man\tNA\thorse\n")
    with pytest.raises(DataError, match="line 1"):
        read_facts(str(path), benchmark_vocab())


def test_bootstrap_refuses_what_it_cannot_do(tmp_path, trained):
    config, workdir = trained
    config = config.copy_and_resolve_references()
    with pytest.raises(ConfigError, match="--mode=bootstrap .* needs --config.extract.target_precision"):
        job.run(config, str(tmp_path / "nowhere"), "bootstrap")
    assert not os.path.exists(tmp_path / "nowhere")
    config.extract.target_precision = 0.8
    with pytest.raises(FileNotFoundError, match="metrics.json: bootstrapping starts from a trained and evaluated run"):
        job.run(config, workdir, "bootstrap")
    assert not os.path.exists(os.path.join(workdir, "bootstrap"))
