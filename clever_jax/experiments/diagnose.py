"""What a trained run's instance classifier sees: the numbers behind "does the attention find the images?"

  python -m clever_jax.experiments.diagnose --config=configs/demo.py --workdir=runs/demo [--split=test]

Scores every instance of a split with the run's best checkpoint and writes WORKDIR/diagnosis.json:

* gold_logit_spread: over (bag, gold relation) facts with two or more instances, percentiles of
  the range (max - min) and standard deviation of the gold relation's instance logits within the
  bag, the range divided by the contrastive attention's temperature τ, and exp(range / τ): the
  largest ratio of two instances' attention weights it allows.
* annotated: over the split's annotated instances, instance_accuracy (how often the instance
  classifier's best non-NA relation is one the instance's own annotations state); next to it
  pair_prior_accuracy, the same for a predictor that knows only the class pair and answers its
  most frequent annotated relation in this very split (an oracle pair prior: the best any
  predictor blind to the instance can do), and pairs_with_several_relations, the share of those
  instances whose pair's annotations use more than one relation (only there can an instance add
  anything to the pair).
* true (the world's latent truth only): the same over the instances that truly show a
  relation, against everything they truly show.
* probes (the world's latent truth only): how much a linear model can tell, from one instance,
  whether it truly shows its bag's gold relation. A logistic regression is fitted on the train
  split's instances to "the two boxes truly interact" and its scores rank the instances of each
  (bag, gold relation) fact of the split like attention (grounding.attention_against_truth: AUC,
  top instance true, and its chance). pair_geometry reads 18 numbers of the two boxes (both
  boxes, centre offset, log size ratios, overlaps, edge offsets); representation reads the run's
  pair representation v. The first says what the world's boxes carry, the second what the
  trained encoder kept of it.
* history: the validation scores of the run's evaluations (history.json), the learning curve.
"""

from __future__ import annotations

import json
import os
import sys

import jax
import numpy as np
from absl import flags, logging
from ml_collections import config_flags

from clever_jax import cli, files
from clever_jax import workdir as workdir_lib
from clever_jax.data import pipeline, prepare
from clever_jax.data.jsonio import DataError
from clever_jax.evaluation import grounding
from clever_jax.models.clever import Clever
from clever_jax.models.geometry import pair_geometry, query_geometry
from clever_jax.training import builder
from clever_jax.training.checkpoints import CheckpointError, Checkpoints

PERCENTILES = (10, 50, 90)


def score_instances(run: builder.Run, params, split: str) -> dict[str, np.ndarray]:
    """Every bag of a split (loader order) with its instances' pair representations v [P, N, 4H],
    logits [P, N, R+1] and pair geometry [P, N, 18] (`pair_geometry`), and the batch arrays labels,
    pair, annotations, truth, instance_mask."""

    def encode_and_classify(params, batch):
        v = run.model.apply({"params": params}, batch, train=False, method=Clever.encode)
        return v, run.model.apply({"params": params}, v, method=lambda model, v: model.classifier(v))

    step = jax.jit(encode_and_classify)
    keys = ("labels", "pair", "annotations", "truth", "instance_mask", "bag_mask")
    parts: dict[str, list] = {k: [] for k in (*keys, "v", "logits", "geometry")}
    for batch in run.loader(split, train=False):
        batch = pipeline.pad_batch(batch, run.local_batch_size(train=False))  # Whole batches for the devices.
        v, logits = jax.device_get(step(params, run.device_batch(batch, train=False)))
        parts["v"].append(np.asarray(v, np.float32))
        parts["logits"].append(np.asarray(logits))
        parts["geometry"].append(np.asarray(pair_geometry(*query_geometry(batch["regions"], batch["region_mask"]))))
        for k in keys:
            parts[k].append(batch[k])
    out = {k: np.concatenate(v) for k, v in parts.items()}
    return {k: v[out["bag_mask"]] for k, v in out.items()}


def logistic_regression(x: np.ndarray, y: np.ndarray, steps: int = 500, lr: float = 0.5,
                        l2: float = 1e-3) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """A logistic regression on standardised features by full-batch gradient descent: x [M, D], y bool [M].

    Returns (mean [D], scale [D], weights [D], bias): the score of z is ((z - mean) / scale) @ weights + bias.
    """
    x = np.asarray(x, np.float32)
    mean, scale = x.mean(axis=0), x.std(axis=0) + 1e-6
    x = (x - mean) / scale
    weights, bias, target = np.zeros(x.shape[1], np.float32), 0.0, y.astype(np.float32)
    for _ in range(steps):  # An analysis fit on one split's instances, not a training step.
        error = 1 / (1 + np.exp(-(x @ weights + bias))) - target
        weights -= lr * (x.T @ error / len(target) + l2 * weights)
        bias -= lr * float(error.mean())
    return mean, scale, weights, bias


def ranking_probe(train: dict, split: dict, key: str) -> dict:
    """Fits `logistic_regression` on train[key] [P, N, D] to "truly interacts" and ranks the split's
    instances of every (bag, gold relation) fact by it (module docstring); in %."""
    valid = train["instance_mask"]
    mean, scale, weights, bias = logistic_regression(train[key][valid], train["truth"][valid][:, 1:].any(axis=-1))
    score = ((split[key] - mean) / scale) @ weights + bias  # [P, N]
    bag, relation = grounding.gold_relations(split["labels"])
    rows = grounding.attention_against_truth(score[bag], split["truth"][bag, :, relation],
                                               split["instance_mask"][bag])
    rows = rows[~np.isnan(rows[:, 0])]
    return {"facts": int(len(rows)), "ranking_auc": float(100 * np.nanmean(rows[:, 3])),
            "top_instance_true": float(100 * rows[:, 2].mean()), "chance": float(100 * rows[:, 1].mean())}


def logit_spread(logits: np.ndarray, labels: np.ndarray, mask: np.ndarray, temperature: float) -> dict:
    """Spread of the gold relations' instance logits within bags (module docstring)."""
    bag, relation = grounding.gold_relations(labels)
    keep = mask[bag].sum(axis=1) >= 2
    bag, relation = bag[keep], relation[keep]
    if not len(bag):
        return {"facts": 0, "temperature": temperature}
    gold = logits[bag, :, relation]  # [K, N]
    valid = mask[bag]
    high = np.where(valid, gold, -np.inf).max(axis=1)
    low = np.where(valid, gold, np.inf).min(axis=1)
    mean = np.where(valid, gold, 0).sum(axis=1) / valid.sum(axis=1)
    std = np.sqrt(np.where(valid, (gold - mean[:, None]) ** 2, 0).sum(axis=1) / valid.sum(axis=1))
    spread = high - low

    def percentiles(x: np.ndarray) -> dict:
        return {f"p{q}": float(v) for q, v in zip(PERCENTILES, np.percentile(x, PERCENTILES), strict=True)}

    return {"facts": int(len(bag)), "temperature": temperature, "range": percentiles(spread),
            "std": percentiles(std), "range_over_temperature": percentiles(spread / temperature),
            "max_attention_ratio": percentiles(np.exp(spread / temperature))}


def relation_accuracy(logits: np.ndarray, stated: np.ndarray, pair: np.ndarray, mask: np.ndarray) -> dict:
    """Instance classifier vs the oracle pair prior on the instances with a stated relation.

    Args:
      logits: [P, N, R+1]. stated: bool [P, N, R+1] what the instances' annotations (or truth) state.
      pair: [P, 2] class pair of each bag. mask: bool [P, N].
    """
    bag, instance = np.nonzero(mask & stated[..., 1:].any(axis=-1))
    if not len(bag):
        return {"instances": 0}
    stated = stated[bag, instance, 1:]  # [M, R]
    predicted = np.argmax(logits[bag, instance, 1:], axis=-1)  # [M]
    codes, pair_of = np.unique(pair[bag], axis=0, return_inverse=True)
    counts = np.zeros((len(codes), stated.shape[1]))
    np.add.at(counts, pair_of, stated)
    pair_of = pair_of.reshape(-1)
    prior = np.argmax(counts, axis=1)[pair_of]  # the pair's most frequent stated relation
    rows = np.arange(len(bag))
    return {"instances": int(len(bag)), "pairs": int(len(codes)),
            "instance_accuracy": float(100 * stated[rows, predicted].mean()),
            "pair_prior_accuracy": float(100 * stated[rows, prior].mean()),
            "pairs_with_several_relations": float(100 * ((counts > 0).sum(axis=1) > 1)[pair_of].mean())}


def diagnose(config, workdir: str, split: str) -> dict:
    """The diagnosis of a trained run (module docstring); also written to WORKDIR/diagnosis.json.
    One process (any number of its devices); with split "train" the probes are scored on the
    instances they were fitted on."""
    if jax.process_count() > 1:
        raise ValueError("clever_jax.experiments.diagnose runs in one process; start it without jax.distributed")
    workdir_lib.check_settings(config, workdir, write=False)  # The run's own settings, not others.
    records_dir = prepare.prepare_records(config, workdir)
    run = builder.build(config, records_dir)
    params = Checkpoints(workdir).restore_params("best", run.abstract_params)
    out = score_instances(run, params, split)
    result = {
        "split": split, "head": config.model.head,
        "gold_logit_spread": logit_spread(out["logits"], out["labels"], out["instance_mask"],
                                          config.model.temperature),
        "annotated": relation_accuracy(out["logits"], out["annotations"], out["pair"], out["instance_mask"]),
    }
    if out["truth"].any():
        result["true"] = relation_accuracy(out["logits"], out["truth"], out["pair"], out["instance_mask"])
        train = out if split == "train" else score_instances(run, params, "train")
        result["probes"] = {"pair_geometry": ranking_probe(train, out, "geometry"),
                            "representation": ranking_probe(train, out, "v")}
    history_path = os.path.join(workdir, "history.json")
    if os.path.isfile(history_path):
        with open(history_path) as f:
            result["history"] = [{"step": h["step"], "score": h["score"]} for h in json.load(f)]
    files.write_json(os.path.join(workdir, "diagnosis.json"), result)
    return result


def main(argv: list[str]) -> None:
    del argv
    try:
        result = diagnose(flags.FLAGS.config, flags.FLAGS.workdir, flags.FLAGS.split)
    except (CheckpointError, workdir_lib.ChangedSettings, DataError) as e:  # The message says it all.
        sys.exit(f"{type(e).__name__}: {e}")
    logging.info("Diagnosis of %s:\n%s", flags.FLAGS.workdir, json.dumps(result, indent=1))


if __name__ == "__main__":
    config_flags.DEFINE_config_file("config", None, "Config file of the run (configs/*.py).", lock_config=False)
    flags.DEFINE_string("workdir", None, "The trained run's folder.")
    flags.DEFINE_enum("split", "test", ["train", "val", "test"], "The split to diagnose.")
    cli.run(main, required=["config", "workdir"])
