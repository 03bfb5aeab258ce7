"""A workdir belongs to one run: a lock while a command runs in it, and the settings that made it.

* WORKDIR/run.lock holds the pid, host and start time of the command running there. A second
  command on the same workdir stops (WorkdirInUse) while that process is alive; a lock left by a
  process that is gone from this host is taken over. A lock from another host cannot be checked:
  the message says which file to delete if that run is gone.
* WORKDIR/run_settings.json holds the settings that change a run's results (`result_settings`:
  seed, data, model and train, without the ones that do not). Resuming, evaluating, extracting or
  exporting with different ones stops (ChangedSettings) and lists the differences;
  --config.train.allow_changed_config=True lets a deliberate change through (it is logged and
  becomes the workdir's settings).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from collections.abc import Iterator
from typing import Any

import ml_collections
from absl import logging

from clever_jax import files

LOCK = "run.lock"
SETTINGS = "run_settings.json"
SECTIONS = ("data", "model", "train")
# Settings that do not change what a run computes (how fast, how often it logs, what it keeps).
NOT_RESULTS = frozenset({"data.worker_count", "data.eval_batch_size", "model.remat", "train.log_every",
                         "train.checkpoints_to_keep", "train.allow_changed_config"})


class WorkdirInUse(RuntimeError):
    """Another live command holds the workdir's lock."""


class ChangedSettings(ValueError):
    """The config differs from the one the workdir's run was made with."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # Someone else's process: alive.
        return True
    return True


@contextlib.contextmanager
def lock(workdir: str) -> Iterator[None]:
    """Holds WORKDIR/run.lock for the block (module docstring)."""
    os.makedirs(workdir, exist_ok=True)
    path = os.path.join(workdir, LOCK)
    mine = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%d %H:%M:%S")}
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)  # Atomic: fails if the lock exists.
        except FileExistsError:
            try:
                with open(path) as f:
                    owner = json.load(f)
            except (OSError, ValueError):  # Being written by its owner this instant, or damaged.
                owner = {}
            if owner.get("host") == mine["host"] and isinstance(owner.get("pid"), int) and not _alive(owner["pid"]):
                logging.warning("Taking over %s: its process %d is gone", path, owner["pid"])
                with contextlib.suppress(FileNotFoundError):
                    os.remove(path)
                continue
            raise WorkdirInUse(
                f"{workdir} is in use by process {owner.get('pid', '?')} on {owner.get('host', '?')} "
                f"(since {owner.get('started', '?')}; {path}). Wait for that command to finish or give this "
                f"one another --workdir; if that process is gone (e.g. its host died), delete {path}.") from None
        with os.fdopen(fd, "w") as f:
            json.dump(mine, f)
        break
    else:
        raise WorkdirInUse(f"{path}: could not take the lock")
    try:
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.remove(path)


def result_settings(config: ml_collections.ConfigDict) -> dict[str, Any]:
    """The settings that change a run's results, flat ("data.bag_size" -> 8), as JSON values."""
    flat = {"seed": config.seed}

    def walk(prefix: str, node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                walk(f"{prefix}.{key}", value)
        elif prefix not in NOT_RESULTS:
            flat[prefix] = node

    for section in SECTIONS:
        walk(section, config[section].to_dict())
    return json.loads(json.dumps(flat, default=str))


def check_settings(config: ml_collections.ConfigDict, workdir: str, write: bool) -> None:
    """Compares the config's result settings with the workdir's (module docstring); the first
    command in a workdir (and, with write, a deliberate change) saves them."""
    path = os.path.join(workdir, SETTINGS)
    current = result_settings(config)
    if not os.path.isfile(path):
        if write:
            files.write_json(path, current)
        return
    with open(path) as f:
        saved = json.load(f)
    missing = "(not set)"
    changed = [f"  {key}: {saved.get(key, missing)!r} (the run's) -> {current.get(key, missing)!r} (now)"
               for key in sorted(saved.keys() | current.keys()) if saved.get(key, missing) != current.get(key, missing)]
    if not changed:
        return
    if not config.train.allow_changed_config:
        raise ChangedSettings(
            f"{workdir} holds a run made with other settings ({path}):\n" + "\n".join(changed) +
            "\nUse the run's settings, another --workdir, or --config.train.allow_changed_config=True to "
            "continue this run with the new ones.")
    logging.warning("Continuing %s with changed settings (allow_changed_config):\n%s", workdir, "\n".join(changed))
    if write:
        files.write_json(path, current)
