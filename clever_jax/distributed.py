"""Multi-host runs: JAX's multi-controller runtime, one Python process per host (or per GPU).

`initialize(config)` connects the processes (`jax.distributed.initialize`) before anything touches
the devices. Values of config.distributed left unset are detected by JAX: on Cloud TPU VMs (GCE
and GKE), under Slurm, Open MPI (mpirun) and Kubernetes, or from the environment variables
JAX_COORDINATOR_ADDRESS and JAX_LOCAL_DEVICE_IDS. After it, `jax.devices()` lists the devices of
every process and each process feeds its own share of every global batch. On CPU the processes
exchange data with Gloo over TCP (JAX's default CPU collectives).
"""

from __future__ import annotations

import itertools

import jax
import ml_collections
import orbax.checkpoint as ocp
from absl import logging

_barriers = itertools.count()  # Every process passes the same barriers in the same order.


def initialize(config: ml_collections.ConfigDict) -> None:
    """Connects this process to the others when config.distributed.enabled (once per process).

    config.distributed: coordinator_address ("" = detect), num_processes (0 = detect),
    process_id (-1 = detect), local_device_ids ("0,1": this process's devices; "" = all visible).
    This also starts JAX's preemption service (config jax_enable_preemption_service, on by default;
    multi-host training needs it), which handles SIGTERM from then on: train.StopSignal.
    """
    d = config.distributed
    if not d.enabled or jax.distributed.is_initialized():
        return
    try:
        local_device_ids = [int(i) for i in d.local_device_ids.split(",")] if d.local_device_ids else None
    except ValueError as e:
        raise ValueError(f"config.distributed.local_device_ids must be comma-separated integers such as '0,1', "
                         f"found {d.local_device_ids!r}") from e
    jax.distributed.initialize(
        coordinator_address=d.coordinator_address or None,
        num_processes=d.num_processes or None,
        process_id=None if d.process_id < 0 else d.process_id,
        local_device_ids=local_device_ids,
    )
    logging.info("Process %d of %d: %d local devices of %d", jax.process_index(), jax.process_count(),
                 jax.local_device_count(), jax.device_count())


def is_main_process() -> bool:
    """Process 0 writes the run's plain files (history, metrics, plots, triplets, export)."""
    return jax.process_index() == 0


def barrier(name: str, timeout_s: int = 3600) -> None:
    """Waits until every process reaches this barrier; a no-op on one process.

    Uses the coordination service, not a device collective, so a long wait (process 0 building the
    records) does not time out below `timeout_s`.
    """
    ocp.multihost.get_barrier_sync_fn()(key=f"{name}_{next(_barriers)}", timeout_ms=timeout_s * 1000)
