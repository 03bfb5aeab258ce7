"""Output files that are written whole or not at all."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import socket
from collections.abc import Iterator
from typing import IO, Any


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "w") -> Iterator[IO]:
    """Opens a temporary file next to `path` (mode "w" or "wb") and renames it onto `path` once the
    block ends without an error, so a reader (or a crash, or a full disk) never sees a half-written
    file. On an error the temporary file is removed and `path` keeps its previous content."""
    path = os.fspath(path)
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    temporary = f"{path}.{socket.gethostname()}.{os.getpid()}.tmp"  # Unique on storage that hosts share.
    try:
        with open(temporary, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(temporary)
        raise


def write_json(path: str | os.PathLike, value: Any) -> None:
    """`value` as indented JSON at `path`, atomically (atomic_write)."""
    with atomic_write(path) as f:
        json.dump(value, f, indent=1)


def sha256(path: str | os.PathLike) -> str:
    """The SHA-256 of a file's content, hex."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()
