"""The benchmark vocabularies and the name normalisation that maps raw names onto them.

Relation index 0 is the special NA ("no relation"); predicate ``i`` of
``predicates.txt`` is relation ``i + 1``. Entity ``i`` of ``entities.txt`` is class ``i``.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.resources
import re
from typing import TextIO

import numpy as np

from clever_jax.data.jsonio import DataError

NA = "NA"

# Irregular plurals seen in Visual Genome names, mapped to the vocabulary's singular form.
IRREGULAR_PLURALS = {
    "men": "man",
    "women": "woman",
    "people": "person",
    "persons": "person",
    "leaves": "leaf",
    "shelves": "shelf",
    "glasses": "glass",
    "pants": "pant",
    "jeans": "jean",
    "shorts": "short",
}

_SPACES = re.compile(r"\s+")


def clean(name: str) -> str:
    """Lower-cases a raw name and collapses runs of white space: ' Standing  On' -> 'standing on'."""
    return _SPACES.sub(" ", name).strip().lower()


def _read_list(filename: str) -> tuple[str, ...]:
    text = importlib.resources.files("clever_jax.data").joinpath("vocab", filename).read_text()
    names = tuple(line.strip() for line in text.splitlines() if line.strip())
    if len(set(names)) != len(names):
        raise ValueError(f"vocabulary file {filename} has duplicate names")
    return names


@dataclasses.dataclass(frozen=True)
class Vocab:
    """Entity and predicate vocabularies with name normalisation.

    Attributes:
      entities: entity names; class id = position.
      predicates: predicate names; relation id = position + 1 (0 is NA).
    """

    entities: tuple[str, ...]
    predicates: tuple[str, ...]

    @functools.cached_property
    def entity_index(self) -> dict[str, int]:
        return {name: i for i, name in enumerate(self.entities)}

    @functools.cached_property
    def relation_index(self) -> dict[str, int]:
        return {name: i + 1 for i, name in enumerate(self.predicates)}

    @property
    def relations(self) -> tuple[str, ...]:
        """All relation names, NA first: length R + 1."""
        return (NA, *self.predicates)

    @property
    def num_relations(self) -> int:
        """Number of relations including NA (R + 1)."""
        return len(self.predicates) + 1

    def entity_id(self, raw: str) -> int:
        """Class id of a raw object name, or -1 when it is not in the vocabulary.

        Handles case, stray spaces and plural forms ('Umbrellas ' -> 'umbrella').
        """
        return self.entity_index.get(singular(clean(raw), self.entity_index), -1)

    def relation_id(self, raw: str) -> int:
        """Relation id (1..R) of a raw predicate, or -1 when it is not in the vocabulary."""
        return self.relation_index.get(clean(raw), -1)


def singular(name: str, known: dict[str, int] | frozenset[str]) -> str:
    """The singular of a cleaned name when that singular is a known name, else the name itself."""
    if name in known:
        return name
    if name in IRREGULAR_PLURALS:
        return IRREGULAR_PLURALS[name]
    for suffix, replacement in (("ves", "f"), ("es", ""), ("s", "")):
        if name.endswith(suffix) and name[: -len(suffix)] + replacement in known:
            return name[: -len(suffix)] + replacement
    return name


def entity_classes(raw_names: list[str], vocab: Vocab, cache: dict[str, tuple[int, str]]) -> list[int]:
    """The entity id (-1 outside the vocabulary) of each raw name, normalised as ingestion does
    (`clean`, then `singular`); `cache` maps every raw name seen to (id, normalised name)."""
    for raw in raw_names:
        if raw not in cache:
            name = singular(clean(raw), vocab.entity_index)
            cache[raw] = (vocab.entity_index.get(name, -1), name)
    return [cache[raw][0] for raw in raw_names]


def write_facts(f: TextIO, facts: np.ndarray, vocab: Vocab) -> None:
    """Writes triplets int [F, 3] (subject, relation id, object) to the open text file `f`, one per line:
    subject, relation and object names separated by tabs (what `read_facts` reads)."""
    f.writelines(f"{vocab.entities[s]}\t{vocab.relations[r]}\t{vocab.entities[o]}\n" for s, r, o in facts.tolist())


def read_facts(path: str, vocab: Vocab) -> np.ndarray:
    """int64 [F, 3]: the (subject, relation id, object) of every line of a `write_facts` file.

    Raises:
      DataError: a line that is not three names of the vocabulary separated by tabs (named by number).
    """
    relation_of = dict(zip(vocab.relations, range(vocab.num_relations), strict=True))
    facts = []
    with open(path) as f:
        for number, line in enumerate(f, 1):
            names = line.rstrip("\n").split("\t")
            ids = ((vocab.entity_index.get(names[0]), relation_of.get(names[1]), vocab.entity_index.get(names[2]))
                   if len(names) == 3 else (None,))
            if None in ids or ids[1] == 0:
                raise DataError(f"{path}, line {number}: expected subject, relation (not {NA}) and object names of "
                                f"the vocabulary separated by tabs, got {line.rstrip()!r}")
            facts.append(ids)
    return np.asarray(facts, np.int64).reshape(-1, 3)


@functools.cache
def benchmark_vocab() -> Vocab:
    """The paper's 100 entities and 100 predicates, shipped as package data."""
    return Vocab(_read_list("entities.txt"), _read_list("predicates.txt"))
