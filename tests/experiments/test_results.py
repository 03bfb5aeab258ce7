"""The results table (clever_jax.experiments.results): the rows of --methods, the ensemble, reuse of finished runs."""

from __future__ import annotations

import json
import os

import pytest

from clever_jax.experiments import results
from configs import demo


def test_methods_and_ensemble_sources_are_checked():
    results.check_methods(["rtp", "clever", "vanilla_ft", "ensemble"], list(results.ENSEMBLE))
    results.check_methods(["avg"], list(results.ENSEMBLE))  # No ensemble row: its sources do not matter.
    with pytest.raises(ValueError, match=r"unknown methods \['bert'\]"):
        results.check_methods(["bert"], [])
    with pytest.raises(ValueError, match=r"missing: \['clever'\]"):
        results.check_methods(["rtp", "vanilla_ft", "ensemble"], list(results.ENSEMBLE))
    with pytest.raises(ValueError, match="other than random"):
        results.check_methods(["random", "rtp", "ensemble"], ["random", "rtp"])


def test_each_rows_settings():
    config = demo.get_config("tiny")
    config.train.init_from = "/models/avg.bin"
    vanilla = results.method_config(config, "w", "vanilla_ft", clever_from_avg=True, text_epochs=7)
    assert (vanilla.model.encoder, vanilla.model.head, vanilla.train.max_epochs) == ("text", "cls", 7)
    assert vanilla.train.init_from == ""  # A bag model's file is no start for a language model.
    lama = results.method_config(config, "w", "lama", clever_from_avg=True, text_epochs=7)
    assert (lama.model.head, lama.train.max_epochs) == ("prompt", 0)
    clever = results.method_config(config, "w", "clever", clever_from_avg=True)
    assert clever.train.init_from == "w/avg" and clever.train.max_epochs == config.train.max_epochs
    assert results.method_config(config, "w", "one", clever_from_avg=True).train.init_from == "/models/avg.bin"


@pytest.mark.slow
def test_a_table_with_a_language_model_and_the_ensemble_and_its_reuse(tmp_path):
    config = demo.get_config("tiny")
    methods = ["ensemble", "vanilla_ft", "rtp", "random", "lama"]
    rows = results.run_all(config, str(tmp_path), methods, sources=("rtp", "vanilla_ft"), text_epochs=1)
    assert list(rows) == ["Random", "RTP", "LAMA", "Vanilla-FT", "Ensemble"]  # In the table's order.
    assert "masked-LM head" in rows["LAMA"]["reason"] and "auc" not in rows["LAMA"]
    assert "attention_on_true" not in rows["Vanilla-FT"] and rows["Vanilla-FT"]["wall_s"] > 0
    assert sum(rows["Ensemble"]["weights"].values()) == pytest.approx(1.0)
    assert set(rows["Ensemble"]["weights"]) == {"RTP", "Vanilla-FT"}
    assert "LAMA: LAMA scores relations" in (tmp_path / "results.md").read_text()
    assert os.path.islink(tmp_path / "vanilla_ft" / "records")  # One records build for every row.

    history = tmp_path / "vanilla_ft" / "history.json"
    trained_at = history.stat().st_mtime_ns
    again = results.run_all(config, str(tmp_path), methods, sources=("rtp", "vanilla_ft"), text_epochs=1)
    assert history.stat().st_mtime_ns == trained_at and again["Vanilla-FT"] == rows["Vanilla-FT"]
    assert json.load(open(tmp_path / "results.json"))["Ensemble"]["auc"] == rows["Ensemble"]["auc"]
    with_lama = results.run_all(config, str(tmp_path), methods, sources=("lama", "vanilla_ft"), text_epochs=1)
    assert with_lama["Ensemble"] == {"reason": "its sources LAMA have no scores (see their rows)"}
