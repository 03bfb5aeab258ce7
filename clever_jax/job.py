"""The main job's modes, callable without the command line (see clever_jax.main)."""

from __future__ import annotations

import contextlib
import json
import os

from absl import logging

from clever_jax import distributed

MODES = ("all", "prepare", "train", "eval", "extract", "kb", "scene_graphs", "bootstrap", "report", "export",
         "export_release")


def run(config, workdir: str, mode: str) -> None:
    """Runs one mode (see clever_jax.main) after checking the config (clever_jax.config_checks),
    holding the workdir's lock and after checking that the config's result settings are the
    workdir's run's (clever_jax.workdir). Process 0 does both; when it refuses, every process stops
    with its error."""
    import jax

    from clever_jax import config_checks
    from clever_jax import workdir as workdir_lib

    if mode == "extract" and config.extract.features_path:
        logging.warning("--mode=extract with config.extract.features_path is now --mode=kb (a knowledge base from "
                        "a detector's output); running that")
        mode = "kb"
    distributed.initialize(config)  # Before anything touches the devices.
    config_checks.check(config, jax.device_count())
    if mode in ("kb", "scene_graphs") and not config.extract.features_path:
        raise config_checks.ConfigError(f"--mode={mode} reads a detector's output: give it with "
                                        "--config.extract.features_path=FEATURES.tsv (or the authors' release folder)")
    if mode == "bootstrap" and (not config.extract.target_precision or config.extract.bundle
                                or config.data.source == "release" or config.data.sampler != "overlap"
                                or jax.process_count() > 1):
        raise config_checks.ConfigError(
            "--mode=bootstrap adds what the calibrated filters keep to the training split of the workdir's run: it "
            "needs --config.extract.target_precision (e.g. 0.8), no extract.bundle, data.source 'world' or 'vg' (the "
            "release's splits are fixed), data.sampler 'overlap' (with 'random' the new bags would change the "
            "validation and test bags' draws) and one process")
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
    if mode == "export_release":  # The benchmark in the authors' file layout; no records needed.
        from clever_jax.data import release_write

        if distributed.is_main_process():
            logging.info("Wrote the benchmark in the release layout to %s", release_write.export(config, workdir))
        return
    if mode == "kb":  # A knowledge base from unannotated images.
        from clever_jax.kb import build

        build.extract(config, workdir)
        return
    if mode == "scene_graphs":  # Every image's pairs scored alone.
        from clever_jax.kb import scene_graphs

        scene_graphs.run(config, workdir)
        return
    if mode == "bootstrap":  # Rounds of extraction whose kept triplets become training labels.
        from clever_jax.kb import bootstrap

        logging.info("Bootstrapping rounds in %s", bootstrap.run(config, workdir))
        return
    if mode == "report":
        from clever_jax.kb import build, report

        kb_path = config.report.kb_path or os.path.join(workdir, build.KB_DIR, "kb.jsonl")
        out = os.path.join(os.path.dirname(os.path.abspath(kb_path)), "report.html")
        if distributed.is_main_process():
            shown = report.write_report(kb_path, out, config.report.images_dir, config.report.per_relation)
            logging.info("Wrote the evidence report of %d triplets to %s", shown, out)
        return
    from clever_jax.data import prepare

    records_dir = prepare.prepare_records(config, workdir)
    if mode == "prepare":
        with open(os.path.join(workdir, prepare.STATS)) as f:
            for name, sizes in json.load(f)["splits"].items():
                logging.info("%-5s %s", name, " ".join(f"{k}={v}" for k, v in sizes.items()))
        logging.info("Records in %s, statistics in %s", records_dir, os.path.join(workdir, prepare.STATS))
        return

    from clever_jax.evaluation import evaluate
    from clever_jax.kb import export, triplets
    from clever_jax.training import builder, train
    from clever_jax.training.checkpoints import Checkpoints

    run = builder.build(config, records_dir, workdir=workdir)
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
    outputs = {}
    if mode in ("all", "eval"):  # Every process evaluates; process 0 writes the files.
        outputs = evaluate.evaluate_run(run, params, workdir, keep_evidence=mode == "all")
    if mode in ("all", "extract"):
        triplets.extract_benchmark(run, params, outputs, workdir)
