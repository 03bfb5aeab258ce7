"""Training: the train state, the pure train and evaluation steps, plateau decay and the loop.

One jitted step per batch (the steps are jitted by clever_jax.builder, which builds everything a
run is made of). The learning rate is warm-up(step) x plateau scale: the warm-up rises linearly
from `warmup_start` x lr to lr over `warmup_steps`; the scale drops x`decay` each time `patience`
validations in a row fail to beat the best score by more than `plateau_threshold` (the next
`cooldown` validations are not counted), and training stops after `max_decays` decays or
`max_epochs` epochs. Checkpoints: WORKDIR/checkpoints/latest (for resuming) after every
validation and on a stop signal, WORKDIR/checkpoints/best at the best validation score. Metrics go
to the log, to TensorBoard event files in WORKDIR and, per validation, to WORKDIR/history.json.
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import TYPE_CHECKING, Any

import einops
import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging

from clever_jax import distributed, evaluate, files, precision
from clever_jax.checkpoints import Checkpoints
from clever_jax.models.clever import Clever, bag_loss, instance_loss
from clever_jax.models.language import PairTextModel

if TYPE_CHECKING:
    from clever_jax.builder import Run

# The optimiser's parameter groups (builder.make_optimizer); set_hyperparams needs their names.
DECAY, NO_DECAY, FROZEN = "decay", "no_decay", "frozen"


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
    """Decay-on-plateau bookkeeping, updated on the host after each validation.

    The authors' rule: a validation improves when its score beats the best improving score by
    more than `threshold` (absolute); `patience` validations in a row without improvement (the
    count restarts at each improvement) decay the learning rate, and the `cooldown` validations
    after a decay are not counted. PyTorch's ReduceLROnPlateau (mode "max", threshold_mode "abs")
    with patience p is patience p + 1 here.
    """

    best: float = -np.inf
    bad_evals: int = 0
    cooldown_left: int = 0
    decays: int = 0

    def update(self, score: float, threshold: float, patience: int, cooldown: int) -> bool:
        """Records a validation score; returns whether to decay now."""
        if score > self.best + threshold:
            self.best, self.bad_evals = score, 0
        else:
            self.bad_evals += 1
        if self.cooldown_left > 0:
            self.cooldown_left -= 1
            self.bad_evals = 0
        if self.bad_evals >= patience:
            self.decays, self.bad_evals, self.cooldown_left = self.decays + 1, 0, cooldown
            return True
        return False


def warmup_lr(config: ml_collections.ConfigDict, step: jax.Array) -> jax.Array:
    """Linear warm-up from warmup_start x lr to lr over warmup_steps, then constant (before plateau decay)."""
    t = config.train
    fraction = jnp.minimum(step / max(t.warmup_steps, 1), 1.0)
    return t.lr * (t.warmup_start + (1.0 - t.warmup_start) * fraction)


def set_hyperparams(opt_state: Any, lr: jax.Array, config: ml_collections.ConfigDict) -> Any:
    """Writes this step's learning rate and config.train's AdamW settings into the optimiser state.

    builder.make_optimizer injects them as state (one copy per parameter group; the NO_DECAY
    group keeps its weight decay of 0), so that the schedule can change the rate inside the jitted
    step and a resumed run uses its config's values, not the checkpoint's. optax.tree_utils.tree_set
    raises KeyError if a name is missing, rather than leaving the state as it was.
    """
    t = config.train
    f32 = lambda value: jnp.asarray(value, jnp.float32)  # noqa: E731  The dtype the state holds.
    opt_state = optax.tree_utils.tree_set(opt_state, learning_rate=f32(lr), b1=f32(t.adam_b1), b2=f32(t.adam_b2),
                                          eps=f32(t.adam_eps))
    decayed = lambda path, _: not any(getattr(k, "key", None) == NO_DECAY for k in path)  # noqa: E731
    return optax.tree_utils.tree_set(opt_state, decayed, weight_decay=f32(t.weight_decay))


# ---------------------------------------------------------------------------------------------
# Steps (pure functions; clever_jax.builder jits them).


def micro_batches(batch: dict, steps: int) -> dict:
    """Splits a batch [B, ...] into `steps` micro-batches [steps, B / steps, ...].

    Micro-batch i holds bags i, i + steps, i + 2 steps, ...: each device's contiguous block of bags
    contributes its own share to every micro-batch, so a batch sharded over bags gives micro-batches
    sharded the same way, without moving data between devices.
    """
    return jax.tree.map(lambda x: einops.rearrange(x, "(b k) ... -> k b ...", k=steps), batch)


def loss_and_grads(
    params: Any, batch: dict, rng: jax.Array, scale: jax.Array | float, *, model: Clever | PairTextModel,
    config: ml_collections.ConfigDict,
) -> tuple[jax.Array, Any]:
    """Mean loss [] and float32 gradients of a batch, over config.train.grad_accum_steps micro-batches.

    The loss is multiplied by `scale` before differentiation and the gradients divided by it after
    (dynamic loss scaling; 1.0 without). With k micro-batches the gradient is the mean of the k
    micro-batch gradients, which is the whole batch's gradient when every micro-batch holds as many
    real bags (training batches are always full). Micro-batch i draws its dropout from fold_in(rng, i).
    """

    def scaled_loss(params, micro, key):
        logits = model.apply({"params": params}, micro, micro["target"], method="train_logits",
                             rngs={"dropout": key})
        if model.head == "vrd":
            loss = instance_loss(logits, micro["annotations"], micro["instance_mask"] & micro["bag_mask"][:, None])
        else:
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
    state: TrainState, batch: dict, *, model: Clever | PairTextModel, tx: optax.GradientTransformation,
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
        updates, opt_state = tx.update(grads, set_hyperparams(state.opt_state, lr, config), state.params)
        return state.replace(params=optax.apply_updates(state.params, updates), opt_state=opt_state)

    # A branch rather than a select between the new and the old state, which kept the old state alive:
    # XLA then copied the optimiser state every step instead of updating it in place.
    new = jax.lax.cond(finite, update, lambda state: state, state)
    new = new.replace(
        step=state.step + 1,
        loss_scale=None if state.loss_scale is None else state.loss_scale.update(jnp.isfinite(grad_norm)),
    )
    return new, {"loss": loss, "grad_norm": grad_norm, "lr": lr, "finite": finite, "loss_scale": scale}


def eval_step(params: Any, batch: dict, *, model: Clever | PairTextModel) -> tuple[jax.Array, jax.Array]:
    """Scores [B, R+1] and evidence [B, R+1, N] of a batch."""
    return model.apply({"params": params}, batch)


# ---------------------------------------------------------------------------------------------
# The loop.


class Trainer:
    """The train loop of a built run (clever_jax.builder.build) in `workdir`.

    Batches are global (config.data.batch_size bags over all processes); each JAX process loads
    its share and the global arrays are assembled from the process-local parts.
    """

    def __init__(self, run: Run, workdir: str):
        self.run, self.config, self.workdir = run, run.config, workdir
        self.grades = evaluate.world_grades(run.config, workdir)

    def train(self) -> dict:
        """Trains until the plateau schedule or max_epochs stops it; returns the best validation metrics."""
        run, config, t = self.run, self.config, self.config.train
        state = run.initial_state()
        checkpoints = Checkpoints(self.workdir, t.checkpoints_to_keep)
        iterator = iter(run.loader("train", train=True))
        plateau, history = Plateau(), []
        restored = checkpoints.restore_latest(state, iterator)
        if restored is not None:
            state, meta = restored
            plateau, history = Plateau(**meta["plateau"]), meta["history"]
            logging.info("Resumed from step %d", int(state.step))
        steps_per_epoch = max(run.num_bags["train"] // config.data.batch_size, 1)
        total_steps = t.max_epochs * steps_per_epoch
        eval_every = t.eval_every_steps or steps_per_epoch
        step, clock, window = int(state.step), time.perf_counter(), []
        scaling, skipped = state.loss_scale is not None, 0
        # With float16 loss scaling an overflowing gradient is expected now and then: the step is skipped
        # and the scale halved. Anything else non-finite (or an overflow at scale 1) stops the run.
        stops = lambda m: not np.isfinite(m["loss"]) or not (m["finite"] or (scaling and m["loss_scale"] > 1))  # noqa: E731
        writer = _summary_writer(self.workdir)

        def save(kind: str, metrics: dict | None = None) -> None:
            meta = {"plateau": dataclasses.asdict(plateau), "history": history}
            checkpoints.save(kind, state, meta, metrics, iterator)

        stop = distributed.STOP
        stop.in_loop = True
        try:
            while step < total_steps and plateau.decays < t.max_decays:
                stop.check()  # Here, not after the step: a stop never skips the step's validation.
                # Steps are dispatched asynchronously: the next batch loads while this one computes.
                state, metrics = run.train_step(state, run.device_batch(next(iterator)))
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
                        " Lower config.train.lr (with --config.train.allow_changed_config=True to resume this"
                        " run) or check the input data."
                    )
                elapsed, clock = time.perf_counter() - clock, time.perf_counter()
                rate = len(window) * config.data.batch_size / elapsed
                loss = float(np.mean([m["loss"] for m in window]))
                logging.info("step %d/%d loss %.4f lr %.2e grad_norm %.2f %.1f bags/s ETA %.0f s%s", step, total_steps,
                             loss, window[-1]["lr"], window[-1]["grad_norm"], rate,
                             (total_steps - step) * config.data.batch_size / rate,
                             f" loss_scale {window[-1]['loss_scale']:.0f} ({skipped} overflow steps skipped)"
                             if scaling else "")
                _write_scalars(writer, "train", step, {"loss": loss, "lr": window[-1]["lr"],
                                                       "grad_norm": window[-1]["grad_norm"], "bags_per_s": rate})
                window = []
                if step % eval_every == 0 or last:
                    val, _ = evaluate.evaluate(run, state.params, "val", self.grades)
                    score = val["auc"] + t.mauc_weight * val["mauc"]
                    best = max((h["score"] for h in history), default=-np.inf)
                    decay = plateau.update(score, t.plateau_threshold, t.patience, t.cooldown)
                    history.append({"step": step, "score": score, **val})
                    logging.info("step %d validation score %.2f (best %.2f) %s", step, score, max(score, best),
                                 " ".join(f"{k}={v:.2f}" for k, v in val.items()))
                    _write_scalars(writer, "val", step, {"score": score, **val})
                    if score > best:
                        save("best", val)
                    if decay:
                        state = state.replace(lr_scale=state.lr_scale * t.decay)
                        logging.info("learning rate scale -> %.0e (decay %d)", float(state.lr_scale), plateau.decays)
                    save("latest")
                    clock = time.perf_counter()
            stop.check()  # A signal during the last step or evaluation.
        except KeyboardInterrupt:
            save("latest")
            logging.warning("Interrupted at step %d; saved %s/latest, run again to resume", step, checkpoints.root)
            raise
        finally:
            stop.in_loop = False
            checkpoints.wait()  # Saves are asynchronous: finish them before returning or raising.
            if writer is not None:
                writer.close()
        if distributed.is_main_process():
            files.write_json(os.path.join(self.workdir, "history.json"), history)
        return max(history, key=lambda h: h["score"]) if history else {}


def _summary_writer(workdir: str):
    """A TensorBoard event-file writer into `workdir` on process 0 (`tensorboard --logdir runs/`), else None."""
    if not distributed.is_main_process():
        return None
    import tensorboardX  # Imported here: only the training loop of process 0 writes event files.

    os.makedirs(workdir, exist_ok=True)
    return tensorboardX.SummaryWriter(logdir=workdir)


def _write_scalars(writer, prefix: str, step: int, values: dict[str, float]) -> None:
    if writer is None:
        return
    for name, value in values.items():  # TensorBoard tags: letters, digits, "_", "-", "/" and ".".
        writer.add_scalar(f"{prefix}/{name.replace('@', '_at_').replace('%', 'pct')}", float(value), step)
    writer.flush()
