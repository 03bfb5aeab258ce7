"""Config problems stop a command before any work, each named with its setting and the fix."""

import os
import types

import numpy as np
import pytest

from clever_jax import config_checks, job
from clever_jax.data import prepare
from clever_jax.data.jsonio import DataError
from configs import demo, vg


def test_every_shipped_config_passes():
    for config in (demo.get_config(), demo.get_config("tiny"), vg.get_config()):
        assert config_checks.problems(config, 1) == []


def test_every_problem_is_listed_with_its_setting(tmp_path):
    config = demo.get_config("tiny")
    config.data.bag_size, config.data.eval_batch_size, config.data.split_ratios = 0, 3, (0.9, 0.1, 0.0)
    config.model.head, config.train.loss, config.extract.split = "max", "mean", "dev"
    config.extract.negatives, config.extract.negative_quantile = 10, 1.0  # Negatives need the filters' kept triplets.
    config.scene_graphs.images, config.scene_graphs.top_k = "val", -1
    config.bootstrap.rounds = -1
    found = config_checks.problems(config, num_devices=2)
    assert [line.split("=")[0] for line in found] == [
        "--config.data.bag_size", "--config.data.split_ratios", "--config.data.eval_batch_size",
        "--config.model.head", "--config.train.loss", "--config.extract.split", "--config.extract.negatives",
        "--config.extract.negative_quantile", "--config.scene_graphs.images", "--config.scene_graphs.top_k",
        "--config.bootstrap.rounds/max_epochs"]
    assert "extract.target_precision > 0" in found[6]
    assert "multiple of the 2 devices" in found[2] and "a training head" in found[3]
    workdir = tmp_path / "run"
    with pytest.raises(ValueError, match=r"The config cannot run:\n  --config.data.bag_size=0"):
        job.run(config, str(workdir), "all")
    assert not os.path.exists(workdir)  # Nothing was made.


def test_a_split_without_facts_is_an_error_naming_the_settings():
    # Bags: train has a positive bag, val only an NA bag (label 0), test a positive bag.
    benchmark = types.SimpleNamespace(labels=np.array([3, 0, 5]), label_start=np.array([0, 1, 2, 3]),
                                      split=np.array([0, 1, 2]))
    config = demo.get_config("tiny")
    with pytest.raises(DataError, match=r"\{'train': 1, 'val': 0, 'test': 1\}.*min_fact_count=1.*split_ratios"):
        prepare.check_splits(benchmark, config.data)
    benchmark.labels, benchmark.label_start = np.array([3, 0, 5, 7]), np.array([0, 1, 2, 3, 4])
    benchmark.split = np.array([0, 1, 2, 1])  # A positive bag in val too.
    prepare.check_splits(benchmark, config.data)

