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
from clever_jax.data.records import split_facts
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


@pytest.mark.slow  # A round of scoring, training and evaluation, and two knowledge bases.
def test_a_round_adds_training_labels_of_pairs_without_facts(evaluated):
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

    # The added facts are of pairs no annotation relates and no validation or test bag holds; they are
    # training facts of the round's records, whose validation and test splits are the run's.
    vocab = benchmark_vocab()
    entities, relations = len(vocab.entities), vocab.num_relations
    added = read_facts(os.path.join(root, "round_1", "added_facts.tsv"), vocab)
    assert len(added) == rounds[1]["added_facts"]
    built = prepare.assemble(config, workdir)
    codes = added[:, 0] * entities + added[:, 2]
    classes = built.corpus.object_classes
    annotated = classes[built.corpus.rel_subjects] * entities + classes[built.corpus.rel_objects]
    bench = built.benchmark
    held_out = (bench.pairs[:, 0] * entities + bench.pairs[:, 1])[bench.split > 0]
    assert not np.isin(codes, annotated).any() and not np.isin(codes, held_out).any()
    base = prepare.prepare_records(config, workdir)
    grown = prepare.prepare_records(bootstrap.round_config(config, workdir, 1), os.path.join(root, "round_1"))
    base_train, grown_train = (split_facts(path, "train", entities, relations) for path in (base, grown))
    assert grown_train[tuple(added.T)].all() and (grown_train.sum() == base_train.sum() + len(added))
    for split in ("val", "test"):
        np.testing.assert_array_equal(split_facts(grown, split, entities, relations),
                                      split_facts(base, split, entities, relations))

    # A finished round is not run again; changed settings for the rounds are refused.
    mtime = os.stat(os.path.join(root, "rounds.json")).st_mtime_ns
    job.run(config, workdir, "bootstrap")
    assert os.stat(os.path.join(root, "rounds.json")).st_mtime_ns == mtime
    config.extract.target_precision = 0.6
    with pytest.raises(ConfigError, match=r"holds rounds made with other settings(.|\n)*extract.target_precision"):
        job.run(config, workdir, "bootstrap")


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
