"""plain_pickle.load_pickle: plain values load; hostile pickles (hand-built opcodes) give a DataError
naming the file, quickly, without hanging, crashing or allocating what they declare."""

import pickle
import struct
import time

import numpy as np
import pytest

from clever_jax.data.jsonio import DataError
from clever_jax.data.plain_pickle import MAX_DEPTH, load_pickle

PROTO = b"\x80\x04"


def _shared_lists(depth):
    """A list; then `depth` times a list holding the previous list twice (memo gets): 2^depth paths."""
    data = PROTO + b"]\x94"  # EMPTY_LIST, MEMOIZE (memo 0)
    for level in range(depth):
        data += b"]\x94(h" + bytes([level]) + b"h" + bytes([level]) + b"e"  # MARK, BINGET x2, APPENDS
    return data + b"."


def _doubled_tuple_key(depth):
    """A dict key: a tuple holding () twice, then `depth` times a tuple holding the previous tuple
    twice (memo gets). Hashing it takes 2^depth steps; built and pickled iteratively, never hashed."""
    key = ()
    for _ in range(depth):
        key = (key, key)
    return b"\x80\x02}" + pickle.dumps(key, protocol=2)[2:-1] + b"K\x01s."  # EMPTY_DICT, key, 1, SETITEM


def _nested_lists(depth):
    return PROTO + b"]" * depth + b"a" * (depth - 1) + b"."  # EMPTY_LIST x depth, APPEND x (depth - 1)


HOSTILE = {
    "lists holding the previous list twice, 60 deep": (_shared_lists(60), r"held in two places"),
    "lists nested 1,000 deep": (_nested_lists(1000), rf"nested more than {MAX_DEPTH} deep"),
    "a dict key of tuples each holding the one below twice, 60 deep": (_doubled_tuple_key(60),
                                                                      r"a tuple of tuples used twice"),
    "a list holding itself": (PROTO + b"]\x94h\x00a.", r"held in two places"),
    "a 1 TiB string": (PROTO + b"\x8d" + struct.pack("<Q", 2**40) + b"x.",
                       r"expected 1099511627776 bytes in a unicodestring8, but only 2 remain"),
    "a 4 GiB string": (PROTO + b"X" + struct.pack("<I", 2**32 - 1) + b"x.", r"unicodestring4"),
    "1 TiB of bytes": (PROTO + b"\x8e" + struct.pack("<Q", 2**40) + b"x.", r"bytes8"),
    "a 1 TiB frame": (PROTO + b"\x95" + struct.pack("<Q", 2**40) + b"N.", r"a frame of 1099511627776 bytes"),
    "a memo index of 2^31": (PROTO + b"]r\xff\xff\xff\x7f.", r"memo index 2147483647 after 2 opcodes"),
    # Hashing a deep tuple key recurses in C: unchecked, this one crashes the interpreter.
    "a dict key of tuples 300,000 deep": (PROTO + b"})" + b"\x85" * 300_000 + b"K\x01s.",
                                          rf"tuples nested more than {MAX_DEPTH} deep"),
    "a truncated pickle": (pickle.dumps([1, 2, 3])[:-3], r"not a pickle of plain"),
    "not a pickle": (b"hello, world\n", r"not a pickle of plain"),
    "an empty file": (b"", r"not a pickle of plain"),
}


@pytest.mark.parametrize("case", HOSTILE)
def test_a_hostile_pickle_is_a_quick_data_error_naming_the_file(tmp_path, case):
    data, message = HOSTILE[case]
    path = tmp_path / "hostile.pkl"
    path.write_bytes(data)
    start = time.perf_counter()
    with pytest.raises(DataError, match=rf"hostile\.pkl: .*{message}"):
        load_pickle(str(path))
    assert time.perf_counter() - start < 2


def test_the_shared_lists_are_small_and_would_take_forever_to_walk():
    assert len(_shared_lists(60)) < 500
    value = pickle.loads(_shared_lists(3))  # The shape: each level holds the one below twice.
    assert value == [[[[], []], [[], []]], [[[], []], [[], []]]] and value[0] is value[1]


def test_the_doubled_tuple_key_is_small_and_would_take_forever_to_hash():
    assert len(_doubled_tuple_key(60)) < 500
    value = pickle.loads(_doubled_tuple_key(2))  # The shape; depth 22 takes about 0.06 s, 4 times more per 2 levels.
    assert value == {(((), ()), ((), ())): 1} and next(iter(value))[0] is next(iter(value))[1]


@pytest.mark.parametrize("protocol", [0, 2, 4, 5])
def test_plain_values_load(tmp_path, protocol):
    value = {(1, 2): [3, 4.5, None, True], ((5, 6), ((7,), ())): 0, "a": [(), (), {"b": frozenset({1})}], "c": {7, 8},
             "deep": _nested_value(MAX_DEPTH - 1), "text": "x" * 100_000}
    path = tmp_path / "plain.pkl"
    path.write_bytes(pickle.dumps(value, protocol=protocol))
    assert load_pickle(str(path)) == value


def _nested_value(depth):
    value = []
    for _ in range(depth - 1):
        value = [value]
    return value


def test_numpy_numbers_load_as_python_numbers(tmp_path):
    path = tmp_path / "numbers.pkl"
    path.write_bytes(pickle.dumps({np.int64(3): [np.float32(0.5), np.uint8(7)]}))
    assert load_pickle(str(path)) == {3: [0.5, 7]}
    path.write_bytes(pickle.dumps([np.str_("x"), np.zeros(2)]))
    with pytest.raises(DataError, match=r"numbers\.pkl: .*(only numbers|refuses to build)"):
        load_pickle(str(path))
