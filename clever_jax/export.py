"""Export: a self-contained inference bundle, and scoring from it without the training code.

A bundle folder holds params/ (orbax, parameters only), model.json (the encoder configuration,
heads, relation count and special token ids), config.json (the resolved run config), vocab/
(entities.txt, predicates.txt) and tokenizer/ (vocab.txt and tokenizer files of the checkpoint).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from clever_jax import distributed
from clever_jax.checkpoints import Checkpoints
from clever_jax.data import text
from clever_jax.data.vocab import Vocab, benchmark_vocab
from clever_jax.models.clever import Clever
from clever_jax.models.encoder import EncoderConfig

if TYPE_CHECKING:
    from clever_jax.builder import Run

TOKENIZER_FILES = ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


def export_bundle(run: Run, workdir: str) -> str:
    """Writes WORKDIR/export from the best checkpoint of a built run (clever_jax.builder) trained in
    `workdir`; returns the folder.

    Every process takes part in saving the parameters; process 0 writes the other files.
    """
    config = run.config
    params = Checkpoints(workdir).restore_params("best", run.abstract_params)
    out = os.path.join(os.path.abspath(workdir), "export")
    if distributed.is_main_process():
        shutil.rmtree(out, ignore_errors=True)
        os.makedirs(out)
    distributed.barrier("export")
    with ocp.StandardCheckpointer() as checkpointer:
        checkpointer.save(os.path.join(out, "params"), params)
    if not distributed.is_main_process():
        return out
    model, shape = run.model, run.shape
    encoder = {k: (str(jnp.dtype(v)) if k == "dtype" else v) for k, v in dataclasses.asdict(model.encoder).items()}
    description = {
        "encoder": encoder, "num_relations": model.num_relations, "encoder_type": model.encoder_type,
        "head": model.head, "eval_head": model.eval_head,
        "temperature": model.temperature, "classifier_width": model.classifier_width, "cls_id": shape.cls_id,
        "sep_id": shape.sep_id, "region_dim": shape.region_dim,
    }
    with open(os.path.join(out, "model.json"), "w") as f:
        json.dump(description, f, indent=1)
    with open(os.path.join(out, "config.json"), "w") as f:
        f.write(config.to_json_best_effort(indent=1))
    vocab = benchmark_vocab()
    os.makedirs(os.path.join(out, "vocab"))
    for name, items in (("entities.txt", vocab.entities), ("predicates.txt", vocab.predicates)):
        with open(os.path.join(out, "vocab", name), "w") as f:
            f.write("\n".join(items) + "\n")
    os.makedirs(os.path.join(out, "tokenizer"))
    source = text.pretrained_dir(config)
    for name in TOKENIZER_FILES:
        if os.path.isfile(os.path.join(source, name)):
            shutil.copyfile(os.path.join(source, name), os.path.join(out, "tokenizer", name))
    return out


@dataclasses.dataclass
class Bundle:
    """A loaded bundle: call `score(batch)` on pipeline batches for (scores [B, R+1], evidence [B, R+1, N])."""

    model: Clever
    params: Any
    vocab: Vocab
    description: dict

    def __post_init__(self):
        self._apply = jax.jit(lambda params, batch: self.model.apply({"params": params}, batch))

    def score(self, batch: dict) -> tuple[np.ndarray, np.ndarray]:
        return jax.device_get(self._apply(self.params, batch))


def load_bundle(path: str) -> Bundle:
    """Loads an exported bundle (needs no workdir, records or training state)."""
    with open(os.path.join(path, "model.json")) as f:
        description = json.load(f)
    model = Clever(
        encoder=EncoderConfig(**description["encoder"]), num_relations=description["num_relations"],
        encoder_type=description.get("encoder_type", "vlp"),  # Bundles exported before the CNN encoder: vlp.
        head=description["head"], eval_head=description["eval_head"], temperature=description["temperature"],
        classifier_width=description.get("classifier_width", 8),  # Bundles exported before it was a setting: 8.
    )
    with ocp.StandardCheckpointer() as checkpointer:
        params = checkpointer.restore(os.path.join(os.path.abspath(path), "params"))

    def read(name: str) -> tuple[str, ...]:
        with open(os.path.join(path, "vocab", name)) as f:
            return tuple(line.strip() for line in f if line.strip())

    return Bundle(model, params, Vocab(read("entities.txt"), read("predicates.txt")), description)
