"""RTP, the paper's text baseline: each triplet scored by how many captions of a corpus state it.

  python -m clever_jax.experiments.baselines.rtp --captions=PATH     (the corpus pass alone: captions, triplets, time)

The paper parses Conceptual Captions (3.3 M captions) with a scene-graph parser; here the
vocabulary-driven matcher of `captions` reads any corpus `captions.read_captions` reads. A
candidate the corpus never states scores 0. The results table's RTP row is clever_jax.experiments.results'.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

import numpy as np
from absl import app, flags, logging

from clever_jax.data.vocab import Vocab, benchmark_vocab
from clever_jax.experiments.baselines.captions import CaptionMatcher, read_captions


def triplet_counts(captions: Iterable[str], vocab: Vocab, log_every: int = 500_000) -> np.ndarray:
    """int64 [E, R + 1, E]: the number of captions stating each (subject, relation, object)."""
    matcher = CaptionMatcher(vocab)
    num_entities = len(vocab.entities)
    counts = np.zeros((num_entities, vocab.num_relations, num_entities), np.int64)
    start = time.perf_counter()
    for index, caption in enumerate(captions, start=1):
        for subject, relation, obj in matcher.triplets(caption):
            counts[subject, relation, obj] += 1
        if index % log_every == 0:
            logging.info("RTP: %d captions read (%.0f per second)", index, index / (time.perf_counter() - start))
    return counts


def scores(counts: np.ndarray, pairs: np.ndarray) -> np.ndarray:
    """float32 [P, R]: the caption counts of every non-NA relation for entity pairs [P, 2]."""
    return counts[pairs[:, 0], 1:, pairs[:, 1]].astype(np.float32)


def main(argv: list[str]) -> None:
    del argv
    start = time.perf_counter()
    count = 0

    def counted():
        nonlocal count
        for caption in read_captions(flags.FLAGS.captions):
            count += 1
            yield caption
    counts = triplet_counts(counted(), benchmark_vocab())
    seconds = time.perf_counter() - start
    print(f"{count} captions, {int(counts.sum())} triplet statements of {int((counts > 0).sum())} distinct triplets, "
          f"{seconds:.1f} s ({count / max(seconds, 1e-9):,.0f} captions per second)")


if __name__ == "__main__":
    flags.DEFINE_string("captions", None, "Caption corpus (world JSON, COCO-style JSON or caption<TAB>url TSV).")
    flags.mark_flags_as_required(["captions"])
    app.run(main)
