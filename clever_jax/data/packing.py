"""Packing on the host: where each batch's real tokens are, so that the encoder computes only them.

With config.data.packing the device batch (training.builder.Run.device_batch) gets
models/packing.PACKING_KEYS from `pack`, besides its padded arrays. Bags are packed in groups that
stay on one device and in one accumulation micro-batch (`group_order`), so that the model never
moves a token between devices.

The step compiles once per shape, so a group's compact capacity, for its text and for its regions,
is fixed for the run (`capacities`): the most real tokens per bag of any group in SAMPLE_BATCHES
training batches (`tokens_per_bag`, read once by the builder), times the group's bags. A batch whose
fullest group needs more gets the group's padded size for that part (text, regions or both): at
most three more shapes per length bucket, each compiled once, for the few batches fuller than every
sampled one.
"""

from __future__ import annotations

import numpy as np

TEXT, REGIONS = 0, 1
SAMPLE_BATCHES = 20  # Training batches whose fullest groups set a run's capacities.


def group_order(num_bags: int, devices: int, steps: int) -> np.ndarray:
    """The bags of each group, int [G, B_g] with G = devices x steps: row d steps + i holds the bags of
    device d (a contiguous block of num_bags / devices) that accumulation micro-batch i takes (bags i,
    i + steps, ...: training.steps.micro_batches), in batch order."""
    per_device = num_bags // devices
    device, micro, rank = np.ogrid[:devices, :steps, :per_device // steps]
    return (device * per_device + rank * steps + micro).reshape(devices * steps, -1)


def _real_tokens(batch: dict[str, np.ndarray], order: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Real text and region positions of each group, bool [G, M] each, M = B_g N (Lt + Lr) (flattened
    [B_g, N, Lt + Lr], the model's padded layout)."""
    lt = batch["text_mask"].shape[-1]
    real = np.concatenate([batch["text_mask"], batch["region_mask"]], axis=-1)[order]  # [G, B_g, N, L]
    is_text = np.arange(real.shape[-1]) < lt
    return (real & is_text).reshape(len(order), -1), (real & ~is_text).reshape(len(order), -1)


def token_counts(batch: dict[str, np.ndarray], devices: int, steps: int) -> np.ndarray:
    """Real text tokens and real regions of the batch's fullest group: int64 [2] (text, regions)."""
    text, regions = _real_tokens(batch, group_order(len(batch["bag_mask"]), devices, steps))
    return np.array([text.sum(axis=1).max(), regions.sum(axis=1).max()], np.int64)


def tokens_per_bag(batches: list[dict[str, np.ndarray]], devices: int, steps: int) -> np.ndarray:
    """The most real text tokens and regions per bag of any group of `batches`: float64 [2]."""
    bags = len(batches[0]["bag_mask"]) // (devices * steps)
    return np.max([token_counts(batch, devices, steps) for batch in batches], axis=0) / bags


def capacities(batch: dict[str, np.ndarray], need: np.ndarray, devices: int, steps: int, per_bag: np.ndarray
               ) -> tuple[int, int]:
    """(Ct, Cr) for groups of the batch's bags whose fullest needs `need` [2] (text, regions) slots: the
    run's fixed per_bag [2] (`tokens_per_bag`) x bags per group, rounded up to a multiple of 8 and at
    most the group's padded tokens, where that holds `need`; else the padded tokens."""
    bags = len(batch["bag_mask"]) // (devices * steps)
    padded = bags * batch["instance_mask"].shape[1] * np.array([batch["text_mask"].shape[-1],
                                                                batch["region_mask"].shape[-1]])
    fixed = np.minimum(padded, -(-np.ceil(per_bag * bags).astype(np.int64) // 8) * 8)
    slots = np.where(np.asarray(need) <= fixed, fixed, padded)
    return int(slots[TEXT]), int(slots[REGIONS])


def pack(batch: dict[str, np.ndarray], devices: int, steps: int, slots: tuple[int, int]) -> dict[str, np.ndarray]:
    """The batch with packed_text int32 [G, Ct], packed_regions int32 [G, Cr] and token_slots int32
    [B, N, Lt + Lr] added (models/packing.py), for `devices` local devices and `steps` micro-batches.

    Args:
      batch: a padded batch (pipeline.bag_layout, possibly trimmed), B a multiple of devices x steps.
      slots: (Ct, Cr) compact capacities of each group (`capacities`).

    Raises:
      ValueError: a group has more real tokens than its capacity.
    """
    num_bags, n = batch["instance_mask"].shape
    if num_bags % (devices * steps):
        raise ValueError(f"{num_bags} bags do not split into {devices} devices x {steps} micro-batches")
    length = batch["text_mask"].shape[-1] + batch["region_mask"].shape[-1]
    order = group_order(num_bags, devices, steps)
    groups, positions = len(order), order.shape[1] * n * length
    token_slots = np.full((groups, positions), sum(slots), np.int32)
    out = dict(batch)
    text, regions = _real_tokens(batch, order)
    for key, real, size, first in (("packed_text", text, slots[0], 0), ("packed_regions", regions, slots[1], slots[0])):
        group, position = np.nonzero(real)
        count = np.bincount(group, minlength=groups)
        if count.max(initial=0) > size:
            raise ValueError(f"{key}: a group of {order.shape[1]} bags has {count.max()} real tokens, more than "
                             f"its {size} slots")
        rank = np.arange(len(group)) - (np.cumsum(count) - count)[group]
        packed = np.full((groups, size), positions, np.int32)
        packed[group, rank] = position
        token_slots[group, position] = first + rank
        out[key] = packed
    out["token_slots"] = np.empty((num_bags, n, length), np.int32)
    out["token_slots"][order.ravel()] = token_slots.reshape(-1, n, length)
    return out
