"""Instance encoder: parity with transformers' BertModel, checkpoint import, pair pooling, dropout, remat."""

from __future__ import annotations

import dataclasses
import functools
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from clever_jax.data import text
from clever_jax.models import geometry, weights
from clever_jax.models.dropout import Dropout, fmix32
from clever_jax.models.encoder import BertTextModel, EncoderConfig, InstanceEncoder, span_mean
from clever_jax.models.region_pair import RegionPairEncoder

TINY = EncoderConfig(vocab_size=50, hidden_size=16, num_layers=2, num_heads=4, intermediate_size=32,
                     max_position_embeddings=32, region_dim=6)


def make_batch(config: EncoderConfig = TINY, shape=(2, 3), lt: int = 8, lr: int = 5, seed: int = 0) -> dict:
    """Random instances with padded text and regions; instance [0, 0] has an empty object span."""
    rng = np.random.default_rng(seed)
    text_len = rng.integers(4, lt + 1, size=shape)
    text_mask = np.arange(lt) < text_len[..., None]
    region_count = rng.integers(2, lr + 1, size=shape)
    region_mask = np.arange(lr) < region_count[..., None]
    text_ids = np.where(text_mask, rng.integers(1, config.vocab_size, size=(*shape, lt)), 0).astype(np.int32)
    regions = rng.normal(size=(*shape, lr, config.region_dim)).astype(np.float32) * region_mask[..., None]
    subject_start = np.ones(shape, np.int32)
    subject_end = np.minimum(subject_start + rng.integers(1, 3, size=shape), text_len - 1)
    object_end = np.maximum(subject_end, text_len - 1)
    object_span = np.stack([subject_end, object_end], -1).astype(np.int32)
    object_span[(0,) * len(shape)] = [2, 2]  # Empty (truncated tag).
    return {
        "text_ids": text_ids, "text_mask": text_mask, "regions": regions, "region_mask": region_mask,
        "subject_span": np.stack([subject_start, subject_end], -1).astype(np.int32), "object_span": object_span,
    }


INPUTS = ("text_ids", "text_mask", "regions", "region_mask", "subject_span", "object_span")


@functools.partial(jax.jit, static_argnames=("config", "deterministic", "method"))
def _apply(config, params, inputs, rng, *, deterministic, method):
    return InstanceEncoder(config).apply({"params": params}, *inputs, deterministic=deterministic,
                                         rngs=None if rng is None else {"dropout": rng}, method=method)


def encode(config, params, batch, *, deterministic=True, rng=None, method=None):
    """InstanceEncoder(config) applied to a batch dict (jitted); method=InstanceEncoder.encode: hidden states."""
    inputs = tuple(batch[k] for k in (INPUTS if method is None else INPUTS[:4]))
    return _apply(config, params, inputs, rng, deterministic=deterministic, method=method)


@functools.partial(jax.jit, static_argnames=("config",))
def _init(config, inputs, rng):
    return InstanceEncoder(config).init(rng, *inputs, deterministic=True)["params"]


def init_params(config=TINY, seed=0):
    batch = make_batch(config)
    return _init(config, tuple(batch[k] for k in INPUTS), jax.random.key(seed, impl="rbg"))


# ---------------------------------------------------------------- parity with transformers (PyTorch)


@pytest.fixture(scope="module")
def minilm():
    """The packaged MiniLM: (checkpoint dir, hf config, state dict, reference outputs of transformers.BertModel)."""
    torch = pytest.importorskip("torch")
    import transformers

    path = text.default_model_dir()
    hf_config, state = weights.load_checkpoint_dir(path)
    rng = np.random.default_rng(0)
    ids = rng.integers(1000, hf_config["vocab_size"], size=(2, 16)).astype(np.int32)
    mask = np.ones((2, 16), bool)
    mask[1, 11:] = False
    ids[1, 11:] = 0
    ids[:, 0], ids[0, -1], ids[1, 10] = 101, 102, 102  # [CLS] ... [SEP]
    model = transformers.BertModel.from_pretrained(path, local_files_only=True).eval()
    with torch.no_grad():
        out = model(input_ids=torch.tensor(ids, dtype=torch.long), attention_mask=torch.tensor(mask, dtype=torch.long),
                    output_hidden_states=True)
    hidden = [h.numpy() for h in out.hidden_states]  # Embeddings, then after each layer.
    return path, hf_config, state, ids, mask, hidden


@pytest.mark.parametrize("num_layers", [None, 2])
def test_parity_with_transformers(minilm, num_layers):
    path, hf_config, state, ids, mask, hidden = minilm
    config = EncoderConfig.from_hf(hf_config, region_dim=10, num_layers=num_layers)
    assert (config.hidden_size, config.num_heads) == (384, 12)
    params, report = weights.bert_params_from_state_dict(state, config, source=path)
    assert "pooler.dense.weight" in report.ignored
    assert report.not_in_checkpoint == ("region_embedding/kernel", "region_embedding/bias")
    if num_layers == 2:
        assert "encoder.layer.2.attention.self.query.weight" in report.ignored
    out = jax.jit(lambda p, i, m: BertTextModel(config).apply({"params": p}, i, m, deterministic=True))(
        params, ids, mask)
    expected = hidden[config.num_layers]
    assert config.num_layers == (6 if num_layers is None else 2)
    np.testing.assert_array_less(np.abs(np.asarray(out) - expected)[mask].max(), 1e-4)


def test_load_pretrained_merges_into_instance_encoder():
    path = text.default_model_dir()
    hf_config, _ = weights.load_checkpoint_dir(path)
    config = EncoderConfig.from_hf(hf_config, region_dim=6, num_layers=1)
    pretrained, report = weights.load_pretrained(path, config)
    assert report.source.endswith("model.safetensors")
    init = init_params(config)
    params = weights.merge_pretrained(init, pretrained)
    assert jax.tree.structure(params) == jax.tree.structure(init)
    np.testing.assert_array_equal(params["embeddings"]["word_embeddings"]["embedding"],
                                  pretrained["embeddings"]["word_embeddings"]["embedding"])
    np.testing.assert_array_equal(params["region_embedding"]["kernel"], init["region_embedding"]["kernel"])
    v = encode(config, params, make_batch(config))
    assert v.shape == (2, 3, 4 * 384) and np.isfinite(np.asarray(v)).all()


# ---------------------------------------------------------------- checkpoint import (fake VinVL)


def fake_vinvl_state(config: EncoderConfig, extra_layers: int = 1, seed: int = 0) -> dict[str, np.ndarray]:
    """An Oscar/VinVL-style state dict (`bert.` prefix, old gamma/beta LayerNorm names in the embeddings)."""
    rng = np.random.default_rng(seed)
    h, i = config.hidden_size, config.intermediate_size
    t = lambda *shape: rng.normal(size=shape).astype(np.float32)  # noqa: E731
    state = {
        "bert.embeddings.word_embeddings.weight": t(config.vocab_size, h),
        "bert.embeddings.position_embeddings.weight": t(config.max_position_embeddings, h),
        "bert.embeddings.token_type_embeddings.weight": t(config.type_vocab_size, h),
        "bert.embeddings.LayerNorm.gamma": t(h), "bert.embeddings.LayerNorm.beta": t(h),
        "bert.img_embedding.weight": t(h, config.region_dim), "bert.img_embedding.bias": t(h),
        "bert.LayerNorm.weight": t(h), "bert.LayerNorm.bias": t(h),
        "bert.pooler.dense.weight": t(h, h), "bert.pooler.dense.bias": t(h), "cls.predictions.bias": t(7),
    }
    for layer in range(config.num_layers + extra_layers):
        p = f"bert.encoder.layer.{layer}."
        for name in ("attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense"):
            state[p + name + ".weight"], state[p + name + ".bias"] = t(h, h), t(h)
        state[p + "intermediate.dense.weight"], state[p + "intermediate.dense.bias"] = t(i, h), t(i)
        state[p + "output.dense.weight"], state[p + "output.dense.bias"] = t(h, i), t(h)
        for name in ("attention.output.LayerNorm", "output.LayerNorm"):
            state[p + name + ".weight"], state[p + name + ".bias"] = t(h), t(h)
    return state


VINVL = dataclasses.replace(TINY, region_layer_norm=True)


def test_vinvl_state_dict_import():
    state = fake_vinvl_state(VINVL)
    params, report = weights.bert_params_from_state_dict(state, VINVL, source="fake/pytorch_model.bin")
    np.testing.assert_array_equal(params["region_embedding"]["kernel"], state["bert.img_embedding.weight"].T)
    np.testing.assert_array_equal(params["region_embedding"]["bias"], state["bert.img_embedding.bias"])
    np.testing.assert_array_equal(params["region_layer_norm"]["scale"], state["bert.LayerNorm.weight"])
    np.testing.assert_array_equal(params["embeddings"]["layer_norm"]["scale"], state["bert.embeddings.LayerNorm.gamma"])
    np.testing.assert_array_equal(params["embeddings"]["layer_norm"]["bias"], state["bert.embeddings.LayerNorm.beta"])
    np.testing.assert_array_equal(params["encoder"]["layer_1"]["attention"]["query"]["kernel"],
                                  state["bert.encoder.layer.1.attention.self.query.weight"].T)
    np.testing.assert_array_equal(params["encoder"]["layer_0"]["output"]["kernel"],
                                  state["bert.encoder.layer.0.output.dense.weight"].T)
    np.testing.assert_array_equal(params["encoder"]["layer_1"]["output_layer_norm"]["bias"],
                                  state["bert.encoder.layer.1.output.LayerNorm.bias"])
    assert report.not_in_checkpoint == ()
    assert {"bert.pooler.dense.weight", "cls.predictions.bias", "bert.encoder.layer.2.output.dense.weight"} <= set(
        report.ignored)
    assert set(report.loaded) | set(report.ignored) == set(state)
    # Every parameter comes from the checkpoint: the merged tree has no init values left.
    init = init_params(VINVL)
    merged = weights.merge_pretrained(init, params)
    assert traverse_util.flatten_dict(params).keys() == traverse_util.flatten_dict(init).keys()
    assert np.isfinite(np.asarray(encode(VINVL, merged, make_batch(VINVL)))).all()


def test_import_errors():
    state = fake_vinvl_state(VINVL)
    wrong = dict(state, **{"bert.img_embedding.weight": np.zeros((16, 7), np.float32)})
    with pytest.raises(ValueError, match=r"bert\.img_embedding\.weight maps 7 region features.*region_dim=6"):
        weights.bert_params_from_state_dict(wrong, VINVL)
    missing = {k: v for k, v in state.items() if k != "bert.encoder.layer.1.output.dense.weight"}
    with pytest.raises(ValueError, match=r"fake/pytorch_model\.bin: missing key 'bert\.encoder\.layer\.1\.output"):
        weights.bert_params_from_state_dict(missing, VINVL, source="fake/pytorch_model.bin")
    with pytest.raises(ValueError, match="region_layer_norm is False"):
        weights.bert_params_from_state_dict(state, TINY)
    with pytest.raises(ValueError, match="not a BERT checkpoint"):
        weights.bert_params_from_state_dict({"foo.weight": np.zeros(3)}, TINY)
    bad_shape = dict(state, **{"bert.encoder.layer.0.intermediate.dense.weight": np.zeros((16, 16), np.float32)})
    with pytest.raises(ValueError, match=r"intermediate\.dense\.weight has shape \(16, 16\)"):
        weights.bert_params_from_state_dict(bad_shape, VINVL)


def test_plain_bert_keeps_region_init_and_merge_errors():
    state = {k[len("bert."):]: v for k, v in fake_vinvl_state(TINY, extra_layers=0).items()
             if k.startswith("bert.") and "img_embedding" not in k and not k.startswith("bert.LayerNorm")}
    params, report = weights.bert_params_from_state_dict(state, VINVL)
    assert report.not_in_checkpoint == ("region_embedding/kernel", "region_embedding/bias",
                                        "region_layer_norm/scale", "region_layer_norm/bias")
    init = init_params(VINVL)
    merged = weights.merge_pretrained(init, params)
    np.testing.assert_array_equal(merged["region_embedding"]["kernel"], init["region_embedding"]["kernel"])
    np.testing.assert_array_equal(merged["encoder"]["layer_0"]["attention"]["key"]["bias"],
                                  state["encoder.layer.0.attention.self.key.bias"])
    with pytest.raises(ValueError, match=r"encoder/layer_0/intermediate/kernel has shape \(3, 3\)"):
        weights.merge_pretrained(init, {"encoder": {"layer_0": {"intermediate": {"kernel": np.zeros((3, 3))}}}})
    with pytest.raises(ValueError, match="pooler/kernel is not in the model's params"):
        weights.merge_pretrained(init, {"pooler": {"kernel": np.zeros((3, 3))}})


def test_load_checkpoint_dir_formats(tmp_path):
    from safetensors.numpy import save_file

    state = fake_vinvl_state(VINVL, extra_layers=0)
    hf_config = {"model_type": "bert", "vocab_size": 50, "hidden_size": 16, "num_hidden_layers": 2,
                 "num_attention_heads": 4, "intermediate_size": 32, "max_position_embeddings": 32,
                 "hidden_act": "gelu", "use_img_layernorm": True, "img_feature_dim": 6}
    (tmp_path / "config.json").write_text(json.dumps(hf_config))
    with pytest.raises(FileNotFoundError, match="neither model.safetensors nor pytorch_model.bin"):
        weights.load_checkpoint_dir(str(tmp_path))
    save_file(state, str(tmp_path / "model.safetensors"))
    loaded_config, loaded = weights.load_checkpoint_dir(str(tmp_path))
    assert loaded_config == hf_config and loaded.keys() == state.keys()
    config = EncoderConfig.from_hf(loaded_config, region_dim=6)
    assert config == VINVL
    params, _ = weights.load_pretrained(str(tmp_path), config)
    np.testing.assert_array_equal(params["region_embedding"]["kernel"], state["bert.img_embedding.weight"].T)
    with pytest.raises(ValueError, match=r"config\.json: img_feature_dim=6, but the data's regions have 7 values"):
        weights.load_pretrained(str(tmp_path), EncoderConfig.from_hf(loaded_config, region_dim=7))

    torch = pytest.importorskip("torch")
    (tmp_path / "model.safetensors").unlink()
    torch.save({k: torch.from_numpy(v).half() for k, v in state.items()}, tmp_path / "pytorch_model.bin")
    _, loaded = weights.load_checkpoint_dir(str(tmp_path))
    assert loaded["bert.img_embedding.weight"].dtype == np.float32
    np.testing.assert_allclose(loaded["bert.img_embedding.weight"], state["bert.img_embedding.weight"], rtol=1e-3)


def test_from_hf_checks():
    hf = {"vocab_size": 50, "hidden_size": 16, "num_hidden_layers": 2, "num_attention_heads": 4,
          "intermediate_size": 32, "max_position_embeddings": 32}
    assert EncoderConfig.from_hf(hf, region_dim=6, dtype="bfloat16", remat=True).dtype == jnp.bfloat16
    with pytest.raises(ValueError, match="num_layers=3"):
        EncoderConfig.from_hf(hf, region_dim=6, num_layers=3)
    with pytest.raises(ValueError, match="hidden_act 'gelu_new'"):
        EncoderConfig.from_hf({**hf, "hidden_act": "gelu_new"}, region_dim=6)
    with pytest.raises(TypeError, match="unknown EncoderConfig fields"):
        EncoderConfig.from_hf(hf, region_dim=6, hidden=3)


def test_region_layer_norm_takes_vinvls_img_layer_norm_eps():
    hf = {"vocab_size": 50, "hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 4,
          "intermediate_size": 32, "max_position_embeddings": 32, "layer_norm_eps": 1e-12}
    vinvl = EncoderConfig.from_hf({**hf, "use_img_layernorm": 1, "img_layer_norm_eps": 1e-5}, region_dim=6)
    assert (vinvl.region_layer_norm, vinvl.region_layer_norm_eps, vinvl.layer_norm_eps) == (True, 1e-5, 1e-12)
    assert EncoderConfig.from_hf(hf, region_dim=6).region_layer_norm_eps == 1e-12  # A plain BERT config.
    # The region LayerNorm reads its own epsilon, the text LayerNorms keep theirs: a large one moves the output.
    params, batch = init_params(VINVL), make_batch(VINVL)
    wide = dataclasses.replace(VINVL, region_layer_norm_eps=10.0)
    assert not np.allclose(encode(VINVL, params, batch), encode(wide, params, batch), atol=1e-3)
    no_regions = {**batch, "region_mask": np.zeros_like(batch["region_mask"])}  # The text then sees no region.
    lt = batch["text_ids"].shape[-1]
    text, text_wide = (encode(c, params, no_regions, method=InstanceEncoder.encode)[..., :lt, :] for c in (VINVL, wide))
    np.testing.assert_array_equal(text, text_wide)


# ---------------------------------------------------------------- pair pooling and masking


def test_pair_pooling():
    batch = make_batch()
    params = init_params()
    h, lt = TINY.hidden_size, batch["text_ids"].shape[-1]
    hidden = np.asarray(encode(TINY, params, batch, method=InstanceEncoder.encode))
    v = np.asarray(encode(TINY, params, batch))
    assert hidden.shape == (2, 3, lt + 5, h) and v.shape == (2, 3, 4 * h)
    np.testing.assert_allclose(v[..., :h], hidden[..., lt, :], atol=1e-6)
    np.testing.assert_allclose(v[..., 2 * h:3 * h], hidden[..., lt + 1, :], atol=1e-6)
    for b, n in np.ndindex(2, 3):
        for span, part in ((batch["subject_span"], slice(h, 2 * h)), (batch["object_span"], slice(3 * h, 4 * h))):
            start, end = span[b, n]
            expected = hidden[b, n, start:end].mean(0) if end > start else np.zeros(h)
            np.testing.assert_allclose(v[b, n, part], expected, atol=1e-5)
    assert batch["object_span"][0, 0, 0] == batch["object_span"][0, 0, 1]
    np.testing.assert_array_equal(v[0, 0, 3 * h:], 0.0)
    assert np.asarray(span_mean(jnp.ones((2, 4, 3)), jnp.array([[1, 1], [4, 4]]))).tolist() == [[0.0] * 3] * 2


def test_pair_geometry_numbers():
    # A 0.2 x 0.4 subject inside a 0.5 x 0.6 object, their bottoms 0.1 apart (region geometry: x1, y1, x2, y2, w, h).
    subject = np.array([0.2, 0.3, 0.4, 0.7, 0.2, 0.4], np.float32)
    obj = np.array([0.1, 0.2, 0.6, 0.8, 0.5, 0.6], np.float32)
    g = np.asarray(geometry.pair_geometry(subject, obj))
    expected = [*subject[:4], *obj[:4], 0.3 - 0.35, 0.5 - 0.5, np.log(0.2 / 0.5), np.log(0.4 / 0.6),
                1.0, 0.08 / 0.30, 0.08 / 0.30, 0.7 - 0.2, 0.7 - 0.8, 0.3 - 0.2]
    np.testing.assert_allclose(g, expected, rtol=1e-5, atol=1e-6)
    # Disjoint boxes overlap by nothing; swapping the roles negates the offsets and log ratios.
    apart = np.asarray(geometry.pair_geometry(subject, subject + np.array([0.5, 0, 0.5, 0, 0, 0], np.float32)))
    np.testing.assert_allclose(apart[12:15], 0.0)
    swapped = np.asarray(geometry.pair_geometry(obj, subject))
    np.testing.assert_allclose(swapped[8:12], -g[8:12], rtol=1e-5, atol=1e-6)
    assert np.isfinite(np.asarray(geometry.pair_geometry(np.zeros(6), np.zeros(6)))).all()


def test_pair_geometry_embedding_joins_the_two_query_regions_only():
    flat = dataclasses.replace(TINY, num_layers=0, hidden_dropout=0.0)
    paired = dataclasses.replace(flat, pair_geometry=True)
    batch = make_batch(paired)
    batch["regions"][..., 4:] = np.abs(batch["regions"][..., 4:])  # Widths and heights are positive.
    params = init_params(paired)
    assert set(params) == set(init_params(flat)) | {"pair_embedding", "pair_layer_norm"}
    base = {k: v for k, v in params.items() if not k.startswith("pair_")}
    lt = batch["text_ids"].shape[-1]
    with_pair = np.asarray(encode(paired, params, batch, method=InstanceEncoder.encode))  # No layers: embeddings.
    without = np.asarray(encode(flat, base, batch, method=InstanceEncoder.encode))
    np.testing.assert_array_equal(with_pair[..., lt + 2:, :], without[..., lt + 2:, :])
    np.testing.assert_array_equal(with_pair[..., :lt, :], without[..., :lt, :])
    numbers = geometry.pair_geometry(batch["regions"][..., 0, :], batch["regions"][..., 1, :])
    pair = InstanceEncoder(paired).apply({"params": params}, numbers, method=lambda m, g: m.pair_layer_norm(
        m.pair_embedding(g)))
    for k in (lt, lt + 1):
        np.testing.assert_allclose(with_pair[..., k, :], without[..., k, :] + np.asarray(pair), atol=1e-5)
    # Checkpoints have no pair embedding: the import keeps its initial values and says so.
    state = {k[len("bert."):]: v for k, v in fake_vinvl_state(TINY, extra_layers=0).items() if k.startswith("bert.")}
    _, report = weights.bert_params_from_state_dict(state, dataclasses.replace(VINVL, pair_geometry=True))
    assert report.not_in_checkpoint[-2:] == ("pair_embedding", "pair_layer_norm")
    # A padding instance's query regions count as zeros, whatever they hold (here boxes whose huge
    # overlap over zero areas would give 1e12-size geometry).
    empty = {k: x.copy() for k, x in batch.items()}
    empty["region_mask"][1, 2], empty["text_mask"][1, 2] = False, False
    zeros = {k: x.copy() for k, x in empty.items()}
    zeros["regions"][1, 2, :2] = 0.0
    empty["regions"][1, 2, :2] = [-1e6, -1e6, 1e6, 1e6, 0.0, 0.0]
    added = [np.asarray(encode(paired, params, b, method=InstanceEncoder.encode) -
                        encode(flat, base, b, method=InstanceEncoder.encode))[1, 2, lt:lt + 2] for b in (empty, zeros)]
    np.testing.assert_allclose(added[0], added[1], atol=1e-6)


def test_cnn_style_encoder_reads_the_two_query_regions_and_the_names_word_vectors():
    config = dataclasses.replace(TINY, region_dim=10, hidden_dropout=0.0)
    batch = make_batch(config)
    model = RegionPairEncoder(config)
    inputs = lambda b: tuple(b[k] for k in INPUTS)  # noqa: E731
    params = model.init(jax.random.key(0), *inputs(batch), deterministic=True)["params"]
    assert set(params) == {"embeddings", "pair_mlp_in", "pair_mlp_norm", "pair_mlp_out"}
    v = np.asarray(model.apply({"params": params}, *inputs(batch), deterministic=True))
    h = config.hidden_size
    assert v.shape == (2, 3, 4 * h)
    table = np.asarray(params["embeddings"]["word_embeddings"]["embedding"])
    for b, n in np.ndindex(2, 3):
        start, end = batch["subject_span"][b, n]
        np.testing.assert_allclose(v[b, n, 2 * h:3 * h], table[batch["text_ids"][b, n, start:end]].mean(0), atol=1e-6)
    np.testing.assert_array_equal(v[0, 0, 3 * h:], 0.0)  # Empty object span.
    # Only the two query regions' appearance counts: not the others, not the box geometry (as in the paper).
    changed = {k: x.copy() for k, x in batch.items()}
    changed["regions"][..., 2:, :] += 5.0
    changed["regions"][..., :2, -6:] += 1.0
    np.testing.assert_array_equal(np.asarray(model.apply({"params": params}, *inputs(changed), deterministic=True)), v)
    changed["regions"][0, 0, 1, 0] += 1.0
    moved = np.asarray(model.apply({"params": params}, *inputs(changed), deterministic=True))
    assert not np.allclose(moved[0, 0, :2 * h], v[0, 0, :2 * h]) and np.allclose(moved[1:], v[1:])
    # A padding instance's query regions count as zeros, whatever they hold.
    padded = {k: x.copy() for k, x in batch.items()}
    padded["region_mask"][1, 2] = False
    zeroed = {k: x.copy() for k, x in padded.items()}
    zeroed["regions"][1, 2] = 0.0
    padded["regions"][1, 2] = 1e6
    np.testing.assert_array_equal(np.asarray(model.apply({"params": params}, *inputs(padded), deterministic=True)),
                                  np.asarray(model.apply({"params": params}, *inputs(zeroed), deterministic=True)))
    # With pair_geometry the box geometry joins the MLP's input.
    paired = RegionPairEncoder(dataclasses.replace(config, pair_geometry=True))
    params = paired.init(jax.random.key(0), *inputs(batch), deterministic=True)["params"]
    assert params["pair_mlp_in"]["kernel"].shape == (2 * 4 + 18, 2 * h)


def test_padding_does_not_change_outputs():
    batch = make_batch()
    params = init_params()
    apply = jax.jit(lambda b: encode(TINY, params, b))
    v = np.asarray(apply(batch))
    rng = np.random.default_rng(1)
    changed = dict(batch)
    changed["text_ids"] = np.where(batch["text_mask"], batch["text_ids"], rng.integers(1, 50, batch["text_ids"].shape))
    changed["regions"] = np.where(batch["region_mask"][..., None], batch["regions"],
                                  rng.normal(size=batch["regions"].shape) * 100).astype(np.float32)
    np.testing.assert_array_equal(np.asarray(apply(changed)), v)
    # Longer padding of text and regions: the same representation.
    longer = dict(batch)
    longer["text_ids"] = np.pad(batch["text_ids"], ((0, 0), (0, 0), (0, 3)), constant_values=7)
    longer["text_mask"] = np.pad(batch["text_mask"], ((0, 0), (0, 0), (0, 3)))
    longer["regions"] = np.pad(batch["regions"], ((0, 0), (0, 0), (0, 2), (0, 0)), constant_values=1.0)
    longer["region_mask"] = np.pad(batch["region_mask"], ((0, 0), (0, 0), (0, 2)))
    np.testing.assert_allclose(np.asarray(encode(TINY, params, longer)), v, atol=1e-5)
    # A padding instance (everything masked) stays finite.
    empty = {k: x.copy() for k, x in batch.items()}
    empty["text_mask"][1, 2], empty["region_mask"][1, 2] = False, False
    assert np.isfinite(np.asarray(apply(empty))).all()


def test_any_leading_shape():
    batch = make_batch(shape=(2, 3))
    params = init_params()
    v = np.asarray(encode(TINY, params, batch))
    flat = {k: x.reshape(6, *x.shape[2:]) for k, x in batch.items()}
    np.testing.assert_allclose(np.asarray(encode(TINY, params, flat)).reshape(v.shape), v, atol=1e-5)


# ---------------------------------------------------------------- dropout, remat, dtype


def test_dropout_and_determinism():
    batch = make_batch()
    params = init_params()
    key_a, key_b = jax.random.key(1, impl="rbg"), jax.random.key(2, impl="rbg")
    det_a = encode(TINY, params, batch, deterministic=True, rng=key_a)
    det_b = encode(TINY, params, batch, deterministic=True, rng=key_b)
    np.testing.assert_array_equal(det_a, det_b)
    drop_a = encode(TINY, params, batch, deterministic=False, rng=key_a)
    np.testing.assert_array_equal(drop_a, encode(TINY, params, batch, deterministic=False, rng=key_a))
    drop_b = encode(TINY, params, batch, deterministic=False, rng=key_b)
    assert np.abs(np.asarray(drop_a) - np.asarray(drop_b)).max() > 1e-3
    assert np.abs(np.asarray(drop_a) - np.asarray(det_a)).max() > 1e-3


def _fmix32_reference(x: int) -> int:
    """MurmurHash3's fmix32 on Python integers."""
    x ^= x >> 16
    x = (x * 0x85EBCA6B) & 0xFFFFFFFF
    x ^= x >> 13
    x = (x * 0xC2B2AE35) & 0xFFFFFFFF
    return x ^ (x >> 16)


def test_fmix32_is_murmur3s_finaliser():
    values = [0, 1, 2, 12345, 2**31, 2**32 - 1]
    got = np.asarray(fmix32(jnp.asarray(values, jnp.uint32)))
    assert got.dtype == np.uint32
    assert got.tolist() == [_fmix32_reference(v) for v in values]
    assert _fmix32_reference(1) == 0x514E28B7


def test_dropout_keeps_at_its_rate_rescales_and_draws_independent_masks():
    keep = round(0.9 * 2**32) / 2**32  # 0.9 to within 1.2e-10.
    x = jnp.ones((4096, 601))
    drop = lambda seed: np.asarray(  # noqa: E731
        Dropout(0.1).apply({}, x, deterministic=False, rngs={"dropout": jax.random.key(seed)}))
    out = drop(0)
    kept = out != 0
    sigma = np.sqrt(keep * (1 - keep) / kept.size)
    assert abs(kept.mean() - keep) < 4 * sigma  # 4 sigma = 7.7e-4
    np.testing.assert_allclose(out[kept], 1 / keep, rtol=1e-6)  # E[output] = input exactly.
    # Neighbours (along rows and columns) and the same element under another seed are independent.
    assert abs((kept[:, :-1] & kept[:, 1:]).mean() - keep**2) < 2e-3
    assert abs((kept[:-1] & kept[1:]).mean() - keep**2) < 2e-3
    assert abs((kept & (drop(1) != 0)).mean() - keep**2) < 2e-3
    np.testing.assert_array_equal(drop(0), out)
    half = np.asarray(Dropout(0.5).apply({}, x, deterministic=False, rngs={"dropout": jax.random.key(2)})) != 0
    assert abs(half.mean() - 0.5) < 4 * np.sqrt(0.25 / half.size)
    assert Dropout(0.1).apply({}, x, deterministic=True) is x
    with pytest.raises(ValueError, match=r"dropout rate 1.0 is not in \[0, 1\)"):
        Dropout(1.0).apply({}, x, deterministic=False, rngs={"dropout": jax.random.key(0)})


def test_dropout_of_several_arrays_masks_each_element_by_its_index():
    """Packed attention drops its length classes in one call: one seed, each element masked as the element of
    the unpacked array at its index."""
    x = jax.random.normal(jax.random.key(0), (6, 10)) + 3.0
    rngs = {"dropout": jax.random.key(1)}
    whole = np.asarray(Dropout(0.3).apply({}, x, deterministic=False, rngs=rngs))
    index = jnp.arange(60, dtype=jnp.uint32).reshape(6, 10)
    rows = [jnp.array([4, 1]), jnp.array([0, 5, 2])]  # Two "classes" of rows, in another order.
    parts = Dropout(0.3).apply({}, [x[r] for r in rows], deterministic=False, rngs=rngs, index=[index[r] for r in rows])
    for part, r in zip(parts, rows, strict=True):
        np.testing.assert_array_equal(part, whole[np.asarray(r)])


def test_frozen_word_embeddings_get_no_gradient():
    batch = make_batch()
    params = init_params()

    def grads(config):
        return jax.jit(jax.grad(lambda p: jnp.sum(encode(config, p, batch) ** 2)))(params)

    trained, frozen = grads(TINY), grads(dataclasses.replace(TINY, freeze_word_embeddings=True))
    table = lambda g: np.asarray(g["embeddings"]["word_embeddings"]["embedding"])  # noqa: E731
    assert np.abs(table(trained)).max() > 0 and not table(frozen).any()
    del trained["embeddings"]["word_embeddings"], frozen["embeddings"]["word_embeddings"]
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7), frozen, trained)


def test_remat_same_outputs_and_gradients():
    batch = make_batch()
    params = init_params()
    remat = dataclasses.replace(TINY, remat=True)
    assert jax.tree.structure(init_params(remat)) == jax.tree.structure(params)

    def loss(p, config):
        v = encode(config, p, batch, deterministic=False, rng=jax.random.key(3, impl="rbg"))
        return jnp.sum(v**2), v

    (l0, v0), g0 = jax.jit(jax.value_and_grad(lambda p: loss(p, TINY), has_aux=True))(params)
    (l1, v1), g1 = jax.jit(jax.value_and_grad(lambda p: loss(p, remat), has_aux=True))(params)
    np.testing.assert_allclose(v1, v0, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(l1, l0, rtol=1e-5)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5), g1, g0)


def test_bfloat16_compute():
    batch = make_batch()
    bf16 = dataclasses.replace(TINY, dtype="bfloat16")
    params = init_params(bf16)
    assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(params))
    v = encode(bf16, params, batch)
    assert v.dtype == jnp.bfloat16
    np.testing.assert_allclose(np.asarray(v, np.float32), np.asarray(encode(TINY, params, batch)), atol=0.15)


def test_the_tiny_checkpoint_holds_every_benchmark_word_and_two_layers():
    """configs/tiny_bert (the tests' encoder): every word of the benchmark's entity and predicate names is
    one word piece of its vocabulary (a new name would otherwise become [UNK] in every tiny run), and its
    weights are the two layers its config.json says."""
    from clever_jax.data.vocab import benchmark_vocab
    from configs import demo

    tokenizer = text.load_tokenizer(demo.TINY_BERT)
    vocab = benchmark_vocab()
    words = sorted({w for name in (*vocab.entities, *vocab.predicates) for w in name.lower().split()})
    assert all(tokenizer.tokenize(word) == [word] for word in words), [w for w in words if tokenizer.tokenize(w) != [w]]
    config, state = weights.load_checkpoint_dir(demo.TINY_BERT)
    assert config["num_hidden_layers"] == 2 and config["hidden_size"] == 32
    assert {"encoder.layer.1.output.dense.weight", "embeddings.word_embeddings.weight"} <= set(state)
    assert state["embeddings.word_embeddings.weight"].shape == (tokenizer.vocab_size, 32)
