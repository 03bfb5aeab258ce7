"""Export: a self-contained inference bundle, and scoring from it without the training code.

A bundle folder holds params/ (orbax, parameters only), model.json (the encoder configuration,
heads, relation count and special token ids), config.json (the resolved run config), vocab/
(entities.txt, predicates.txt), tokenizer/ (vocab.txt, the tokenizer files and config.json of the
pretrained encoder: what the builder reads), training_facts.tsv (subject, relation, object of
every fact of the training split), val_scores.npz (the run's validation scores, when evaluated:
what the knowledge base's filters are calibrated on) and checksums.json (the SHA-256 of every
other file). `load_bundle` checks that checksums.json lists every file the bundle holds (and
nothing outside it) with its checksum, the format, and the vocabulary sizes against model.json,
and names the file that differs; `check_params` checks the parameters against the model that
config.json builds.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from flax import traverse_util

from clever_jax import distributed, files
from clever_jax.data.jsonio import DataError, load_json
from clever_jax.data.records import split_facts
from clever_jax.data.vg import GEOMETRY_DIM
from clever_jax.data.vocab import Vocab, benchmark_vocab, read_facts, write_facts
from clever_jax.models.clever import Clever
from clever_jax.models.encoder import EncoderConfig
from clever_jax.training import builder
from clever_jax.training.checkpoints import Checkpoints

CHECKSUMS = "checksums.json"
BUNDLE_FORMAT = 3  # 2: with checksums.json (older bundles have none); 3: tokenizer/config.json, training_facts.tsv.
TOKENIZER_FILES = ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "config.json")
TRAINING_FACTS = "training_facts.tsv"


def export_bundle(run: builder.Run, workdir: str) -> str:
    """Writes WORKDIR/export from the best checkpoint of a built run (clever_jax.training.builder) trained in
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
    source = run.pretrained_dir
    for name in TOKENIZER_FILES:
        if os.path.isfile(os.path.join(source, name)):
            shutil.copyfile(os.path.join(source, name), os.path.join(out, "tokenizer", name))
    with open(os.path.join(out, TRAINING_FACTS), "w") as f:
        write_facts(f, np.argwhere(split_facts(run.records_dir, "train", len(vocab.entities), vocab.num_relations)),
                    vocab)
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


def _check_files(path: str) -> None:
    """DataError naming the file when checksums.json is missing or malformed, names a file outside
    the bundle or no parameters, leaves out a file the bundle holds, or lists one that is missing or
    differs (SHA-256)."""
    checksums_path = os.path.join(path, CHECKSUMS)
    if not os.path.isfile(checksums_path):
        raise DataError(f"{checksums_path} is missing: the bundle is damaged or older than format 2; export it again")
    checksums = load_json(checksums_path)
    if not isinstance(checksums, dict) or not all(isinstance(v, str) for v in checksums.values()):
        raise DataError(f"{checksums_path}: expected an object of relative path -> SHA-256, found {checksums!r:.60}")
    outside = [name for name in checksums if os.path.isabs(name) or ".." in name.split("/")]
    if outside:
        raise DataError(f"{checksums_path}: {outside[0]!r} is not a path inside the bundle: export it again")
    if not any(name.startswith("params/") for name in checksums):
        raise DataError(f"{checksums_path}: lists no parameter file (params/): the bundle is damaged; export it again")
    unlisted = sorted(set(_bundle_files(path)) - checksums.keys())
    if unlisted:
        raise DataError(f"{os.path.join(path, unlisted[0])}: held in the bundle but not listed in {CHECKSUMS} (nor "
                        f"are {len(unlisted) - 1} more): the bundle is damaged or was changed by hand; export it again")
    for name, digest in checksums.items():
        file_path = os.path.join(path, name)
        if not os.path.isfile(file_path) or files.sha256(file_path) != digest:
            state = "is missing" if not os.path.isfile(file_path) else "differs from the exported file (SHA-256)"
            raise DataError(f"{file_path} {state}: the bundle is damaged; export it again")


def _check_description(path: str, description: Any, vocab: Vocab) -> None:
    """DataError naming model.json when it is not of this format, or a vocabulary file when it does
    not have the size model.json says."""
    model_json = os.path.join(path, "model.json")
    found = description.get("format") if isinstance(description, dict) else None
    if found != BUNDLE_FORMAT:
        raise DataError(f"{model_json}: bundle format {found}, this version reads format {BUNDLE_FORMAT}: export it "
                        "again with this version")
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
    known[tuple(read_facts(facts_path, vocab).T)] = True
    return known


def load_bundle(path: str) -> Bundle:
    """Loads an exported bundle (needs no workdir, records or training state); DataError naming the
    file when it is damaged or of another format (module docstring)."""
    _check_files(path)
    description = load_json(os.path.join(path, "model.json"))

    def read(name: str) -> tuple[str, ...]:
        with open(os.path.join(path, "vocab", name)) as f:
            return tuple(line.strip() for line in f if line.strip())

    vocab = Vocab(read("entities.txt"), read("predicates.txt"))
    _check_description(path, description, vocab)
    model = Clever(
        encoder=EncoderConfig(**description["encoder"]), num_relations=description["num_relations"],
        encoder_type=description.get("encoder_type", "vlp"),  # Bundles exported before the CNN encoder: vlp.
        head=description["head"], eval_head=description["eval_head"], temperature=description["temperature"],
        classifier_width=description.get("classifier_width", 8),  # Bundles exported before it was a setting: 8.
    )
    with ocp.StandardCheckpointer() as checkpointer:
        params = checkpointer.restore(os.path.join(os.path.abspath(path), "params"))
    return Bundle(model, params, vocab, description)


def check_params(bundle: Bundle, config: ml_collections.ConfigDict, path: str) -> None:
    """DataError naming the first parameter of the bundle at `path` that the model of `config` (its
    config.json) lacks, has with another shape, or with a dtype the value cannot be cast to, or that
    the bundle lacks. The model's parameters are abstract (builder.build without records: no data
    read, nothing computed), with the bundle's region size."""
    config = config.copy_and_resolve_references()
    # synthetic.instance_shape takes the appearance size from data.feature_dim for any source but the world.
    config.data.update(source="vg", feature_dim=bundle.description["region_dim"] - GEOMETRY_DIM, batch_size=1)
    config.train.grad_accum_steps = 1
    config.mesh.update(data=1, fsdp=1)
    run = builder.build(config, devices=jax.local_devices()[:1])
    expected = traverse_util.flatten_dict(run.abstract_params, sep="/")
    found = traverse_util.flatten_dict(bundle.params, sep="/")
    for name in sorted(expected.keys() | found.keys()):
        where = f"{os.path.join(path, 'params')}: parameter {name}"
        if name not in found:
            raise DataError(f"{where}: missing; the model of config.json has it with shape {expected[name].shape}")
        if name not in expected:
            raise DataError(f"{where}: shape {found[name].shape}, not a parameter of the model of config.json")
        value, like = found[name], expected[name]
        if value.shape != like.shape or not np.can_cast(value.dtype, like.dtype, casting="same_kind"):
            raise DataError(f"{where}: {value.dtype} {value.shape} in the bundle, the model of config.json has "
                            f"{like.dtype} {like.shape}: the bundle's parameters and config.json differ; export it "
                            "again")
