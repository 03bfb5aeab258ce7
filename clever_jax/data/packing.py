"""Packing on the host: where each batch's real tokens are, so that the encoder computes only them.

With config.data.packing the device batch (training.builder.Run.device_batch) gets
models/packing.PACKING_KEYS from `pack`, besides its padded arrays. Bags are packed in groups that
stay on one device and in one accumulation micro-batch (`group_order`), so that the model never
moves a token between devices. Attention runs in rows of one instance each, in length classes:
a group's instances sorted by their real tokens, longest first, and split into
config.data.packing_classes classes of (nearly) equal counts (`class_sizes`); each row holds its
instance's real tokens first, then padding.

The step compiles once per shape, so a group's sizes are set for the run (`capacities`) from
SAMPLE_BATCHES training batches (`sample`, read once by the builder): its compact slots for text
and for regions, the most real tokens per bag of any sampled group times the group's bags; each
length class's rows, the longest instance of that class in any sampled group. Each is rounded up
to a multiple of 8 and capped at the padded size. A batch whose groups need more in some part
(text, regions, a class) raises that part to its need (`grow`), and the run keeps the larger size
for its later batches: one more compiled shape each time, fewer and fewer as the run goes on.
"""

from __future__ import annotations

import numpy as np

SAMPLE_BATCHES = 20  # Training batches whose fullest groups set a run's capacities.


def group_order(num_bags: int, devices: int, steps: int) -> np.ndarray:
    """The bags of each group, int [G, B_g] with G = devices x steps: row d steps + i holds the bags of
    device d (a contiguous block of num_bags / devices) that accumulation micro-batch i takes (bags i,
    i + steps, ...: training.steps.micro_batches), in batch order."""
    per_device = num_bags // devices
    device, micro, rank = np.ogrid[:devices, :steps, :per_device // steps]
    return (device * per_device + rank * steps + micro).reshape(devices * steps, -1)


def class_sizes(instances: int, classes: int) -> np.ndarray:
    """Instances in each length class of a group of `instances`: int [K], K = min(classes, instances),
    the larger classes first (they hold the longer instances)."""
    return np.array([len(part) for part in np.array_split(np.arange(instances), min(classes, instances))])


def _real_tokens(batch: dict[str, np.ndarray], order: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Real text and region positions of each group, bool [G, M] each, M = B_g N (Lt + Lr) (flattened
    [B_g, N, Lt + Lr], the model's padded layout)."""
    lt = batch["text_mask"].shape[-1]
    real = np.concatenate([batch["text_mask"], batch["region_mask"]], axis=-1)[order]  # [G, B_g, N, L]
    is_text = np.arange(real.shape[-1]) < lt
    return (real & is_text).reshape(len(order), -1), (real & ~is_text).reshape(len(order), -1)


def _class_lengths(lengths: np.ndarray, classes: int) -> np.ndarray:
    """The longest instance of each length class of each group: lengths int [G, I] (real tokens of each
    instance) -> int [G, K]."""
    ranked = -np.sort(-lengths, axis=1)
    sizes = class_sizes(lengths.shape[1], classes)
    return ranked[:, np.cumsum(sizes) - sizes]


def needs(batch: dict[str, np.ndarray], devices: int, steps: int, classes: int) -> np.ndarray:
    """What the batch's fullest groups need: int64 [2 + K]: real text tokens, real regions, then the
    longest instance of each of its K length classes (`class_sizes`)."""
    order = group_order(len(batch["bag_mask"]), devices, steps)
    text, regions = _real_tokens(batch, order)
    length = batch["text_mask"].shape[-1] + batch["region_mask"].shape[-1]
    lengths = (text | regions).reshape(len(order), -1, length).sum(axis=-1)
    return np.concatenate([[text.sum(axis=1).max(), regions.sum(axis=1).max()],
                           _class_lengths(lengths, classes).max(axis=0)]).astype(np.int64)


def sample(batches: list[dict[str, np.ndarray]], devices: int, steps: int, classes: int) -> np.ndarray:
    """The most any group of `batches` needs (`needs`): float64 [2 + K], text and region tokens per bag,
    then each length class's longest instance."""
    bags = len(batches[0]["bag_mask"]) // (devices * steps)
    most = np.max([needs(batch, devices, steps, classes) for batch in batches], axis=0).astype(np.float64)
    most[:2] /= bags
    return most


def grow(sampled: np.ndarray, need: np.ndarray, bags: int) -> np.ndarray:
    """`sampled` [2 + K] (`sample`) raised where groups of `bags` bags need more (`need` [2 + K'], K' <= K: a
    group of fewer instances has fewer classes): float64 [2 + K]."""
    need = np.asarray(need, np.float64)
    grown = np.array(sampled, np.float64)
    grown[:2] = np.maximum(grown[:2], need[:2] / bags)
    grown[2:len(need)] = np.maximum(grown[2:len(need)], need[2:])
    return grown


def capacities(batch: dict[str, np.ndarray], devices: int, steps: int, sampled: np.ndarray) -> tuple[int, ...]:
    """(Ct, Cr, R_1, ..., R_K) for groups of the batch's bags: the run's `sampled` [2 + K] (`sample`, `grow`: per
    bag times the group's bags for Ct and Cr), rounded up to a multiple of 8 (at least 8), at most the padded
    size (B_g N Lt, B_g N Lr, Lt + Lr). K: as many classes as the group's instances allow."""
    bags = len(batch["bag_mask"]) // (devices * steps)
    lt, lr = batch["text_mask"].shape[-1], batch["region_mask"].shape[-1]
    n = batch["instance_mask"].shape[1]
    classes = len(class_sizes(bags * n, len(sampled) - 2))
    padded = np.array([bags * n * lt, bags * n * lr] + [lt + lr] * classes)
    wanted = np.concatenate([sampled[:2] * bags, sampled[2:2 + classes]])
    return tuple(int(s) for s in np.minimum(padded, np.maximum(8, -(-np.ceil(wanted).astype(np.int64) // 8) * 8)))


def pack(batch: dict[str, np.ndarray], devices: int, steps: int, slots: tuple[int, ...]) -> dict[str, np.ndarray]:
    """The batch with models/packing.PACKING_KEYS added, for `devices` local devices and `steps` micro-batches:
    packed_text int32 [G, Ct], packed_regions int32 [G, Cr], token_slots int32 [B, N, Lt + Lr],
    attention_slots (a tuple of K int32 [G, n_k, R_k]) and attention_positions int32 [G, Ct + Cr].

    Args:
      batch: a padded batch (pipeline.bag_layout, possibly trimmed), B a multiple of devices x steps.
      slots: (Ct, Cr, R_1, ..., R_K): compact capacities of each group and the rows of its K length
        classes (`capacities`).

    Raises:
      ValueError: a group has more real tokens than its capacity, or an instance is longer than its
        class's rows.
    """
    num_bags, n = batch["instance_mask"].shape
    if num_bags % (devices * steps):
        raise ValueError(f"{num_bags} bags do not split into {devices} devices x {steps} micro-batches")
    length = batch["text_mask"].shape[-1] + batch["region_mask"].shape[-1]
    order = group_order(num_bags, devices, steps)
    groups, positions, compact = len(order), order.shape[1] * n * length, slots[0] + slots[1]
    token_slots = np.full((groups, positions), compact, np.int32)
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
    out["attention_slots"], out["attention_positions"] = _attention_rows(token_slots.reshape(groups, -1, length),
                                                                         slots[2:], compact)
    return out


def _attention_rows(token_slots: np.ndarray, rows: tuple[int, ...], compact: int
                    ) -> tuple[tuple[np.ndarray, ...], np.ndarray]:
    """Length classes of a group's instances: token_slots int [G, I, L] (compact slot of each padded position,
    `compact` = Ct + Cr at padding), rows (R_1, ..., R_K) -> (K arrays int32 [G, n_k, R_k]: the compact slots
    of each row's instance, real tokens first in padded order, `compact` after; int32 [G, Ct + Cr]: each
    compact slot's position in the classes' rows flattened one after the other, their total A if unused)."""
    groups, instances, _ = token_slots.shape
    if len(rows) != len(class_sizes(instances, len(rows))):
        raise ValueError(f"{len(rows)} length classes for groups of {instances} instances")
    lengths = (token_slots < compact).sum(axis=-1)
    ranked = np.argsort(-lengths, axis=1, kind="stable")  # Longest first.
    # Real slots rise along an instance's positions (text before regions), padding is the largest.
    tokens = np.sort(token_slots, axis=-1)
    attention, start = [], 0
    for size, row in zip(class_sizes(instances, len(rows)), rows, strict=True):
        if row > token_slots.shape[-1]:
            raise ValueError(f"attention_slots: rows of {row} positions for instances of {token_slots.shape[-1]}")
        members = ranked[:, start:start + size]
        longest = np.take_along_axis(lengths, members, axis=1).max(initial=0)
        if longest > row:
            raise ValueError(f"attention_slots: an instance has {longest} real tokens, more than its length "
                             f"class's {row} positions")
        attention.append(np.take_along_axis(tokens, members[..., None], axis=1)[..., :row].astype(np.int32))
        start += size
    flat = np.concatenate([a.reshape(groups, -1) for a in attention], axis=1)
    positions = np.full((groups, compact + 1), flat.shape[1], np.int32)
    group, position = np.nonzero(flat < compact)
    positions[group, flat[group, position]] = position
    return tuple(attention), positions[:, :compact]
