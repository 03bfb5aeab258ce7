"""Ask a knowledge base (WORKDIR/kb/kb.jsonl of `--mode=extract`, or a triplets.jsonl) a question.

  python -m clever_jax.query --kb=runs/demo/kb/kb.jsonl man horse    # the pair's relations, best first
  python -m clever_jax.query --kb=... --relation=riding              # the entity pairs of a relation
  python -m clever_jax.query --kb=... --image=2417                   # what it says of one image's pairs

Each answer lists triplets by score with their evidence (image, boxes, weight). Names are checked
against the vocabulary (an exported bundle's with --bundle=EXPORT_DIR, else the package's) and an
unknown one is named with the closest known names. The first query builds an index next to the
knowledge base (KB.index.sqlite, the standard library's SQLite), rebuilt when the knowledge base
changes (its size or modification time), so later queries on a 100k-triplet KB take milliseconds.
"""

from __future__ import annotations

import difflib
import json
import os
import sqlite3
import sys

from absl import app, flags

from clever_jax.data.jsonio import DataError
from clever_jax.data.vocab import Vocab, benchmark_vocab

SCHEMA = """
CREATE TABLE source (size INTEGER, mtime_ns INTEGER);
CREATE TABLE triplets (id INTEGER PRIMARY KEY, subject TEXT, relation TEXT, object TEXT, score REAL, line TEXT);
CREATE TABLE images (image_id INTEGER, triplet INTEGER);
"""
INDEXES = """
CREATE INDEX by_pair ON triplets (subject, object, score DESC);
CREATE INDEX by_relation ON triplets (relation, score DESC);
CREATE INDEX by_image ON images (image_id);
"""


def index_path(kb_path: str) -> str:
    return kb_path + ".index.sqlite"


def _stamp(kb_path: str) -> tuple[int, int]:
    stat = os.stat(kb_path)
    return stat.st_size, stat.st_mtime_ns


def _rows(kb_path: str):
    """((id, subject, relation, object, score, line), evidence image ids) of every line; DataError naming a bad one."""
    with open(kb_path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                t = json.loads(line)
                images = {int(e["image_id"]) for e in t.get("evidence", [])}
                yield (line_no, t["subject"], t["relation"], t["object"], float(t["score"]), line), images
            except (ValueError, KeyError, TypeError, AttributeError) as e:
                raise DataError(f"{kb_path}: line {line_no}: expected a triplet (subject, relation, object, score, "
                                f"evidence) as written by --mode=extract: {type(e).__name__}: {e}") from e


def open_index(kb_path: str) -> sqlite3.Connection:
    """The knowledge base's index, built (atomically, beside it) when missing or older than the KB."""
    if not os.path.isfile(kb_path):
        raise FileNotFoundError(f"{kb_path}: no knowledge base (run --mode=extract with "
                                "--config.extract.features_path, which writes WORKDIR/kb/kb.jsonl)")
    path = index_path(kb_path)
    if os.path.isfile(path):
        db = sqlite3.connect(path)
        if db.execute("SELECT size, mtime_ns FROM source").fetchone() == _stamp(kb_path):
            return db
        db.close()
    partial = f"{path}.partial.{os.getpid()}"
    if os.path.exists(partial):
        os.remove(partial)
    db = sqlite3.connect(partial)
    db.executescript(SCHEMA)
    stamp = _stamp(kb_path)
    try:
        triplets = list(_rows(kb_path))
    except DataError:
        db.close()
        os.remove(partial)
        raise
    db.executemany("INSERT INTO triplets VALUES (?, ?, ?, ?, ?, ?)", (row for row, _ in triplets))
    db.executemany("INSERT INTO images VALUES (?, ?)",
                   ((image, row[0]) for row, images in triplets for image in images))
    db.execute("INSERT INTO source VALUES (?, ?)", stamp)
    db.executescript(INDEXES)
    db.commit()
    db.close()
    os.replace(partial, path)
    return sqlite3.connect(path)


def check_name(name: str, known: tuple[str, ...], what: str) -> str:
    """`name` when it is one of `known`; ValueError naming the closest known names otherwise."""
    if name in known:
        return name
    close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
    raise ValueError(f"{name!r} is not a vocabulary {what}" + (f"; did you mean {', '.join(map(repr, close))}?"
                                                              if close else ""))


def read_vocab(bundle: str) -> Vocab:
    """The vocabulary of an exported bundle (bundle/vocab/*.txt), or the package's when `bundle` is ""."""
    if not bundle:
        return benchmark_vocab()
    lists = []
    for name in ("entities.txt", "predicates.txt"):
        path = os.path.join(bundle, "vocab", name)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{path}: not an exported bundle (--mode=export writes WORKDIR/export)")
        with open(path) as f:
            lists.append(tuple(line.strip() for line in f if line.strip()))
    return Vocab(*lists)


def ask(db: sqlite3.Connection, vocab: Vocab, pair: tuple[str, str] | None = None, relation: str = "",
        image: int | None = None, top: int = 10) -> list[dict]:
    """The triplets answering one question (a pair, a relation or an image), best first, at most `top`."""
    columns = "t.line"
    if pair is not None:
        subject, obj = (check_name(name, vocab.entities, "entity") for name in pair)
        rows = db.execute(f"SELECT {columns} FROM triplets t WHERE subject = ? AND object = ? ORDER BY score DESC "
                          "LIMIT ?", (subject, obj, top)).fetchall()
    elif relation:
        rows = db.execute(f"SELECT {columns} FROM triplets t WHERE relation = ? ORDER BY score DESC LIMIT ?",
                          (check_name(relation, vocab.relations[1:], "predicate"), top)).fetchall()
    elif image is not None:
        rows = db.execute(f"SELECT {columns} FROM images i JOIN triplets t ON t.id = i.triplet WHERE i.image_id = ? "
                          "ORDER BY t.score DESC LIMIT ?", (image, top)).fetchall()
        if not rows:
            raise ValueError(f"image {image} is evidence of no triplet in this knowledge base (it may hold only the "
                             "top triplets: extract.top_k)")
    else:
        raise ValueError("ask for a pair (two entity names), --relation=NAME or --image=ID")
    answers = [json.loads(line) for (line,) in rows]
    return [{**a, "in_training_kb": bool(a.get("in_training_kb", a.get("known", False))),
             "evidence": a.get("evidence", [])} for a in answers]


def render(answers: list[dict], evidence: int) -> str:
    """Answers as text: a line per triplet, then up to `evidence` evidence lines each."""
    lines = []
    for a in answers:
        known = "  (in the training KB)" if a["in_training_kb"] else ""
        lines.append(f"{a['subject']} {a['relation']} {a['object']}  {a['score']:.4f}{known}")
        lines += [f"    image {e['image_id']}  subject {e['subject_box']}  object {e['object_box']}  weight "
                  f"{e['weight']:.4f}" for e in a["evidence"][:evidence]]
    return "\n".join(lines) if lines else "no triplet"


def main(argv: list[str]) -> None:
    args = flags.FLAGS
    if len(argv) not in (1, 3):
        raise app.UsageError("give two entity names (subject object), --relation=NAME or --image=ID")
    try:
        answers = ask(open_index(args.kb), read_vocab(args.bundle), tuple(argv[1:]) if len(argv) == 3 else None,
                      args.relation, args.image, args.top)
    except (ValueError, FileNotFoundError) as e:
        sys.exit(f"{type(e).__name__}: {e}")
    print(render(answers, args.evidence))


if __name__ == "__main__":
    flags.DEFINE_string("kb", None, "Knowledge base: kb.jsonl (or triplets.jsonl) of --mode=extract.")
    flags.DEFINE_string("bundle", "", "Exported bundle whose vocabulary the names are checked against.")
    flags.DEFINE_string("relation", "", "List the entity pairs of this relation.")
    flags.DEFINE_integer("image", None, "List what the knowledge base says of this image's pairs.")
    flags.DEFINE_integer("top", 10, "Triplets listed at most.")
    flags.DEFINE_integer("evidence", 3, "Evidence instances shown per triplet.")
    flags.mark_flags_as_required(["kb"])
    app.run(main)
