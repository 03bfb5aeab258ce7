"""Outputs are written whole or not at all."""

import json
import os

import numpy as np
import pytest

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
