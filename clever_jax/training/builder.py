"""One builder of a run: what the Trainer, the throughput benchmark and the memory estimate all run.

`build(config, records_dir, workdir=...)` makes the run's parts in one place, deriving what the
config implies once: the pretrained encoder's folder, the generated world's graded truth (from the
workdir), the batch layout (from the records' manifest, or from the config for synthetic batches
when there are no records), the model, the device mesh and shardings, the optimiser, the abstract
parameters, the jitted train and evaluation steps (clever_jax.training.steps), and the loaders and
device batches that feed them; `Run.scorer(split)` is what evaluation scores a split with. `Run.initial_state()`
places the step-0 state (fresh parameters with the pretrained encoder merged in, or another run's
best checkpoint); nothing is computed before it is asked for.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import json
import math
import os
from typing import Any

import flax
import grain
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging
from flax import traverse_util
from jax.experimental import multihost_utils

from clever_jax.config_checks import ConfigError
from clever_jax.data import packing, pipeline, synthetic, text
from clever_jax.data.records import open_records
from clever_jax.data.vocab import benchmark_vocab
from clever_jax.evaluation import evaluate
from clever_jax.models import language, weights
from clever_jax.models.clever import Clever
from clever_jax.models.encoder import EncoderConfig
from clever_jax.models.language import PairTextModel
from clever_jax.training import precision, sharding
from clever_jax.training.checkpoints import Checkpoints
from clever_jax.training.steps import DECAY, FROZEN, NO_DECAY, TrainState, eval_step, train_step


def encoder_config(config: ml_collections.ConfigDict, region_dim: int, pretrained_dir: str) -> EncoderConfig:
    """The encoder's configuration: sizes from the pretrained folder's config.json, options from config.model."""
    with open(os.path.join(pretrained_dir, "config.json")) as f:
        hf_config = json.load(f)
    m = config.model
    return EncoderConfig.from_hf(
        hf_config, region_dim=region_dim, num_layers=m.num_layers or None, region_layer_norm=m.region_layer_norm,
        pair_geometry=m.pair_geometry, hidden_dropout=m.hidden_dropout, attention_dropout=m.attention_dropout,
        dtype=jnp.dtype(precision.check_policy(config)), remat=m.remat,
        freeze_word_embeddings=config.train.freeze_word_embeddings,
    )


def create_model(config: ml_collections.ConfigDict, shape: pipeline.InstanceShape,
                 pretrained_dir: str) -> Clever | PairTextModel:
    """The model of config.model: a bag model (Clever) over images, or with encoder "text" a
    language-model baseline over the entity names (models/language.py)."""
    m = config.model
    encoder = encoder_config(config, shape.region_dim, pretrained_dir)
    if m.encoder == "text":
        tokenizer = text.load_tokenizer(pretrained_dir)
        entities, relations = language.name_tables(tokenizer, benchmark_vocab())
        if len(relations) != shape.num_relations:
            raise ValueError(f"the records have {shape.num_relations} relations, the vocabulary {len(relations)}")
        return PairTextModel(encoder=encoder, num_relations=shape.num_relations,
                             head=m.head, entity_pieces=entities, relation_pieces=relations,
                             cls_id=tokenizer.cls_token_id, sep_id=tokenizer.sep_token_id,
                             mask_id=tokenizer.mask_token_id)
    return Clever(encoder=encoder, num_relations=shape.num_relations,
                  encoder_type=m.encoder,
                  head=m.head, eval_head=m.eval_head or m.head, temperature=m.temperature, bag_dropout=m.bag_dropout,
                  classifier_width=m.classifier_width)


def param_labels(config: ml_collections.ConfigDict, params: Any) -> Any:
    """The optimiser group of every parameter: "frozen" (the word embeddings, when
    config.train.freeze_word_embeddings), "no_decay" (names in config.train.no_decay) or "decay"."""
    t = config.train

    def label(path: tuple, leaf: Any) -> str:
        names = [getattr(k, "key", str(k)) for k in path]
        if "word_embeddings" in names and t.freeze_word_embeddings:
            return FROZEN
        return NO_DECAY if names[-1] in t.no_decay else DECAY

    return jax.tree_util.tree_map_with_path(label, params)


def make_optimizer(config: ml_collections.ConfigDict, params: Any) -> optax.GradientTransformation:
    """Global-norm clip -> AdamW with the groups of `param_labels` (no weight decay, or no update at
    all). The learning rate is injected: train_step sets it every step."""
    t = config.train
    group = lambda weight_decay: optax.inject_hyperparams(optax.adamw)(  # noqa: E731
        learning_rate=t.lr, b1=t.adam_b1, b2=t.adam_b2, eps=t.adam_eps, weight_decay=weight_decay)
    return optax.chain(
        optax.clip_by_global_norm(t.grad_clip),
        optax.multi_transform({DECAY: group(t.weight_decay), NO_DECAY: group(0.0), FROZEN: optax.set_to_zero()},
                              param_labels(config, params)),
    )


def batch_bucket(batch: dict[str, np.ndarray], multiple: int, need: np.ndarray | None = None) -> tuple[int, ...]:
    """(text length, regions) to trim this process's local batch to: the largest of every process's
    pipeline.bucket_lengths, so that all processes assemble global arrays of the same shapes. With a
    packed batch's `need` (data.packing.needs: text and region slots, each length class's row), also the
    most any process needs, for sizes all processes share.

    With several processes that takes an all-gather, a device computation queued behind the step
    in flight: the host waits for that step before it can send the next batch (configs/vg.py turns
    buckets off for this reason)."""
    sizes = pipeline.bucket_lengths(batch, multiple)
    if need is not None:
        sizes = np.concatenate([sizes, need])
    if (multiple or need is not None) and jax.process_count() > 1:
        sizes = multihost_utils.process_allgather(sizes).max(axis=0)
    return tuple(int(size) for size in sizes)


def model_inputs(model: Clever | PairTextModel) -> tuple[str, ...]:
    """The batch arrays `model` reads."""
    return language.INPUTS if isinstance(model, PairTextModel) else pipeline.MODEL_INPUTS


def batch_specs(shape: pipeline.InstanceShape, batch_size: int,
                keys: tuple[str, ...] | None = pipeline.MODEL_INPUTS) -> dict[str, jax.ShapeDtypeStruct]:
    """The shape and dtype of each batch array in `keys` (None: all) for `batch_size` bags padded to
    Lt and Lr, the largest bucket: pipeline.bag_layout with a leading B."""
    return {k: jax.ShapeDtypeStruct((batch_size, *bag_shape), dtype)
            for k, (bag_shape, dtype) in pipeline.bag_layout(shape).items() if keys is None or k in keys}


LAMA_NEEDS_MLM = (
    "LAMA scores relations with the checkpoint's masked-LM head (cls.predictions.*) and {path} has none (the "
    "packaged MiniLM is a sentence encoder without one): give a BERT checkpoint folder that has it (config.json, "
    "vocab.txt and model.safetensors of a BertForMaskedLM, e.g. bert-base-uncased) with "
    "--config.model.pretrained_dir=FOLDER")


# By default XLA:CPU hands matrix products and reductions to YNNPACK and, in a forward-only step,
# fuses chains of a BERT layer (a product with the GELU, LayerNorm or softmax after it) into single
# YNNPACK graphs, which run slower there. YNNPACK for single matrix products only runs the demo's
# evaluation step faster (docs/performance.md); the train step keeps the default, whose
# reductions pay there. An experimental XLA:CPU option: CPU meshes only.
CPU_EVAL_COMPILER_OPTIONS = {"xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT"}


@dataclasses.dataclass
class Run:
    """The parts of a run (see `build`).

    Attributes:
      config: the run's config. records_dir: its records ("" for synthetic batches).
      pretrained_dir: the pretrained encoder's folder (data.text.pretrained_dir: its config.json,
        tokenizer and weights). grades: the generated world's graded truth (None: real data, or
        built without a workdir).
      shape: the batch layout's sizes (pipeline.bag_layout). model: the Clever model (or a
        language-model baseline, PairTextModel, which reads no images).
      mesh: the device mesh; batch_sharding: bags split over all its devices.
      tx: the optimiser. abstract_params: shapes, dtypes and shardings of the parameters.
      state_shardings: shardings of every TrainState leaf.
      train_step: the jitted train_step (state donated): (state, device batch) -> (state, metrics).
      eval_step: the jitted eval_step: (params, device batch) -> (scores [B, R+1], evidence [B, R+1, N]).
      num_bags: bags per split of the records (empty without records).
      batch_shapes_seen: (local bags, text length, regions[, packing_sizes]) of every device batch made
        so far.
      packing_sampled: with config.data.packing, the sample that sets the packed capacities
        (`packing_sample`), once read (empty: nothing to sample, the run stays padded).
      packing_capacity: the capacities of training (True) and evaluation (False) batches so far: the
        sample, raised by batches that needed more (`packing_sizes`).
    """

    config: ml_collections.ConfigDict
    records_dir: str
    pretrained_dir: str
    grades: np.ndarray | None
    shape: pipeline.InstanceShape
    model: Clever | PairTextModel
    mesh: jax.sharding.Mesh
    batch_sharding: jax.sharding.NamedSharding
    tx: optax.GradientTransformation
    abstract_params: Any
    state_shardings: TrainState
    train_step: Any
    eval_step: Any
    num_bags: dict[str, int]
    batch_shapes_seen: set[tuple[int, ...]] = dataclasses.field(default_factory=set)
    packing_sampled: np.ndarray | None = None
    packing_capacity: dict[bool, np.ndarray] = dataclasses.field(default_factory=dict)

    def init_params(self) -> Any:
        """Fresh parameters (config.seed), with the pretrained encoder merged in when config.model.pretrained."""
        config = self.config
        specs = batch_specs(self.shape, config.data.eval_batch_size, model_inputs(self.model))
        batch = jax.tree.map(lambda x: jnp.zeros(x.shape, x.dtype), specs)
        params = jax.jit(self.model.init)(jax.random.key(config.seed), batch)["params"]
        if config.model.pretrained and config.model.encoder == "text":
            pretrained, report = weights.text_model_params(self.pretrained_dir, self.model.encoder,
                                                           self.model.head)
            params = weights.merge_pretrained(flax.core.unfreeze(params), pretrained)
            logging.info("Pretrained weights from %s: %d tensors loaded, initial values for %s", report.source,
                         len(report.loaded), ", ".join(sorted(params.keys() - pretrained.keys())) or "nothing")
        elif config.model.pretrained and config.model.encoder == "cnn":  # Only its word vectors.
            table, source = weights.load_word_embeddings(self.pretrained_dir)
            params = flax.core.unfreeze(params)
            params["instance_encoder"] = weights.merge_pretrained(
                params["instance_encoder"], {"embeddings": {"word_embeddings": {"embedding": table}}})
            logging.info("Pretrained word vectors from %s; the region MLP starts from its initial values", source)
        elif config.model.pretrained:
            pretrained, report = weights.load_pretrained(self.pretrained_dir, self.model.encoder)
            params = flax.core.unfreeze(params)
            params["instance_encoder"] = weights.merge_pretrained(params["instance_encoder"], pretrained)
            logging.info("Pretrained weights from %s: %d tensors loaded, %d unused (other layers, pooler), kept "
                         "initial values for %s", report.source, len(report.loaded), len(report.ignored),
                         ", ".join(report.not_in_checkpoint) or "nothing")
        return params

    def initial_state(self, params: Any = None) -> TrainState:
        """The step-0 state placed on the mesh: `params`, else the best parameters of config.train.init_from,
        else `init_params()`."""
        if params is None and os.path.isfile(self.config.train.init_from):
            params = self.imported_params(self.config.train.init_from)
        elif params is None and self.config.train.init_from:
            logging.info("Initialising from the best checkpoint of %s", self.config.train.init_from)
            params = Checkpoints(self.config.train.init_from).restore_params("best", self.abstract_params)
        params = jax.device_put(self.init_params() if params is None else params, self.state_shardings.params)
        opt_state = jax.jit(self.tx.init, out_shardings=self.state_shardings.opt_state)(params)
        return jax.device_put(self._step_zero(params, opt_state), self.state_shardings)

    def zero_shot_params(self) -> Any:
        """The parameters an untrained run is evaluated with (config.train.max_epochs=0; LAMA): the
        pretrained ones, which only the prompt model's masked-LM head scores relations with.

        Raises:
          ConfigError: another model (its classifier would be random), or a checkpoint without a
            masked-LM head."""
        if not (isinstance(self.model, PairTextModel) and self.model.head == "prompt"):
            raise ConfigError("nothing was trained in this workdir (config.train.max_epochs=0) and only the prompt "
                             "model (model.encoder='text', model.head='prompt': LAMA) scores without training")
        if not self.config.model.pretrained or not weights.has_mlm_head(self.pretrained_dir):
            raise ConfigError(LAMA_NEEDS_MLM.format(path=self.pretrained_dir))
        return self.init_params()

    def imported_params(self, path: str) -> Any:
        """Parameters from the published bag model's state dict file (weights.model_params_from_state_dict):
        its encoder and classifier, our init for the rest (e.g. the pair-geometry embedding)."""
        if self.config.model.encoder != "vlp":
            raise ValueError(f"{path}: the published bag model has the VLP encoder; config.model.encoder is "
                             f"{self.config.model.encoder!r}")
        classifier = traverse_util.flatten_dict(flax.core.unfreeze(self.abstract_params["classifier"]))
        shapes = {("classifier", *key): leaf.shape for key, leaf in classifier.items()}
        state = weights.load_state_file(path)
        pretrained, report = weights.model_params_from_state_dict(state, self.model.encoder, shapes, source=path)
        logging.info("Initialising from the bag model %s", report.summary())
        return weights.merge_pretrained(flax.core.unfreeze(self.init_params()), pretrained)

    def abstract_state(self) -> TrainState:
        """Shapes, dtypes and shardings of the train state (a restore or compilation target)."""
        state = jax.eval_shape(lambda params: self._step_zero(params, self.tx.init(params)), self.abstract_params)
        return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), state,
                            self.state_shardings)

    def _step_zero(self, params: Any, opt_state: Any) -> TrainState:
        return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=opt_state,
                          lr_scale=jnp.ones((), jnp.float32), loss_scale=precision.initial_loss_scale(self.config))

    def local_batch_size(self, train: bool) -> int:
        """This process's share of a global batch (config.data.batch_size or eval_batch_size)."""
        data = self.config.data
        size = data.batch_size if train else data.eval_batch_size
        if size % self.mesh.size:
            raise ValueError(f"batch size {size} must be a multiple of the number of devices ({self.mesh.size})")
        return size // jax.process_count()

    def loader(self, split: str, *, train: bool):
        """This process's loader of a split's bags (training: shuffled by config.data.shuffle_seed,
        repeated); without images for a language-model baseline."""
        data = self.config.data
        return pipeline.make_loader(self.records_dir, split, self.shape, self.local_batch_size(train), train=train,
                                    seed=data.shuffle_seed, worker_count=data.worker_count,
                                    with_images=not isinstance(self.model, PairTextModel))

    def device_batch(self, batch: dict, *, train: bool) -> dict:
        """The global device batch of this process's `batch` (a training batch, or one to evaluate), its
        padding trimmed to a bucket, and packed with config.data.packing.

        Text and region axes are cut to the smallest multiple of config.data.length_multiple that
        holds every process's real tokens (`batch_bucket`); 0 keeps Lt and Lr. Packing adds where
        the real tokens are (data/packing.py), in groups of one device's bags of one accumulation
        micro-batch (training batches), with the run's capacities (`packing_sample`) unless a
        group of any process needs more. The jitted steps compile once per shape, logged when first
        seen. A language-model baseline gets language.BATCH_KEYS only.
        """
        if isinstance(self.model, PairTextModel):
            return sharding.global_batch({k: batch[k] for k in language.BATCH_KEYS}, self.batch_sharding)
        groups = self.packing_groups(train)
        need = packing.needs(batch, *groups, len(self.packing_sample()) - 2) if groups else None
        text_len, num_regions, *need = batch_bucket(batch, self.config.data.length_multiple, need)
        batch = pipeline.trim_padding(batch, text_len, num_regions)
        slots = self.packing_sizes(batch, need, train) if groups else ()
        shape = (len(batch["bag_mask"]), text_len, num_regions, *slots)
        if shape not in self.batch_shapes_seen:
            self.batch_shapes_seen.add(shape)
            logging.info("New batch shape (the step compiles for it): %d bags per process, text %d of %d, "
                         "regions %d of %d%s", *shape[:2], self.shape.text_len, num_regions, self.shape.num_regions,
                         f", packed into {slots[0]} text and {slots[1]} region slots per group, attention rows "
                         f"{'/'.join(map(str, slots[2:]))}" if slots else "")
        if slots:
            batch = packing.pack(batch, *groups, slots)
        return sharding.global_batch(batch, self.batch_sharding)

    def groups(self, train: bool) -> tuple[int, int]:
        """(local devices, accumulation steps): the groups a training (`train`) or evaluation batch packs in."""
        return self.mesh.size // jax.process_count(), self.config.train.grad_accum_steps if train else 1

    def packing_groups(self, train: bool) -> tuple[int, int] | None:
        """`groups` where the run packs its batches; None without config.data.packing, for encoders without a
        token sequence (CNN, language models), or without training batches to sample capacities from (a
        knowledge base from a detector's output: padded)."""
        packs = self.config.data.packing and getattr(self.model, "encoder_type", None) == "vlp"
        return self.groups(train) if packs and self.packing_sample() is not None else None

    def packing_sizes(self, batch: dict[str, np.ndarray], need: Any, train: bool) -> tuple[int, ...]:
        """(Ct, Cr, R_1, ..., R_K): compact slots per group of a trimmed training (`train`) or evaluation batch
        and the rows of its length classes, whose fullest groups (of any process) need `need` [2 + K]: the run's
        capacities, raised where the batch needs more and kept for the later batches of its kind
        (`packing_capacity`; data/packing.py)."""
        groups = self.packing_groups(train)
        sampled = self.packing_capacity.get(train, self.packing_sample())
        self.packing_capacity[train] = packing.grow(sampled, need, len(batch["bag_mask"]) // (groups[0] * groups[1]))
        return packing.capacities(batch, *groups, self.packing_capacity[train])

    def packing_sample(self) -> np.ndarray | None:
        """What the training groups of the first packing.SAMPLE_BATCHES training batches need at most
        (data.packing.sample: text and region tokens per bag, each length class's longest instance), which sets
        the packed capacities; the same batches on every process, read once; None without a whole training
        batch. Synthetic batches (no records: the benchmark) set `packing_sampled` from their own first
        batches instead."""
        if self.packing_sampled is None:
            batches = []
            if self.num_bags.get("train"):
                loader = pipeline.make_loader(self.records_dir, "train", self.shape,
                                              self.local_batch_size(train=True), train=True,
                                              seed=self.config.data.shuffle_seed,
                                              shard_options=grain.sharding.NoSharding())
                batches = list(itertools.islice(iter(loader), packing.SAMPLE_BATCHES))
            self.packing_sampled = (packing.sample(batches, *self.groups(train=True), self.config.data.packing_classes)
                                    if batches else np.zeros(0))
        return self.packing_sampled if self.packing_sampled.size else None

    def scorer(self, split: str) -> evaluate.Scorer:
        """What evaluation scores `split` with: the jitted eval step on device batches, its outputs
        back as this process's rows, over this process's loader; every process runs as many steps."""
        size, processes = self.local_batch_size(train=False), jax.process_count()
        num_bags = self.num_bags[split]
        if num_bags < processes:
            raise ValueError(f"split {split!r} has {num_bags} bags, fewer than the {processes} processes")

        def step_fn(params: Any, batch: dict) -> tuple[jax.Array, jax.Array]:
            outputs = self.eval_step(params, self.device_batch(batch, train=False))
            return multihost_utils.global_array_to_host_local_array(outputs, self.mesh, self.batch_sharding.spec)

        return evaluate.Scorer(split=split, step_fn=step_fn, loader=self.loader(split, train=False), batch_size=size,
                               num_steps=math.ceil(math.ceil(num_bags / processes) / size),  # The largest shard's.
                               num_bags=num_bags, evidence_dtype=self.config.extract.evidence_dtype)


def build(config: ml_collections.ConfigDict, records_dir: str = "", devices: list | None = None,
          workdir: str = "") -> Run:
    """The run of `config` over `records_dir` ("" = synthetic: sizes from the config) on `devices` (default: all),
    evaluated against the graded truth of the generated world of the run in `workdir` (config.data.world_dir, or
    WORKDIR/world; none without a workdir, or for real data).

    The train step is jitted for config.data.batch_size bags per step, which must split evenly
    over the devices and config.train.grad_accum_steps micro-batches.
    """
    shape = pipeline.instance_shape(config.data, records_dir) if records_dir else synthetic.instance_shape(config.data)
    pretrained_dir = text.pretrained_dir(config)
    model = create_model(config, shape, pretrained_dir)
    mesh = sharding.make_mesh(config, devices)
    batch_sharding = sharding.batch_sharding(mesh)
    replicated = sharding.replicated(mesh)
    specs = batch_specs(shape, config.data.eval_batch_size, model_inputs(model))
    params = jax.eval_shape(lambda batch: model.init(jax.random.key(0), batch)["params"], specs)
    tx = make_optimizer(config, params)
    m = config.mesh
    tree_shardings = functools.partial(sharding.tree_shardings, mesh=mesh, mode=m.params, min_size=m.fsdp_min_size)
    state_shardings = TrainState(step=replicated, params=tree_shardings(params),
                                 opt_state=tree_shardings(jax.eval_shape(tx.init, params)), lr_scale=replicated,
                                 loss_scale=jax.tree.map(lambda _: replicated, precision.initial_loss_scale(config)))
    abstract_params = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), params,
                                   state_shardings.params)

    batch_size, steps = config.data.batch_size, config.train.grad_accum_steps
    if steps < 1 or batch_size % (mesh.size * steps):
        raise ValueError(
            f"config.data.batch_size={batch_size} must be a multiple of the {mesh.size} devices x "
            f"config.train.grad_accum_steps={steps}: every device takes the same number of bags per micro-batch")
    jitted_train = jax.jit(functools.partial(train_step, model=model, tx=tx, config=config),
                           in_shardings=(state_shardings, batch_sharding), out_shardings=(state_shardings, replicated),
                           donate_argnums=0)
    on_cpu = all(d.platform == "cpu" for d in mesh.devices.flat)
    jitted_eval = jax.jit(functools.partial(eval_step, model=model),
                          in_shardings=(state_shardings.params, batch_sharding), out_shardings=batch_sharding,
                          compiler_options=CPU_EVAL_COMPILER_OPTIONS if on_cpu else None)
    splits = open_records(records_dir)[1] if records_dir else {}
    grades = evaluate.world_grades(config, workdir) if workdir else None
    return Run(config=config, records_dir=records_dir, pretrained_dir=pretrained_dir, grades=grades, shape=shape,
               model=model, mesh=mesh, batch_sharding=batch_sharding, tx=tx, abstract_params=abstract_params,
               state_shardings=state_shardings, train_step=jitted_train, eval_step=jitted_eval,
               num_bags={split: len(source) for split, source in splits.items()})
