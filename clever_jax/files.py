"""Output files that are written whole or not at all, and the temporaries killed writers leave behind.

* atomic_write: one file, through a temporary `{path}.{host}.{pid}.tmp` renamed onto it.
* atomic_folder: a set of files (the knowledge base's kb.jsonl, kb.csv, kb_meta.json and negatives.jsonl) replaced
  all at once. ROOT/NAME is a symlink to current/NAME and ROOT/current one to versions/ID.{host}.{pid}
  (a complete version); a writer fills versions/ID.{host}.{pid}.tmp, renames it, then swaps
  `current` with one rename, so a reader, or a kill at any point, sees the previous complete set or
  the new one. Files of an earlier layout (ROOT/NAME regular files), or of a copy that followed the links
  (ROOT/current a folder), first become a version of their own.
* remove_stale: what processes of this host left when they died (their pid no longer runs): atomic
  writes' temporaries, partial versions, and versions no longer current. remove_left: those of some
  given paths. What cannot be removed (another user's, in a shared folder) is logged and left.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import socket
import time
from collections.abc import Iterable, Iterator
from typing import IO, Any

from absl import logging

VERSIONS = "versions"
CURRENT = "current"


def owned(path: str | os.PathLike) -> str:
    """`path` with this process's mark, `{path}.{host}.{pid}`: unique on storage that hosts share."""
    return f"{os.fspath(path)}.{socket.gethostname()}.{os.getpid()}"


def temporary(path: str | os.PathLike) -> str:
    """Where `path` is written before it is renamed into place: `{path}.{host}.{pid}.tmp`."""
    return owned(path) + ".tmp"


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "w") -> Iterator[IO]:
    """Opens a temporary file next to `path` (mode "w" or "wb") and renames it onto `path` once the
    block ends without an error, so a reader (or a crash, or a full disk) never sees a half-written
    file. On an error the temporary file is removed and `path` keeps its previous content."""
    path = os.fspath(path)
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    partial = temporary(path)
    try:
        with open(partial, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(partial, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(partial)
        raise


def write_json(path: str | os.PathLike, value: Any) -> None:
    """`value` as indented JSON at `path`, atomically (atomic_write)."""
    with atomic_write(path) as f:
        json.dump(value, f, indent=1)


def sha256(path: str | os.PathLike) -> str:
    """The SHA-256 of a file's content, hex."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def pid_alive(pid: int) -> bool:
    """Whether process `pid` of this host runs."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # Someone else's process: alive.
        return True
    return True


def _dead_owner(name: str, host: str) -> bool:
    """Whether `name` ends in `.{host}.{pid}` of a process of this host that no longer runs (or of this
    very pid, reused after a restart: nothing of this process is in flight when it sweeps). With `host`
    "", `name` ends in `.{pid}` (names of an earlier version, which recorded no host: taken as this host's)."""
    stem, _, pid = name.rpartition(".")
    return (stem.endswith(f".{host}") if host else bool(stem)) and pid.isdigit() and (
        int(pid) == os.getpid() or not pid_alive(int(pid)))


def _current(root: str) -> str | None:
    link = os.path.join(root, CURRENT)
    return os.path.realpath(link) if os.path.islink(link) else None


def _removed(paths: list[str]) -> list[str]:
    if paths:
        logging.warning("Removed %d temporaries of processes that died: %s", len(paths), ", ".join(paths))
    return paths


def remove_stale(folder: str | os.PathLike, recursive: bool = False) -> list[str]:
    """Removes what dead processes of this host left in `folder` (module docstring), its atomic_folder
    versions included (with `recursive`, in every folder below); returns the paths removed."""
    host, removed, pending = socket.gethostname(), [], [os.fspath(folder)]
    while pending:
        here = pending.pop()
        try:
            entries = list(os.scandir(here))
        except OSError:  # Not there, not a folder, not ours to read.
            continue
        parent = os.path.dirname(here)
        versions = os.path.basename(here) == VERSIONS and os.path.islink(os.path.join(parent, CURRENT))
        for entry in entries:
            stale = (versions or entry.name.endswith(".tmp")) and _dead_owner(entry.name.removesuffix(".tmp"), host)
            if stale and versions:  # `current` read once the owner is dead: a dead writer has finished its swap.
                stale = os.path.realpath(entry.path) != _current(parent)
            if stale:
                if _remove(entry.path):
                    removed.append(entry.path)
            elif entry.is_dir(follow_symlinks=False) and (recursive or entry.name == VERSIONS):
                pending.append(entry.path)
    return _removed(removed)


def remove_left(paths: Iterable[str], host: str | None = None) -> list[str]:
    """Removes those of `paths` (`{name}.{host}.{pid}`, `.tmp` after it or not) that processes of this host
    that died left; returns them. host="": names of an earlier version, `{name}.{pid}` (see _dead_owner)."""
    host = socket.gethostname() if host is None else host
    return _removed([path for path in paths
                     if _dead_owner(os.path.basename(path).removesuffix(".tmp"), host) and _remove(path)])


def _remove(path: str) -> bool:
    """Removes a file, link or folder; whether it is gone (False, logged, when it cannot be removed)."""
    try:
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        else:
            os.remove(path)
    except FileNotFoundError:
        pass  # Removed meanwhile (by another sweep).
    except OSError as e:  # E.g. another user's, in a shared folder.
        logging.warning("%s: could not remove it (%s)", path, e)
        return False
    return True


def _point(root: str, name: str, target: str) -> None:
    """Makes (or atomically replaces) the symlink root/name -> target (relative to root)."""
    link = temporary(os.path.join(root, name))
    _remove(link)
    os.symlink(target, link)
    os.replace(link, os.path.join(root, name))


def _new_version(root: str) -> str:
    return owned(os.path.join(root, VERSIONS, str(time.time_ns())))


def _adopt(root: str, names: tuple[str, ...]) -> None:
    """Makes the files root/NAME of an earlier layout (regular files), of a copy that followed the links
    (root/current a folder) or of an adoption that was killed midway (some NAME regular, some links)
    a version of their own: the same content at every step (hard links, or copies where the filesystem
    has none)."""
    link = os.path.join(root, CURRENT)
    copied = os.path.lexists(link) and not os.path.islink(link)
    if not copied and all(os.path.islink(os.path.join(root, name)) or not os.path.lexists(os.path.join(root, name))
                          for name in names):
        return
    present = [name for name in names if os.path.exists(os.path.join(root, name))]
    version = _new_version(root)
    os.mkdir(version + ".tmp")
    for name in present:
        source = os.path.realpath(os.path.join(root, name))
        try:
            os.link(source, os.path.join(version + ".tmp", name))
        except OSError:
            shutil.copy2(source, os.path.join(version + ".tmp", name))
    os.rename(version + ".tmp", version)
    if copied and not _remove(link):  # Its files were just adopted.
        raise OSError(f"{link}: could not remove this copy of an earlier version")
    _point(root, CURRENT, os.path.relpath(version, root))
    for name in present:
        _point(root, name, os.path.join(CURRENT, name))


@contextlib.contextmanager
def atomic_folder(root: str | os.PathLike, names: tuple[str, ...]) -> Iterator[str]:
    """Yields an empty folder to write the files `names` into; once the block ends without an error they
    become root/NAME all at once, and the previous version is removed (module docstring). On an error
    root keeps its previous files. One writer per root at a time (the workdir's lock)."""
    root = os.fspath(root)
    os.makedirs(os.path.join(root, VERSIONS), exist_ok=True)
    remove_stale(root)
    version = _new_version(root)
    os.mkdir(version + ".tmp")
    try:
        yield version + ".tmp"
        _adopt(root, names)
        for name in names:
            if not os.path.islink(os.path.join(root, name)):  # The first version: links to it, dangling until then.
                _point(root, name, os.path.join(CURRENT, name))
        previous = _current(root)
        os.rename(version + ".tmp", version)
        _point(root, CURRENT, os.path.relpath(version, root))
    except BaseException:
        _remove(version + ".tmp")
        raise
    if previous and os.path.realpath(version) != previous:
        _remove(previous)
