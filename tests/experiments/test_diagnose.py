"""The diagnosis numbers: logit spread within bags, instance classifier vs the oracle pair prior."""

import os

import numpy as np
import pytest

from clever_jax import workdir
from clever_jax.experiments import diagnose
from configs import demo


def test_logit_spread_of_the_gold_relations_within_bags():
    logits = np.zeros((3, 3, 4))
    logits[0, :, 2] = [1.0, 3.0, 2.0]  # gold 2, range 2
    logits[1, :2, 1] = [0.0, 4.0]  # gold 1, range 4 (third instance is padding, its logit ignored)
    logits[1, 2, 1] = 100.0
    labels = np.zeros((3, 4))
    labels[0, 2] = labels[1, 1] = labels[2, 3] = 1
    mask = np.array([[1, 1, 1], [1, 1, 0], [1, 0, 0]], bool)  # bag 2 has one instance: not counted
    out = diagnose.logit_spread(logits, labels, mask, temperature=2.0)
    assert out["facts"] == 2
    assert out["range"]["p50"] == pytest.approx(3.0) and out["range_over_temperature"]["p50"] == pytest.approx(1.5)
    assert out["std"]["p50"] == pytest.approx((np.std([1, 3, 2]) + 2.0) / 2)
    assert out["max_attention_ratio"]["p10"] == pytest.approx(np.exp(1.0) + 0.1 * (np.exp(2.0) - np.exp(1.0)))


def test_relation_accuracy_against_the_oracle_pair_prior():
    r1 = 4  # relations 0..3
    stated = np.zeros((2, 3, r1), bool)
    stated[0, 0, 1] = stated[0, 1, 1] = stated[0, 2, 2] = True  # pair (5, 6): relation 1 twice, 2 once
    stated[1, 0, 3] = True  # pair (7, 8)
    logits = np.zeros((2, 3, r1))
    logits[0, 0, 1] = logits[0, 1, 2] = logits[0, 2, 2] = logits[1, 0, 3] = 5.0
    logits[..., 0] = 50.0  # NA is never the answer
    pair = np.array([[5, 6], [7, 8]])
    mask = np.ones((2, 3), bool)
    out = diagnose.relation_accuracy(logits, stated, pair, mask)
    assert out["instances"] == 4 and out["pairs"] == 2
    assert out["instance_accuracy"] == pytest.approx(75.0)  # misses instance (0, 1)
    assert out["pair_prior_accuracy"] == pytest.approx(75.0)  # relation 1 for pair (5, 6): misses (0, 2)
    assert out["pairs_with_several_relations"] == pytest.approx(75.0)
    assert diagnose.relation_accuracy(logits, np.zeros_like(stated), pair, mask) == {"instances": 0}


def test_ranking_probe_finds_a_signal_and_not_noise():
    rng = np.random.default_rng(0)

    def split(p=300, n=6):
        signal = rng.normal(size=(p, n, 1))
        truth = np.zeros((p, n, 4), bool)
        truth[..., 2] = signal[..., 0] + 0.5 * rng.normal(size=(p, n)) > 0.5  # gold relation 2 where "interacting"
        labels = np.zeros((p, 4))
        labels[:, 2] = 1
        return {"signal": np.concatenate([signal, rng.normal(size=(p, n, 2))], -1), "noise": rng.normal(size=(p, n, 3)),
                "truth": truth, "labels": labels, "instance_mask": np.ones((p, n), bool)}

    train, test = split(), split()
    found = diagnose.ranking_probe(train, test, "signal")
    blind = diagnose.ranking_probe(train, test, "noise")
    assert found["ranking_auc"] > 80 and found["top_instance_true"] > found["chance"] + 20
    assert abs(blind["ranking_auc"] - 50) < 5 and found["facts"] == blind["facts"] > 200


def test_diagnosing_a_run_with_other_settings_stops_before_any_work(tmp_path):
    config = demo.get_config("tiny")
    workdir.check_settings(config, str(tmp_path), write=True)
    os.makedirs(tmp_path / "checkpoints" / "best" / "3")  # The workdir holds a (CLEVER) run.
    config.model.head = "avg"
    with pytest.raises(workdir.ChangedSettings, match=r"model\.head: 'clever' \(the run's\) -> 'avg'"):
        diagnose.diagnose(config, str(tmp_path), "test")
    assert os.listdir(tmp_path) == ["checkpoints"] and sorted(os.listdir(tmp_path / "checkpoints")) == [
        "best", os.path.basename(workdir.SETTINGS)]
