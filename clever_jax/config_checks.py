"""Config checks before any work: every problem the config alone shows, each with its setting and fix.

job.run calls `check` first, so that a bad setting stops the command at once rather than after
an epoch of training or as a library's message. What needs the data (a split without facts) is
checked by prepare as soon as the benchmark is built.
"""

from __future__ import annotations

import math

import ml_collections

from clever_jax.data.bags import SAMPLERS
from clever_jax.models.clever import ENCODERS
from clever_jax.models.heads import EVAL_HEADS, TRAIN_HEADS
from clever_jax.models.language import HEADS as LM_HEADS

SOURCES = ("world", "vg", "release")
LOSSES = ("sampled", "all_gold")
EXTRACT_SPLITS = ("train", "val", "test", "all")


class ConfigError(ValueError):
    """Settings that cannot run (the message lists each with what it must be)."""


def problems(config: ml_collections.ConfigDict, num_devices: int) -> list[str]:
    """Every problem of `config` for a run over `num_devices` devices, one line each ([] when none)."""
    data, model, train, extract = config.data, config.model, config.train, config.extract
    out = []

    def need(ok: bool, setting: str, value, fix: str) -> None:
        if not ok:
            out.append(f"--config.{setting}={value!r}: {fix}")

    need(data.bag_size >= 1, "data.bag_size", data.bag_size, "a bag needs at least 1 instance")
    need(data.text_len >= 4, "data.text_len", data.text_len, "needs room for [CLS], two tags and [SEP] (>= 4)")
    need(data.num_regions >= 2, "data.num_regions", data.num_regions, "the subject and object regions need 2")
    need(data.length_multiple >= 0, "data.length_multiple", data.length_multiple, "0 (off) or a positive multiple")
    need(data.packing_classes >= 1, "data.packing_classes", data.packing_classes, ">= 1 length class of instances")
    need(data.source in SOURCES, "data.source", data.source, f"one of {SOURCES}")
    need(data.sampler in SAMPLERS and (data.sampler != "listed" or data.source == "release"), "data.sampler",
         data.sampler, f"one of {SAMPLERS}; 'listed' (the release's own order) needs data.source='release'")
    ratios = tuple(data.split_ratios)
    need(len(ratios) == 3 and all(r > 0 for r in ratios) and math.isclose(sum(ratios), 1.0, abs_tol=1e-6),
         "data.split_ratios", ratios, "three positive shares of train, val and test that sum to 1")
    need(data.na_ratio >= 0, "data.na_ratio", data.na_ratio, "NA bags per positive bag, >= 0")
    need(data.min_fact_count >= 1, "data.min_fact_count", data.min_fact_count, ">= 1 relationship per fact")
    steps = train.grad_accum_steps
    need(steps >= 1, "train.grad_accum_steps", steps, ">= 1")
    need(data.batch_size >= 1 and data.batch_size % (num_devices * max(steps, 1)) == 0, "data.batch_size",
         data.batch_size, f"a positive multiple of the {num_devices} devices x train.grad_accum_steps={steps}")
    need(data.eval_batch_size >= 1 and data.eval_batch_size % num_devices == 0, "data.eval_batch_size",
         data.eval_batch_size, f"a positive multiple of the {num_devices} devices")
    need(model.encoder in (*ENCODERS, "text"), "model.encoder", model.encoder,
         f"one of {(*ENCODERS, 'text')} ('text': a language-model baseline over the entity names)")
    if model.encoder == "text":
        need(model.head in LM_HEADS, "model.head", model.head,
             f"with model.encoder='text' one of {LM_HEADS} (Vanilla-FT; Prompt-FT and LAMA)")
        need(model.eval_head == "", "model.eval_head", model.eval_head, "'' with model.encoder='text'")
    else:
        need(model.head in TRAIN_HEADS, "model.head", model.head, f"a training head, one of {TRAIN_HEADS}")
        need(model.eval_head in ("", *EVAL_HEADS), "model.eval_head", model.eval_head,
             f"'' (the training head) or one of {EVAL_HEADS}")
    need(model.temperature > 0, "model.temperature", model.temperature, "tau must be positive")
    need(0 <= model.bag_dropout < 1, "model.bag_dropout", model.bag_dropout, "a rate in [0, 1)")
    need(model.classifier_width >= 1, "model.classifier_width", model.classifier_width, ">= 1")
    need(train.lr > 0, "train.lr", train.lr, "a positive learning rate")
    need(train.max_epochs >= 0, "train.max_epochs", train.max_epochs, ">= 0 (0: no training, e.g. after a resume)")
    need(train.warmup_steps >= 0, "train.warmup_steps", train.warmup_steps, ">= 0")
    need(train.eval_every_steps >= 0, "train.eval_every_steps", train.eval_every_steps, "0 (once per epoch) or more")
    need(train.patience >= 1, "train.patience", train.patience, ">= 1 evaluation")
    need(train.loss in LOSSES, "train.loss", train.loss, f"one of {LOSSES}")
    need(extract.split in EXTRACT_SPLITS, "extract.split", extract.split, f"one of {EXTRACT_SPLITS}")
    need(extract.num_evidence >= 1, "extract.num_evidence", extract.num_evidence, ">= 1 evidence instance")
    need(extract.top_k >= 0, "extract.top_k", extract.top_k, "0 (every triplet) or more")
    need(extract.min_images >= 1, "extract.min_images", extract.min_images, ">= 1 image showing a pair")
    need(0 <= extract.target_precision <= 1, "extract.target_precision", extract.target_precision,
         "a precision in (0, 1], or 0 for no filters")
    need(extract.min_val_facts >= 1, "extract.min_val_facts", extract.min_val_facts, ">= 1 validation fact")
    need(extract.min_evidence >= 0, "extract.min_evidence", extract.min_evidence, ">= 0 instances (0: off)")
    need(0 <= extract.consistency_quantile <= 1, "extract.consistency_quantile", extract.consistency_quantile,
         "a share of each relation's pairs in (0, 1], or 0 for no consistency filter")
    need(extract.negatives >= 0, "extract.negatives", extract.negatives, ">= 0 negatives (0: none)")
    need(not extract.negatives or extract.target_precision > 0, "extract.negatives", extract.negatives,
         "0 unless extract.target_precision > 0 (negatives are proposed from the filters' kept triplets)")
    need(0 < extract.negative_quantile < 1, "extract.negative_quantile", extract.negative_quantile,
         "a share of each relation's validation facts in (0, 1)")
    scene_graphs = config.scene_graphs
    need(scene_graphs.images in ("all", "test"), "scene_graphs.images", scene_graphs.images, "'all' or 'test'")
    need(scene_graphs.images != "test" or not extract.bundle, "scene_graphs.images", scene_graphs.images,
         "'all' with extract.bundle ('test' takes the test images of the trained workdir's records)")
    need(scene_graphs.top_k >= 0, "scene_graphs.top_k", scene_graphs.top_k, "0 (every pair) or more")
    need(min(scene_graphs.baseline_hidden, scene_graphs.baseline_epochs, scene_graphs.appearance_dim) >= 1,
         "scene_graphs.baseline_hidden/baseline_epochs/appearance_dim",
         (scene_graphs.baseline_hidden, scene_graphs.baseline_epochs, scene_graphs.appearance_dim), ">= 1 each")
    need(not data.added_facts or data.source != "release", "data.added_facts", data.added_facts,
         "'' with data.source='release' (the release's splits and labels are fixed)")
    boot = config.bootstrap
    need(boot.rounds >= 0 and boot.max_epochs >= 0, "bootstrap.rounds/max_epochs", (boot.rounds, boot.max_epochs),
         ">= 0 each (max_epochs 0: train.max_epochs)")
    need(config.report.per_relation >= 1, "report.per_relation", config.report.per_relation, ">= 1 triplet")
    return out


def check(config: ml_collections.ConfigDict, num_devices: int) -> None:
    """ConfigError listing every problem of `problems`, if any."""
    found = problems(config, num_devices)
    if found:
        raise ConfigError("The config cannot run:\n  " + "\n  ".join(found))
