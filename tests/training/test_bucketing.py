"""Length buckets: a batch's trailing padding cut to multiples of config.data.length_multiple changes
no real token's computation (eval outputs, loss and gradients); processes agree on the bucket.

  python tests/training/test_bucketing.py PORT PROCESS_ID    (one of the two processes of the last test)
"""

import functools
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
import test_precision
from multidevice_check import LR, LT
from multidevice_check import batch as fixed_batch
from test_multihost import ROOT, free_port

from clever_jax.data import packing, pipeline
from clever_jax.training import builder, steps


def handmade_batch(text_lengths, region_counts, lt: int = 12, lr: int = 10) -> dict:
    """Bags [B, N] of prefix masks with the given real text lengths and region counts (0: padding)."""
    text_lengths, region_counts = np.asarray(text_lengths), np.asarray(region_counts)
    text_mask = np.arange(lt) < text_lengths[..., None]
    region_mask = np.arange(lr) < region_counts[..., None]
    spans = np.stack([np.minimum(1, text_lengths), np.minimum(2, text_lengths)], -1).astype(np.int32)
    return {
        "text_ids": (np.arange(1, lt + 1) * text_mask).astype(np.int32), "text_mask": text_mask,
        "regions": np.ones((*region_mask.shape, 3), np.float32) * region_mask[..., None], "region_mask": region_mask,
        "subject_span": spans, "object_span": spans, "instance_mask": text_lengths > 0,
        "bag": np.arange(len(text_lengths)), "bag_mask": np.ones(len(text_lengths), bool),
    }


@pytest.mark.parametrize("text_lengths, region_counts, multiple, want", [
    ([[5, 3], [7, 0]], [[4, 2], [3, 0]], 4, (8, 4)),  # Rounded up to multiples of 4.
    ([[5, 3], [7, 0]], [[4, 2], [3, 0]], 1, (7, 4)),  # Exactly the longest.
    ([[5, 3], [8, 0]], [[4, 2], [3, 0]], 8, (8, 8)),  # A multiple already.
    ([[12, 3], [7, 0]], [[10, 2], [3, 0]], 8, (12, 10)),  # Capped at Lt and Lr.
    ([[9, 3], [7, 0]], [[9, 2], [3, 0]], 8, (12, 10)),  # Rounded past the caps.
    ([[4, 3], [2, 0]], [[1, 1], [1, 0]], 1, (4, 2)),  # At least the subject's and object's regions.
    ([[0, 0], [0, 0]], [[0, 0], [0, 0]], 4, (4, 4)),  # Empty bags: the smallest bucket.
    ([[5, 3], [7, 0]], [[4, 2], [3, 0]], 0, (12, 10)),  # 0: no trimming.
])
def test_bucket_lengths_and_trim(text_lengths, region_counts, multiple, want):
    batch = handmade_batch(text_lengths, region_counts)
    lengths = pipeline.bucket_lengths(batch, multiple)
    assert tuple(lengths) == want
    trimmed = pipeline.trim_padding(batch, *lengths)
    lt, lr = want
    assert trimmed["text_ids"].shape == trimmed["text_mask"].shape == (2, 2, lt)
    assert trimmed["regions"].shape == (2, 2, lr, 3) and trimmed["region_mask"].shape == (2, 2, lr)
    for key, axis_len in (("text_ids", lt), ("text_mask", lt), ("region_mask", lr)):
        np.testing.assert_array_equal(trimmed[key], batch[key][..., :axis_len])
        assert not batch[key][..., axis_len:].any()  # Only padding was cut.
    np.testing.assert_array_equal(trimmed["regions"], batch["regions"][..., :lr, :])
    for key in ("subject_span", "object_span", "instance_mask", "bag"):
        assert trimmed[key] is batch[key]


def test_bucket_lengths_keep_spans_and_reject_negative_multiples():
    batch = handmade_batch([[3, 2]], [[2, 2]])
    batch["object_span"][0, 0] = (4, 6)  # A span past the masked text keeps its positions.
    assert tuple(pipeline.bucket_lengths(batch, 1)) == (6, 2)
    with pytest.raises(ValueError, match="length_multiple=-1"):
        pipeline.bucket_lengths(batch, -1)


def padded_batch() -> dict:
    """multidevice_check's batch with prefix masks: 4-5 text positions of 8, 2-3 regions of 4."""
    batch = fixed_batch(0)
    rng = np.random.default_rng(1)
    real = batch["instance_mask"][..., None]
    text_mask = (np.arange(LT) < rng.integers(4, 6, (*real.shape[:2], 1))) & real  # Spans [1, 3), [3, 4) fit.
    region_mask = (np.arange(LR) < rng.integers(2, 4, (*real.shape[:2], 1))) & real
    return {**batch, "text_mask": text_mask, "text_ids": batch["text_ids"] * text_mask, "region_mask": region_mask,
            "regions": batch["regions"] * region_mask[..., None]}


@functools.cache
def model_and_state():
    """A tiny float32 model without dropout and its initial state (test_precision.setup)."""
    config, model, _, state = test_precision.setup("float32", dropout=0.0)
    return config, model, state


def test_trimmed_batches_give_the_same_outputs_loss_and_gradients():
    config, model, state = model_and_state()
    batch = padded_batch()
    lengths = tuple(pipeline.bucket_lengths(batch, 3))
    assert lengths == (6, 3)  # Both axes cut.
    trimmed = pipeline.trim_padding(batch, *lengths)
    too_short = pipeline.trim_padding(batch, 4, 3)  # Cuts real text: must change the outputs.

    evaluate = jax.jit(functools.partial(steps.eval_step, model=model))
    scores, evidence = evaluate(state.params, batch)
    trimmed_scores, trimmed_evidence = evaluate(state.params, trimmed)
    np.testing.assert_allclose(trimmed_scores, scores, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(trimmed_evidence, evidence, rtol=1e-5, atol=1e-6)
    assert not np.allclose(evaluate(state.params, too_short)[0], scores, rtol=1e-5, atol=1e-6)

    grads_of = jax.jit(functools.partial(steps.loss_and_grads, rng=jax.random.key(0), scale=1.0, model=model,
                                         config=config))
    loss, grads = grads_of(state.params, batch)
    trimmed_loss, trimmed_grads = grads_of(state.params, trimmed)
    np.testing.assert_allclose(trimmed_loss, loss, rtol=1e-6)
    # Summed in another order: atol for entries near zero (cancellation; the attention key bias's gradient is
    # zero up to rounding, softmax ignores a shift), against gradients of order 0.1-1.
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), trimmed_grads, grads)


# Each process's local batch: process 0 needs 5 text positions and 6 regions, process 1 needs 11 and 3.
PROCESS_LENGTHS = (([[5, 3]], [[6, 2]]), ([[11, 2]], [[3, 2]]))


@pytest.mark.multiprocess
def test_processes_trim_to_the_largest_bucket_of_any_process():
    port = free_port()
    env = {**os.environ, "PYTHONPATH": ROOT, "JAX_PLATFORMS": "cpu"}
    processes = [subprocess.Popen([sys.executable, __file__, str(port), str(i)], env=env, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True) for i in range(2)]
    try:
        outputs = [p.communicate(timeout=120)[0] for p in processes]
    finally:
        for p in processes:
            p.kill()  # Only if still running (one failed and the other waits for it).
    assert all(p.returncode == 0 for p in processes), outputs
    assert [out.strip().splitlines()[-2] for out in outputs] == ["bucket (12, 8)"] * 2  # Each alone: 8x8, 12x4.
    # Packed: what the fullest group of any process needs (text, regions, each length class's longest instance).
    needs = [packing.needs(handmade_batch(*lengths), 1, 1, 2) for lengths in PROCESS_LENGTHS]
    most = np.max(needs, axis=0)
    assert not any((n == most).all() for n in needs)
    assert [out.strip().splitlines()[-1] for out in outputs] == [f"packed {(12, 8, *map(int, most))}"] * 2


def process_main(port: int, process_id: int) -> None:
    jax.distributed.initialize(f"localhost:{port}", num_processes=2, process_id=process_id)
    batch = handmade_batch(*PROCESS_LENGTHS[process_id])
    print("bucket", builder.batch_bucket(batch, 4), flush=True)
    print("packed", builder.batch_bucket(batch, 4, packing.needs(batch, 1, 1, 2)), flush=True)


if __name__ == "__main__":
    process_main(int(sys.argv[1]), int(sys.argv[2]))
