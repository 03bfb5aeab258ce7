"""The train loop: plateau decay of the learning rate, validation, checkpoints and logs.

One jitted step per batch (clever_jax.training.steps, jitted by clever_jax.training.builder, which
builds everything a run is made of). The learning rate is warm-up(step) x plateau scale: the warm-up rises linearly
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
from typing import TYPE_CHECKING

import jax
import numpy as np
from absl import logging

from clever_jax import distributed, files
from clever_jax.evaluation import evaluate
from clever_jax.training.checkpoints import Checkpoints

if TYPE_CHECKING:
    from clever_jax.training.builder import Run


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


class Trainer:
    """The train loop of a built run (clever_jax.training.builder.build) in `workdir`.

    Batches are global (config.data.batch_size bags over all processes); each JAX process loads
    its share and the global arrays are assembled from the process-local parts.
    """

    def __init__(self, run: Run, workdir: str):
        self.run, self.config, self.workdir = run, run.config, workdir

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
                state, metrics = run.train_step(state, run.device_batch(next(iterator), train=True))
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
                    val, _ = evaluate.evaluate(run.scorer("val"), state.params, run.grades)
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
