"""Reading large JSON and TSV inputs record by record, with errors that say where."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any


class DataError(ValueError):
    """Bad input data. The message names the file, the record and what was expected."""


_DECODER = json.JSONDecoder()
_WHITESPACE = " \t\n\r"


def _skip_whitespace(text: str, pos: int) -> int:
    while pos < len(text) and text[pos] in _WHITESPACE:
        pos += 1
    return pos


def iter_json_list(path: str | os.PathLike) -> Iterator[tuple[int, Any]]:
    """Yields (record index, record) for each element of a file holding one JSON list.

    Decodes one element at a time, so a file of millions of records never becomes one
    huge Python structure. Raises DataError naming the file, record and character offset.
    """
    path = os.fspath(path)
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: cannot read as UTF-8 text: {e}") from e
    pos = _skip_whitespace(text, 0)
    if not text.startswith("[", pos):
        raise DataError(f"{path}: expected a JSON list ('[' at char {pos}), found {text[pos:pos + 20]!r}")
    pos = _skip_whitespace(text, pos + 1)
    index = 0
    if text.startswith("]", pos):
        return
    while True:
        try:
            record, pos = _DECODER.raw_decode(text, pos)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}: record {index}: malformed JSON at char {e.pos}: {e.msg}") from e
        yield index, record
        index += 1
        pos = _skip_whitespace(text, pos)
        if text.startswith(",", pos):
            pos = _skip_whitespace(text, pos + 1)
        elif text.startswith("]", pos):
            return
        else:
            raise DataError(
                f"{path}: after record {index - 1}: expected ',' or ']' at char {pos}, "
                f"found {text[pos:pos + 20]!r} (truncated or malformed file?)"
            )


def field(record: Any, key: str, kind: type | tuple[type, ...], where: str) -> Any:
    """record[key], checked to be of `kind`; DataError naming `where` otherwise."""
    if not isinstance(record, dict):
        raise DataError(f"{where}: expected a JSON object, found {type(record).__name__}")
    if key not in record:
        raise DataError(f"{where}: missing field {key!r} (has {sorted(record)[:8]})")
    value = record[key]
    if isinstance(value, bool) or not isinstance(value, kind):
        names = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
        raise DataError(f"{where}: field {key!r} should be {names}, found {value!r:.60}")
    return value
