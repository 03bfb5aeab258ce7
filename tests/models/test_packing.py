"""Packing: the encoder computes the real tokens only, and loss, gradients and scores equal the padded
batch's, dropout included (the same masks), over devices and accumulation micro-batches."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from clever_jax.data import packing, synthetic
from clever_jax.data.pipeline import InstanceShape
from clever_jax.models.clever import Clever
from clever_jax.models.encoder import EncoderConfig
from clever_jax.models.packing import PACKING_KEYS, gather_rows
from clever_jax.training import steps
from configs import demo

SHAPE = InstanceShape(bag_size=5, text_len=12, num_regions=6, region_dim=10, num_relations=5, cls_id=1, sep_id=2)
VOCAB = 40


def padded_batch(num_bags: int = 8, seed: int = 0) -> dict:
    """Bags like the pipeline's: prefix masks, padding instances, spans inside the real text."""
    return synthetic.synthetic_batch(SHAPE, num_bags, np.random.default_rng(seed), 5.0, VOCAB)


def packed(batch: dict, devices: int, accumulation: int, classes: int = 3) -> dict:
    """The batch packed with capacities sampled from itself."""
    need = packing.needs(batch, devices, accumulation, classes)
    sampled = packing.sample([batch], devices, accumulation, classes)
    assert (packing.grow(sampled, need, len(batch["bag_mask"]) // (devices * accumulation)) == sampled).all()
    return packing.pack(batch, devices, accumulation, packing.capacities(batch, devices, accumulation, sampled))


def test_groups_are_each_devices_bags_of_each_micro_batch():
    order = packing.group_order(8, devices=2, steps=2)
    np.testing.assert_array_equal(order, [[0, 2], [1, 3], [4, 6], [5, 7]])
    # steps.micro_batches gives micro-batch i the bags i, i + 2, ...; device d holds a contiguous half of them.
    micro = steps.micro_batches({"bag": np.arange(8)}, 2)["bag"]  # [2, 4]
    np.testing.assert_array_equal(np.asarray(micro).reshape(2, 2, 2).transpose(1, 0, 2).reshape(4, 2), order)


@pytest.mark.parametrize("devices, accumulation", [(1, 1), (2, 1), (2, 2)])
def test_every_real_token_has_one_slot_in_its_own_group(devices, accumulation):
    batch = padded_batch()
    out = packed(batch, devices, accumulation)
    real = np.concatenate([batch["text_mask"], batch["region_mask"]], axis=-1)  # [B, N, L]
    slots, text, regions = out["token_slots"], out["packed_text"], out["packed_regions"]
    ct, cr = text.shape[1], regions.shape[1]
    assert text.shape[0] == regions.shape[0] == devices * accumulation
    assert (slots[real] < ct + cr).all() and (slots[~real] == ct + cr).all()
    lt = batch["text_mask"].shape[-1]
    assert (slots[..., :lt][real[..., :lt]] < ct).all() and (slots[..., lt:][real[..., lt:]] >= ct).all()
    order = packing.group_order(len(slots), devices, accumulation)
    grouped = slots[order].reshape(len(order), -1)  # [G, M]
    index = np.concatenate([text, regions], axis=1)  # [G, C]
    positions = grouped.shape[1]
    for g in range(len(order)):  # Slots and positions are inverse maps within each group.
        used = index[g] < positions
        np.testing.assert_array_equal(grouped[g, index[g, used]], np.flatnonzero(used))
        assert used.sum() == real[order[g]].sum()


@pytest.mark.parametrize("devices, accumulation, classes", [(1, 1, 1), (2, 2, 3)])
def test_attention_rows_hold_each_instances_real_tokens_by_length_class(devices, accumulation, classes):
    batch = padded_batch()
    out = packed(batch, devices, accumulation, classes)
    order = packing.group_order(len(batch["bag_mask"]), devices, accumulation)
    compact = out["packed_text"].shape[1] + out["packed_regions"].shape[1]
    slots = out["token_slots"][order].reshape(len(order), -1, out["token_slots"].shape[-1])  # [G, I, L]
    lengths = (slots < compact).sum(-1)
    rows = out["attention_slots"]
    assert len(rows) == classes and [r.shape[1] for r in rows] == list(packing.class_sizes(lengths.shape[1], classes))
    flat = np.concatenate([r.reshape(len(order), -1) for r in rows], axis=1)
    for g in range(len(order)):
        # Each instance's real slots, in padded order, then padding, in one row; rows longest first.
        expected = sorted((tuple(s[s < compact]) for s in slots[g]), key=len, reverse=True)
        got = [tuple(row[row < compact]) for r in rows for row in r[g]]
        assert got == expected
        assert all((row[(row < compact).sum():] == compact).all() for r in rows for row in r[g])
        # attention_positions is the inverse map; unused compact slots point past the rows.
        used = flat[g] < compact
        np.testing.assert_array_equal(out["attention_positions"][g, flat[g, used]], np.flatnonzero(used))
        unused = np.setdiff1d(np.arange(compact), flat[g, used])
        assert (out["attention_positions"][g, unused] == flat.shape[1]).all()
    assert max(r.shape[2] for r in rows) == min(-(-lengths.max() // 8) * 8, slots.shape[-1])


def test_capacities_are_the_runs_raised_where_a_batch_needs_more_and_a_group_too_full_is_named():
    batch = padded_batch()
    need = packing.needs(batch, 1, 1, 2)
    lengths = tuple(int(n) for n in need[2:])
    with pytest.raises(ValueError, match=r"packed_text: a group of 8 bags has \d+ real tokens, more than its"):
        packing.pack(batch, 1, 1, (int(need[0]) - 1, int(need[1]), *lengths))
    with pytest.raises(ValueError, match=r"attention_slots: an instance has \d+ real tokens, more than its length "
                                         r"class's \d+ positions"):
        packing.pack(batch, 1, 1, (*need[:2], lengths[0], lengths[1] - 1))
    with pytest.raises(ValueError, match="8 bags do not split into 3 devices x 1 micro-batches"):
        packing.pack(batch, 3, 1, tuple(need))
    with pytest.raises(ValueError, match="attention_slots: rows of 24 positions for instances of 18"):
        packing.pack(batch, 1, 1, (*need[:2], 24, 24))
    # A run's capacities: the sampled tokens per bag x bags and each class's longest instance, in multiples of 8,
    # at most the padded size; a batch that needs more raises them for the batches after it.
    sampled = packing.sample([padded_batch(seed=1), padded_batch(seed=2)], devices=2, steps=1, classes=2)
    most = np.max([packing.needs(padded_batch(seed=s), 2, 1, 2) for s in (1, 2)], axis=0)
    np.testing.assert_array_equal(sampled, np.concatenate([most[:2] / 4, most[2:]]))
    fixed = [max(8, -(-int(np.ceil(n)) // 8) * 8) for n in (*(sampled[:2] * 4), *sampled[2:])]
    assert packing.capacities(batch, 2, 1, sampled) == tuple(fixed)
    held = packing.grow(sampled, np.minimum(need // 2, fixed), 4)  # Two groups of 4 bags within the capacities.
    assert packing.capacities(batch, 2, 1, held) == tuple(fixed)
    grown = packing.grow(sampled, np.array([fixed[0] + 1, 0, 0, fixed[3] + 1]), 4)
    assert packing.capacities(batch, 2, 1, grown) == (fixed[0] + 8, fixed[1], fixed[2], min(fixed[3] + 8, 18))
    assert (packing.grow(grown, np.zeros(3), 4) == grown).all()  # A group of fewer classes: the rest kept.
    assert packing.capacities(batch, 2, 1, sampled * 100) == (4 * 5 * 12, 4 * 5 * 6, 18, 18)  # At most padded.


def test_gathered_rows_have_the_gradient_of_a_gather():
    x = jnp.arange(12.0).reshape(1, 4, 3)
    index, inverse = jnp.array([[2, 0, 4]]), jnp.array([[1, 5, 0, 5]])  # Row 1 and 3 unused; slot 2 empty.
    y = gather_rows(x, index, inverse)
    np.testing.assert_array_equal(y, [[[6, 7, 8], [0, 1, 2], [0, 0, 0]]])
    weights = jnp.arange(9.0).reshape(1, 3, 3)
    grad = jax.grad(lambda x: (gather_rows(x, index, inverse) * weights).sum())(x)
    reference = jax.grad(lambda x: (jnp.take_along_axis(x, index[..., None], 1, mode="fill", fill_value=0)
                                    * weights).sum())(x)
    np.testing.assert_array_equal(grad, reference)


def model_and_params(head: str, remat: bool = False) -> tuple[Clever, dict]:
    encoder = EncoderConfig(vocab_size=VOCAB, hidden_size=16, num_layers=2, num_heads=2, intermediate_size=32,
                            max_position_embeddings=16, region_dim=SHAPE.region_dim, region_layer_norm=True,
                            pair_geometry=True, remat=remat)
    model = Clever(encoder, num_relations=SHAPE.num_relations, head=head, temperature=2.0)
    return model, model.init(jax.random.key(0), padded_batch())["params"]


@pytest.mark.parametrize("head, devices, accumulation, remat", [("clever", 1, 1, False), ("clever", 2, 2, False),
                                                                 ("avg", 2, 1, True)])
def test_packed_loss_gradients_and_scores_equal_the_padded_ones(head, devices, accumulation, remat):
    model, params = model_and_params(head, remat)
    config = demo.get_config("tiny")
    config.train.grad_accum_steps = accumulation
    batch = padded_batch()
    grads_of = jax.jit(functools.partial(steps.loss_and_grads, scale=1.0, model=model, config=config))
    loss, grads = grads_of(params, batch, jax.random.key(1))
    pack_loss, pack_grads = grads_of(params, packed(batch, devices, accumulation), jax.random.key(1))
    np.testing.assert_allclose(pack_loss, loss, rtol=1e-6)
    # Dropout is on, with the same masks: another key gives another loss.
    assert abs(float(grads_of(params, batch, jax.random.key(2))[0]) - float(loss)) > 1e-3
    # atol for entries that are zero up to rounding (the attention key bias: softmax ignores a shift).
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), pack_grads, grads)

    scores, evidence = jax.jit(model.apply)({"params": params}, batch)
    pack_scores, pack_evidence = jax.jit(model.apply)({"params": params}, packed(batch, devices, 1))
    np.testing.assert_allclose(pack_scores, scores, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(pack_evidence, evidence, rtol=1e-5, atol=1e-7)


def test_packed_batches_are_for_the_vlp_encoder():
    model, params = model_and_params("clever")
    cnn = model.clone(encoder_type="cnn")
    batch = packed(padded_batch(), 1, 1)
    with pytest.raises(ValueError, match="packed batches are for the VLP encoder, not 'cnn'"):
        cnn.init(jax.random.key(0), batch)
    wrong = {**batch, "token_slots": batch["token_slots"][:, :, :-1]}  # A batch trimmed after packing.
    with pytest.raises(ValueError, match=r"token_slots \(8, 5, 17\) do not fit a batch of 8 bags x 5 instances"):
        model.init(jax.random.key(0), wrong)
    assert set(PACKING_KEYS) <= set(batch)
