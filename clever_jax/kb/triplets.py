"""Knowledge extraction: a ranked triplet list where every triplet names its evidence images."""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING, Any

import numpy as np
from absl import logging

from clever_jax import distributed, files
from clever_jax.data.records import open_records, read_manifest
from clever_jax.data.vocab import Vocab, benchmark_vocab
from clever_jax.evaluation import evaluate

if TYPE_CHECKING:
    from clever_jax.training.builder import Run


def ranked_triplets(scores: np.ndarray, top_k: int, keep: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Bag rows and relation ids (1..R) of the best candidates (of those `keep` [P, R+1] marks, when
    given): scores [P, R+1] -> two [K] arrays."""
    flat = -scores[:, 1:].ravel()
    order = np.argsort(flat, kind="stable")
    if keep is not None:
        order = order[keep[:, 1:].ravel()[order]]
    if top_k:
        order = order[:top_k]
    rows, columns = np.divmod(order, scores.shape[1] - 1)
    return rows, columns + 1


def write_triplets(
    path: str,
    outputs,
    images_source,
    vocab: Vocab,
    top_k: int = 0,
    num_evidence: int = 3,
    with_truth: bool = False,
    known: np.ndarray | None = None,
    known_key: str = "known",
    with_annotations: bool = True,
    keep: np.ndarray | None = None,
    ranked: tuple[np.ndarray, np.ndarray] | None = None,
) -> int:
    """Writes `path` (JSON lines, best first); returns the number of triplets written.

    Each line: subject, relation, object, score, known (a fact of the split's knowledge base),
    and evidence: up to `num_evidence` instances with image_id, subject_box and object_box
    (x1, y1, x2, y2 pixels), image_size (width, height), weight (the head's attention or normalised
    instance probability) and annotated (whether the image's annotations relate the two boxes); with `with_truth` (the
    generated world) also true: whether the instance truly shows the triplet's relation.

    Args:
      outputs: an evaluate.SplitOutputs evaluated with keep_evidence=True, or with num_evidence at
        least `num_evidence` (then only its top evidence is read).
      images_source: the image records (random access).
      known: bool [P, R + 1] what `known_key` says of each candidate (default: the split's labels).
      with_annotations: write each evidence instance's `annotated` (images without annotations: no).
      keep: bool [P, R + 1] the candidates that may be written (default: all).
      ranked: the (rows, relations) to write, when already ranked (else ranked_triplets of top_k, keep).
    """
    known = outputs.labels if known is None else known
    rows, relations = ranked_triplets(outputs.scores, top_k, keep) if ranked is None else ranked
    if outputs.top_evidence is not None and outputs.top_evidence.shape[2] >= num_evidence:
        best = outputs.top_evidence[rows, relations, :num_evidence].astype(np.int64)  # [K, E]
        best_weight = outputs.top_weight[rows, relations, :num_evidence].astype(np.float32)
    else:
        best, best_weight = evaluate.top_instances(outputs.evidence[rows, relations][:, None],
                                                   outputs.instance_mask[rows], num_evidence)
        best, best_weight = best[:, 0].astype(np.int64), best_weight[:, 0]
    best = np.maximum(best, 0)  # Positions past the bag's instances (weight -1) are never written.
    image_index = outputs.images[rows[:, None], best]
    needed = np.unique(image_index[best_weight >= 0])
    records = dict(zip(needed.tolist(), images_source.__getitems__(needed.tolist()), strict=True))
    subject_slot, object_slot = outputs.subjects[rows[:, None], best], outputs.objects[rows[:, None], best]
    annotated = outputs.annotated[rows[:, None], best]
    true = outputs.truth[rows[:, None], best, relations[:, None]] if with_truth else None
    with files.atomic_write(path) as f:
        for k, (row, relation) in enumerate(zip(rows.tolist(), relations.tolist(), strict=True)):
            evidence = []
            for e in range(best.shape[1]):
                if best_weight[k, e] < 0:
                    break
                record = records[int(image_index[k, e])]
                evidence.append({
                    "image_id": int(record["image_id"]),
                    "subject_box": [round(float(x), 1) for x in record["boxes"][subject_slot[k, e]]],
                    "object_box": [round(float(x), 1) for x in record["boxes"][object_slot[k, e]]],
                    "image_size": [int(x) for x in record["size"]],
                    "weight": round(float(best_weight[k, e]), 4),
                    **({"annotated": bool(annotated[k, e])} if with_annotations else {}),
                    **({"true": bool(true[k, e])} if with_truth else {}),
                })
            subject, obj = outputs.pairs[row]
            f.write(json.dumps({
                "subject": vocab.entities[subject],
                "relation": vocab.relations[relation],
                "object": vocab.entities[obj],
                "score": round(float(outputs.scores[row, relation]), 6),
                known_key: bool(known[row, relation]),
                "evidence": evidence,
            }) + "\n")
    return len(rows)


def extract_benchmark(run: Run, params: Any, outputs: dict[str, evaluate.SplitOutputs], workdir: str) -> None:
    """Writes WORKDIR/triplets.jsonl: the ranked triplets of config.extract.split ("all": every split) of
    the benchmark, scored with `params`; splits already in `outputs` (with evidence) are not scored again."""
    ex = run.config.extract
    for name in ("train", "val", "test") if ex.split == "all" else (ex.split,):
        if name not in outputs:
            _, outputs[name] = evaluate.evaluate(run.scorer(name), params, run.grades, keep_evidence=True)
    if ex.split == "all":
        outputs["all"] = evaluate.concat_outputs([outputs["train"], outputs["val"], outputs["test"]])
    if distributed.is_main_process():
        path = os.path.join(workdir, "triplets.jsonl")
        count = write_triplets(path, outputs[ex.split], open_records(run.records_dir)[0], benchmark_vocab(),
                               ex.top_k, ex.num_evidence, read_manifest(run.records_dir).get("has_truth", False))
        logging.info("Wrote %d triplets to %s", count, path)
