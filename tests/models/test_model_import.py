"""Import of the published bag model (bert.* + classifier.*): as init_from, and evaluated without training."""

import json
import os

import jax
import numpy as np
import pytest
from safetensors.numpy import save_file
from test_encoder import fake_vinvl_state

from clever_jax import job
from clever_jax.data import pipeline, prepare
from clever_jax.models import weights
from clever_jax.models.clever import Clever
from clever_jax.training import builder
from configs import demo


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("import")
    config = demo.get_config("tiny")
    config.data.world_dir = str(root / "world")
    config.model.update(head="avg", eval_head="avg", pretrained=False)
    records_dir = prepare.prepare(config, str(root / "prepared"))
    return config, records_dir, root


def bag_model_state(run: builder.Run, seed: int = 1) -> dict[str, np.ndarray]:
    """A random state dict under the published names and shapes: the encoder's (as VinVL's) and the
    classifier, Linear(4H, 8H) -> ReLU -> Linear(8H, R + 1), as torch stores them ([out, in])."""
    encoder = run.model.encoder
    rng = np.random.default_rng(seed)
    state = fake_vinvl_state(encoder, extra_layers=0, seed=seed)
    del state["bert.LayerNorm.weight"], state["bert.LayerNorm.bias"]  # The demo has no image LayerNorm.
    width, classes = run.model.classifier_width * encoder.hidden_size, run.model.num_relations
    for index, (out, inp) in (("0", (width, 4 * encoder.hidden_size)), ("2", (classes, width))):
        state[f"classifier.{index}.weight"] = (rng.normal(size=(out, inp)) / np.sqrt(inp)).astype(np.float32)
        state[f"classifier.{index}.bias"] = rng.normal(size=out).astype(np.float32)
    return state


@pytest.mark.slow  # End to end: a built run over records, initialised from a bag model and scored.
def test_the_bag_model_initialises_the_run_and_scores_like_a_reference_forward(tiny, tmp_path):
    config, records_dir, _ = tiny
    run = builder.build(config, records_dir)
    state = bag_model_state(run)
    path = str(tmp_path / "model.safetensors")
    save_file(state, path)
    params = run.imported_params(path)
    assert jax.tree.structure(params) == jax.tree.structure(run.abstract_params)
    np.testing.assert_array_equal(params["classifier"]["hidden"]["kernel"], state["classifier.0.weight"].T)
    np.testing.assert_array_equal(params["classifier"]["out_bias"], state["classifier.2.bias"])
    np.testing.assert_array_equal(params["instance_encoder"]["region_embedding"]["kernel"],
                                  state["bert.img_embedding.weight"].T)

    batch = pipeline.pad_batch(next(iter(run.loader("test", train=False))), run.local_batch_size(train=False))
    batch = run.device_batch(batch, train=False)
    v = np.asarray(run.model.apply({"params": params}, batch, train=False, method=Clever.encode), np.float64)
    scores, _ = run.model.apply({"params": params}, batch)
    # Reference: the published AVG bag model's forward on the same instance representations.
    mask = np.asarray(batch["instance_mask"], np.float64)[..., None]
    bag = (v * mask).sum(axis=1) / np.maximum(mask.sum(axis=1), 1)
    hidden = np.maximum(bag @ state["classifier.0.weight"].T + state["classifier.0.bias"], 0)
    logits = hidden @ state["classifier.2.weight"].T + state["classifier.2.bias"]
    probabilities = np.exp(logits - logits.max(axis=1, keepdims=True))
    probabilities /= probabilities.sum(axis=1, keepdims=True)
    valid = np.asarray(batch["bag_mask"])
    np.testing.assert_allclose(np.asarray(scores)[valid], probabilities[valid], rtol=1e-4, atol=1e-6)

    config.train.init_from = path  # As init_from: the step-0 state holds the imported parameters.
    start = builder.build(config, records_dir).initial_state()
    np.testing.assert_array_equal(np.asarray(start.params["classifier"]["out_kernel"]), state["classifier.2.weight"].T)


@pytest.mark.slow  # End to end: the eval mode of the main job.
def test_a_bag_model_is_evaluated_without_training(tiny, tmp_path):
    config, _, root = tiny
    state = bag_model_state(builder.build(config, prepare.prepare(config, str(root / "prepared"))))
    save_file(state, str(tmp_path / "model.safetensors"))
    config.train.init_from = str(tmp_path / "model.safetensors")
    job.run(config, str(tmp_path / "eval"), "eval")
    metrics = json.load(open(tmp_path / "eval" / "metrics.json"))
    assert 0 <= metrics["test"]["auc"] <= 100
    assert not any(name.isdigit() for name in os.listdir(tmp_path / "eval" / "checkpoints" / "best"))  # Not trained.


def test_missing_and_misshapen_keys_are_named(tiny):
    config, records_dir, _ = tiny
    run = builder.build(config, records_dir)
    state = bag_model_state(run)
    classifier = run.abstract_params["classifier"]
    shapes = {("classifier", "hidden", "kernel"): classifier["hidden"]["kernel"].shape,
              ("classifier", "hidden", "bias"): classifier["hidden"]["bias"].shape,
              ("classifier", "out_kernel"): classifier["out_kernel"].shape,
              ("classifier", "out_bias"): classifier["out_bias"].shape}
    partial = {k: v for k, v in state.items() if not k.startswith("classifier.2")}
    with pytest.raises(ValueError, match=r"missing classifier\.2\.weight, classifier\.2\.bias: not a whole bag model"):
        weights.model_params_from_state_dict(partial, run.model.encoder, shapes, source="m.bin")
    wrong = {**state, "classifier.2.weight": state["classifier.2.weight"][:51]}
    with pytest.raises(ValueError, match=r"m\.bin: shapes do not fit .*classifier\.2\.weight \(51, "):
        weights.model_params_from_state_dict(wrong, run.model.encoder, shapes, source="m.bin")
