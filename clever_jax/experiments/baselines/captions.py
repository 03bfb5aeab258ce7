"""Caption corpora and a vocabulary-driven triplet matcher: the text source of the RTP baseline.

Formats (`read_captions`): the generated world's captions.json (`[{"image_id", "caption"}]`),
COCO-style JSON (`{"annotations": [{"caption"}]}`) and Conceptual Captions' TSV (`caption<TAB>url`,
one per line), the TSV read as a stream.

The matcher (`CaptionMatcher`) stands in for a scene-graph parser (none installs offline with its
model): it finds the benchmark's entity names in a caption (longest first, plurals and irregular
plurals through the ingestion's normalisation) and, between two consecutive mentions, a predicate
of the vocabulary once articles and auxiliaries are dropped ("a man is riding a horse" ->
(man, riding, horse); "a shirt worn by a man" -> (shirt, worn by, man)). It misses what needs
syntax: a verb the vocabulary lacks before a listed one ("sitting on the back of" is read as
"on back of"), a relation across an intervening noun ("a man with a hat on a horse" gives (man, with,
hat) and (hat, on, horse)), coordination ("a man and a woman on a bench" gives no triplet for the
man), pronouns, synonyms outside the vocabulary and verb forms the vocabulary does not list
("rides" is not "riding").
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator

from clever_jax.data.jsonio import DataError
from clever_jax.data.vocab import Vocab, singular

_WORD = re.compile(r"[a-z0-9]+(?:[-'][a-z0-9]+)*")
# Dropped between two mentions before the predicate lookup ("is sitting on the back of" -> "sitting on back of").
_FILLER = frozenset({"a", "an", "the", "is", "are", "was", "were", "be", "being", "some", "its", "his", "her",
                     "their", "this", "that", "which", "who"})
HELP = ("give a caption corpus as --captions=PATH: the world's captions.json, COCO-style JSON "
        "({\"annotations\": [{\"caption\": ...}]}) or Conceptual Captions' TSV (caption<TAB>url per line)")


def _json_captions(path: str, text: str) -> list[str]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: neither JSON nor 'caption<TAB>url' lines: line {e.lineno}: {e.msg}; {HELP}") from e
    records = data.get("annotations") if isinstance(data, dict) else data
    if not isinstance(records, list):
        raise DataError(f"{path}: JSON without a list of captions (a list, or 'annotations'); {HELP}")
    out = []
    for index, record in enumerate(records):
        if not isinstance(record, dict) or not isinstance(record.get("caption"), str):
            raise DataError(f"{path}: record {index}: expected an object with a string 'caption', found "
                            f"{record!r:.60}")
        out.append(record["caption"])
    return out


def read_captions(path: str) -> Iterator[str]:
    """Yields the captions of a corpus file (formats in the module docstring); DataError naming the
    file and line for a file that is empty, not UTF-8 or in neither format."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no caption corpus there; {HELP}")
    with open(path, "rb") as f:
        head = f.read(1 << 16).lstrip()
    if not head:
        raise DataError(f"{path}: the caption corpus is empty; {HELP}")
    if head[:1] in (b"[", b"{"):
        try:
            text = open(path, encoding="utf-8").read()
        except UnicodeDecodeError as e:
            raise DataError(f"{path}: not UTF-8 (byte {e.start}); {HELP}") from e
        yield from _json_captions(path, text)
        return
    with open(path, "rb") as f:
        for line_no, raw in enumerate(f, start=1):
            try:
                line = raw.decode("utf-8").rstrip("\r\n")
            except UnicodeDecodeError as e:
                raise DataError(f"{path}: line {line_no}: not UTF-8 (byte {e.start}); {HELP}") from e
            if not line.strip():
                continue
            caption, sep, _ = line.partition("\t")
            if not sep:
                raise DataError(f"{path}: line {line_no}: expected 'caption<TAB>url', found no tab: {line!r:.60}; "
                                f"{HELP}")
            yield caption


class CaptionMatcher:
    """Triplets (subject id, relation id, object id) stated by a caption (module docstring)."""

    def __init__(self, vocab: Vocab):
        self.vocab = vocab
        self.longest_entity = max(len(name.split()) for name in vocab.entities)
        self.predicates = {p: i + 1 for i, p in enumerate(vocab.predicates)}

    def mentions(self, words: list[str]) -> list[tuple[int, int, int]]:
        """(start, end, entity id) of the entity names in `words`, longest first, left to right."""
        out, i = [], 0
        while i < len(words):
            for n in range(min(self.longest_entity, len(words) - i), 0, -1):
                entity = self.vocab.entity_index.get(singular(" ".join(words[i:i + n]), self.vocab.entity_index))
                if entity is not None:
                    out.append((i, i + n, entity))
                    i += n
                    break
            else:
                i += 1
        return out

    def words(self, caption: str) -> list[str]:
        """Lower-case words; a hyphenated word that is not an entity name becomes its last part ("t-shirt" ->
        "shirt")."""
        return [w.rsplit("-", 1)[-1] if "-" in w and w not in self.vocab.entity_index else w
                for w in _WORD.findall(caption.lower())]

    def triplets(self, caption: str) -> set[tuple[int, int, int]]:
        """The triplets between consecutive mentions: the longest predicate that ends the words between
        them, articles and auxiliaries dropped ("is sitting on the back of" -> "on back of")."""
        words = self.words(caption)
        found = set()
        mentions = self.mentions(words)
        for (_, end, subject), (start, _, obj) in zip(mentions, mentions[1:], strict=False):
            between = [w for w in words[end:start] if w not in _FILLER]
            relation = next((self.predicates[p] for p in (" ".join(between[k:]) for k in range(len(between)))
                             if p in self.predicates), None)
            if relation is not None:
                found.add((subject, relation, obj))
        return found
