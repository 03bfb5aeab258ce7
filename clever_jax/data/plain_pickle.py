"""Reading pickles that may hold only plain data: containers, strings and numbers.

A pickle can name any importable callable to build its objects; the unpickler here allows only
numpy's scalar constructor (for numeric dtypes: pickled numpy integers and floats use it) and set
and frozenset (protocols 0 to 3 build sets with them) and refuses every other global, so a file
cannot run code or build arbitrary objects.

A pickle also cannot make the reader hang, crash or run out of memory:
  - before unpickling, its opcodes are scanned once (pickletools.genops reads each declared string,
    bytes or integer payload from the file held in memory, so a length beyond the file's end is an
    error, not an allocation); a memo index beyond the opcodes seen so far (the unpickler would grow
    its memo to it), tuples nested deeper than MAX_DEPTH (hashing a deep tuple key recurses in C
    and overflows the stack) and a tuple holding tuples used twice (a memo get or DUP: tuples that
    each hold the one below twice make a small dict key or set member that takes 2^depth steps to
    hash, inside the unpickler; the walk below would refuse the shared tuple anyway) are refused there;
  - after unpickling, one iterative walk visits each object once: a container reached twice (shared
    or recursive, which makes any walk of the value exponential or endless) and nesting deeper than
    MAX_DEPTH are refused.
Every failure is a DataError naming the file and what was expected.
"""

from __future__ import annotations

import io
import pickle
import pickletools

import numpy as np

from clever_jax.data.jsonio import DataError

MAX_DEPTH = 100  # Containers within containers; the release's tables nest 3 deep.
EXPECTED = "a pickle of plain containers, strings and numbers"
_TUPLE_OPS = frozenset({"EMPTY_TUPLE", "TUPLE", "TUPLE1", "TUPLE2", "TUPLE3"})
_PUT_OPS = frozenset({"PUT", "BINPUT", "LONG_BINPUT", "MEMOIZE"})
_GET_OPS = frozenset({"GET", "BINGET", "LONG_BINGET"})


class _PlainUnpickler(pickle.Unpickler):
    """Builds plain containers, strings and numbers only: the globals allowed are set, frozenset and
    numpy's scalar constructor (with its dtype) for numeric dtypes, which pickled numpy integers and
    floats use."""

    def find_class(self, module: str, name: str):
        if name in ("set", "frozenset") and module in ("builtins", "__builtin__"):  # Protocols 0 to 3 use them.
            return {"set": set, "frozenset": frozenset}[name]
        if name == "dtype" and module == "numpy":
            return np.dtype
        if name == "scalar" and module in ("numpy.core.multiarray", "numpy._core.multiarray"):
            def scalar(dtype: np.dtype, data: bytes = b""):
                if not isinstance(dtype, np.dtype) or dtype.kind not in "biuf" or not isinstance(data, bytes) \
                        or len(data) != dtype.itemsize:
                    raise pickle.UnpicklingError(f"a numpy scalar of dtype {dtype!r}, only numbers are accepted")
                return np.frombuffer(data, dtype)[0].item()
            return scalar
        raise pickle.UnpicklingError(f"refuses to build {module}.{name}: only plain containers, strings and "
                                     "numbers are accepted")


def _scan(data: bytes, path: str) -> None:
    """Checks the opcodes of `data` (see the module docstring), following the unpickler's stack with
    the tuple nesting depth of each item (0 for anything but a tuple)."""
    stack: list[int] = []
    marks: list[int] = []
    memo: dict[int, int] = {}
    try:
        for count, (op, arg, pos) in enumerate(pickletools.genops(data)):
            if op.name == "FRAME" and arg > len(data) - pos - 9:  # 1 opcode byte and 8 of frame size.
                raise ValueError(f"at byte {pos}, a frame of {arg} bytes; {len(data) - pos - 9} remain")
            if op.name in _PUT_OPS:
                index = len(memo) if op.name == "MEMOIZE" else arg
                if not 0 <= index <= count:
                    raise ValueError(f"at byte {pos}, memo index {index} after {count} opcodes")
                memo[index] = stack[-1]
            elif op.name in _GET_OPS or op.name == "DUP":
                depth = stack[-1] if op.name == "DUP" else memo.get(arg, 0)  # An unknown index fails in the unpickler.
                if depth >= 2:
                    raise ValueError(f"at byte {pos}, a tuple of tuples used twice (a shared container)")
                stack.append(depth)
            elif op.name == "MARK":
                marks.append(len(stack))
            else:
                before, popped = op.stack_before, []
                if pickletools.markobject in before:
                    mark = marks.pop()
                    popped, stack[mark:] = stack[mark:], []
                    before = before[:before.index(pickletools.markobject)]
                if len(stack) < len(before):
                    raise ValueError(f"at byte {pos}, {op.name} needs {len(before)} stack items")
                if before:
                    popped, stack[-len(before):] = popped + stack[-len(before):], []
                depth = 1 + max(popped, default=0) if op.name in _TUPLE_OPS else 0
                if depth > MAX_DEPTH:
                    raise ValueError(f"at byte {pos}, tuples nested more than {MAX_DEPTH} deep")
                stack += [depth] * len(op.stack_after)
    except (ValueError, IndexError) as e:  # IndexError: a memo or mark used before any was made.
        raise DataError(f"{path}: not {EXPECTED}: {e}") from e


def _check_plain(value, path: str) -> None:
    """DataError unless value is a tree (no container reached twice) of dicts, lists, tuples, sets,
    strings, numbers and None, at most MAX_DEPTH containers deep; visits each object once."""
    seen: set[int] = set()
    todo = [(value, 1)]
    while todo:
        item, depth = todo.pop()
        if item is None or isinstance(item, str | int | float):
            continue
        if not isinstance(item, dict | list | tuple | set | frozenset):
            raise DataError(f"{path}: holds something other than plain containers, strings and numbers: a "
                            f"{type(item).__name__}")
        if not item:  # Empty containers hold nothing to walk (and () is one shared object).
            continue
        if id(item) in seen:
            raise DataError(f"{path}: a {type(item).__name__} is held in two places (a shared or recursive "
                            "container); expected a tree of plain values")
        if depth > MAX_DEPTH:
            raise DataError(f"{path}: containers nested more than {MAX_DEPTH} deep")
        seen.add(id(item))
        children = [*item.keys(), *item.values()] if isinstance(item, dict) else item
        todo += [(child, depth + 1) for child in children]


def load_pickle(path: str):
    """A pickle of plain containers, strings and numbers; DataError naming the file otherwise."""
    with open(path, "rb") as f:
        data = f.read()
    _scan(data, path)
    try:
        value = _PlainUnpickler(io.BytesIO(data)).load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError,
            OverflowError) as e:
        raise DataError(f"{path}: not {EXPECTED}: {e}") from e
    _check_plain(value, path)
    return value
