"""Arrow columns built straight from their buffers.

pyarrow's conversion of Python objects (``pa.array``, ``Table.from_pylist``) imports pandas
when it is installed, which costs about 0.3 s per process: more than a whole re-sync of a spec
history. These builders lay out the Arrow buffers with numpy instead, for the few column types
the spec history writes.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

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


def integers(values: Sequence[int], *, bits: int = 64) -> pa.Array:
    """A non-null integer column of 32 or 64 bits."""
    dtype, arrow_type = (np.int32, pa.int32()) if bits == 32 else (np.int64, pa.int64())
    data = np.asarray(values, dtype=dtype)
    return pa.Array.from_buffers(arrow_type, len(values), [None, pa.py_buffer(data)])


def floats(values: Sequence[float | None]) -> pa.Array:
    """A float64 column; None is null."""
    data = np.fromiter(
        (0.0 if v is None else v for v in values), dtype=np.float64, count=len(values)
    )
    return pa.Array.from_buffers(pa.float64(), len(values), [_validity(values), pa.py_buffer(data)])


def timestamps(values: Sequence[datetime]) -> pa.Array:
    """A non-null ``timestamp[us, tz=UTC]`` column from aware datetimes."""
    micros = np.fromiter(
        ((v - _EPOCH) // _MICROSECOND for v in values), dtype=np.int64, count=len(values)
    )
    return pa.Array.from_buffers(
        pa.timestamp("us", tz="UTC"), len(values), [None, pa.py_buffer(micros)]
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
