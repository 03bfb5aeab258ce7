"""Multi-host runs: JAX's multi-controller runtime, one Python process per host (or per GPU).

`initialize(config)` connects the processes (`jax.distributed.initialize`) before anything touches
the devices. Values of config.distributed left unset are detected by JAX: on Cloud TPU VMs (GCE
and GKE), under Slurm, Open MPI (mpirun) and Kubernetes, or from the environment variables
JAX_COORDINATOR_ADDRESS and JAX_LOCAL_DEVICE_IDS. After it, `jax.devices()` lists the devices of
every process and each process feeds its own share of every global batch. On CPU the processes
exchange data with Gloo over TCP (JAX's default CPU collectives).

Stopping: `STOP` (a `StopSignal`) turns SIGTERM and SIGINT into a stop after the current train
step, the same step on every process (main.py installs its handler).
"""

from __future__ import annotations

import itertools
import signal
from typing import Any

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from jax.experimental import multihost_utils

_barriers = itertools.count()  # Every process passes the same barriers in the same order.


def initialize(config: ml_collections.ConfigDict) -> None:
    """Connects this process to the others when config.distributed.enabled (once per process).

    config.distributed: coordinator_address ("" = detect), num_processes (0 = detect),
    process_id (-1 = detect), local_device_ids ("0,1": this process's devices; "" = all visible).
    This also starts JAX's preemption service (config jax_enable_preemption_service, on by default;
    multi-host training needs it), which handles SIGTERM from then on: StopSignal.
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


def broadcast_text(text: str, size: int = 4096) -> str:
    """Process 0's `text` (UTF-8, up to `size` bytes) on every process; `text` itself on one process."""
    if jax.process_count() == 1:
        return text
    encoded = np.zeros(size, np.uint8)
    data = text.encode()[:size]
    encoded[:len(data)] = np.frombuffer(data, np.uint8)
    return bytes(np.asarray(multihost_utils.broadcast_one_to_all(encoded))).rstrip(b"\0").decode(errors="replace")


def barrier(name: str, timeout_s: int = 3600) -> None:
    """Waits until every process reaches this barrier; a no-op on one process.

    Uses the coordination service, not a device collective, so a long wait (process 0 building the
    records) does not time out below `timeout_s`.
    """
    ocp.multihost.get_barrier_sync_fn()(key=f"{name}_{next(_barriers)}", timeout_ms=timeout_s * 1000)


class StopSignal:
    """Stops the train loop after a step when a stop signal arrives: SIGTERM (preemption) or SIGINT (Ctrl-C).

    The train step donates the state: an exception raised while a step is dispatched would leave
    the loop holding deleted arrays. While the loop runs, `handle` only records the signal and
    `check` (called by the loop before each step, so after the previous step's validation and
    saves, and once after the last) raises KeyboardInterrupt; the loop then saves the latest state
    and re-raises. Outside the loop `handle` raises at once.

    Multi-host: every process must stop after the same step, since saving is collective (a process
    that stopped alone would wait in the save for the others, which wait for it in the next step).
    jax.distributed.initialize starts JAX's preemption service, whose SIGTERM handler replaces ours
    (main.py installs ours before): it tells the coordination service, which sets the sync point to
    the step boundary after the furthest any process has reached, and `check` asks whether this
    boundary is it (multihost_utils.reached_preemption_sync_point: a lock and a comparison on the
    host, no collective, no wait on the devices). `handle` passes SIGINT on to the service as
    SIGTERM. So a signal to any one process stops every process after the same step, about a second
    later (the service polls for SIGTERM once a second) plus a step; all save the same latest step
    and raise the same KeyboardInterrupt. Boundaries are numbered over the process's life, not by
    train step, so a SIGTERM before the loop (start-up, restoring) stops it at its first check.
    Outside the loop, SIGINT stops only its own process (the others fail when the coordination
    service misses its heartbeats); SIGTERM is held until the next train loop, if there is one.
    """

    def __init__(self):
        self.in_loop = False
        self.received: int | None = None
        self.boundaries = 0  # Multi-host: step boundaries checked by this process (the preemption sync id).

    def handle(self, signum: int, frame: Any) -> None:
        del frame
        if not self.in_loop:
            raise KeyboardInterrupt(f"signal {signum}")
        if jax.process_count() > 1 and signum != signal.SIGTERM:
            signal.raise_signal(signal.SIGTERM)  # To JAX's preemption service, which tells every process.
        else:
            self.received = signum

    def check(self) -> None:
        """Raises KeyboardInterrupt if the loop must stop at this step boundary."""
        if jax.process_count() > 1:
            self.boundaries += 1
            if multihost_utils.reached_preemption_sync_point(self.boundaries):
                raise KeyboardInterrupt("a stop signal reached one of the processes: all stop at this step")
        elif self.received is not None:
            signum, self.received = self.received, None
            raise KeyboardInterrupt(f"signal {signum}")


STOP = StopSignal()  # main.py installs STOP.handle for SIGTERM and SIGINT.
