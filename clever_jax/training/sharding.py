"""Device meshes and shardings: one program for one CPU, many GPUs and TPU pods.

The mesh has two named axes: `data` (bags are split over it) and `fsdp` (when
`config.mesh.params == "fsdp"`, every parameter and optimiser-state leaf of
`config.mesh.fsdp_min_size` values or more is split over it; bags are split over both axes, so
an FSDP mesh is data-parallel too). Sizes come from config.mesh; -1 takes the devices left over.
"""

from __future__ import annotations

from typing import Any

import jax
import ml_collections
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

AXES = ("data", "fsdp")
BATCH_AXES = AXES  # The bag axis of a batch is split over every mesh axis.
PARAM_MODES = ("replicated", "fsdp")


def make_mesh(config: ml_collections.ConfigDict, devices: list | None = None) -> Mesh:
    """A ('data', 'fsdp') mesh over `devices` (default: all) with the sizes of config.mesh."""
    devices = devices if devices is not None else jax.devices()
    sizes = [config.mesh.data, config.mesh.fsdp]
    if sizes.count(-1) > 1:
        raise ValueError(f"config.mesh: at most one axis may be -1, found data={sizes[0]} fsdp={sizes[1]}")
    known = int(np.prod([s for s in sizes if s != -1]))
    sizes = [len(devices) // known if s == -1 else s for s in sizes]
    if int(np.prod(sizes)) != len(devices):
        raise ValueError(
            f"config.mesh data={config.mesh.data} fsdp={config.mesh.fsdp} does not cover the {len(devices)} devices"
        )
    return Mesh(np.asarray(devices).reshape(sizes), AXES)


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Bags (axis 0 of every batch array) split over all devices."""
    return NamedSharding(mesh, P(BATCH_AXES))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def _fsdp_spec(shape: tuple[int, ...], size: int, min_size: int) -> P:
    """Split the largest axis that `size` divides; replicate leaves under `min_size` values or indivisible ones."""
    if size == 1 or not shape or int(np.prod(shape)) < min_size:
        return P()
    for axis in sorted(range(len(shape)), key=lambda a: -shape[a]):
        if shape[axis] % size == 0:
            return P(*([None] * axis), "fsdp")
    return P()


def tree_shardings(tree: Any, mesh: Mesh, mode: str, min_size: int) -> Any:
    """NamedShardings for a tree of arrays (parameters, optimiser state): replicated or FSDP (leaves of
    `min_size` values or more split over the fsdp axis: config.mesh.fsdp_min_size)."""
    if mode not in PARAM_MODES:
        raise ValueError(f"config.mesh.params must be one of {PARAM_MODES}, found {mode!r}")
    size = mesh.shape["fsdp"]

    def spec(leaf: Any) -> NamedSharding:
        shape = tuple(getattr(leaf, "shape", ()))
        return NamedSharding(mesh, P() if mode == "replicated" else _fsdp_spec(shape, size, min_size))

    return jax.tree.map(spec, tree)


def global_batch(batch: dict[str, np.ndarray], sharding: NamedSharding) -> dict[str, jax.Array]:
    """Assembles the global batch from this process's bags (each process loads its own shard; every array, a
    packed batch's tuple of attention rows included, split over devices along its first axis)."""
    return jax.tree.map(lambda v: jax.make_array_from_process_local_data(sharding, v), batch)
