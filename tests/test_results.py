"""The results table (clever_jax.results): the rows of --methods, the ensemble, reuse of finished runs."""

from __future__ import annotations

import json
import os

import pytest

from clever_jax import results
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


@pytest.mark.slow
def test_a_table_with_a_language_model_and_the_ensemble_and_its_reuse(tmp_path):
    config = demo.get_config("tiny")
    methods = ["ensemble", "vanilla_ft", "rtp", "random", "lama"]
    rows = results.run_all(config, str(tmp_path), methods, sources=("rtp", "vanilla_ft"))
    assert list(rows) == ["Random", "RTP", "LAMA", "Vanilla-FT", "Ensemble"]  # In the table's order.
    assert "masked-LM head" in rows["LAMA"]["reason"] and "auc" not in rows["LAMA"]
    assert "attention_on_true" not in rows["Vanilla-FT"] and rows["Vanilla-FT"]["wall_s"] > 0
    assert sum(rows["Ensemble"]["weights"].values()) == pytest.approx(1.0)
    assert set(rows["Ensemble"]["weights"]) == {"RTP", "Vanilla-FT"}
    assert "LAMA: LAMA scores relations" in (tmp_path / "results.md").read_text()
    assert os.path.islink(tmp_path / "vanilla_ft" / "records")  # One records build for every row.

    history = tmp_path / "vanilla_ft" / "history.json"
    trained_at = history.stat().st_mtime_ns
    again = results.run_all(config, str(tmp_path), methods, sources=("rtp", "vanilla_ft"))
    assert history.stat().st_mtime_ns == trained_at and again["Vanilla-FT"] == rows["Vanilla-FT"]
    assert json.load(open(tmp_path / "results.json"))["Ensemble"]["auc"] == rows["Ensemble"]["auc"]
