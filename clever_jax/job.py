"""The main job and its modes, callable without the command line (see clever_jax.main)."""

from __future__ import annotations

import contextlib
import json
import logging as pylogging
import os
import signal
import sys

from absl import logging

from clever_jax import distributed

MODES = ("all", "prepare", "train", "eval", "extract", "export", "export_release", "report")


class _QuietLibraries(pylogging.Filter):
    """Keeps the libraries' INFO chatter (checkpointing, dataset building) out of the progress log."""

    NOISY = ("/orbax/", "/tensorflow_datasets/", "/array_record/", "/grain/")

    def filter(self, record: pylogging.LogRecord) -> bool:
        return record.levelno >= pylogging.WARNING or not any(p in record.pathname for p in self.NOISY)


def reject_renamed_flags(argv: list[str]) -> None:
    """Exits with a clear message when the command line sets a config.model setting by an earlier name
    (before the config flag's own parsing would fail with a traceback)."""
    from clever_jax.data.text import RENAMED

    for arg in argv[1:]:
        name = arg.split("=")[0]
        for old, new in RENAMED.items():
            if name.lstrip("-") == f"config.model.{old}":
                sys.exit(f"{name}: renamed to --config.model.{new} (the pretrained encoder's folder; training "
                         "checkpoints go to WORKDIR/checkpoints)")


def start_command() -> None:
    """What every training command line does first: SIGTERM (preemption) and Ctrl-C stop training
    after the current step with its latest state saved (distributed.StopSignal; installed before
    run() starts jax.distributed, whose preemption service then takes SIGTERM over), and the
    libraries' INFO logs are hidden (quiet_libraries)."""
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, distributed.STOP.handle)
    quiet_libraries()


def quiet_libraries() -> None:
    """Hides the libraries' INFO logs; ours (progress, metrics) stay."""
    logging.get_absl_handler().addFilter(_QuietLibraries())


def prepare_records(config, workdir: str) -> str:
    """Builds (or reuses) the records; returns their folder.

    With several processes, process 0 builds first; the others then reuse its records (a shared
    workdir) or build the same ones on their own disk.
    """
    from clever_jax.data import prepare

    def build() -> str:
        os.makedirs(workdir, exist_ok=True)
        return prepare.prepare(config, workdir)

    main = distributed.is_main_process()
    records_dir = build() if main else ""
    distributed.barrier("prepare")
    return records_dir if main else build()


def run(config, workdir: str, mode: str) -> None:
    """Runs one mode (see clever_jax.main) after checking the config (clever_jax.config_checks),
    holding the workdir's lock and after checking that the config's result settings are the
    workdir's run's (clever_jax.workdir). Process 0 does both; when it refuses, every process stops
    with its error."""
    import jax

    from clever_jax import config_checks
    from clever_jax import workdir as workdir_lib

    distributed.initialize(config)  # Before anything touches the devices.
    config_checks.check(config, jax.device_count())
    main = distributed.is_main_process()
    if not main:
        logging.set_verbosity(logging.WARNING)  # Process 0 reports progress; the others only problems.
    with contextlib.ExitStack() as held:
        refusal, error = "", None
        if main:  # Process 0 takes the lock and checks the settings, then tells the others.
            try:
                held.enter_context(workdir_lib.lock(workdir))
                if mode not in ("prepare", "export_release", "report") and not config.extract.bundle:
                    workdir_lib.check_settings(config, workdir, write=mode in ("all", "train"))
            except BaseException as e:  # Told to the others too, whatever it is, so that none waits.
                refusal, error = f"{type(e).__name__}\n{e}", e
        refusal = distributed.broadcast_text(refusal)  # So the others stop too rather than wait for process 0.
        if error is not None:
            raise error
        if refusal:
            kind, message = refusal.split("\n", 1)
            known = {"WorkdirInUse": workdir_lib.WorkdirInUse, "ChangedSettings": workdir_lib.ChangedSettings}
            if kind in known:
                raise known[kind](f"process 0 stopped: {message}")
            raise RuntimeError(f"process 0 stopped with {kind}: {message}")
        _run(config, workdir, mode)


def _run(config, workdir: str, mode: str) -> None:
    from clever_jax.data import prepare

    if mode == "export_release":  # The benchmark in the authors' file layout; no records needed.
        from clever_jax.data import release_write

        if distributed.is_main_process():
            logging.info("Wrote the benchmark in the release layout to %s", release_write.export(config, workdir))
        return
    if mode == "extract" and config.extract.features_path:  # A knowledge base from unannotated images.
        from clever_jax import builder, knowledge

        knowledge.extract(builder.build, config, workdir, lambda: prepare_records(config, workdir))
        return
    if mode == "report":
        from clever_jax import report

        kb_path = config.report.kb_path or os.path.join(workdir, "kb", "kb.jsonl")
        out = os.path.join(os.path.dirname(os.path.abspath(kb_path)), "report.html")
        if distributed.is_main_process():
            shown = report.write_report(kb_path, out, config.report.images_dir, config.report.per_relation)
            logging.info("Wrote the evidence report of %d triplets to %s", shown, out)
        return
    records_dir = prepare_records(config, workdir)
    if mode == "prepare":
        with open(os.path.join(workdir, prepare.STATS)) as f:
            for name, sizes in json.load(f)["splits"].items():
                logging.info("%-5s %s", name, " ".join(f"{k}={v}" for k, v in sizes.items()))
        logging.info("Records in %s, statistics in %s", records_dir, os.path.join(workdir, prepare.STATS))
        return

    from clever_jax import builder, evaluate, export, train
    from clever_jax.checkpoints import Checkpoints

    run = builder.build(config, records_dir)
    if mode in ("all", "train"):
        best = train.Trainer(run, workdir).train()
        logging.info("Best validation: %s", best)
        if mode == "train":
            return
    if mode == "export":
        if config.model.encoder == "text":
            raise ValueError("--mode=export writes a bag model for extraction from images; model.encoder='text' "
                             "(a language-model baseline) reads no images")
        logging.info("Exported to %s", export.export_bundle(run, workdir))
        return
    try:
        params = Checkpoints(workdir).restore_params("best", run.abstract_params)
    except FileNotFoundError:  # Not trained here: a given bag model (e.g. the authors'), or zero-shot (LAMA).
        if os.path.isfile(config.train.init_from):
            params = run.imported_params(config.train.init_from)
        elif config.train.max_epochs == 0:
            params = run.zero_shot_params()
            logging.info("Nothing trained (train.max_epochs=0): evaluating the pretrained parameters")
        else:
            raise
    grades = evaluate.world_grades(config, workdir)
    results, outputs = {}, {}
    if mode in ("all", "eval"):  # Every process evaluates; process 0 writes the files.
        for split in ("val", "test"):
            results[split], outputs[split] = evaluate.evaluate(run, params, split, grades,
                                                               keep_evidence=mode == "all")
        evaluate.write_results(workdir, results, outputs, f"{config.model.head} (test)")
        logging.info("Test: %s", " ".join(f"{k}={v:.2f}" for k, v in results["test"].items()))
    if mode in ("all", "extract"):
        from clever_jax.data.records import open_records, read_manifest
        from clever_jax.data.vocab import benchmark_vocab
        from clever_jax.extract import write_triplets

        split = config.extract.split
        for name in ("train", "val", "test") if split == "all" else (split,):
            if name not in outputs:
                _, outputs[name] = evaluate.evaluate(run, params, name, grades, keep_evidence=True)
        if split == "all":
            outputs["all"] = evaluate.concat_outputs([outputs["train"], outputs["val"], outputs["test"]])
        if distributed.is_main_process():
            path = os.path.join(workdir, "triplets.jsonl")
            count = write_triplets(path, outputs[split], open_records(records_dir)[0], benchmark_vocab(),
                                   config.extract.top_k, config.extract.num_evidence,
                                   read_manifest(records_dir).get("has_truth", False))
            logging.info("Wrote %d triplets to %s", count, path)
