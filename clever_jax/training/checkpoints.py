"""Orbax checkpoints of a run: WORKDIR/checkpoints/latest (for resuming: parameters, optimiser,
schedule, step and input-pipeline position) and WORKDIR/checkpoints/best (the best validation
score so far).
"""

from __future__ import annotations

import contextlib
import os
from typing import Any

import grain
import jax
import orbax.checkpoint as ocp


class _CheckpointManager(ocp.CheckpointManager):
    """Orbax's manager, without its own look at JAX's preemption sync point.

    Orbax asks for it (to decide and log saves) with checkpoint steps, also from a background thread
    on process 0; each ask moves the process's sync id, which then no longer matches the train loop's
    (StopSignal.check) and the processes could stop at different steps. The loop decides when to save.
    """

    def reached_preemption(self, step: int) -> bool:
        del step
        return False


class CheckpointError(RuntimeError):
    """A checkpoint could not be saved (the message names the folder and the cause)."""


class Checkpoints:
    """Orbax managers for WORKDIR/checkpoints/{latest,best}: train state, JSON metadata and input position.

    With several processes every process calls save and restore, at the same step (orbax
    coordinates them; the folder must be storage all processes share); the input position is one
    file per process (Grain's checkpoint handler), so a run resumes with the same number of processes.
    """

    def __init__(self, workdir: str, max_to_keep: int = 1):
        self.root = os.path.join(os.path.abspath(workdir), "checkpoints")
        self.managers = {}
        for kind in ("latest", "best"):
            # Each manager its own barrier names: their asynchronous saves can overlap.
            options = ocp.CheckpointManagerOptions(
                max_to_keep=max_to_keep, create=True,
                multiprocessing_options=ocp.options.MultiprocessingOptions(barrier_sync_key_prefix=kind))
            self.managers[kind] = _CheckpointManager(os.path.join(self.root, kind), options=options)

    def save(self, kind: str, state: Any, meta: dict, metrics: dict | None = None, data=None) -> None:
        """Saves `state`, `meta` + metrics and the position of the `data` iterator (if given) once per step."""
        manager = self.managers[kind]
        step = int(state.step)
        with self._reporting(kind, f"step {step}"):
            manager.check_for_errors()  # An earlier asynchronous save that failed.
            if manager.latest_step() == step:
                return
            items = {"state": ocp.args.PyTreeSave(state), "meta": ocp.args.JsonSave({**meta, "metrics": metrics})}
            if data is not None:
                items["data"] = grain.checkpoint.CheckpointSave(data)
            manager.save(step, args=ocp.args.Composite(**items))

    def wait(self) -> None:
        """Waits for the asynchronous saves; CheckpointError if one failed."""
        failures = []
        for kind, manager in self.managers.items():
            try:
                with self._reporting(kind, "the last save"):
                    manager.wait_until_finished()
            except CheckpointError as e:
                failures.append(e)
        if failures:
            raise failures[0]

    @contextlib.contextmanager
    def _reporting(self, kind: str, what: str):
        """Turns a failed save (often raised from orbax's background thread) into one CheckpointError."""
        try:
            yield
        except Exception as e:
            folder = os.path.join(self.root, kind)
            with contextlib.suppress(Exception):  # An earlier save still writing (a loaded machine) finishes first.
                self.managers[kind].wait_until_finished()
            # Orbax counts a step as saved before its background write ends; the folder holds the finished ones.
            finished = [int(name) for name in os.listdir(folder) if name.isdigit()] if os.path.isdir(folder) else []
            kept = max(finished, default=None)
            raise CheckpointError(
                f"saving ({what}) into {folder} failed: {type(e).__name__}: {e}. Training stops; the last "
                f"complete checkpoint there is {'none' if kept is None else f'step {kept}'} (free space or "
                "fix the storage, then run the same command to resume)") from e

    def restore_latest(self, target: Any, data=None) -> tuple[Any, dict] | None:
        """The latest state (with `target`'s shapes and shardings) and metadata; moves the `data` iterator
        (if given) to the saved position. None when there is no checkpoint."""
        manager = self.managers["latest"]
        step = manager.latest_step()
        if step is None:
            return None
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
        restore_args = ocp.checkpoint_utils.construct_restore_args(abstract)
        items = {"state": ocp.args.PyTreeRestore(item=abstract, restore_args=restore_args),
                 "meta": ocp.args.JsonRestore()}
        if data is not None:
            items["data"] = grain.checkpoint.CheckpointRestore(data)
        restored = manager.restore(step, args=ocp.args.Composite(**items))
        return restored["state"], restored["meta"]

    def restore_params(self, kind: str, target_params: Any) -> Any:
        """Only the parameters of a checkpoint (e.g. to start CLEVER from a trained AVG model)."""
        manager = self.managers[kind]
        step = manager.latest_step()
        if step is None:
            raise FileNotFoundError(f"no checkpoint in {os.path.join(self.root, kind)}")
        item = {"params": jax.tree.map(ocp.utils.to_shape_dtype_struct, target_params)}
        restored = manager.restore(step, args=ocp.args.Composite(state=ocp.args.PyTreeRestore(
            item=item, restore_args=ocp.checkpoint_utils.construct_restore_args(item), partial_restore=True)))
        return restored["state"]["params"]
