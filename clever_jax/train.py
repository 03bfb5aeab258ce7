"""Training: state, pure train and eval steps, the loop, plateau decay and checkpoints.

One jitted step per batch. The learning rate is warm-up(step) x plateau scale, where the scale
drops x`decay` each time the validation score (AUC + w * mAUC) stops improving for more than
`patience` evaluations (then `cooldown` evaluations pass before counting again); training stops
after `max_decays` decays or `max_epochs` epochs. Checkpoints: WORKDIR/checkpoints/latest (for
resuming: parameters, optimiser, schedule, step and input-pipeline position) and
WORKDIR/checkpoints/best (the best validation score so far).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import signal
import time
from typing import Any

import flax
import grain
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import orbax.checkpoint as ocp
from absl import logging
from jax.experimental import multihost_utils

from clever_jax import distributed, evaluate, precision, sharding, weights
from clever_jax.data import pipeline
from clever_jax.data.records import read_manifest
from clever_jax.models.clever import Clever, bag_loss
from clever_jax.models.encoder import EncoderConfig

FROZEN = "frozen"


class StopSignal:
    """Stops the train loop after a step when a stop signal arrives: SIGTERM (preemption) or SIGINT (Ctrl-C).

    The train step donates the state: an exception raised while a step is dispatched would leave
    the loop holding deleted arrays. While the loop runs, `handle` only records the signal and
    `check` (called by the loop before each step, so after the previous step's validation and
    saves, and once after the last) raises KeyboardInterrupt; the loop then saves the latest state
    and re-raises. Outside the loop `handle` raises at once.

    Multi-host: every process must stop after the same step, since saving is collective (a process
    that stopped alone would wait in the save for the others, which wait for it in the next step).
    jax.distributed.initialize starts JAX's preemption service, whose SIGTERM handler replaces ours
    (main.py installs ours before): it tells the coordination service, which sets the sync point to
    the step boundary after the furthest any process has reached, and `check` asks whether this
    boundary is it (multihost_utils.reached_preemption_sync_point: a lock and a comparison on the
    host, no collective, no wait on the devices). `handle` passes SIGINT on to the service as
    SIGTERM. So a signal to any one process stops every process after the same step, about a second
    later (the service polls for SIGTERM once a second) plus a step; all save the same latest step
    and raise the same KeyboardInterrupt. Boundaries are numbered over the process's life, not by
    train step, so a SIGTERM before the loop (start-up, restoring) stops it at its first check.
    Outside the loop, SIGINT stops only its own process (the others fail when the coordination
    service misses its heartbeats); SIGTERM is held until the next train loop, if there is one.
    """

    def __init__(self):
        self.in_loop = False
        self.received: int | None = None
        self.boundaries = 0  # Multi-host: step boundaries checked by this process (the preemption sync id).

    def handle(self, signum: int, frame: Any) -> None:
        del frame
        if not self.in_loop:
            raise KeyboardInterrupt(f"signal {signum}")
        if jax.process_count() > 1 and signum != signal.SIGTERM:
            signal.raise_signal(signal.SIGTERM)  # To JAX's preemption service, which tells every process.
        else:
            self.received = signum

    def check(self) -> None:
        """Raises KeyboardInterrupt if the loop must stop at this step boundary."""
        if jax.process_count() > 1:
            self.boundaries += 1
            if multihost_utils.reached_preemption_sync_point(self.boundaries):
                raise KeyboardInterrupt("a stop signal reached one of the processes: all stop at this step")
        elif self.received is not None:
            signum, self.received = self.received, None
            raise KeyboardInterrupt(f"signal {signum}")


STOP = StopSignal()  # main.py installs STOP.handle for SIGTERM and SIGINT.


@flax.struct.dataclass
class TrainState:
    """Everything a train step changes.

    lr_scale is the plateau decay factor (host-controlled); loss_scale the dynamic loss scale of
    float16 compute (None for float32 and bfloat16).
    """

    step: jax.Array
    params: Any
    opt_state: Any
    lr_scale: jax.Array
    loss_scale: precision.LossScale | None = None


@dataclasses.dataclass
class Plateau:
    """Reduce-on-plateau bookkeeping, updated on the host after each validation.

    Same rule as PyTorch's ReduceLROnPlateau (mode max, threshold 0), which the published code uses.
    """

    best: float = -np.inf
    bad_evals: int = 0
    cooldown_left: int = 0
    decays: int = 0

    def update(self, score: float, patience: int, cooldown: int) -> tuple[bool, bool]:
        """Records a validation score; returns (improved, decay now)."""
        improved = score > self.best
        if improved:
            self.best, self.bad_evals = score, 0
        else:
            self.bad_evals += 1
        if self.cooldown_left > 0:
            self.cooldown_left -= 1
            self.bad_evals = 0
        if self.bad_evals > patience:
            self.decays, self.bad_evals, self.cooldown_left = self.decays + 1, 0, cooldown
            return improved, True
        return improved, False


# ---------------------------------------------------------------------------------------------
# Model and optimiser.


def checkpoint_dir(config: ml_collections.ConfigDict) -> str:
    """The pretrained BERT folder: config.model.checkpoint_dir, or the packaged MiniLM."""
    return config.model.checkpoint_dir or weights.default_checkpoint_dir()


def encoder_config(config: ml_collections.ConfigDict, region_dim: int) -> EncoderConfig:
    """The encoder's configuration from the checkpoint folder's config.json and config.model."""
    with open(os.path.join(checkpoint_dir(config), "config.json")) as f:
        hf_config = json.load(f)
    return EncoderConfig.from_hf(
        hf_config,
        region_dim=region_dim,
        num_layers=config.model.num_layers or None,
        region_layer_norm=config.model.region_layer_norm,
        dtype=jnp.dtype(precision.check_policy(config)),
        remat=config.model.remat,
        freeze_word_embeddings=config.train.freeze_word_embeddings,
    )


def create_model(config: ml_collections.ConfigDict, records_dir: str) -> Clever:
    manifest = read_manifest(records_dir)
    model = config.model
    return Clever(
        encoder=encoder_config(config, manifest["region_dim"]),
        num_relations=manifest["num_relations"],
        head=model.head,
        eval_head=model.eval_head or model.head,
        temperature=model.temperature,
        bag_dropout=model.bag_dropout,
    )


def init_params(model: Clever, config: ml_collections.ConfigDict, batch: dict, seed: int) -> Any:
    """Fresh parameters, with the pretrained BERT weights merged in when config.model.pretrained.

    `batch` gives the input shapes (arrays or jax.ShapeDtypeStruct).
    """
    batch = jax.tree.map(lambda x: jnp.zeros(x.shape, x.dtype), batch)
    params = jax.jit(model.init)(jax.random.key(seed), batch)["params"]
    if config.model.pretrained:
        pretrained, report = weights.load_pretrained(checkpoint_dir(config), model.encoder)
        params = flax.core.unfreeze(params)
        params["instance_encoder"] = weights.merge_pretrained(params["instance_encoder"], pretrained)
        logging.info("Pretrained weights from %s: %d tensors loaded, %d unused (other layers, pooler), kept initial "
                     "values for %s", report.source, len(report.loaded), len(report.ignored),
                     ", ".join(report.not_in_checkpoint) or "nothing")
    return params


def _label(path: tuple, leaf: Any) -> str:
    names = [getattr(k, "key", str(k)) for k in path]
    if "word_embeddings" in names:
        return FROZEN
    return "no_decay" if names[-1] in ("bias", "scale", "out_bias") else "decay"


def make_optimizer(config: ml_collections.ConfigDict, params: Any) -> optax.GradientTransformation:
    """Clip 1.0 -> AdamW (no weight decay on biases and LayerNorm) ; word embeddings frozen."""
    t = config.train
    labels = jax.tree_util.tree_map_with_path(_label, params)
    if not t.freeze_word_embeddings:
        labels = jax.tree.map(lambda label: "decay" if label == FROZEN else label, labels)

    def adamw(weight_decay: float):
        return optax.inject_hyperparams(optax.adamw)(learning_rate=t.lr, weight_decay=weight_decay)

    return optax.chain(
        optax.clip_by_global_norm(t.grad_clip),
        optax.multi_transform(
            {"decay": adamw(t.weight_decay), "no_decay": adamw(0.0), FROZEN: optax.set_to_zero()}, labels
        ),
    )


def warmup_lr(config: ml_collections.ConfigDict, step: jax.Array) -> jax.Array:
    """Linear warm-up from lr/10 to lr over warmup_steps, then constant (before plateau decay)."""
    t = config.train
    fraction = jnp.minimum(step / max(t.warmup_steps, 1), 1.0)
    return t.lr * (0.1 + 0.9 * fraction)


def _set_lr(opt_state: Any, lr: jax.Array) -> Any:
    """Writes the learning rate into every injected-hyperparameter state."""

    def visit(node: Any) -> Any:
        if isinstance(node, optax.InjectHyperparamsState):
            return node._replace(hyperparams={**node.hyperparams, "learning_rate": lr})
        return node

    return jax.tree.map(visit, opt_state, is_leaf=lambda n: isinstance(n, optax.InjectHyperparamsState))


# ---------------------------------------------------------------------------------------------
# Steps (pure functions; jitted by the loop).


def micro_batches(batch: dict, steps: int) -> dict:
    """Splits a batch [B, ...] into `steps` micro-batches [steps, B / steps, ...].

    Micro-batch i holds bags i, i + steps, i + 2 steps, ...: each device's contiguous block of bags
    contributes its own share to every micro-batch, so a batch sharded over bags gives micro-batches
    sharded the same way, without moving data between devices.
    """
    return jax.tree.map(lambda x: x.reshape(x.shape[0] // steps, steps, *x.shape[1:]).swapaxes(0, 1), batch)


def loss_and_grads(
    params: Any, batch: dict, rng: jax.Array, scale: jax.Array | float, *, model: Clever,
    config: ml_collections.ConfigDict,
) -> tuple[jax.Array, Any]:
    """Mean loss [] and float32 gradients of a batch, over config.train.grad_accum_steps micro-batches.

    The loss is multiplied by `scale` before differentiation and the gradients divided by it after
    (dynamic loss scaling; 1.0 without). With k micro-batches the gradient is the mean of the k
    micro-batch gradients, which is the whole batch's gradient when every micro-batch holds as many
    real bags (training batches are always full). Micro-batch i draws its dropout from fold_in(rng, i).
    """

    def scaled_loss(params, micro, key):
        logits = model.apply({"params": params}, micro, micro["target"], method=Clever.train_logits,
                             rngs={"dropout": key})
        loss = bag_loss(logits, micro["labels"], micro["target"], micro["bag_mask"], config.train.loss)
        return loss * scale, loss

    grad_fn = jax.value_and_grad(scaled_loss, has_aux=True)
    steps = config.train.grad_accum_steps
    if steps == 1:
        (_, loss), grads = grad_fn(params, batch, rng)
    else:

        def accumulate(total, inputs):
            index, micro = inputs
            (_, loss), grads = grad_fn(params, micro, jax.random.fold_in(rng, index))
            return jax.tree.map(jnp.add, total, (loss, grads)), None

        zeros = (jnp.zeros((), jnp.float32), jax.tree.map(jnp.zeros_like, params))
        (loss, grads), _ = jax.lax.scan(accumulate, zeros, (jnp.arange(steps), micro_batches(batch, steps)))
        loss = loss / steps
        scale = scale * steps
    return loss, jax.tree.map(lambda g: g / scale, grads)


def train_step(
    state: TrainState, batch: dict, *, model: Clever, tx: optax.GradientTransformation,
    config: ml_collections.ConfigDict,
) -> tuple[TrainState, dict]:
    """One optimiser step on one batch.

    A non-finite loss or gradient leaves the parameters and optimiser state unchanged (the step
    counter still advances with the data); with float16 loss scaling it also halves the scale.
    """
    rng = jax.random.fold_in(jax.random.key(config.seed), state.step)  # threefry: same bits however sharded
    scale = 1.0 if state.loss_scale is None else state.loss_scale.scale
    loss, grads = loss_and_grads(state.params, batch, rng, scale, model=model, config=config)
    grad_norm = optax.global_norm(grads)
    lr = warmup_lr(config, state.step) * state.lr_scale
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)

    def update(state: TrainState) -> TrainState:
        updates, opt_state = tx.update(grads, _set_lr(state.opt_state, lr), state.params)
        return state.replace(params=optax.apply_updates(state.params, updates), opt_state=opt_state)

    # A branch rather than a select between the new and the old state, which kept the old state alive:
    # XLA then copied the optimiser state every step instead of updating it in place.
    new = jax.lax.cond(finite, update, lambda state: state, state)
    new = new.replace(
        step=state.step + 1,
        loss_scale=None if state.loss_scale is None else state.loss_scale.update(jnp.isfinite(grad_norm)),
    )
    return new, {"loss": loss, "grad_norm": grad_norm, "lr": lr, "finite": finite, "loss_scale": scale}


def eval_step(params: Any, batch: dict, *, model: Clever) -> tuple[jax.Array, jax.Array]:
    """Scores [B, R+1] and evidence [B, R+1, N] of a batch."""
    return model.apply({"params": params}, batch)


@dataclasses.dataclass
class SplitOutputs:
    """Everything an evaluation pass produces for one split (P bags, N instances), in bag id order.

    scores [P, R+1], labels [P, R+1] bool, pairs [P, 2], bags [P], evidence [P, R+1, N] (when
    `keep_evidence`, else None), gold_attention [P, N] (the evidence of each bag's gold relations,
    averaged), images/subjects/objects/annotated/instance_mask [P, N].
    """

    scores: np.ndarray
    gold_attention: np.ndarray
    labels: np.ndarray
    pairs: np.ndarray
    bags: np.ndarray
    evidence: np.ndarray | None
    images: np.ndarray
    subjects: np.ndarray
    objects: np.ndarray
    annotated: np.ndarray
    instance_mask: np.ndarray


def _padded_batches(loader, batch_size: int, num_steps: int | None):
    """The loader's batches padded to `batch_size`, then empty batches (bag_mask False) up to `num_steps`."""
    count, empty = 0, None
    for batch in loader:
        if num_steps is not None and count == num_steps:
            raise ValueError(f"the loader has more than the {num_steps} batches expected")
        empty = {k: v[:0] for k, v in batch.items()}
        count += 1
        yield pipeline.pad_batch(batch, batch_size)
    if count < (num_steps or 0) and empty is None:
        raise ValueError("this process's shard of the split is empty: the split has fewer bags than processes")
    for _ in range(count, num_steps or 0):
        yield pipeline.pad_batch(empty, batch_size)


def run_eval(params: Any, step_fn, loader, batch_size: int, keep_evidence: bool = False,
             num_steps: int | None = None) -> SplitOutputs:
    """Scores every bag of a loader's split (one pass), over one process or several.

    Args:
      params: passed to `step_fn`.
      step_fn: (params, batch) -> (scores [B, R+1], evidence [B, R+1, N]) of a process-local batch of
        B = `batch_size` bags.
      loader: this process's batches of the split (its shard when there are several processes).
      batch_size: B; short batches are padded with empty bags.
      keep_evidence: keep the evidence of every bag (else only the gold relations' attention).
      num_steps: steps every process runs (shards can differ by a batch: the short ones are padded
        with empty batches, so the processes stay in step); None: as many as the loader has.

    Returns:
      The outputs of every bag of the split, of all processes, on every process, in bag id order
      (the order of the records), so the same whatever the number of processes.
    """
    if num_steps is None and jax.process_count() > 1:
        raise ValueError("run_eval over several processes needs num_steps (the same on every process)")
    keys = ("labels", "pair", "bag", "images", "subjects", "objects", "annotated", "instance_mask", "bag_mask")
    collected: dict[str, list] = {k: [] for k in (*keys, "scores", "evidence", "gold_attention")}
    for batch in _padded_batches(loader, batch_size, num_steps):
        scores, evidence = jax.device_get(step_fn(params, batch))
        gold = batch["labels"] / np.maximum(batch["labels"].sum(axis=1, keepdims=True), 1)
        collected["gold_attention"].append(np.einsum("br,brn->bn", gold, evidence))
        collected["scores"].append(scores)
        if keep_evidence:
            collected["evidence"].append(evidence.astype(np.float16))
        for k in keys:
            collected[k].append(batch[k])
    local = {k: np.concatenate(v) for k, v in collected.items() if v}
    out = multihost_utils.process_allgather(local, tiled=True)  # Processes' rows one after the other.
    order = np.flatnonzero(out["bag_mask"])
    order = order[np.argsort(out["bag"][order], kind="stable")]
    out = {k: v[order] for k, v in out.items()}
    return SplitOutputs(
        scores=out["scores"], gold_attention=out["gold_attention"], labels=out["labels"] > 0, pairs=out["pair"],
        bags=out["bag"].astype(np.int64), evidence=out.get("evidence"), images=out["images"],
        subjects=out["subjects"], objects=out["objects"], annotated=out["annotated"],
        instance_mask=out["instance_mask"],
    )


def concat_outputs(parts: list[SplitOutputs]) -> SplitOutputs:
    """Several splits' outputs as one (e.g. to extract from every pair with images)."""
    fields = [f.name for f in dataclasses.fields(SplitOutputs)]
    return SplitOutputs(**{
        name: None if getattr(parts[0], name) is None else np.concatenate([getattr(p, name) for p in parts])
        for name in fields
    })


def split_metrics(outputs: SplitOutputs, grades: np.ndarray | None) -> dict[str, float]:
    """Held-out metrics over the non-NA relations, Spearman against graded truth if given, and the
    share of the gold relations' attention that lands on instances whose annotations relate the
    pair (positive bags with such instances; `attention_chance` is what uniform attention gets)."""
    metrics = evaluate.held_out_metrics(outputs.scores[:, 1:], outputs.labels[:, 1:])
    positive = ~outputs.labels[:, 0]
    attention = evaluate.attention_on_annotated(outputs.gold_attention[positive], outputs.annotated[positive],
                                                outputs.instance_mask[positive])
    metrics["attention_on_annotated"] = 100 * attention["attention_on_annotated"]
    metrics["attention_chance"] = 100 * attention["chance"]
    if grades is not None:
        metrics["spearman"] = evaluate.commonsense_correlation(outputs.scores[:, 1:], outputs.pairs, grades)
    return {k: float(v) for k, v in metrics.items()}


# ---------------------------------------------------------------------------------------------
# The loop.


def place_state(params: Any, tx: optax.GradientTransformation, mesh: jax.sharding.Mesh, mode: str,
                loss_scale: precision.LossScale | None = None) -> tuple[TrainState, TrainState]:
    """The state at step 0 for `params` (and the float16 `loss_scale`, if any), placed on `mesh`
    (parameters and optimiser state replicated or split over fsdp by `mode`: sharding.tree_shardings),
    and its shardings."""
    replicated = sharding.replicated(mesh)
    param_shardings = sharding.tree_shardings(params, mesh, mode)
    params = jax.device_put(params, param_shardings)
    opt_shardings = sharding.tree_shardings(jax.eval_shape(tx.init, params), mesh, mode)
    opt_state = jax.jit(tx.init, out_shardings=opt_shardings)(params)
    shardings = TrainState(step=replicated, params=param_shardings, opt_state=opt_shardings, lr_scale=replicated,
                           loss_scale=jax.tree.map(lambda _: replicated, loss_scale))
    state = TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=opt_state,
                       lr_scale=jnp.ones((), jnp.float32), loss_scale=loss_scale)
    return jax.device_put(state, shardings), shardings


def jit_train_step(model: Clever, tx: optax.GradientTransformation, config: ml_collections.ConfigDict,
                   mesh: jax.sharding.Mesh, state_shardings: TrainState):
    """train_step jitted for `mesh`: the state (donated) and a batch (bags split over all devices)
    in, the state and replicated metrics out."""
    batch_size, steps = config.data.batch_size, config.train.grad_accum_steps
    if steps < 1 or batch_size % (mesh.size * steps):
        raise ValueError(
            f"config.data.batch_size={batch_size} must be a multiple of the {mesh.size} devices x "
            f"config.train.grad_accum_steps={steps}: every device takes the same number of bags per micro-batch"
        )
    return jax.jit(
        functools.partial(train_step, model=model, tx=tx, config=config),
        in_shardings=(state_shardings, sharding.batch_sharding(mesh)),
        out_shardings=(state_shardings, sharding.replicated(mesh)),
        donate_argnums=0,
    )


# By default XLA:CPU hands matrix products and reductions to YNNPACK and, in a forward-only step,
# fuses chains of a BERT layer (a product with the GELU, LayerNorm or softmax after it) into single
# YNNPACK graphs, which run slower there. YNNPACK for single matrix products only runs the demo's
# evaluation step 1.6-1.9x faster (README "Throughput"); the train step keeps the default, whose
# reductions pay there. An experimental XLA:CPU option: CPU meshes only.
CPU_EVAL_COMPILER_OPTIONS = {"xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT"}


def jit_eval_step(model: Clever, mesh: jax.sharding.Mesh, param_shardings: Any):
    """eval_step jitted for `mesh`: parameters (with `param_shardings`) and a batch (bags split over
    all devices) in, scores and evidence split like the batch out."""
    on_cpu = all(d.platform == "cpu" for d in mesh.devices.flat)
    batch_sharding = sharding.batch_sharding(mesh)
    return jax.jit(functools.partial(eval_step, model=model), in_shardings=(param_shardings, batch_sharding),
                   out_shardings=batch_sharding, compiler_options=CPU_EVAL_COMPILER_OPTIONS if on_cpu else None)


def batch_bucket(batch: dict[str, np.ndarray], multiple: int) -> tuple[int, int]:
    """(text length, regions) to trim this process's local batch to: the largest of every process's
    pipeline.bucket_lengths, so that all processes assemble global arrays of the same shapes.

    With several processes that takes an all-gather, a device computation queued behind the step
    in flight: the host waits for that step before it can send the next batch (configs/vg.py turns
    buckets off for this reason)."""
    lengths = pipeline.bucket_lengths(batch, multiple)
    if multiple and jax.process_count() > 1:
        lengths = multihost_utils.process_allgather(lengths).max(axis=0)
    return int(lengths[0]), int(lengths[1])


class Trainer:
    """Builds the mesh, loaders, model, optimiser and checkpoint managers for one run.

    Batches are global (config.data.batch_size bags over all processes); each JAX process loads
    its share and the global arrays are assembled from the process-local parts.
    """

    def __init__(self, config: ml_collections.ConfigDict, workdir: str, records_dir: str):
        self.config, self.workdir, self.records_dir = config, workdir, records_dir
        self.shape = pipeline.instance_shape(config.data, records_dir)
        self.model = create_model(config, records_dir)
        self.mesh = sharding.make_mesh(config)
        self.batch_sharding = sharding.batch_sharding(self.mesh)
        self.replicated = sharding.replicated(self.mesh)
        self.abstract_params = jax.eval_shape(lambda batch: self.model.init(jax.random.key(0), batch)["params"],
                                              self.batch_shapes())
        self.param_shardings = sharding.tree_shardings(self.abstract_params, self.mesh, config.mesh.params)
        self.eval_step = jit_eval_step(self.model, self.mesh, self.param_shardings)
        self.grades = load_grades(config, workdir)
        self.num_bags = {split: len(source) for split, source in pipeline.open_records(records_dir)[1].items()}
        self.batch_shapes_seen: set[tuple[int, int, int]] = set()  # (local bags, text length, regions).

    def local_batch_size(self, train: bool) -> int:
        """This process's share of a global batch (config.data.batch_size or eval_batch_size)."""
        data = self.config.data
        size = data.batch_size if train else data.eval_batch_size
        if size % self.mesh.size:
            raise ValueError(f"batch size {size} must be a multiple of the number of devices ({self.mesh.size})")
        return size // jax.process_count()

    def loader(self, split: str, *, train: bool):
        return pipeline.make_loader(
            self.records_dir, split, self.shape, self.local_batch_size(train), train=train, seed=self.config.seed,
            worker_count=self.config.data.worker_count,
        )

    def global_batch(self, batch: dict) -> dict:
        """The global device batch of this process's `batch`, its padding trimmed to a bucket.

        Text and region axes are cut to the smallest multiple of config.data.length_multiple that
        holds every process's real tokens (`batch_bucket`); 0 keeps Lt and Lr. The jitted steps
        compile once per bucket shape, logged when first seen.
        """
        text_len, num_regions = batch_bucket(batch, self.config.data.length_multiple)
        shape = (len(batch["bag_mask"]), text_len, num_regions)
        if shape not in self.batch_shapes_seen:
            self.batch_shapes_seen.add(shape)
            logging.info("New batch shape (the step compiles for it): %d bags per process, text %d of %d, "
                         "regions %d of %d", *shape[:2], self.shape.text_len, num_regions, self.shape.num_regions)
        return sharding.global_batch(pipeline.trim_padding(batch, text_len, num_regions), self.batch_sharding)

    def evaluate(self, params: Any, split: str, keep_evidence: bool = False) -> tuple[dict, SplitOutputs]:
        """Metrics and outputs of a split; with several processes each scores its shard and all get everything."""
        size, processes = self.local_batch_size(train=False), jax.process_count()
        num_bags = self.num_bags[split]
        if num_bags < processes:
            raise ValueError(f"split {split!r} has {num_bags} bags, fewer than the {processes} processes")
        num_steps = math.ceil(math.ceil(num_bags / processes) / size)  # Batches of the largest shard.

        def step_fn(params: Any, batch: dict) -> tuple[jax.Array, jax.Array]:
            outputs = self.eval_step(params, self.global_batch(batch))
            return multihost_utils.global_array_to_host_local_array(outputs, self.mesh, self.batch_sharding.spec)

        outputs = run_eval(params, step_fn, self.loader(split, train=False), size, keep_evidence, num_steps)
        return split_metrics(outputs, self.grades), outputs

    def example_params(self) -> Any:
        """The parameters' shapes, dtypes and shardings (for restoring a checkpoint)."""
        return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                            self.abstract_params, self.param_shardings)

    def initial_state(self, tx: optax.GradientTransformation) -> tuple[TrainState, Any]:
        """The state at step 0, placed with its shardings, and those shardings."""
        return place_state(self._initial_params(), tx, self.mesh, self.config.mesh.params,
                           precision.initial_loss_scale(self.config))

    def train(self) -> dict:
        """Trains until the plateau schedule or max_epochs stops it; returns the best validation metrics."""
        config, t = self.config, self.config.train
        tx = make_optimizer(config, self.abstract_params)
        state, state_shardings = self.initial_state(tx)
        step_fn = jit_train_step(self.model, tx, config, self.mesh, state_shardings)
        checkpoints = Checkpoints(self.workdir)
        iterator = iter(self.loader("train", train=True))
        plateau, history = Plateau(), []
        restored = checkpoints.restore_latest(state, iterator)
        if restored is not None:
            state, meta = restored
            plateau, history = Plateau(**meta["plateau"]), meta["history"]
            logging.info("Resumed from step %d", int(state.step))
        steps_per_epoch = max(self.num_bags["train"] // config.data.batch_size, 1)
        total_steps = t.max_epochs * steps_per_epoch
        eval_every = t.eval_every_steps or steps_per_epoch
        step, clock, window = int(state.step), time.perf_counter(), []
        scaling, skipped = state.loss_scale is not None, 0
        # With float16 loss scaling an overflowing gradient is expected now and then: the step is skipped
        # and the scale halved. Anything else non-finite (or an overflow at scale 1) stops the run.
        stops = lambda m: not np.isfinite(m["loss"]) or not (m["finite"] or (scaling and m["loss_scale"] > 1))  # noqa: E731

        def save(kind: str, metrics: dict | None = None) -> None:
            meta = {"plateau": dataclasses.asdict(plateau), "history": history}
            checkpoints.save(kind, state, meta, metrics, iterator)

        STOP.in_loop = True
        try:
            while step < total_steps and plateau.decays < t.max_decays:
                STOP.check()  # Here, not after the step: a stop never skips the step's validation.
                # Steps are dispatched asynchronously: the next batch loads while this one computes.
                state, metrics = step_fn(state, self.global_batch(next(iterator)))
                step += 1
                window.append(metrics)
                last = step == total_steps
                if step % t.log_every and step % eval_every and not last:
                    continue
                window = jax.device_get(window)
                bad = next((m for m in window if stops(m)), None)
                skipped += sum(not m["finite"] for m in window)
                if bad is not None:
                    save("latest")
                    raise FloatingPointError(
                        f"non-finite loss {bad['loss']} or gradient norm {bad['grad_norm']} before step {step}; "
                        f"those steps were skipped and the last finite state is saved in {checkpoints.root}/latest."
                        " Lower config.train.lr or check the input data."
                    )
                elapsed, clock = time.perf_counter() - clock, time.perf_counter()
                rate = len(window) * config.data.batch_size / elapsed
                logging.info("step %d/%d loss %.4f lr %.2e grad_norm %.2f %.1f bags/s ETA %.0f s%s", step, total_steps,
                             np.mean([m["loss"] for m in window]), window[-1]["lr"], window[-1]["grad_norm"], rate,
                             (total_steps - step) * config.data.batch_size / rate,
                             f" loss_scale {window[-1]['loss_scale']:.0f} ({skipped} overflow steps skipped)"
                             if scaling else "")
                window = []
                if step % eval_every == 0 or last:
                    val, _ = self.evaluate(state.params, "val")
                    score = val["auc"] + t.mauc_weight * val["mauc"]
                    improved, decay = plateau.update(score, t.patience, t.cooldown)
                    history.append({"step": step, "score": score, **val})
                    logging.info("step %d validation score %.2f (best %.2f) %s", step, score, plateau.best,
                                 " ".join(f"{k}={v:.2f}" for k, v in val.items()))
                    if improved:
                        save("best", val)
                    if decay:
                        state = state.replace(lr_scale=state.lr_scale * t.decay)
                        logging.info("learning rate scale -> %.0e (decay %d)", float(state.lr_scale), plateau.decays)
                    save("latest")
                    clock = time.perf_counter()
            STOP.check()  # A signal during the last step or evaluation.
        except KeyboardInterrupt:
            save("latest")
            logging.warning("Interrupted at step %d; saved %s/latest, run again to resume", step, checkpoints.root)
            raise
        finally:
            STOP.in_loop = False
            checkpoints.wait()  # Saves are asynchronous: finish them before returning or raising.
        if distributed.is_main_process():
            with open(os.path.join(self.workdir, "history.json"), "w") as f:
                json.dump(history, f, indent=1)
        return max(history, key=lambda h: h["score"]) if history else {}

    def batch_shapes(self) -> dict:
        """Shapes of one evaluation batch padded to Lt and Lr, the largest bucket (no data read)."""
        b, s = self.config.data.eval_batch_size, self.shape
        n, lt, lr = s.bag_size, s.text_len, s.num_regions
        region_dim = read_manifest(self.records_dir)["region_dim"]
        shapes = {"text_ids": ((b, n, lt), jnp.int32), "text_mask": ((b, n, lt), jnp.bool_),
                  "regions": ((b, n, lr, region_dim), jnp.float32), "region_mask": ((b, n, lr), jnp.bool_),
                  "subject_span": ((b, n, 2), jnp.int32), "object_span": ((b, n, 2), jnp.int32),
                  "instance_mask": ((b, n), jnp.bool_)}
        return {k: jax.ShapeDtypeStruct(shape, dtype) for k, (shape, dtype) in shapes.items()}

    def _initial_params(self) -> Any:
        if self.config.train.init_from:
            logging.info("Initialising from the best checkpoint of %s", self.config.train.init_from)
            return Checkpoints(self.config.train.init_from).restore_params("best", self.example_params())
        return init_params(self.model, self.config, self.batch_shapes(), self.config.seed)


def load_grades(config: ml_collections.ConfigDict, workdir: str) -> np.ndarray | None:
    """Graded truth of the generated world (commonsense.json), None for real data."""
    if config.data.source != "world":
        return None
    world_dir = config.data.world_dir or os.path.join(workdir, "world")
    return evaluate.load_grades(os.path.join(world_dir, "commonsense.json"))


class _CheckpointManager(ocp.CheckpointManager):
    """Orbax's manager, without its own look at JAX's preemption sync point.

    Orbax asks for it (to decide and log saves) with checkpoint steps, also from a background thread
    on process 0; each ask moves the process's sync id, which then no longer matches the train loop's
    (StopSignal.check) and the processes could stop at different steps. The loop decides when to save.
    """

    def reached_preemption(self, step: int) -> bool:
        del step
        return False


class Checkpoints:
    """Orbax managers for WORKDIR/checkpoints/{latest,best}: train state, JSON metadata and input position.

    With several processes every process calls save and restore, at the same step (orbax
    coordinates them; the folder must be storage all processes share); the input position is one
    file per process (Grain's checkpoint handler), so a run resumes with the same number of processes.
    """

    def __init__(self, workdir: str):
        self.root = os.path.join(os.path.abspath(workdir), "checkpoints")
        self.managers = {}
        for kind in ("latest", "best"):
            # Each manager its own barrier names: their asynchronous saves can overlap.
            options = ocp.CheckpointManagerOptions(
                max_to_keep=1, create=True,
                multiprocessing_options=ocp.options.MultiprocessingOptions(barrier_sync_key_prefix=kind))
            self.managers[kind] = _CheckpointManager(os.path.join(self.root, kind), options=options)

    def save(self, kind: str, state: TrainState, meta: dict, metrics: dict | None = None, data=None) -> None:
        """Saves `state`, `meta` + metrics and the position of the `data` iterator (if given) once per step."""
        manager = self.managers[kind]
        step = int(state.step)
        if manager.latest_step() == step:
            return
        items = {"state": ocp.args.PyTreeSave(state), "meta": ocp.args.JsonSave({**meta, "metrics": metrics})}
        if data is not None:
            items["data"] = grain.checkpoint.CheckpointSave(data)
        manager.save(step, args=ocp.args.Composite(**items))

    def wait(self) -> None:
        for manager in self.managers.values():
            manager.wait_until_finished()

    def restore_latest(self, target: TrainState, data=None) -> tuple[TrainState, dict] | None:
        """The latest state (with `target`'s shapes and shardings) and metadata; moves the `data` iterator
        (if given) to the saved position. None when there is no checkpoint."""
        manager = self.managers["latest"]
        step = manager.latest_step()
        if step is None:
            return None
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
        restore_args = ocp.checkpoint_utils.construct_restore_args(abstract)
        items = {"state": ocp.args.PyTreeRestore(item=abstract, restore_args=restore_args),
                 "meta": ocp.args.JsonRestore()}
        if data is not None:
            items["data"] = grain.checkpoint.CheckpointRestore(data)
        restored = manager.restore(step, args=ocp.args.Composite(**items))
        return restored["state"], restored["meta"]

    def restore_params(self, kind: str, target_params: Any) -> Any:
        """Only the parameters of a checkpoint (e.g. to start CLEVER from a trained AVG model)."""
        manager = self.managers[kind]
        step = manager.latest_step()
        if step is None:
            raise FileNotFoundError(f"no checkpoint in {os.path.join(self.root, kind)}")
        item = {"params": jax.tree.map(ocp.utils.to_shape_dtype_struct, target_params)}
        restored = manager.restore(step, args=ocp.args.Composite(state=ocp.args.PyTreeRestore(
            item=item, restore_args=ocp.checkpoint_utils.construct_restore_args(item), partial_restore=True)))
        return restored["state"]["params"]
