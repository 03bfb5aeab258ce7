"""Ask a knowledge base (WORKDIR/kb/kb.jsonl of `--mode=kb`, or a triplets.jsonl) a question.

  python -m clever_jax.kb.query --kb=runs/demo/kb/kb.jsonl man horse    # the pair's relations, best first
  python -m clever_jax.kb.query --kb=... --relation=riding              # the entity pairs of a relation
  python -m clever_jax.kb.query --kb=... --image=2417                   # what it says of one image's pairs
  python -m clever_jax.kb.query --kb=... --images man riding horse    # the images that show a triplet best

Each answer lists triplets by score with their evidence (image, boxes, weight). Names are checked
against the vocabulary (an exported bundle's with --bundle=EXPORT_DIR, else the package's) and an
unknown one is named with the closest known names. The first query builds an index next to the
knowledge base (KB.index.sqlite, the standard library's SQLite), rebuilt when the knowledge base
changes (its size or modification time) or the index is damaged, so later queries on a 100k-triplet
KB take milliseconds. A knowledge base whose kb_meta.json records another triplet count (cut, or
mixed with another extraction's files) is refused.

--images ranks every image of the pair in the collection by its best instance's score of the
relation (images.npz beside the knowledge base, written by --mode=kb with
--config.extract.image_index=true; kb/image_index.py), not only the few evidence images a
triplet keeps.
"""

from __future__ import annotations

import contextlib
import difflib
import glob
import json
import os
import sqlite3
import sys

from absl import app, flags, logging

from clever_jax import files
from clever_jax.data.jsonio import DataError
from clever_jax.data.vocab import Vocab, benchmark_vocab
from clever_jax.kb import image_index, report

SCHEMA = """
CREATE TABLE source (size INTEGER, mtime_ns INTEGER, triplets INTEGER);
CREATE TABLE triplets (id INTEGER PRIMARY KEY, subject TEXT, relation TEXT, object TEXT, score REAL, line TEXT);
CREATE TABLE images (image_id INTEGER, triplet INTEGER);
"""
INDEXES = """
CREATE INDEX by_pair ON triplets (subject, object, score DESC);
CREATE INDEX by_relation ON triplets (relation, score DESC);
CREATE INDEX by_image ON images (image_id);
"""
MAX_ID = 2**63 - 1  # SQLite's largest integer.


def index_path(kb_path: str) -> str:
    return kb_path + ".index.sqlite"


def _stamp(kb_path: str) -> tuple[int, int]:
    stat = os.stat(kb_path)
    return stat.st_size, stat.st_mtime_ns


def _remove_stale(kb_path: str) -> None:
    """Removes what queries and extractions of this host that died left beside the knowledge base
    (report.remove_stale), and index builds of an earlier version ({index}.partial.{pid}: no host)."""
    report.remove_stale(kb_path)
    files.remove_left(glob.glob(glob.escape(index_path(kb_path)) + ".partial.*"), host="")


def _reuse(path: str, stamp: tuple[int, int]) -> sqlite3.Connection | None:
    """The index at `path` when it was built from the knowledge base as it is now (`stamp`); None when
    it is missing, older, or damaged (empty, truncated, not SQLite: rebuilt)."""
    if not os.path.isfile(path):
        return None
    db = sqlite3.connect(path)
    try:
        row = db.execute("SELECT size, mtime_ns, triplets FROM source").fetchone()  # Earlier versions: no count.
        if row is not None and row[:2] == stamp:
            return db
    except sqlite3.DatabaseError as e:
        logging.warning("%s: a damaged index (%s); rebuilding it", path, e)
    db.close()
    return None


def _build(kb_path: str, path: str) -> sqlite3.Connection:
    """Indexes the knowledge base into a temporary file renamed onto `path` once complete."""
    partial = files.temporary(path)
    if os.path.exists(partial):
        os.remove(partial)
    stamp = _stamp(kb_path)
    db = sqlite3.connect(partial)
    try:
        db.executescript(SCHEMA)
        images: list[tuple[int, int]] = []

        def rows():
            for line_no, t, line in report.triplets(kb_path):
                images.extend((image, line_no) for image in {e["image_id"] for e in t.get("evidence", [])})
                yield line_no, t["subject"], t["relation"], t["object"], t["score"], line

        count = db.executemany("INSERT INTO triplets VALUES (?, ?, ?, ?, ?, ?)", rows()).rowcount
        db.executemany("INSERT INTO images VALUES (?, ?)", images)
        db.execute("INSERT INTO source VALUES (?, ?, ?)", (*stamp, count))
        db.executescript(INDEXES)
        db.commit()
        db.close()
        os.replace(partial, path)
    except BaseException:
        db.close()
        with contextlib.suppress(FileNotFoundError):
            os.remove(partial)
        raise
    return sqlite3.connect(path)


def open_index(kb_path: str, rebuild: bool = False) -> sqlite3.Connection:
    """The knowledge base's index, built (atomically, beside it) when missing, older than the KB, damaged
    or `rebuild`. The links to a knowledge base folder (files.atomic_folder) are resolved once, so the
    index and the count check read one version even while an extraction replaces it.

    Raises:
      FileNotFoundError: no knowledge base at `kb_path`.
      DataError: a bad line (named), or a count that kb_meta.json beside it contradicts (report.check_count).
    """
    if not os.path.isfile(kb_path):
        raise FileNotFoundError(f"{kb_path}: no knowledge base (run --mode=kb with "
                                "--config.extract.features_path, which writes WORKDIR/kb/kb.jsonl)")
    _remove_stale(kb_path)
    real, path = os.path.realpath(kb_path), index_path(kb_path)
    db = (None if rebuild else _reuse(path, _stamp(real))) or _build(real, path)
    report.check_count(real, db.execute("SELECT triplets FROM source").fetchone()[0])
    return db


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
    """The triplets answering one question (a pair, a relation or an image), best first, at most `top`.

    Raises ValueError naming the flag (--top, --image) or the name that is out of range or unknown."""
    if not 1 <= top <= MAX_ID:
        raise ValueError(f"--top={top}: expected the number of triplets to list, from 1 to 2^63 - 1")
    if image is not None and not 0 <= image <= MAX_ID:
        raise ValueError(f"--image={image}: expected an image id, from 0 to 2^63 - 1")
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


def ask_kb(kb_path: str, vocab: Vocab, **question) -> list[dict]:
    """ask() (with `question`) of the knowledge base's index (open_index), rebuilt once when it proves
    damaged only while answering; a sqlite3.DatabaseError if it fails again."""
    try:
        return ask(open_index(kb_path), vocab, **question)
    except sqlite3.DatabaseError as e:
        logging.warning("%s: a damaged index (%s); rebuilding it", index_path(kb_path), e)
        return ask(open_index(kb_path, rebuild=True), vocab, **question)


def render(answers: list[dict], evidence: int) -> str:
    """Answers as text: a line per triplet, then up to `evidence` evidence lines each."""
    if evidence < 0:
        raise ValueError(f"--evidence={evidence}: expected the number of evidence lines per triplet, 0 or more")
    lines = []
    for a in answers:
        known = "  (in the training KB)" if a["in_training_kb"] else ""
        lines.append(f"{a['subject']} {a['relation']} {a['object']}  {a['score']:.4f}{known}")
        lines += [f"    image {e['image_id']}  subject {e['subject_box']}  object {e['object_box']}  weight "
                  f"{e['weight']:.4f}" for e in a["evidence"][:evidence]]
    return "\n".join(lines) if lines else "no triplet"


def images_of(kb_path: str, vocab: Vocab, triplet: tuple[str, str, str], top: int) -> list[dict]:
    """The `top` images of the collection that show `triplet` (subject, relation, object) best
    (image_index.rank over the index beside the knowledge base's current version)."""
    if not 1 <= top <= MAX_ID:
        raise ValueError(f"--top={top}: expected the number of images to list, from 1 to 2^63 - 1")
    subject, relation, obj = triplet
    names = (check_name(subject, vocab.entities, "entity"), check_name(relation, vocab.relations[1:], "predicate"),
             check_name(obj, vocab.entities, "entity"))
    if not os.path.isfile(kb_path):
        raise FileNotFoundError(f"{kb_path}: no knowledge base (run --mode=kb with --config.extract.features_path "
                                "and --config.extract.image_index=true)")
    index = image_index.load(os.path.join(os.path.dirname(os.path.realpath(kb_path)), image_index.FILE))
    return image_index.rank(index, vocab, *names, top=top)


def render_images(triplet: tuple[str, str, str], images: list[dict]) -> str:
    """The images of a triplet as text, a line each."""
    lines = [f"image {i['image_id']}  score {i['score']:.4f}  subject {i['subject_box']}  object {i['object_box']}"
             for i in images]
    return "\n".join(lines) if lines else f"no image shows both a {triplet[0]} and a {triplet[2]}"


def main(argv: list[str]) -> None:
    args = flags.FLAGS
    if args.images:
        if len(argv) != 4:
            raise app.UsageError("--images ranks the images of a triplet: give SUBJECT RELATION OBJECT")
        try:
            print(render_images(tuple(argv[1:]), images_of(args.kb, read_vocab(args.bundle), tuple(argv[1:]),
                                                           args.top)))
        except (ValueError, FileNotFoundError, DataError) as e:
            sys.exit(f"{type(e).__name__}: {e}")
        return
    if len(argv) not in (1, 3):
        raise app.UsageError("give two entity names (subject object), --relation=NAME or --image=ID")
    try:
        answers = ask_kb(args.kb, read_vocab(args.bundle), pair=tuple(argv[1:]) if len(argv) == 3 else None,
                         relation=args.relation, image=args.image, top=args.top)
        text = render(answers, args.evidence)
    except (ValueError, FileNotFoundError) as e:
        sys.exit(f"{type(e).__name__}: {e}")
    except sqlite3.DatabaseError as e:
        sys.exit(f"{type(e).__name__}: {index_path(args.kb)}: {e} (delete it: the next query rebuilds it)")
    print(text)


if __name__ == "__main__":
    flags.DEFINE_string("kb", None, "Knowledge base: kb.jsonl of --mode=kb (or triplets.jsonl of --mode=extract).")
    flags.DEFINE_string("bundle", "", "Exported bundle whose vocabulary the names are checked against.")
    flags.DEFINE_string("relation", "", "List the entity pairs of this relation.")
    flags.DEFINE_integer("image", None, "List what the knowledge base says of this image's pairs.")
    flags.DEFINE_bool("images", False, "List the images that show a triplet best: give SUBJECT RELATION OBJECT.")
    flags.DEFINE_integer("top", 10, "Triplets (or images) listed at most.")
    flags.DEFINE_integer("evidence", 3, "Evidence instances shown per triplet.")
    flags.mark_flags_as_required(["kb"])
    app.run(main)
