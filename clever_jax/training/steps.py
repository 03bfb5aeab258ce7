"""The train state and the pure steps that clever_jax.training.builder jits.

`train_step` is one optimiser step on one global batch: the loss over config.train.grad_accum_steps
micro-batches, global-norm clipping and AdamW (builder.make_optimizer) at the learning rate
warm-up(step) x the plateau scale that the loop (clever_jax.training.train) keeps in the state;
a non-finite loss or gradient leaves the parameters as they were. `eval_step` scores a batch.
"""

from __future__ import annotations

from typing import Any

import einops
import flax
import jax
import jax.numpy as jnp
import ml_collections
import optax

from clever_jax.models.clever import Clever, bag_loss, instance_loss
from clever_jax.models.language import PairTextModel
from clever_jax.training import precision

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
# Steps (pure functions; clever_jax.training.builder jits them).


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
