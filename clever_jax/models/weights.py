"""Import of pretrained BERT / Oscar (VinVL) checkpoints into the instance encoder's parameters.

A checkpoint folder holds config.json and model.safetensors or pytorch_model.bin (PyTorch is only
imported to read the latter). Keys follow HuggingFace BERT names with an optional prefix (`bert.`
for task models, none for a bare BertModel); Oscar/VinVL adds `bert.img_embedding.{weight,bias}`
(the region projection) and, with `use_img_layernorm`, `bert.LayerNorm.{weight,bias}` after it.

  hf_config, state = load_checkpoint_dir(path)
  config = EncoderConfig.from_hf(hf_config, region_dim=F, num_layers=k)
  pretrained, report = bert_params_from_state_dict(state, config, source=path)
  params = merge_pretrained(init_params, pretrained)
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from clever_jax.data import text  # noqa: F401  (sets the HuggingFace offline environment variables)
from clever_jax.models.encoder import EncoderConfig, InstanceEncoder

SAFETENSORS_NAME = "model.safetensors"
PYTORCH_NAME = "pytorch_model.bin"
_ANCHOR = "embeddings.word_embeddings.weight"  # Present in every BERT checkpoint; locates the prefix.


def load_checkpoint_dir(path: str) -> tuple[dict, dict[str, np.ndarray]]:
    """Reads config.json and the weights (model.safetensors, else pytorch_model.bin) of a folder.

    Returns:
      hf_config: the parsed config.json.
      state: checkpoint key -> numpy array (floating tensors as float32).
    """
    config_path = os.path.join(path, "config.json")
    if not os.path.isfile(config_path):
        raise FileNotFoundError(f"{path}: no config.json; expected a BERT checkpoint folder")
    with open(config_path) as f:
        hf_config = json.load(f)
    safetensors_path, pytorch_path = os.path.join(path, SAFETENSORS_NAME), os.path.join(path, PYTORCH_NAME)
    if os.path.isfile(safetensors_path):
        from safetensors.numpy import load_file

        state = load_file(safetensors_path)
    elif os.path.isfile(pytorch_path):
        state = _load_torch_state_dict(pytorch_path)
    else:
        raise FileNotFoundError(f"{path}: neither {SAFETENSORS_NAME} nor {PYTORCH_NAME}")
    state = {k: v.astype(np.float32) if np.issubdtype(v.dtype, np.floating) else v for k, v in state.items()}
    return hf_config, state


def _load_torch_state_dict(path: str) -> dict[str, np.ndarray]:
    try:
        import torch
    except ImportError as e:
        raise ImportError(f"{path}: reading a PyTorch .bin checkpoint needs PyTorch (pip install torch)") from e
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, Mapping):
        raise ValueError(f"{path}: expected a state dict, got {type(state).__name__}")
    return {k: (v.float() if v.is_floating_point() else v).numpy() for k, v in state.items() if torch.is_tensor(v)}


@dataclasses.dataclass(frozen=True)
class ImportReport:
    """What a checkpoint import used.

    Attributes:
      source: the checkpoint (file or folder) named in messages.
      loaded: checkpoint keys copied into the params.
      ignored: checkpoint keys not used (pooler, task heads, layers beyond num_layers, buffers).
      not_in_checkpoint: our parameter paths the checkpoint lacks; they keep their initial values.
    """

    source: str
    loaded: tuple[str, ...]
    ignored: tuple[str, ...]
    not_in_checkpoint: tuple[str, ...]

    def summary(self) -> str:
        lines = [f"{self.source}: {len(self.loaded)} tensors loaded"]
        if self.ignored:
            lines.append(f"ignored ({len(self.ignored)}): {', '.join(self.ignored)}")
        if self.not_in_checkpoint:
            lines.append(f"kept initial values: {', '.join(self.not_in_checkpoint)}")
        return "\n".join(lines)


def _key_map(config: EncoderConfig) -> list[tuple[tuple[str, ...], tuple[str, ...], bool]]:
    """(our param path, checkpoint key candidates without prefix, transpose) for every parameter."""
    entries = []

    def dense(path: tuple[str, ...], name: str) -> None:
        entries.append((path + ("kernel",), (f"{name}.weight",), True))
        entries.append((path + ("bias",), (f"{name}.bias",), False))

    def norm(path: tuple[str, ...], name: str) -> None:
        entries.append((path + ("scale",), (f"{name}.weight", f"{name}.gamma"), False))
        entries.append((path + ("bias",), (f"{name}.bias", f"{name}.beta"), False))

    for table in ("word_embeddings", "position_embeddings", "token_type_embeddings"):
        entries.append((("embeddings", table, "embedding"), (f"embeddings.{table}.weight",), False))
    norm(("embeddings", "layer_norm"), "embeddings.LayerNorm")
    for i in range(config.num_layers):
        ours, theirs = ("encoder", f"layer_{i}"), f"encoder.layer.{i}"
        for name in ("query", "key", "value"):
            dense(ours + ("attention", name), f"{theirs}.attention.self.{name}")
        dense(ours + ("attention", "output"), f"{theirs}.attention.output.dense")
        norm(ours + ("attention_layer_norm",), f"{theirs}.attention.output.LayerNorm")
        dense(ours + ("intermediate",), f"{theirs}.intermediate.dense")
        dense(ours + ("output",), f"{theirs}.output.dense")
        norm(ours + ("output_layer_norm",), f"{theirs}.output.LayerNorm")
    dense(("region_embedding",), "img_embedding")
    norm(("region_layer_norm",), "LayerNorm")  # Oscar's BertImgModel.LayerNorm (use_img_layernorm).
    return entries


def _expected_shapes(config: EncoderConfig) -> dict[tuple[str, ...], tuple[int, ...]]:
    model = InstanceEncoder(config)
    ids, regions = jnp.zeros((1, 2), jnp.int32), jnp.zeros((1, 2, config.region_dim), jnp.float32)
    mask, span = jnp.ones((1, 2), bool), jnp.zeros((1, 2), jnp.int32)
    variables = jax.eval_shape(lambda: model.init(jax.random.key(0), ids, mask, regions, mask, span, span,
                                                  deterministic=True))
    return {path: leaf.shape for path, leaf in traverse_util.flatten_dict(variables["params"]).items()}


def bert_params_from_state_dict(state: Mapping[str, Any], config: EncoderConfig,
                                source: str = "<state dict>") -> tuple[dict, ImportReport]:
    """Maps a BERT / Oscar state dict onto the InstanceEncoder parameter tree.

    Linear weights [out, in] become kernels [in, out]; only the first config.num_layers layers are
    taken. The region projection (`img_embedding`) and its LayerNorm are optional: without them
    those parameters are absent from the result (merge_pretrained then keeps their init).

    Args:
      state: checkpoint key -> array (numpy, or anything np.asarray accepts).
      config: the encoder configuration the params are for.
      source: checkpoint file named in error messages and in the report.

    Returns:
      params: nested dict of float32 numpy arrays (a subtree of InstanceEncoder's params; the
        BertTextModel part is everything but region_* and pair_*).
      report: which keys were loaded, ignored, and which params the checkpoint lacks.

    Raises:
      ValueError: a required key is missing, or a tensor has the wrong shape.
    """
    prefixes = sorted((k[: -len(_ANCHOR)] for k in state if k.endswith(_ANCHOR)), key=len)
    prefixes = [p for p in prefixes if p == "" or p.endswith(".")]
    if not prefixes:
        raise ValueError(f"{source}: no key '{_ANCHOR}' (with or without a prefix such as 'bert.'); "
                         "not a BERT checkpoint?")
    prefix = prefixes[0]
    shapes = _expected_shapes(config)
    flat, loaded, missing_optional = {}, [], []
    for path, candidates, transpose in _key_map(config):
        key = next((prefix + c for c in candidates if prefix + c in state), None)
        optional = path[0].startswith("region_")
        if path not in shapes:  # region_layer_norm with config.region_layer_norm=False.
            if key is not None:
                raise ValueError(f"{source}: the checkpoint has an image LayerNorm ({key}) but "
                                 "config.region_layer_norm is False; set it to True to use it")
            continue
        if key is None:
            if optional:
                missing_optional.append("/".join(path))
                continue
            names = " or ".join(repr(prefix + c) for c in candidates)
            raise ValueError(f"{source}: missing key {names} (needed for params/{'/'.join(path)}; "
                             f"config has {config.num_layers} layers)")
        value = np.asarray(state[key], np.float32)
        if transpose:
            value = value.T
        if value.shape != shapes[path]:
            if path == ("region_embedding", "kernel") and value.ndim == 2:
                raise ValueError(f"{source}: {key} maps {value.shape[0]} region features to hidden size "
                                 f"{value.shape[1]}, but config.region_dim={config.region_dim} and "
                                 f"hidden_size={config.hidden_size}: the region features must have the size "
                                 "the checkpoint was trained on")
            raise ValueError(f"{source}: {key} has shape {np.shape(state[key])}; params/{'/'.join(path)} "
                             f"needs {shapes[path]}{' (transposed)' if transpose else ''}")
        flat[path] = value
        loaded.append(key)
    # The pair-geometry embedding (config.pair_geometry) is ours: no checkpoint has it.
    missing_optional += sorted({path[0] for path in shapes if path[0].startswith("pair_")})
    used = set(loaded)
    report = ImportReport(source=source, loaded=tuple(loaded), ignored=tuple(k for k in state if k not in used),
                          not_in_checkpoint=tuple(missing_optional))
    return traverse_util.unflatten_dict(flat), report


# The published bag model's classifier, Sequential(Linear(4H, width), ReLU, Linear(width, R + 1)), in
# Clever's params: (our path, checkpoint key, transpose).
CLASSIFIER_KEYS = (
    (("classifier", "hidden", "kernel"), "classifier.0.weight", True),
    (("classifier", "hidden", "bias"), "classifier.0.bias", False),
    (("classifier", "out_kernel"), "classifier.2.weight", True),
    (("classifier", "out_bias"), "classifier.2.bias", False),
)


def load_state_file(path: str) -> dict[str, np.ndarray]:
    """A state dict file (.safetensors, else a PyTorch .bin / .pt) as key -> numpy array."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such state dict file")
    if path.endswith(".safetensors"):
        from safetensors.numpy import load_file

        return load_file(path)
    return _load_torch_state_dict(path)


def model_params_from_state_dict(state: Mapping[str, Any], config: EncoderConfig,
                                 classifier_shapes: Mapping[tuple[str, ...], tuple[int, ...]],
                                 source: str = "<state dict>") -> tuple[dict, ImportReport]:
    """Maps the published bag model (encoder `bert.*` and classifier `classifier.{0,2}.*`, e.g. the
    authors' AVG model that CLEVER starts from) onto Clever's parameters.

    Args:
      state: checkpoint key -> array.
      config: the encoder configuration.
      classifier_shapes: Clever's classifier parameter shapes, keyed as the paths of CLASSIFIER_KEYS.
      source: the file named in errors and in the report.

    Returns:
      params: {"instance_encoder": ..., "classifier": ...} (a subtree of Clever's params).
      report: as bert_params_from_state_dict's, the classifier keys counted as loaded.

    Raises:
      ValueError: a missing key or a shape that does not fit, each named.
    """
    encoder, report = bert_params_from_state_dict(state, config, source)
    missing = [key for _, key, _ in CLASSIFIER_KEYS if key not in state]
    if missing:
        raise ValueError(f"{source}: missing {', '.join(missing)}: not a whole bag model (a state dict with "
                         "bert.* and classifier.0.*, classifier.2.*); an encoder checkpoint folder goes to "
                         "--config.model.pretrained_dir")
    flat, bad = {}, []
    for path, key, transpose in CLASSIFIER_KEYS:
        value = np.asarray(state[key], np.float32)
        value = value.T if transpose else value
        if value.shape != tuple(classifier_shapes[path]):
            bad.append(f"{key} {np.shape(state[key])} for params/{'/'.join(path)} {tuple(classifier_shapes[path])}"
                       f"{' (transposed)' if transpose else ''}")
        flat[path] = value
    if bad:
        raise ValueError(f"{source}: shapes do not fit (check config.model.classifier_width and the number of "
                         f"relations): {'; '.join(bad)}")
    used = {key for _, key, _ in CLASSIFIER_KEYS}
    report = dataclasses.replace(report, loaded=report.loaded + tuple(key for _, key, _ in CLASSIFIER_KEYS),
                                 ignored=tuple(k for k in report.ignored if k not in used))
    return {"instance_encoder": encoder, **traverse_util.unflatten_dict(flat)}, report


def load_pretrained(path: str, config: EncoderConfig) -> tuple[dict, ImportReport]:
    """load_checkpoint_dir + bert_params_from_state_dict for the folder `path`; ValueError when its
    config.json's img_feature_dim (VinVL's region input size) is not the data's region size."""
    hf_config, state = load_checkpoint_dir(path)
    stated = hf_config.get("img_feature_dim")
    if stated is not None and int(stated) != config.region_dim:
        raise ValueError(f"{os.path.join(path, 'config.json')}: img_feature_dim={stated}, but the data's regions "
                         f"have {config.region_dim} values (appearance + 6 geometry): the region features must "
                         "have the size the checkpoint was trained on (VinVL: 2048 + 6)")
    name = SAFETENSORS_NAME if os.path.isfile(os.path.join(path, SAFETENSORS_NAME)) else PYTORCH_NAME
    return bert_params_from_state_dict(state, config, source=os.path.join(path, name))


def load_word_embeddings(path: str) -> tuple[np.ndarray, str]:
    """The input word-embedding table [vocab, H] (float32) of the checkpoint folder `path`, and the
    file it came from: all that the CNN-style encoder (models/region_pair.py) takes from it."""
    _, state = load_checkpoint_dir(path)
    name = SAFETENSORS_NAME if os.path.isfile(os.path.join(path, SAFETENSORS_NAME)) else PYTORCH_NAME
    keys = sorted((k for k in state if k.endswith(_ANCHOR)), key=len)
    if not keys:
        raise ValueError(f"{os.path.join(path, name)}: no key '{_ANCHOR}'; not a BERT checkpoint?")
    return np.asarray(state[keys[0]], np.float32), os.path.join(path, name)


def merge_pretrained(init_params: Mapping, pretrained: Mapping) -> dict:
    """init_params with every leaf present in `pretrained` replaced (same dtype as the init leaf).

    Both trees are rooted at the same module (e.g. the InstanceEncoder's params); parameters absent
    from `pretrained` keep their initial values.

    Raises:
      ValueError: a pretrained leaf has no counterpart in init_params, or a different shape.
    """
    flat = traverse_util.flatten_dict(init_params)
    for path, value in traverse_util.flatten_dict(pretrained).items():
        name = "/".join(map(str, path))
        if path not in flat:
            raise ValueError(f"pretrained parameter {name} is not in the model's params; are both trees rooted "
                             "at the encoder (e.g. params['params']['instance_encoder'])?")
        if np.shape(value) != np.shape(flat[path]):
            raise ValueError(f"pretrained parameter {name} has shape {np.shape(value)}, the model's has "
                             f"{np.shape(flat[path])}")
        flat[path] = jnp.asarray(value, dtype=flat[path].dtype)
    return traverse_util.unflatten_dict(flat)


# The heads of the language-model baselines (models/language.py) in a BERT checkpoint: (our path,
# checkpoint key candidates, transpose). The pooler sits under the BERT prefix ("bert." or none);
# the masked-LM head of BertForMaskedLM / BertForPreTraining at the root, its decoder tied to the
# word embeddings (a stored decoder.weight is not read).
POOLER_KEYS = ((("pooler", "kernel"), ("pooler.dense.weight",), True),
               (("pooler", "bias"), ("pooler.dense.bias",), False))
MLM_KEYS = (
    (("transform", "kernel"), ("cls.predictions.transform.dense.weight",), True),
    (("transform", "bias"), ("cls.predictions.transform.dense.bias",), False),
    (("transform_layer_norm", "scale"),
     ("cls.predictions.transform.LayerNorm.weight", "cls.predictions.transform.LayerNorm.gamma"), False),
    (("transform_layer_norm", "bias"),
     ("cls.predictions.transform.LayerNorm.bias", "cls.predictions.transform.LayerNorm.beta"), False),
    (("decoder_bias",), ("cls.predictions.bias", "cls.predictions.decoder.bias"), False),
)


def checkpoint_keys(path: str) -> set[str]:
    """The tensor names of a checkpoint folder's weights (model.safetensors: without reading the tensors)."""
    safetensors_path = os.path.join(path, SAFETENSORS_NAME)
    if os.path.isfile(safetensors_path):
        from safetensors import safe_open

        with safe_open(safetensors_path, framework="numpy") as f:
            return set(f.keys())
    return set(load_checkpoint_dir(path)[1])


def has_mlm_head(path: str) -> bool:
    """Whether the checkpoint folder `path` holds BERT's masked-LM head (every entry of MLM_KEYS)."""
    keys = checkpoint_keys(path)
    return all(any(c in keys for c in candidates) for _, candidates, _ in MLM_KEYS)


def text_model_params(path: str, config: EncoderConfig, head: str) -> tuple[dict, ImportReport]:
    """The language-model baselines' pretrained parameters from the checkpoint folder `path`: BERT
    (text/embeddings, text/encoder) and, where the checkpoint has them, the head's own (the pooler
    for "cls", the masked-LM head for "prompt"; models/language.py names them).

    Raises:
      ValueError: BERT's keys or shapes do not fit (bert_params_from_state_dict), or the checkpoint
        has part of the head only.
    """
    _, state = load_checkpoint_dir(path)
    name = SAFETENSORS_NAME if os.path.isfile(os.path.join(path, SAFETENSORS_NAME)) else PYTORCH_NAME
    source = os.path.join(path, name)
    bert, report = bert_params_from_state_dict(state, config, source)
    prefix = min((k[: -len(_ANCHOR)] for k in state if k.endswith(_ANCHOR)), key=len)
    entries = [(p, tuple(prefix + c for c in cs), t) for p, cs, t in POOLER_KEYS] if head == "cls" else MLM_KEYS
    flat, used = {}, []
    for ours, candidates, transpose in entries:
        key = next((c for c in candidates if c in state), None)
        if key is not None:
            value = np.asarray(state[key], np.float32)
            flat[ours], used = (value.T if transpose else value), used + [key]
    if used and len(used) < len(entries):
        missing = [" or ".join(cs) for ours, cs, _ in entries if ours not in flat]
        raise ValueError(f"{source}: part of the {head} head only: has {', '.join(used)}, lacks {', '.join(missing)}")
    text_keys = tuple(k for k in report.loaded if "embeddings." in k or "encoder." in k)
    loaded = text_keys + tuple(used)
    report = dataclasses.replace(report, loaded=loaded, ignored=tuple(k for k in state if k not in set(loaded)),
                                 not_in_checkpoint=() if used else tuple("/".join(p) for p, _, _ in entries))
    params = {"text": {k: bert[k] for k in ("embeddings", "encoder")}, **traverse_util.unflatten_dict(flat)}
    return params, report
