"""A workdir belongs to one run: a lock while a command runs in it, and the settings that made it.

* WORKDIR/run.lock holds the pid, host and start time of the command running there, and an
  exclusive flock on it while the command runs. A second command on the same workdir stops
  (WorkdirInUse) while that process is alive; the kernel drops the flock of a process that died,
  so its lock file is taken over (and two commands racing for it cannot both win). A lock file
  naming another host is not taken over (whether flocks reach across hosts depends on the shared
  filesystem): the message says which file to delete if that run is gone. Only process 0 of a
  multi-process run takes the lock. Once it holds the lock, a command removes what commands of this
  host that died left in the workdir (files.remove_stale: `*.{host}.{pid}.tmp` temporaries, partial
  knowledge bases).
* WORKDIR/checkpoints/run_settings.json holds the settings that change a run's results (`result_settings`:
  seed, data, model and train, without the ones that do not). Once the workdir holds a checkpoint,
  resuming, evaluating, extracting or exporting with different ones stops (ChangedSettings) and
  lists the differences (settings the code added or dropped since are not compared);
  --config.train.allow_changed_config=True lets a deliberate change through (it is logged and
  becomes the workdir's settings).
"""

from __future__ import annotations

import contextlib
import fcntl
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
SETTINGS = os.path.join("checkpoints", "run_settings.json")  # With the checkpoints they describe.
SECTIONS = ("data", "model", "train")
# Settings that do not change what a run computes (how fast, how often it logs, what it keeps).
# (data.worker_count is not one of them: a resumed input pipeline needs the same number of workers.)
NOT_RESULTS = frozenset({"data.eval_batch_size", "data.length_multiple", "model.remat", "train.log_every",
                         "train.checkpoints_to_keep", "train.allow_changed_config"})


class WorkdirInUse(RuntimeError):
    """Another live command holds the workdir's lock."""


class ChangedSettings(ValueError):
    """The config differs from the one the workdir's run was made with."""


def _gone(owner: dict, host: str, kernel_lock: bool) -> bool:
    """Whether the owner a lock file names is gone: a file left empty or damaged; with the kernel's
    lock taken, any process of this host (a live command would hold that lock); without file
    locking, a process of this host that no longer runs (or this very pid, reused after a
    restart). A process of another host is not: whether its locks reach this host depends on the
    shared filesystem."""
    pid = owner.get("pid")
    if not isinstance(pid, int) or pid <= 0:
        return True
    if owner.get("host") != host:
        return False
    return kernel_lock or pid == os.getpid() or not files.pid_alive(pid)


def _owner(fd: int) -> dict:
    """The owner recorded in an open lock file ({} when empty or damaged)."""
    try:
        owner = json.loads(os.pread(fd, 4096, 0) or b"{}")
    except ValueError:
        return {}
    return owner if isinstance(owner, dict) else {}


def _in_use(workdir: str, path: str, owner: dict) -> WorkdirInUse:
    return WorkdirInUse(
        f"{workdir} is in use by process {owner.get('pid', '?')} on {owner.get('host', '?')} "
        f"(since {owner.get('started', '?')}; {path}). Wait for that command to finish or give this "
        f"one another --workdir; if that process is gone (e.g. its host died), delete {path}.")


def _take(fd: int, workdir: str, path: str, host: str) -> bool:
    """Tries to own the open lock file `fd`: True when it does (the file now names this process),
    False when the file was replaced meanwhile (open the new one); WorkdirInUse when a live command
    holds it."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        kernel_lock = True
    except BlockingIOError:
        raise _in_use(workdir, path, _owner(fd)) from None
    except OSError as e:  # A filesystem without file locks (some network mounts): the pid check alone.
        logging.warning("%s: no file locking on this filesystem (%s); going by the pid it records", path, e)
        kernel_lock = False
    try:
        if os.stat(path).st_ino != os.fstat(fd).st_ino:
            return False  # Its holder removed it between our open and our lock.
    except FileNotFoundError:
        return False
    owner = _owner(fd)
    if owner and not _gone(owner, host, kernel_lock):
        raise _in_use(workdir, path, owner)
    if owner:
        logging.warning("Taking over %s: its owner %s is gone", path, owner)
    mine = {"pid": os.getpid(), "host": host, "started": time.strftime("%Y-%m-%d %H:%M:%S")}
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(mine).encode(), 0)
    return True


def _acquire(workdir: str, path: str) -> int:
    """Opens and locks `path` (an exclusive flock, which the kernel drops when its process dies, so
    two commands can never both take it); returns the file descriptor holding it."""
    host = socket.gethostname()
    for _ in range(3):
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            if _take(fd, workdir, path, host):
                return fd
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)
    raise WorkdirInUse(f"{path}: could not take the lock")


@contextlib.contextmanager
def lock(workdir: str) -> Iterator[None]:
    """Holds WORKDIR/run.lock for the block (module docstring)."""
    os.makedirs(workdir, exist_ok=True)
    path = os.path.join(workdir, LOCK)
    fd = _acquire(workdir, path)
    try:
        files.remove_stale(workdir, recursive=True)
        yield
    finally:
        try:
            if os.stat(path).st_ino == os.fstat(fd).st_ino:  # Still ours (not deleted and re-taken).
                os.remove(path)
        except FileNotFoundError:
            pass
        finally:
            os.close(fd)


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
    earlier = os.path.join(workdir, os.path.basename(SETTINGS))  # Where versions before 2026-12-02 kept it.
    if os.path.isfile(earlier) and not os.path.isfile(path) and os.path.isdir(os.path.dirname(path)):
        os.replace(earlier, path)
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
