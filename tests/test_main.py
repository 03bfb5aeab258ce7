"""The command line, end to end on a small generated world."""

import json
import os
import subprocess
import sys

import pytest

TINY_WORLD = ["--config.data.world.num_images=150", "--config.data.world.feature_dim=8"]


def run_main(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "clever_jax.main", *args], capture_output=True, text=True,
                          timeout=300, env={**os.environ, "JAX_PLATFORMS": "cpu"})


@pytest.mark.parametrize("sampler", ["overlap", "random"])
def test_prepare_builds_world_records_and_statistics(tmp_path, sampler):
    workdir = str(tmp_path / "run")
    args = ["--config=configs/demo.py", "--mode=prepare", f"--workdir={workdir}", *TINY_WORLD,
            f"--config.data.sampler={sampler}"]
    first = run_main(*args)
    assert first.returncode == 0, first.stderr[-3000:]
    assert sorted(os.listdir(os.path.join(workdir, "world"))) == sorted(
        ["image_data.json", "objects.json", "relationships.json", "features.tsv", "captions.json",
         "commonsense.json"])
    stats = json.load(open(os.path.join(workdir, "stats.json")))
    for split in ("train", "val", "test"):
        sizes = stats["splits"][split]
        assert sizes["facts"] > 0 and sizes["entity_pairs"] > 0 and sizes["images"] > 0
        assert sizes["instances"] <= sizes["candidate_instances"]
    assert stats["paper"]["test"]["facts"] == 3496
    assert stats["skipped"]["object_out_of_vocabulary"] > 0
    assert sum(stats["predicate_frequency"]["train"].values()) == stats["splits"]["train"]["facts"]
    again = run_main(*args)
    assert again.returncode == 0 and "Reusing the records" in again.stderr


def test_vg_config_without_files_says_what_to_put_where(tmp_path):
    result = run_main("--config=configs/vg.py", "--mode=prepare", f"--workdir={tmp_path}",
                      f"--config.data.vg_dir={tmp_path / 'vg'}")
    assert result.returncode != 0
    assert "Put these files in config.data.vg_dir" in result.stderr
    assert "relationships.json" in result.stderr and "features_path" in result.stderr
