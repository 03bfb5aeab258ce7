"""One process of a multi-host run on CPU (see test_multihost.py), or the one-process reference.

  python tests/training/multihost_check.py ROOT PROCESS_ID NUM_PROCESSES PORT

Every process: prepares the tiny world's records (process 0 first), trains 2 epochs (4 steps, a
validation after each), restores the latest checkpoint (the state, and its own input position: it
reads the next batch), evaluates the one-process run's final parameters on the test split, exports
a bundle, runs job.run on a workdir another live process holds (ROOT/locked: it must refuse on
every process) and writes ROOT/run{NUM_PROCESSES}/result_{PROCESS_ID}.npz. The one-process reference
(run first) feeds the same global batches as two processes do: the local batches of shard 0 and
shard 1, one after the other. The two processes' training is stopped by a SIGTERM that only process
1 receives (after step 2, at stop check 3; see SignalAt) and then resumed, so it must still end like the reference's.
"""

import dataclasses
import json
import os
import signal
import sys
import time
import traceback

import grain
import jax
import numpy as np

from clever_jax import distributed, job
from clever_jax import workdir as workdir_lib
from clever_jax.data import pipeline, prepare
from clever_jax.evaluation import evaluate
from clever_jax.kb import export
from clever_jax.training import builder, train
from clever_jax.training.checkpoints import Checkpoints
from configs import demo

SHARDS = 2  # Processes of the multi-process run (the reference imitates their input).


def tiny_config(root: str, process_id: int, num_processes: int, port: int):
    config = demo.get_config("tiny")
    config.data.world_dir = os.path.join(root, "world")
    # 18 train bags (2 steps an epoch), 131 val and 321 test bags: the test split's shards (161 and 160
    # bags) take 21 and 20 local batches of 8, so process 1 adds an empty batch.
    config.data.update(split_ratios=(0.1, 0.3, 0.6), na_ratio=0.5)
    config.train.update(warmup_steps=2, log_every=2, lr=1e-3)
    config.distributed.update(enabled=num_processes > 1, coordinator_address=f"localhost:{port}",
                              num_processes=num_processes, process_id=process_id)
    return config


class ShardPairs:
    """Iterator over the global batches of a two-process run: shard 0's local batch, then shard 1's."""

    def __init__(self, loaders):
        self.iterators = [iter(loader) for loader in loaders]

    def __iter__(self):
        return self

    def __next__(self) -> dict:
        parts = [next(it) for it in self.iterators]
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}

    def get_state(self) -> bytes:
        return json.dumps([it.get_state().decode() for it in self.iterators]).encode()

    def set_state(self, state: bytes) -> None:
        for it, part in zip(self.iterators, json.loads(state), strict=True):
            it.set_state(part.encode())

    def start_prefetch(self) -> None:  # Called by Grain's checkpoint handler after restoring.
        pass


class ReferenceRun(builder.Run):
    """One process whose training batches are those of a two-process run."""

    def loader(self, split: str, *, train: bool):
        if not train:
            return super().loader(split, train=False)
        return ShardPairs([
            pipeline.make_loader(self.records_dir, split, self.shape, self.local_batch_size(True) // SHARDS,
                                 train=True, seed=self.config.data.shuffle_seed,
                                 shard_options=grain.sharding.ShardOptions(i, SHARDS, drop_remainder=True))
            for i in range(SHARDS)
        ])


class SignalAt(distributed.StopSignal):
    """The train loop's stop signal, with process 1 sending itself SIGTERM at step boundary `at`.

    There every process then waits until all have joined JAX's preemption sync (each has told the
    coordination service how far it got), which fixes the sync point at boundary `at` on all of them.
    In a real run the point is one or two boundaries later, depending on how far the processes got
    within the second the service takes to notice the signal; waiting here only makes the test's
    stop step certain, and so that it comes before the end of training.
    """

    def __init__(self, at: int):
        super().__init__()
        self.at, self.stopped_at = at, None

    def check(self) -> None:
        if self.boundaries + 1 == self.at:
            if jax.process_index() == 1:
                os.kill(os.getpid(), signal.SIGTERM)
            client, deadline = jax._src.distributed.global_state.client, time.time() + 60
            while len(client.key_value_dir_get("PREEMPTION_CURRENT_COUNTER/")) < jax.process_count():
                if time.time() > deadline:
                    raise TimeoutError("JAX's preemption sync did not start within 60 s of the SIGTERM")
                time.sleep(0.01)
        try:
            super().check()
        except KeyboardInterrupt:
            self.stopped_at = self.boundaries
            raise


def main(root: str, process_id: int, num_processes: int, port: int) -> None:
    config = tiny_config(root, process_id, num_processes, port)
    if num_processes > 1:
        distributed.STOP = SignalAt(3)
    stop = distributed.STOP
    for signum in (signal.SIGTERM, signal.SIGINT):  # As main.py: before jax.distributed.initialize.
        signal.signal(signum, stop.handle)
    distributed.initialize(config)
    assert jax.process_count() == num_processes and jax.process_index() == process_id
    records_dir = prepare.prepare_records(config, os.path.join(root, "prepared"))
    workdir = os.path.join(root, f"run{num_processes}")
    run = builder.build(config, records_dir, workdir=workdir)
    if num_processes == 1:
        run = ReferenceRun(**{f.name: getattr(run, f.name) for f in dataclasses.fields(run)})
    trainer = train.Trainer(run, workdir)
    stopped = {}
    if num_processes > 1:
        try:
            trainer.train()
        except KeyboardInterrupt:
            checkpoints = Checkpoints(workdir)
            state, meta = checkpoints.restore_latest(run.abstract_state())
            stopped = {"stopped_at": stop.stopped_at, "stopped_step": state.step,
                       "stopped_checkpoint": checkpoints.managers["latest"].latest_step(),
                       "stopped_history": json.dumps(meta["history"])}
    trainer.train()  # Two processes: resumes from the stop.

    checkpoints = Checkpoints(workdir)  # Every process restores the state and its own input position.
    iterator = iter(run.loader("train", train=True))
    state, meta = checkpoints.restore_latest(run.abstract_state(), iterator)
    next_bags = next(iterator)["bag"]
    # The reference run's parameters (saved by one process on 4 devices, restored here on this topology).
    params = Checkpoints(os.path.join(root, "run1")).restore_params("latest", run.abstract_params)
    metrics, outputs = evaluate.evaluate(run.scorer("test"), params, run.grades, keep_evidence=True)
    export.export_bundle(run, workdir)
    refused = ""
    try:  # ROOT/locked holds the lock of a live process (the test's): every process stops, none waits.
        job.run(config, os.path.join(root, "locked"), "eval")
    except workdir_lib.WorkdirInUse as e:
        refused = str(e)
    trained = {jax.tree_util.keystr(path): np.asarray(leaf)
              for path, leaf in jax.tree_util.tree_flatten_with_path(state.params)[0]}
    np.savez(os.path.join(workdir, f"result_{process_id}.npz"), step=np.asarray(state.step), next_bags=next_bags,
             scores=outputs.scores,
             evidence=outputs.evidence, gold_attention=outputs.gold_attention, bags=outputs.bags,
             labels=outputs.labels, images=outputs.images, test_metrics=json.dumps(metrics),
             history=json.dumps(meta["history"]), devices=jax.device_count(), boundaries=stop.boundaries,
             refused=refused,
             **stopped, **{f"param{k}": v for k, v in trained.items()})


if __name__ == "__main__":
    try:
        main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))
    except BaseException:
        traceback.print_exc()
        os._exit(1)  # At once: a normal exit would wait for the other processes at JAX's shutdown barrier.
