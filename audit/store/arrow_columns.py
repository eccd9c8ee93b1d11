"""Arrow columns built straight from their buffers.

pyarrow's conversion of Python objects (``pa.array``, ``Table.from_pylist``, even of a numpy
array) imports pandas when it is installed, which costs 0.2-0.3 s per process: more than a whole
re-sync of a spec history, and more than a fully cached rerun of a run matrix. These builders
lay out the Arrow buffers with numpy instead, for the column types the store's tables use
(:func:`for_duckdb_type` picks one from a column's DuckDB type).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pyarrow as pa

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def _validity(values: Sequence[object]) -> pa.Buffer | None:
    """Arrow's validity bitmap (least significant bit first), or None when nothing is null."""
    present = np.fromiter((v is not None for v in values), dtype=bool, count=len(values))
    if present.all():
        return None
    return pa.py_buffer(np.packbits(present, bitorder="little"))


def _offsets(lengths: Sequence[int], dtype: type[np.integer]) -> pa.Buffer:
    offsets = np.zeros(len(lengths) + 1, dtype=dtype)
    np.cumsum(lengths, out=offsets[1:])
    return pa.py_buffer(offsets)


def strings(values: Sequence[str | None]) -> pa.Array:
    """A UTF-8 string column; None is null."""
    encoded = [b"" if v is None else v.encode() for v in values]
    return pa.Array.from_buffers(
        pa.string(),
        len(values),
        [
            _validity(values),
            _offsets([len(e) for e in encoded], np.int32),
            pa.py_buffer(b"".join(encoded)),
        ],
    )


def utf8_blobs(values: Sequence[bytes | memoryview]) -> pa.Array:
    """A large-string column from contents already checked to be UTF-8 (no decoding copy)."""
    return pa.Array.from_buffers(
        pa.large_string(),
        len(values),
        [None, _offsets([len(v) for v in values], np.int64), pa.py_buffer(b"".join(values))],
    )


def integers(values: Sequence[int | None], *, bits: int = 64) -> pa.Array:
    """An integer column of 32 or 64 bits; None is null."""
    dtype, arrow_type = (np.int32, pa.int32()) if bits == 32 else (np.int64, pa.int64())
    data = np.fromiter((0 if v is None else v for v in values), dtype=dtype, count=len(values))
    return pa.Array.from_buffers(arrow_type, len(values), [_validity(values), pa.py_buffer(data)])


def booleans(values: Sequence[bool | None]) -> pa.Array:
    """A boolean column (one bit per value); None is null."""
    bits = np.fromiter((v is True for v in values), dtype=bool, count=len(values))
    data = pa.py_buffer(np.packbits(bits, bitorder="little"))
    return pa.Array.from_buffers(pa.bool_(), len(values), [_validity(values), data])


def floats(values: Sequence[float | None]) -> pa.Array:
    """A float64 column; None is null."""
    data = np.fromiter(
        (0.0 if v is None else v for v in values), dtype=np.float64, count=len(values)
    )
    return pa.Array.from_buffers(pa.float64(), len(values), [_validity(values), pa.py_buffer(data)])


def timestamps(values: Sequence[datetime | None]) -> pa.Array:
    """A ``timestamp[us, tz=UTC]`` column from aware datetimes; None is null."""
    micros = np.fromiter(
        (0 if v is None else (v - _EPOCH) // _MICROSECOND for v in values),
        dtype=np.int64,
        count=len(values),
    )
    return pa.Array.from_buffers(
        pa.timestamp("us", tz="UTC"), len(values), [_validity(values), pa.py_buffer(micros)]
    )


def string_lists(values: Sequence[Sequence[str]]) -> pa.Array:
    """A non-null ``list<string>`` column."""
    flat = [item for value in values for item in value]
    offsets = pa.Array.from_buffers(
        pa.int32(), len(values) + 1, [None, _offsets([len(v) for v in values], np.int32)]
    )
    return pa.ListArray.from_arrays(offsets, strings(flat))


def table(columns: dict[str, pa.Array]) -> pa.Table:
    """A table of the given columns, named by the keys."""
    return pa.Table.from_arrays(list(columns.values()), names=list(columns))


def _all(values: Sequence[Any], kinds: tuple[type, ...]) -> bool:
    # Exact types: a bool is an int to isinstance, and pa.array would type it differently.
    return all(v is None or type(v) in kinds for v in values)


def _aware(values: Sequence[Any]) -> bool:
    return all(v is None or (type(v) is datetime and v.utcoffset() is not None) for v in values)


def _in_int64(values: Sequence[Any]) -> bool:
    return all(v is None or -(2**63) <= v < 2**63 for v in values)


_INTEGER_TYPES = frozenset({"TINYINT", "SMALLINT", "INTEGER", "BIGINT"})


def for_duckdb_type(values: Sequence[Any], duckdb_type: str) -> pa.Array | None:
    """The column for ``values`` going into a column of ``duckdb_type``, or None when the values
    are not the plain Python kind this fast path handles (the caller falls back to ``pa.array``).

    The result holds what ``pa.array(values)`` would for such values (str, int, float, bool,
    aware datetime, None), so DuckDB stores the same thing whichever way a batch took.
    """
    if duckdb_type in ("VARCHAR", "JSON") and _all(values, (str,)):
        return strings(values)
    if duckdb_type in _INTEGER_TYPES and _all(values, (int,)) and _in_int64(values):
        return integers(values)
    if duckdb_type in ("DOUBLE", "FLOAT") and _all(values, (float,)):
        return floats(values)
    if duckdb_type == "BOOLEAN" and _all(values, (bool,)):
        return booleans(values)
    if duckdb_type == "TIMESTAMP WITH TIME ZONE" and _aware(values):
        return timestamps(values)
    return None
