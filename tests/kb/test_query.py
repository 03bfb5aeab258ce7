"""The knowledge-base query command (clever_jax.kb.query)."""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import subprocess
import sys
import time

import numpy as np
import pytest
from conftest import dead_pid

from clever_jax import files
from clever_jax.data.jsonio import DataError
from clever_jax.data.vocab import benchmark_vocab
from clever_jax.kb import query, report


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
    with pytest.raises(DataError, match=r"bad\.jsonl line 2: no 'relation'"):
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


@pytest.mark.parametrize("damage", ["empty", "garbage", "truncated", "earlier schema"])
def test_a_damaged_index_is_rebuilt(kb, damage):
    query.open_index(kb).close()
    path = query.index_path(kb)
    content = open(path, "rb").read()
    with open(path, "wb") as f:
        f.write({"empty": b"", "garbage": b"not sqlite" * 50, "truncated": content[:len(content) // 2],
                 "earlier schema": content}[damage])
    if damage == "earlier schema":  # An index of a version that did not count the triplets: rebuilt.
        db = sqlite3.connect(path)
        db.executescript("ALTER TABLE source DROP COLUMN triplets;")
        db.commit()
        db.close()
    answers = query.ask(query.open_index(kb), benchmark_vocab(), relation="riding")
    assert [a["subject"] for a in answers] == ["man", "woman"]


def test_a_count_that_kb_meta_contradicts_is_refused(tmp_path):
    lines = [triplet("man", "riding", "horse", 0.9, (7,)), triplet("man", "near", "horse", 0.3, (8,))]
    files.write_json(tmp_path / "kb_meta.json", {"triplets": 3})
    kb = write_kb(tmp_path / "kb.jsonl", lines)  # Cut at a line boundary: one triplet short.
    with pytest.raises(DataError, match=r"kb\.jsonl holds 2 triplets but .*kb_meta\.json, written with it, records 3"):
        query.open_index(kb)
    with pytest.raises(DataError, match="holds 2 triplets"):  # The index built meanwhile does not let it through.
        query.open_index(kb)
    files.write_json(tmp_path / "kb_meta.json", {"triplets": 2})
    assert len(query.ask(query.open_index(kb), benchmark_vocab(), relation="near")) == 1
    (tmp_path / "kb_meta.json").write_text('{"triplets": ')
    with pytest.raises(DataError, match=r"kb_meta\.json: not UTF-8 JSON"):
        query.open_index(kb)


def test_a_knowledge_base_folder_written_as_a_whole_is_read_through_its_links(tmp_path):
    lines = [triplet("man", "riding", "horse", 0.9, (7,))]
    for count in (1, 2):
        with files.atomic_folder(tmp_path / "kb", ("kb.jsonl", "kb_meta.json")) as partial:
            write_kb(os.path.join(partial, "kb.jsonl"), lines * count)
            files.write_json(os.path.join(partial, "kb_meta.json"), {"triplets": count})
        kb = str(tmp_path / "kb" / "kb.jsonl")
        assert len(query.ask(query.open_index(kb), benchmark_vocab(), relation="riding")) == count
    assert os.path.isfile(tmp_path / "kb" / "kb.jsonl.index.sqlite")


def test_stale_index_builds_are_removed(kb, tmp_path):
    dead = dead_pid()
    left = [f"{query.index_path(kb)}.{socket.gethostname()}.{dead}.tmp", f"{query.index_path(kb)}.partial.{dead}"]
    live = f"{query.index_path(kb)}.partial.{os.getppid()}"  # An earlier version's build, still running.
    for path in [*left, live]:
        open(path, "w").close()
    query.open_index(kb)
    assert sorted(os.listdir(tmp_path)) == ["kb.jsonl", "kb.jsonl.index.sqlite", os.path.basename(live)]


def test_a_stale_build_another_query_removes_meanwhile_is_no_error(kb, monkeypatch):
    partial = f"{query.index_path(kb)}.partial.{dead_pid()}"
    open(partial, "w").close()

    def removed_meanwhile(pid):
        if os.path.exists(partial):
            os.remove(partial)
        return False

    monkeypatch.setattr(files, "pid_alive", removed_meanwhile)
    assert len(query.ask(query.open_index(kb), benchmark_vocab(), relation="riding")) == 2


def test_an_index_damaged_where_only_a_question_reads_is_rebuilt(kb):
    query.open_index(kb).close()
    db = sqlite3.connect(query.index_path(kb))
    page_size, = db.execute("PRAGMA page_size").fetchone()
    root, = db.execute("SELECT rootpage FROM sqlite_master WHERE name = 'triplets'").fetchone()
    db.close()
    with open(query.index_path(kb), "r+b") as f:  # The triplets' page overwritten; the source table intact.
        f.seek((root - 1) * page_size)
        f.write(b"\xff" * page_size)
    with pytest.raises(sqlite3.DatabaseError):
        query.ask(query.open_index(kb), benchmark_vocab(), relation="riding")
    answers = query.ask_kb(kb, benchmark_vocab(), relation="riding")
    assert [a["subject"] for a in answers] == ["man", "woman"]
    assert len(query.ask(query.open_index(kb), benchmark_vocab(), relation="riding")) == 2  # Rebuilt on disk.


def test_a_kb_replaced_while_it_is_indexed_is_read_from_one_version(tmp_path, monkeypatch):
    def publish(count):
        with files.atomic_folder(tmp_path / "kb", ("kb.jsonl", "kb_meta.json")) as partial:
            write_kb(os.path.join(partial, "kb.jsonl"), [triplet("man", "riding", "horse", 0.9)] * count)
            files.write_json(os.path.join(partial, "kb_meta.json"), {"triplets": count})

    publish(1)
    read = report.triplets

    def read_then_replace(path):  # An extraction replaces the knowledge base once this one is read.
        yield from read(path)
        with monkeypatch.context() as m:  # Another process: its sweep leaves this one's index build alone.
            m.setattr(files, "remove_stale", lambda folder: [])
            publish(2)

    monkeypatch.setattr(report, "triplets", read_then_replace)
    kb = str(tmp_path / "kb" / "kb.jsonl")
    assert len(query.ask(query.open_index(kb), benchmark_vocab(), relation="riding")) == 1
    monkeypatch.undo()
    assert len(query.ask(query.open_index(kb), benchmark_vocab(), relation="riding")) == 2


def test_out_of_range_arguments_are_named(kb):
    db, vocab = query.open_index(kb), benchmark_vocab()
    with pytest.raises(ValueError, match=r"--top=-5: expected the number of triplets to list, from 1"):
        query.ask(db, vocab, relation="riding", top=-5)
    with pytest.raises(ValueError, match=r"--image=1180591620717411303424: expected an image id, from 0 to 2\^63 - 1"):
        query.ask(db, vocab, image=2**70)
    with pytest.raises(ValueError, match=r"--evidence=-1"):
        query.render([], evidence=-1)


@pytest.mark.slow
@pytest.mark.parametrize("flag", ["--top=-5", f"--image={2**70}"])
def test_the_command_names_a_bad_flag_in_one_line(kb, flag):
    result = subprocess.run([sys.executable, "-m", "clever_jax.kb.query", f"--kb={kb}", flag, *(
        ["--relation=riding"] if "top" in flag else [])], capture_output=True, text=True, timeout=120)
    lines = result.stderr.strip().splitlines()
    assert result.returncode and len(lines) == 1 and lines[0].startswith(f"ValueError: {flag}: expected"), lines
