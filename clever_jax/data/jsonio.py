"""Reading large JSON and TSV inputs record by record, with errors that say where."""

from __future__ import annotations

import collections
import json
import math
import os
from collections.abc import Iterator
from typing import Any


class DataError(ValueError):
    """Bad input data. The message names the file, the record and what was expected."""


TOO_DEEP = "JSON nested deeper than Python's reader allows (about 1,000 levels)"


_DECODER = json.JSONDecoder()
_WHITESPACE = " \t\n\r"


def _skip_whitespace(text: str, pos: int) -> int:
    while pos < len(text) and text[pos] in _WHITESPACE:
        pos += 1
    return pos


def iter_json_list(path: str | os.PathLike) -> Iterator[tuple[int, Any]]:
    """Yields (record index, record) for each element of a file holding one JSON list.

    Decodes one element at a time, so a file of millions of records never becomes one
    huge Python structure. The list must be the whole file: anything but whitespace after its
    closing bracket (a second list of concatenated shards, junk) is an error, raised once the
    records are read. Raises DataError naming the file, record and character offset.
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
        _check_end(path, text, pos + 1, index)
        return
    while True:
        try:
            record, pos = _DECODER.raw_decode(text, pos)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}: record {index}: malformed JSON at char {e.pos}: {e.msg}") from e
        except RecursionError:
            raise DataError(f"{path}: record {index}: {TOO_DEEP}") from None
        yield index, record
        index += 1
        pos = _skip_whitespace(text, pos)
        if text.startswith(",", pos):
            pos = _skip_whitespace(text, pos + 1)
        elif text.startswith("]", pos):
            _check_end(path, text, pos + 1, index)
            return
        else:
            raise DataError(
                f"{path}: after record {index - 1}: expected ',' or ']' at char {pos}, "
                f"found {text[pos:pos + 20]!r} (truncated or malformed file?)"
            )


def _check_end(path: str, text: str, pos: int, count: int) -> None:
    """DataError unless only whitespace follows the list's closing bracket (which ends at pos)."""
    rest = _skip_whitespace(text, pos)
    if rest < len(text):
        raise DataError(f"{path}: the JSON list of {count} records ends at char {pos}, but more follows at char "
                        f"{rest}: {text[rest:rest + 20]!r} (concatenated lists? the file must hold one list)")


def load_json(path: str) -> Any:
    """A whole JSON file; DataError naming it on malformed or too deeply nested JSON, or a key that
    appears twice in one object."""
    def unique(pairs):
        keys = [k for k, _ in pairs]
        if len(set(keys)) != len(keys):
            raise DataError(f"{path}: key {collections.Counter(keys).most_common(1)[0][0]!r} appears twice")
        return dict(pairs)
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f, object_pairs_hook=unique)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(f"{path}: not UTF-8 JSON: {e}") from e
    except RecursionError:
        raise DataError(f"{path}: {TOO_DEEP}") from None


def int64(value: int, what: str, where: str) -> int:
    """`value` if it fits a signed 64-bit integer (ids are stored as int64); DataError naming `where` otherwise."""
    if not -(2**63) <= value < 2**63:
        raise DataError(f"{where}: {what} {value} does not fit a 64-bit integer")
    return value


def id_field(record: Any, key: str, where: str) -> int:
    """record[key], an integer id that fits int64; DataError naming `where` otherwise."""
    return int64(field(record, key, int, where), repr(key), where)


def id_and_record(raw: bytes, where: str) -> tuple[int, Any]:
    """(image id, JSON record) of a TSV line "image_id<TAB>json"; DataError naming `where` otherwise."""
    image_part, sep, payload = raw.partition(b"\t")
    if not sep:
        raise DataError(f"{where}: expected 'image_id<TAB>json', found no tab")
    try:
        image_id, record = int(image_part), json.loads(payload)
    except (ValueError, UnicodeDecodeError) as e:
        raise DataError(f"{where}: expected 'image_id<TAB>json', cannot parse: {e}") from e
    except RecursionError:
        raise DataError(f"{where}: {TOO_DEEP}") from None
    return int64(image_id, "image id", where), record


def finite(values: list[int | float], what: str, where: str) -> list[float]:
    """`values` as floats if every one is finite (a whole number beyond float's range, e.g. 10**400, is
    not); DataError naming `where` and `what` otherwise."""
    try:
        floats = [float(v) for v in values]
    except OverflowError:
        floats = [math.inf]
    if not all(math.isfinite(v) for v in floats):
        raise DataError(f"{where}: {what} must be finite numbers, found {values!r:.80}")
    return floats


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
