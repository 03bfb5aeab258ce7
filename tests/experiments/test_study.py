"""The study command: its cells, their configs, reuse of finished runs, the seed summary and the tables."""

import json
import os

import numpy as np
import pytest

from clever_jax import job, workdir
from clever_jax.experiments import study
from configs import demo


def test_cells_cover_every_part_once_and_set_their_configs(tmp_path):
    cells = study.cells(list(study.PARTS), [3, 5], [1, 8, 16], default_bag_size=8)
    names = [c.name for c in cells]
    assert len(names) == len(set(names))
    assert names == ["avg-s3", "clever-s3", "avg-s5", "clever-s5", "one-s3", "att-s3", "cnn-clever-s3",
                     "random-clever-s3", "bag1-clever-s3", "bag16-clever-s3", "random-avg-s3", "bag16-avg-s3",
                     "bag16-clever-s5", "bag16-avg-s5"]
    config = demo.get_config("tiny")
    by_name = {c.name: c for c in cells}
    c = study.cell_config(config, str(tmp_path), by_name["clever-s5"])
    assert (c.seed, c.data.seed, c.data.shuffle_seed, c.data.world.seed) == (5, 5, 5, 5)
    assert c.data.world_dir == str(tmp_path / "world-s5") and c.model.head == "clever"
    assert config.seed == 0 and config.data.world_dir == ""  # The study's config is not changed.
    assert study.cell_config(config, str(tmp_path), by_name["cnn-clever-s3"]).model.encoder == "cnn"
    assert study.cell_config(config, str(tmp_path), by_name["random-clever-s3"]).data.sampler == "random"
    assert study.cell_config(config, str(tmp_path), by_name["bag16-clever-s3"]).data.bag_size == 16
    sparse = study.cell_config(config, str(tmp_path), by_name["random-avg-s3"])
    assert (sparse.model.head, sparse.data.sampler) == ("avg", "random")
    assert [c.name for c in study.cells(["sparse"], [0, 1], [8], 8)] == [
        "avg-s0", "clever-s0", "avg-s1", "clever-s1", "random-clever-s0", "random-avg-s0", "bag16-clever-s0",
        "bag16-avg-s0", "bag16-clever-s1", "bag16-avg-s1"]
    # Every cell pins the encoder, the sampler and its initialisation, whatever the study's config says.
    config.model.encoder, config.data.sampler, config.train.init_from = "cnn", "random", "/elsewhere"
    pinned = study.cell_config(config, str(tmp_path), by_name["clever-s3"])
    assert (pinned.model.encoder, pinned.data.sampler, pinned.train.init_from) == ("vlp", "overlap", "")
    assert [c.name for c in study.cells(["fig4"], [0], [8], 8)] == ["clever-s0"]
    with pytest.raises(ValueError, match="unknown"):
        study.cells(["table9"], [0], [8], 8)
    with pytest.raises(ValueError, match="must not repeat"):
        study.cells(["seeds"], [0, 1, 1], [8], 8)


def test_study_reuses_finished_runs_and_summarises_the_seeds(tmp_path, monkeypatch):
    """job.run is replaced by a stand-in that writes a run's outputs with known test metrics."""
    trained = []

    def fake_run(config, run_dir, mode):
        assert mode == "all"
        trained.append(os.path.basename(run_dir))
        test = {m: 10.0 for m in study.TABLE_METRICS + study.SEED_METRICS}
        test["auc"] = 40.0 + config.seed + (3.0 if config.model.head == "clever" else 0.0)
        test["mauc"] = 20.0 + 2 * config.seed + (1.5 if config.model.encoder == "cnn" else 0.0)
        test["spearman_top"] = 0.5
        if config.model.encoder == "cnn":
            del test["attention_true_auc"]  # A metric a cell lacks shows as "—".
        os.makedirs(run_dir, exist_ok=True)
        workdir.check_settings(config, run_dir, write=True)  # As job.run does, then trains.
        os.makedirs(os.path.join(run_dir, "checkpoints", "best", "3"))
        with open(os.path.join(run_dir, "metrics.json"), "w") as f:
            json.dump({"test": test}, f)
        np.savez(os.path.join(run_dir, "test_scores.npz"), scores=np.zeros((2, 3)))

    monkeypatch.setattr(job, "run", fake_run)
    config = demo.get_config("tiny")
    out = study.run_study(config, str(tmp_path), list(study.PARTS), [0, 2], [1, config.data.bag_size])
    assert len(trained) == 14 and out["num_cells"] == out["trained_now"] == out["timed_cells"] == 14
    seeds = out["seeds"]
    assert seeds["CLEVER"]["auc"]["values"] == [43.0, 45.0] and seeds["AVG"]["auc"]["mean"] == 41.0
    assert seeds["CLEVER - AVG"]["auc"] == {"values": [3.0, 3.0], "mean": 3.0, "min": 3.0, "max": 3.0}
    assert seeds["AVG"]["mauc"]["min"] == 20.0 and seeds["AVG"]["mauc"]["max"] == 24.0
    assert out["tables"]["fig4"] == {"bag 1": "bag1-clever-s0", f"bag {config.data.bag_size}": "clever-s0"}
    assert out["cells"]["cnn-clever-s0"]["test"]["mauc"] == 21.5
    large = 2 * config.data.bag_size
    assert out["tables"]["sparse"][f"overlap, bag {large}, seed 2, AVG"] == f"bag{large}-avg-s2"
    assert out["sparse_differences"]["random sampler, seed 0"] == {"auc": 3.0, "mauc": 0.0}
    assert out["sparse_differences"][f"overlap, bag {large}, mean"] == {"auc": 3.0, "mauc": 0.0}
    text = (tmp_path / "study.md").read_text()
    assert "| CLEVER - AVG | 3.00 (3.00 to 3.00) | 0.00 (0.00 to 0.00) |" in text
    assert "| VLP -> CNN | 43.00 |" in text and study.SIMILARITY_NOTE in text
    assert "random sampler, seed 0: AUC +3.00, mAUC +0.00" in text
    cnn_row = next(line for line in text.splitlines() if line.startswith("| VLP -> CNN"))
    assert cnn_row.endswith("10.00 | 10.00 | — | 0.0 |")
    for name in ("study.json", "fig4_bag_size.png", "seeds.png"):
        assert (tmp_path / name).stat().st_size > 0
    # A second call (a resumed study) trains nothing and gives the same tables.
    again = study.run_study(config, str(tmp_path), list(study.PARTS), [0, 2], [1, config.data.bag_size])
    assert len(trained) == 14 and again["seeds"] == seeds and again["trained_now"] == 0
    # Reusing a cell made with other result settings stops and says which.
    config.train.lr = 1.0
    with pytest.raises(workdir.ChangedSettings, match=r"train\.lr"):
        study.run_study(config, str(tmp_path), ["seeds"], [0, 2], [config.data.bag_size])
