"""The per-device memory estimate of a train step (clever_jax.perf.memory)."""

import pytest

from clever_jax.perf import memory
from configs import demo


def small_config(**train):
    config = demo.get_config("tiny")
    config.data.update(text_len=8, num_regions=4)
    config.mesh.data = 2
    config.train.update(train)
    return config


@pytest.mark.slow  # End to end: the estimate compiles the paper-size step.
def test_estimate_splits_the_batch_and_reports_both_figures():
    one = memory.estimate(small_config())
    accumulated = memory.estimate(small_config(grad_accum_steps=2))
    assert one["config"]["bags_per_device"] == 4 and accumulated["config"]["micro_batch_bags"] == 2
    for report in (one, accumulated):
        assert report["xla_gib"] > 0 and report["xla_bytes"]["temporaries"] > 0
    a, b = one["analytic_bytes"], accumulated["analytic_bytes"]
    assert b["activations"] == pytest.approx(a["activations"] / 2)  # Half the bags per micro-batch.
    assert b["gradients"] == pytest.approx(2 * a["gradients"])  # The accumulator.
    assert a["state"] == pytest.approx(12 * one["config"]["parameters"])


def test_bad_splits_are_rejected():
    config = small_config(grad_accum_steps=3)
    with pytest.raises(ValueError, match="does not split into 2 devices x 3 micro-batches"):
        memory.estimate(config)
    config = small_config()
    config.mesh.data = -1
    with pytest.raises(ValueError, match="--devices"):
        memory.estimate(config)
