"""Export: a self-contained inference bundle, and scoring from it without the training code.

A bundle folder holds params/ (orbax, parameters only), model.json (the encoder configuration,
heads, relation count and special token ids), config.json (the resolved run config), vocab/
(entities.txt, predicates.txt), tokenizer/ (vocab.txt, the tokenizer files and config.json of the
pretrained encoder: what the builder reads), training_facts.tsv (subject, relation, object of
every fact of the training split), val_scores.npz (the run's validation scores, when evaluated:
what the knowledge base's filters are calibrated on) and checksums.json (the SHA-256 of every
other file). `load_bundle` checks the checksums and the
vocabulary sizes against model.json, and names the file that differs.
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
from absl import logging

from clever_jax import distributed, files
from clever_jax.checkpoints import Checkpoints
from clever_jax.data import text
from clever_jax.data.jsonio import DataError
from clever_jax.data.records import split_facts
from clever_jax.data.vocab import Vocab, benchmark_vocab
from clever_jax.models.clever import Clever
from clever_jax.models.encoder import EncoderConfig

if TYPE_CHECKING:
    from clever_jax.builder import Run

CHECKSUMS = "checksums.json"
BUNDLE_FORMAT = 3  # 2: with checksums.json (older bundles have none); 3: tokenizer/config.json, training_facts.tsv.
TOKENIZER_FILES = ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "config.json")
TRAINING_FACTS = "training_facts.tsv"


def export_bundle(run: Run, workdir: str) -> str:
    """Writes WORKDIR/export from the best checkpoint of a built run (clever_jax.builder) trained in
    `workdir`; returns the folder.

    Every process takes part in saving the parameters; process 0 writes the other files. The bundle
    is written into WORKDIR/export.partial and renamed at the end, so an interrupted export leaves
    the previous bundle (or none), never a half-written one.
    """
    config = run.config
    params = Checkpoints(workdir).restore_params("best", run.abstract_params)
    final = os.path.join(os.path.abspath(workdir), "export")
    out = final + ".partial"
    if distributed.is_main_process():
        shutil.rmtree(out, ignore_errors=True)
        os.makedirs(out)
    distributed.barrier("export")
    with ocp.StandardCheckpointer() as checkpointer:
        checkpointer.save(os.path.join(out, "params"), params)
    if not distributed.is_main_process():
        return final
    model, shape = run.model, run.shape
    encoder = {k: (str(jnp.dtype(v)) if k == "dtype" else v) for k, v in dataclasses.asdict(model.encoder).items()}
    description = {
        "encoder": encoder, "num_relations": model.num_relations, "encoder_type": model.encoder_type,
        "head": model.head, "eval_head": model.eval_head,
        "temperature": model.temperature, "classifier_width": model.classifier_width, "cls_id": shape.cls_id,
        "sep_id": shape.sep_id, "region_dim": shape.region_dim, "num_entities": len(benchmark_vocab().entities),
        "format": BUNDLE_FORMAT,
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
    entities, relations, objects = np.nonzero(split_facts(run.records_dir, "train", len(vocab.entities),
                                                          vocab.num_relations))
    with open(os.path.join(out, TRAINING_FACTS), "w") as f:
        f.writelines(f"{vocab.entities[s]}\t{vocab.relations[r]}\t{vocab.entities[o]}\n"
                     for s, r, o in zip(entities, relations, objects, strict=True))
    if os.path.isfile(os.path.join(workdir, "val_scores.npz")):
        shutil.copyfile(os.path.join(workdir, "val_scores.npz"), os.path.join(out, "val_scores.npz"))
    files.write_json(os.path.join(out, CHECKSUMS), {path: files.sha256(os.path.join(out, path))
                                                    for path in _bundle_files(out)})
    shutil.rmtree(final, ignore_errors=True)
    os.replace(out, final)
    return final


def _bundle_files(path: str) -> list[str]:
    """Every file of the bundle folder but checksums.json, relative, sorted."""
    found = (os.path.relpath(os.path.join(root, name), path) for root, _, names in os.walk(path) for name in names)
    return sorted(name for name in found if name != CHECKSUMS)


def _check_bundle(path: str, description: dict, vocab: Vocab) -> None:
    """DataError naming the file when a bundle file is missing or differs from checksums.json, or
    when the vocabulary files do not have the sizes model.json says."""
    checksums_path = os.path.join(path, CHECKSUMS)
    if not os.path.isfile(checksums_path) and description.get("format", 1) >= 2:
        raise DataError(f"{checksums_path} is missing: the bundle is damaged; export it again")
    if not os.path.isfile(checksums_path):
        logging.warning("%s: no %s (a bundle exported before checksums): its files are not checked", path, CHECKSUMS)
    else:
        with open(checksums_path) as f:
            checksums = json.load(f)
        for name, digest in checksums.items():
            file_path = os.path.join(path, name)
            if not os.path.isfile(file_path) or files.sha256(file_path) != digest:
                state = "is missing" if not os.path.isfile(file_path) else "differs from the exported file (SHA-256)"
                raise DataError(f"{file_path} {state}: the bundle is damaged; export it again")
    sizes = {"entities.txt": (len(vocab.entities), description.get("num_entities", len(vocab.entities))),
             "predicates.txt": (vocab.num_relations, description["num_relations"])}
    for name, (found, expected) in sizes.items():
        if found != expected:
            raise DataError(f"{os.path.join(path, 'vocab', name)}: {found} entries (relations with NA) but "
                            f"model.json says {expected}: the names would not match the model's outputs")


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


def read_training_facts(path: str, vocab: Vocab) -> np.ndarray:
    """bool [E, R + 1, E]: the training facts of a bundle (training_facts.tsv)."""
    facts_path = os.path.join(path, TRAINING_FACTS)
    if not os.path.isfile(facts_path):
        raise DataError(f"{facts_path} is missing: the bundle was exported before format 3; export it again")
    known = np.zeros((len(vocab.entities), vocab.num_relations, len(vocab.entities)), bool)
    relation_of = dict(zip(vocab.relations, range(vocab.num_relations), strict=True))
    with open(facts_path) as f:
        for number, line in enumerate(f, 1):
            names = line.rstrip("\n").split("\t")
            ids = ((vocab.entity_index.get(names[0]), relation_of.get(names[1]), vocab.entity_index.get(names[2]))
                   if len(names) == 3 else (None,))
            if None in ids:
                raise DataError(f"{facts_path}, line {number}: expected subject, relation, object of the bundle's "
                                f"vocabulary separated by tabs, got {line.rstrip()!r}")
            known[ids] = True
    return known


def load_bundle(path: str) -> Bundle:
    """Loads an exported bundle (needs no workdir, records or training state)."""
    with open(os.path.join(path, "model.json")) as f:
        description = json.load(f)

    def read(name: str) -> tuple[str, ...]:
        with open(os.path.join(path, "vocab", name)) as f:
            return tuple(line.strip() for line in f if line.strip())

    vocab = Vocab(read("entities.txt"), read("predicates.txt"))
    _check_bundle(path, description, vocab)
    model = Clever(
        encoder=EncoderConfig(**description["encoder"]), num_relations=description["num_relations"],
        encoder_type=description.get("encoder_type", "vlp"),  # Bundles exported before the CNN encoder: vlp.
        head=description["head"], eval_head=description["eval_head"], temperature=description["temperature"],
        classifier_width=description.get("classifier_width", 8),  # Bundles exported before it was a setting: 8.
    )
    with ocp.StandardCheckpointer() as checkpointer:
        params = checkpointer.restore(os.path.join(os.path.abspath(path), "params"))
    return Bundle(model, params, vocab, description)
