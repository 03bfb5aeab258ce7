"""The per-device memory estimate of a train step (clever_jax.perf.memory)."""

import pytest

from clever_jax.perf import memory
from configs import demo


def small_config(**train):
    config = demo.get_config("tiny")
    config.data.update(text_len=8, num_regions=4, packing=True)
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
    # Packed: by default for the most a batch can need (every token real), or for a share.
    half = memory.estimate(small_config(), token_share=0.5)
    padded_config = small_config()
    padded_config.data.packing = False
    padded = memory.estimate(padded_config)
    assert (one["config"]["packed_token_share"], half["config"]["packed_token_share"]) == (1.0, 0.5)
    assert padded["config"]["packed_token_share"] is None
    activations = [r["analytic_bytes"]["activations"] for r in (half, padded, one)]
    assert activations == sorted(activations) and activations[0] < activations[2]
    assert half["xla_bytes"]["temporaries"] < one["xla_bytes"]["temporaries"]


def test_bad_splits_are_rejected():
    config = small_config(grad_accum_steps=3)
    with pytest.raises(ValueError, match="does not split into 2 devices x 3 micro-batches"):
        memory.estimate(config)
    with pytest.raises(ValueError, match=r"--token_share=1.5: the share of the padded tokens"):
        memory.estimate(small_config(), token_share=1.5)
    config = small_config()
    config.mesh.data = -1
    with pytest.raises(ValueError, match="--devices"):
        memory.estimate(config)
