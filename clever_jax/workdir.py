"""A workdir belongs to one run: a lock while a command runs in it, and the settings that made it.

* WORKDIR/run.lock holds the pid, host and start time of the command running there. A second
  command on the same workdir stops (WorkdirInUse) while that process is alive; a lock left by a
  process that is gone from this host (or left empty by one killed while writing it) is taken
  over. A lock from another host cannot be checked: the message says which file to delete if that
  run is gone. Only process 0 of a multi-process run takes the lock.
* WORKDIR/run_settings.json holds the settings that change a run's results (`result_settings`:
  seed, data, model and train, without the ones that do not). Once the workdir holds a checkpoint,
  resuming, evaluating, extracting or exporting with different ones stops (ChangedSettings) and
  lists the differences (settings the code added or dropped since are not compared);
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
# (data.worker_count is not one of them: a resumed input pipeline needs the same number of workers.)
NOT_RESULTS = frozenset({"data.eval_batch_size", "data.length_multiple", "model.remat", "train.log_every",
                         "train.checkpoints_to_keep", "train.allow_changed_config"})


class WorkdirInUse(RuntimeError):
    """Another live command holds the workdir's lock."""


class ChangedSettings(ValueError):
    """The config differs from the one the workdir's run was made with."""


_HELD: set[str] = set()  # Lock files this process holds.


def _stale(owner: dict, path: str, host: str) -> bool:
    """Whether a lock's owner is gone: a process of this host that no longer runs (or this very
    pid, reused after a restart, without this process holding the lock), or a lock file left empty
    or damaged for a minute (its writer died between creating and writing it)."""
    pid = owner.get("pid")
    if not isinstance(pid, int) or pid <= 0:
        return time.time() - os.path.getmtime(path) > 60
    if owner.get("host") != host:
        return False
    if pid == os.getpid():
        return os.path.abspath(path) not in _HELD
    return not _alive(pid)


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
            owner = owner if isinstance(owner, dict) else {}
            if _stale(owner, path, mine["host"]):
                logging.warning("Taking over %s: its owner %s is gone", path, owner or "(empty lock file)")
                with contextlib.suppress(FileNotFoundError):
                    os.remove(path)
                continue
            raise WorkdirInUse(
                f"{workdir} is in use by process {owner.get('pid', '?')} on {owner.get('host', '?')} "
                f"(since {owner.get('started', '?')}; {path}). Wait for that command to finish or give this "
                f"one another --workdir; if that process is gone (e.g. its host died), delete {path}.") from None
        with os.fdopen(fd, "w") as f:
            json.dump(mine, f)
        _HELD.add(os.path.abspath(path))
        break
    else:
        raise WorkdirInUse(f"{path}: could not take the lock")
    try:
        yield
    finally:
        _HELD.discard(os.path.abspath(path))
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


def _has_checkpoint(workdir: str) -> bool:
    """Whether WORKDIR/checkpoints/{latest,best} holds a finished step."""
    folders = [os.path.join(workdir, "checkpoints", kind) for kind in ("latest", "best")]
    return any(name.isdigit() for folder in folders if os.path.isdir(folder) for name in os.listdir(folder))


def check_settings(config: ml_collections.ConfigDict, workdir: str, write: bool) -> None:
    """Compares the config's result settings with the workdir's (module docstring); the first
    command in a workdir (and, with write, a deliberate change) saves them."""
    path = os.path.join(workdir, SETTINGS)
    current = result_settings(config)
    if not os.path.isfile(path) or not _has_checkpoint(workdir):  # Nothing made yet that they could mix with.
        if write:
            files.write_json(path, current)
        return
    with open(path) as f:
        saved = json.load(f)
    # Settings that one side does not know (added to or removed from the code since) are not compared.
    changed = [f"  {key}: {saved[key]!r} (the run's) -> {current[key]!r} (now)"
               for key in sorted(saved.keys() & current.keys()) if saved[key] != current[key]]
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
