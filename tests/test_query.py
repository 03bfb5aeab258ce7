"""The knowledge-base query command (clever_jax.query)."""

from __future__ import annotations

import json
import os
import time

import numpy as np
import pytest

from clever_jax import query
from clever_jax.data.jsonio import DataError
from clever_jax.data.vocab import benchmark_vocab


def triplet(subject, relation, obj, score, images=(), known=False):
    evidence = [{"image_id": i, "subject_box": [0.0, 0.0, 9.0, 9.0], "object_box": [1.0, 1.0, 5.0, 5.0],
                 "weight": 0.5} for i in images]
    return {"subject": subject, "relation": relation, "object": obj, "score": score, "in_training_kb": known,
            "evidence": evidence}


def write_kb(path, triplets) -> str:
    with open(path, "w") as f:
        f.writelines(json.dumps(t) + "\n" for t in triplets)
    return str(path)


@pytest.fixture
def kb(tmp_path):
    return write_kb(tmp_path / "kb.jsonl", [
        triplet("man", "riding", "horse", 0.9, (7, 8), known=True), triplet("man", "near", "horse", 0.3, (8,)),
        triplet("woman", "riding", "horse", 0.6, (9,)), triplet("man", "holding", "umbrella", 0.8, (7,)),
    ])


def test_a_pair_a_relation_and_an_image(kb):
    db, vocab = query.open_index(kb), benchmark_vocab()
    by_pair = query.ask(db, vocab, pair=("man", "horse"))
    assert [(a["relation"], a["score"]) for a in by_pair] == [("riding", 0.9), ("near", 0.3)]
    assert by_pair[0]["in_training_kb"] and [e["image_id"] for e in by_pair[0]["evidence"]] == [7, 8]
    assert [a["subject"] for a in query.ask(db, vocab, relation="riding")] == ["man", "woman"]
    on_image = query.ask(db, vocab, image=7)
    assert [(a["relation"], a["object"]) for a in on_image] == [("riding", "horse"), ("holding", "umbrella")]
    text = query.render(by_pair, evidence=1)
    assert text.splitlines()[0] == "man riding horse  0.9000  (in the training KB)"
    assert text.splitlines()[1].startswith("    image 7  subject [0.0, 0.0, 9.0, 9.0]")
    assert len(text.splitlines()) == 4


def test_unknown_names_and_images_are_named(kb):
    db, vocab = query.open_index(kb), benchmark_vocab()
    with pytest.raises(ValueError, match=r"'horses' is not a vocabulary entity; did you mean 'horse'"):
        query.ask(db, vocab, pair=("man", "horses"))
    with pytest.raises(ValueError, match=r"'rideing' is not a vocabulary predicate; did you mean 'riding'"):
        query.ask(db, vocab, relation="rideing")
    with pytest.raises(ValueError, match="image 12345 is evidence of no triplet"):
        query.ask(db, vocab, image=12345)
    with pytest.raises(FileNotFoundError, match="no knowledge base"):
        query.open_index(kb + ".missing")


def test_the_index_follows_the_knowledge_base(kb, tmp_path):
    vocab = benchmark_vocab()
    assert len(query.ask(query.open_index(kb), vocab, relation="riding")) == 2
    time.sleep(0.01)
    write_kb(kb, [triplet("dog", "riding", "horse", 0.5)])
    assert [a["subject"] for a in query.ask(query.open_index(kb), vocab, relation="riding")] == ["dog"]
    bad = write_kb(tmp_path / "bad.jsonl", [triplet("man", "on", "horse", 0.5)])
    with open(bad, "a") as f:
        f.write('{"subject": "man"}\n')
    with pytest.raises(DataError, match=r"bad\.jsonl: line 2: expected a triplet .*KeyError"):
        query.open_index(bad)
    assert not os.path.exists(query.index_path(bad))  # No half-built index left behind.


def test_a_100k_triplet_knowledge_base_answers_in_milliseconds(tmp_path):
    vocab = benchmark_vocab()
    rng = np.random.default_rng(0)
    entities, predicates = vocab.entities, vocab.predicates
    boxes = '"subject_box": [0, 0, 9, 9], "object_box": [1, 1, 5, 5], "weight": 0.5'
    kb = str(tmp_path / "kb.jsonl")
    with open(kb, "w") as f:  # Formatted directly: json.dumps of 100k records would take most of the test.
        for s, r, o, x, images in zip(rng.integers(0, 100, 100_000), rng.integers(0, 100, 100_000),
                                      rng.integers(0, 100, 100_000), rng.random(100_000),
                                      rng.integers(0, 5000, (100_000, 3)).tolist(), strict=True):
            evidence = ", ".join(f'{{"image_id": {i}, {boxes}}}' for i in images)
            f.write(f'{{"subject": "{entities[s]}", "relation": "{predicates[r]}", "object": "{entities[o]}", '
                    f'"score": {x:.6f}, "in_training_kb": false, "evidence": [{evidence}]}}\n')
    db = query.open_index(kb)
    start = time.perf_counter()
    for k in range(20):
        query.ask(db, vocab, pair=(entities[k], entities[k + 1]))
        query.ask(db, vocab, relation=predicates[k])
        query.ask(db, vocab, image=k)
    assert (time.perf_counter() - start) / 60 < 0.02  # Seconds per query.
