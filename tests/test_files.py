"""Outputs are written whole or not at all."""

import json
import os
import shutil
import socket
from pathlib import Path

import numpy as np
import pytest
from conftest import dead_pid

from clever_jax import files


def test_atomic_write_replaces_the_file_only_when_the_block_completes(tmp_path):
    path = tmp_path / "out" / "metrics.json"
    files.write_json(path, {"auc": 1.0})
    assert json.loads(path.read_text()) == {"auc": 1.0}
    with pytest.raises(RuntimeError), files.atomic_write(path) as f:
        f.write('{"auc": 2')
        raise RuntimeError("disk full")
    assert json.loads(path.read_text()) == {"auc": 1.0} and os.listdir(path.parent) == ["metrics.json"]
    with files.atomic_write(tmp_path / "scores.npz", "wb") as f:
        np.savez_compressed(f, scores=np.arange(3))
    assert np.load(tmp_path / "scores.npz")["scores"].tolist() == [0, 1, 2]
    with pytest.raises(TypeError):  # Not JSON: the previous file stays.
        files.write_json(path, {"auc": object()})
    assert json.loads(path.read_text()) == {"auc": 1.0} and sorted(os.listdir(path.parent)) == ["metrics.json"]


NAMES = ("kb.jsonl", "kb.csv", "kb_meta.json")


def visible(root) -> dict:
    """What a reader sees at root/NAME (None: no file)."""
    return {name: (root / name).read_text() if (root / name).is_file() else None for name in NAMES}


def publish(root, tag: str) -> None:
    with files.atomic_folder(root, NAMES) as partial:
        for name in NAMES:
            with open(os.path.join(partial, name), "w") as f:
                f.write(f"{tag} {name}")


def publish_watched(root, monkeypatch) -> list[dict]:
    """publish(root, "new"), recording what a reader sees before each step and at the end (a kill -9 leaves
    the files as they are after some step)."""
    states = []

    def step(operation):
        def checked(*args, **kwargs):
            states.append(visible(root))
            return operation(*args, **kwargs)
        return checked

    for name in ("replace", "rename", "symlink", "link", "remove", "unlink", "rmdir", "mkdir"):
        monkeypatch.setattr(os, name, step(getattr(os, name)))
    publish(root, "new")
    monkeypatch.undo()
    return [*states, visible(root)]


@pytest.mark.parametrize("earlier_layout", [False, True])
def test_atomic_folder_shows_the_old_set_or_the_new_one_after_every_step(tmp_path, monkeypatch, earlier_layout):
    """A kill -9 leaves the files as they are after some step: each step's state is checked."""
    root = tmp_path / "kb"
    old = {name: f"old {name}" for name in NAMES}
    if earlier_layout:  # Regular files, as versions before atomic folders wrote them.
        root.mkdir()
        for name in NAMES:
            (root / name).write_text(old[name])
        (root / "report.html").write_text("page")
    else:
        publish(root, "old")
    new = {name: f"new {name}" for name in NAMES}
    states = publish_watched(root, monkeypatch)
    assert len(states) > 6 and all(state in (old, new) for state in states)
    assert states[-1] == new and old in states
    assert sorted(os.listdir(root)) == sorted([*NAMES, "current", "versions", *(["report.html"] * earlier_layout)])
    assert len(os.listdir(root / "versions")) == 1  # The previous version removed.
    with pytest.raises(RuntimeError), files.atomic_folder(root, NAMES) as partial:
        (Path(partial) / "kb.jsonl").write_text("half")
        raise RuntimeError("disk full")
    assert visible(root) == new and len(os.listdir(root / "versions")) == 1


def test_remove_stale_takes_what_dead_processes_of_this_host_left(tmp_path):
    host, dead = socket.gethostname(), dead_pid()
    publish(tmp_path / "kb", "a")
    (tmp_path / "sub").mkdir()
    stale = [tmp_path / f"metrics.json.{host}.{dead}.tmp", tmp_path / "sub" / f"x.npz.{host}.{dead}.tmp",
             tmp_path / "kb" / f"kb.jsonl.index.sqlite.{host}.{dead}.tmp",
             tmp_path / "kb" / "versions" / f"123.{host}.{dead}.tmp",  # A partial knowledge base.
             tmp_path / "kb" / "versions" / f"122.{host}.{dead}"]  # A complete one, no longer current.
    kept = [tmp_path / f"metrics.json.{host}.{os.getppid()}.tmp",  # A live process's.
            tmp_path / f"metrics.json.another-host.{dead}.tmp", tmp_path / f"notes.{host}.{dead}",
            tmp_path / "report.tmp"]
    for path in stale + kept:
        path.mkdir() if "versions" in str(path) else path.write_text("x")
    current = os.path.realpath(tmp_path / "kb" / "current")
    assert files.remove_stale(tmp_path) == [str(p) for p in stale[:1]]  # Not recursive: the folder itself.
    assert sorted(files.remove_stale(tmp_path / "kb")) == sorted(str(p) for p in stale[2:])
    assert files.remove_stale(tmp_path, recursive=True) == [str(stale[1])]
    assert all(p.exists() for p in kept) and os.path.isdir(current) and visible(tmp_path / "kb")["kb.csv"] == "a kb.csv"


def test_a_copy_that_followed_the_links_is_adopted(tmp_path, monkeypatch):
    """scp -r, gsutil cp -r, cp -rL: current is a folder and kb.jsonl a regular file."""
    root, old = tmp_path / "copy", {name: f"old {name}" for name in NAMES}
    publish(tmp_path / "kb", "old")
    shutil.copytree(tmp_path / "kb", root, symlinks=False)
    assert not os.path.islink(root / "current") and not os.path.islink(root / "kb.jsonl")
    states = publish_watched(root, monkeypatch)
    assert all(state in (old, states[-1]) for state in states) and states[-1]["kb.jsonl"] == "new kb.jsonl"
    assert os.path.islink(root / "current")
    files.remove_stale(root)  # The copied version (this pid's) goes; the adopted one went already.
    assert os.listdir(root / "versions") == [os.path.basename(os.path.realpath(root / "current"))]


def test_an_adoption_killed_midway_keeps_every_file(tmp_path, monkeypatch):
    """Killed after kb.jsonl became a link again, before kb.csv and kb_meta.json did."""
    root, old = tmp_path / "kb", {name: f"old {name}" for name in NAMES}
    publish(root, "old")
    for name in NAMES[1:]:
        (root / name).unlink()
        (root / name).write_text(old[name])
    states = publish_watched(root, monkeypatch)
    assert all(state in (old, states[-1]) for state in states) and states[-1]["kb.jsonl"] == "new kb.jsonl"


def test_what_cannot_be_removed_is_logged_and_left(tmp_path, monkeypatch):
    """Another user's temporary in a shared folder (/tmp, sticky): os.remove raises PermissionError."""
    host, dead = socket.gethostname(), dead_pid()
    theirs, mine = tmp_path / f"a.{host}.{dead}.tmp", tmp_path / f"b.{host}.{dead}.tmp"
    theirs.write_text("x")
    mine.write_text("x")
    remove = os.remove

    def refuse(path, *args, **kwargs):
        if str(path) == str(theirs):
            raise PermissionError(1, "Operation not permitted", str(path))
        return remove(path, *args, **kwargs)

    monkeypatch.setattr(os, "remove", refuse)
    assert files.remove_stale(tmp_path) == [str(mine)] and theirs.exists()
    assert files.remove_left([str(theirs)]) == [] and theirs.exists()


def test_a_version_made_current_during_a_sweep_is_kept(tmp_path, monkeypatch):
    """An extraction swaps `current` to its version and exits while the sweep runs: that version stays."""
    root, host = tmp_path / "kb", socket.gethostname()
    publish(root, "old")
    new = root / "versions" / f"999.{host}.{dead_pid()}"  # The extraction's complete version, its owner now gone.
    new.mkdir()
    for name in NAMES:
        (new / name).write_text(f"new {name}")
    dead_owner = files._dead_owner

    def swap_then_check(name, host):  # The swap lands after the sweep listed the folder.
        if not os.path.realpath(root / "current").endswith(new.name):
            os.symlink(os.path.relpath(new, root), root / "swap")
            os.replace(root / "swap", root / "current")
        return dead_owner(name, host)

    monkeypatch.setattr(files, "_dead_owner", swap_then_check)
    files.remove_stale(root)
    assert visible(root) == {name: f"new {name}" for name in NAMES}
