"""Evaluation: score every bag of a split, its metrics, and the files a run's evaluation writes.

`evaluate(scorer, params, grades)` scores a split with a `Scorer` (an evaluation step and a
loader: a built run's `Run.scorer(split)`) over one process or several and returns its metrics
and `SplitOutputs`; `world_grades` reads the generated world's graded truth for them;
`write_results` writes WORKDIR/metrics.json, WORKDIR/{val,test}_scores.npz and WORKDIR/pr_curve.png.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterable
from typing import Any

import jax
import ml_collections
import numpy as np
from absl import logging
from jax.experimental import multihost_utils

from clever_jax import distributed, files
from clever_jax.data import pipeline
from clever_jax.evaluation import grounding
from clever_jax.evaluation import metrics as metrics_lib
from clever_jax.progress import Progress


@dataclasses.dataclass(frozen=True)
class Scorer:
    """What scores one split, over one process or several (a built run's `Run.scorer(split)`).

    Attributes:
      split: the split's name (for the progress log).
      step_fn: (params, process-local batch of `batch_size` bags) -> host-local (scores [B, R+1],
        evidence [B, R+1, N]).
      loader: this process's batches of the split (its shard when there are several processes).
      batch_size: B, the process-local batch size. num_steps: the batches every process runs (the
        largest shard's). num_bags: the split's bags, all processes together.
      evidence_dtype: the dtype evidence is kept in.
    """

    split: str
    step_fn: Callable[[Any, dict], tuple[np.ndarray, np.ndarray]]
    loader: Iterable[dict]
    batch_size: int
    num_steps: int
    num_bags: int
    evidence_dtype: str = "float16"


@dataclasses.dataclass
class SplitOutputs:
    """Everything an evaluation pass produces for one split (P bags, N instances), in bag id order.

    scores [P, R+1], labels [P, R+1] bool, pairs [P, 2], bags [P], evidence [P, R+1, N] and truth
    [P, N, R+1] bool (the relations each instance truly shows; both when `keep_evidence`, else None),
    top_evidence int16 [P, R+1, K] (the K highest-weight instances of each relation, -1 past the
    bag's instances), top_weight [P, R+1, K] and above_uniform int [P, R+1] (instances weighing more
    than uniform; the three when `num_evidence` = K > 0, else None), gold_attention [P, N] (the
    evidence of each bag's gold relations, averaged), against_truth
    [P, R+1, 4] (grounding.attention_against_truth of each gold relation's evidence; NaN for the other
    relations and where no instance truly shows it), images/subjects/objects/annotated/instance_mask
    [P, N].
    """

    scores: np.ndarray
    gold_attention: np.ndarray
    against_truth: np.ndarray
    labels: np.ndarray
    pairs: np.ndarray
    bags: np.ndarray
    evidence: np.ndarray | None
    truth: np.ndarray | None
    top_evidence: np.ndarray | None
    top_weight: np.ndarray | None
    above_uniform: np.ndarray | None
    images: np.ndarray
    subjects: np.ndarray
    objects: np.ndarray
    annotated: np.ndarray
    instance_mask: np.ndarray


def top_instances(evidence: np.ndarray, instance_mask: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k highest-weight instances of every relation of every bag, best first.

    evidence [B, R+1, N], instance_mask bool [B, N] -> positions int16 [B, R+1, k] (-1 past the bag's
    instances) and their weights [B, R+1, k] (-1 there).
    """
    weights = np.where(instance_mask[:, None, :], evidence.astype(np.float32), -1.0)
    best = np.argsort(-weights, axis=2, kind="stable")[..., :k]
    weight = np.take_along_axis(weights, best, axis=2)
    return np.where(weight >= 0, best, -1).astype(np.int16), weight


def above_uniform(evidence: np.ndarray, instance_mask: np.ndarray) -> np.ndarray:
    """How many of each bag's instances weigh more than uniform (1 / its instances) for each relation:
    evidence [B, R+1, N], instance_mask bool [B, N] -> int16 [B, R+1]."""
    uniform = 1.0 / np.maximum(instance_mask.sum(axis=1), 1)  # [B]
    above = (evidence.astype(np.float32) > uniform[:, None, None] + 1e-6) & instance_mask[:, None, :]
    return above.sum(axis=2).astype(np.int16)


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


def _against_truth(batch: dict, evidence: np.ndarray) -> np.ndarray:
    """grounding.attention_against_truth of every gold relation of a batch's bags: [B, R+1, 4] (NaN elsewhere)."""
    out = np.full((*batch["labels"].shape, len(grounding.TRUTH_MEASURES)), np.nan, np.float32)
    bag, relation = grounding.gold_relations(batch["labels"])
    out[bag, relation] = grounding.attention_against_truth(
        evidence[bag, relation], batch["truth"][bag, :, relation], batch["instance_mask"][bag])
    return out


def run_eval(params: Any, step_fn, loader, batch_size: int, keep_evidence: bool = False,
             num_steps: int | None = None, evidence_dtype: str = "float16", num_evidence: int = 0,
             progress: Progress | None = None) -> SplitOutputs:
    """Scores every bag of a loader's split (one pass), over one process or several.

    Args:
      params: passed to `step_fn`.
      step_fn: (params, batch) -> (scores [B, R+1], evidence [B, R+1, N]) of a process-local batch of
        B = `batch_size` bags.
      loader: this process's batches of the split (its shard when there are several processes).
      batch_size: B; short batches are padded with empty bags.
      keep_evidence: keep the evidence of every bag, as `evidence_dtype` (else only the gold relations'
        attention).
      num_steps: steps every process runs (shards can differ by a batch: the short ones are padded
        with empty batches, so the processes stay in step); None: as many as the loader has.
      num_evidence: K > 0 keeps each relation's K best instances and the count above uniform
        (top_evidence, top_weight, above_uniform): what a knowledge base needs, a few bytes per
        (bag, relation) instead of the N weights of keep_evidence.
      progress: told the bags scored so far (this process's, times the processes) after every batch.

    Returns:
      The outputs of every bag of the split, of all processes, on every process, in bag id order
      (the order of the records), so the same whatever the number of processes.
    """
    if num_steps is None and jax.process_count() > 1:
        raise ValueError("run_eval over several processes needs num_steps (the same on every process)")
    keys = ("labels", "pair", "bag", "images", "subjects", "objects", "annotated", "instance_mask", "bag_mask")
    collected: dict[str, list] = {k: [] for k in (*keys, "scores", "evidence", "truth", "gold_attention",
                                                   "against_truth", "top_evidence", "top_weight", "above_uniform")}
    done = 0
    for batch in _padded_batches(loader, batch_size, num_steps):
        scores, evidence = jax.device_get(step_fn(params, batch))
        gold = batch["labels"] / np.maximum(batch["labels"].sum(axis=1, keepdims=True), 1)
        collected["gold_attention"].append(np.einsum("br,brn->bn", gold, evidence))
        collected["against_truth"].append(_against_truth(batch, evidence))
        collected["scores"].append(scores)
        if keep_evidence:
            collected["evidence"].append(evidence.astype(evidence_dtype))
            collected["truth"].append(batch["truth"])
        if num_evidence:
            top, weight = top_instances(evidence, batch["instance_mask"], num_evidence)
            collected["top_evidence"].append(top)
            collected["top_weight"].append(weight.astype(evidence_dtype))
            collected["above_uniform"].append(above_uniform(evidence, batch["instance_mask"]))
        for k in keys:
            collected[k].append(batch[k])
        done += int(batch["bag_mask"].sum()) * jax.process_count()
        if progress is not None:
            progress.update(done)
    local = {k: np.concatenate(v) for k, v in collected.items() if v}
    out = multihost_utils.process_allgather(local, tiled=True)  # Processes' rows one after the other.
    order = np.flatnonzero(out["bag_mask"])
    order = order[np.argsort(out["bag"][order], kind="stable")]
    out = {k: v[order] for k, v in out.items()}
    return SplitOutputs(
        scores=out["scores"], gold_attention=out["gold_attention"], against_truth=out["against_truth"],
        labels=out["labels"] > 0, pairs=out["pair"], bags=out["bag"].astype(np.int64), evidence=out.get("evidence"),
        truth=out.get("truth"), top_evidence=out.get("top_evidence"), top_weight=out.get("top_weight"),
        above_uniform=out.get("above_uniform"), images=out["images"],
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
    """The metrics of a split's outputs (% unless said otherwise).

    * The held-out metrics over the non-NA relations (metrics.held_out_metrics).
    * attention_on_annotated: the share of the gold relations' attention on instances whose
      annotations relate the pair (positive bags with such instances); attention_chance is what
      uniform attention gets there.
    * With the world's latent truth, over the (bag, gold relation) facts whose bag holds an
      instance that truly shows the relation (grounding.attention_against_truth): attention_on_true
      and its uniform attention_true_chance, top_evidence_true (the highest-weight instance truly
      shows it) and attention_true_auc (a true instance outweighs a non-true one; 50 is chance).
    * With graded truth: spearman (ρ over every test candidate, a fraction) and spearman_top (the
      paper's protocol: every 50th of the top 10 % of candidates, `spearman_top_triplets` of them).
    """
    metrics = metrics_lib.held_out_metrics(outputs.scores[:, 1:], outputs.labels[:, 1:])
    positive = ~outputs.labels[:, 0]
    attention = grounding.attention_on_annotated(outputs.gold_attention[positive], outputs.annotated[positive],
                                                outputs.instance_mask[positive])
    metrics["attention_on_annotated"] = 100 * attention["attention_on_annotated"]
    metrics["attention_chance"] = 100 * attention["chance"]
    facts = outputs.against_truth.reshape(-1, len(grounding.TRUTH_MEASURES))
    facts = facts[~np.isnan(facts[:, 0])]
    if len(facts):
        for name, values in zip(grounding.TRUTH_MEASURES, facts.T, strict=True):
            metrics[name] = 100 * (float(np.nanmean(values)) if np.any(~np.isnan(values)) else float("nan"))
    if grades is not None:
        scores = outputs.scores[:, 1:]
        metrics["spearman"] = metrics_lib.commonsense_correlation(scores, outputs.pairs, grades)
        metrics["spearman_top"], metrics["spearman_top_triplets"] = metrics_lib.spearman_top(scores, outputs.pairs,
                                                                                              grades)
    return {k: float(v) for k, v in metrics.items()}


def evaluate(scorer: Scorer, params: Any, grades: np.ndarray | None,
             keep_evidence: bool = False) -> tuple[dict[str, float], SplitOutputs]:
    """Metrics and outputs of a split; with several processes each scores its shard and all get everything."""
    outputs = split_outputs(scorer, params, keep_evidence)
    return split_metrics(outputs, grades), outputs


def split_outputs(scorer: Scorer, params: Any, keep_evidence: bool = False, num_evidence: int = 0) -> SplitOutputs:
    """The outputs of every bag of a scorer's split (`run_eval`, every process taking part, progress logged)."""
    return run_eval(params, scorer.step_fn, scorer.loader, scorer.batch_size, keep_evidence, scorer.num_steps,
                    scorer.evidence_dtype, num_evidence, Progress(scorer.num_bags, f"Scoring {scorer.split}"))


def evaluate_run(run: Any, params: Any, workdir: str, keep_evidence: bool = False) -> dict[str, SplitOutputs]:
    """Evaluates the validation and test splits of a built run (training.builder.Run, which imports this
    module) and writes their files into `workdir` (write_results); returns each split's outputs."""
    results, outputs = {}, {}
    for split in ("val", "test"):
        results[split], outputs[split] = evaluate(run.scorer(split), params, run.grades, keep_evidence)
    write_results(workdir, results, outputs, f"{run.config.model.head} (test)")
    logging.info("Test: %s", " ".join(f"{k}={v:.2f}" for k, v in results["test"].items()))
    return outputs


def world_grades(config: ml_collections.ConfigDict, workdir: str) -> np.ndarray | None:
    """Graded truth of the generated world (commonsense.json), None for real data."""
    if config.data.source != "world":
        return None
    world_dir = config.data.world_dir or os.path.join(workdir, "world")
    return metrics_lib.load_grades(os.path.join(world_dir, "commonsense.json"))


def write_results(workdir: str, results: dict[str, dict], outputs: dict[str, SplitOutputs], label: str) -> None:
    """Process 0 writes metrics.json (`results`: split -> metrics), {split}_scores.npz (scores, labels,
    pairs, bags of each split of `outputs`) and pr_curve.png (the test curve, named `label`) into `workdir`."""
    if not distributed.is_main_process():
        return
    files.write_json(os.path.join(workdir, "metrics.json"), results)
    for split, out in outputs.items():
        with files.atomic_write(os.path.join(workdir, f"{split}_scores.npz"), "wb") as f:
            np.savez_compressed(f, scores=out.scores, labels=out.labels, pairs=out.pairs, bags=out.bags)
    test = outputs["test"]
    curve = metrics_lib.micro_curve(test.scores[:, 1:], test.labels[:, 1:])
    metrics_lib.precision_recall_plot({label: curve}, os.path.join(workdir, "pr_curve.png"))
