"""Arrow batches of raw bytes -> polars frames: lossy UTF-8 decoding and Arrow's fast float
parse, column by column on a small thread pool."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

__all__ = ["arrow_to_polars"]


def _decode_binary(arr: pa.ChunkedArray) -> pa.ChunkedArray:
    """bytes -> UTF-8 text; invalid bytes become U+FFFD (decoded per distinct value)."""
    try:
        return arr.cast(pa.string())
    except pa.ArrowInvalid:
        pass
    chunks = []
    for chunk in arr.chunks:
        try:
            chunks.append(chunk.cast(pa.string()))
            continue
        except pa.ArrowInvalid:
            pass
        enc = pc.dictionary_encode(chunk)
        words = [None if b is None else b.decode("utf-8", "replace")
                 for b in enc.dictionary.to_pylist()]
        fixed = pa.DictionaryArray.from_arrays(enc.indices, pa.array(words, pa.string()))
        chunks.append(fixed.cast(pa.string()))
    return pa.chunked_array(chunks, pa.string())


def _prepare_column(col: pa.ChunkedArray, numeric: bool) -> pa.ChunkedArray:
    """Decode raw bytes to text; for a numeric column try Arrow's own float parser, which
    accepts ``inf``/``Infinity``/``NaN`` and fails (leaving the text for the careful polars
    path) on empty cells, padding or words."""
    t = col.type
    if pa.types.is_dictionary(t):
        col = col.cast(t.value_type)
        t = col.type
    if numeric and pa.types.is_binary(t):
        # the usual case, all cells numbers: parse the bytes as they are (a zero-copy view as
        # text skips the UTF-8 check, which the float parser makes needless: it accepts ASCII only)
        try:
            return pa.chunked_array([chunk.view(pa.string()) for chunk in col.chunks], pa.string()).cast(pa.float64())
        except pa.ArrowInvalid:
            pass
    if pa.types.is_binary(t) or pa.types.is_large_binary(t):
        col = _decode_binary(col)
        t = col.type
    if numeric and (pa.types.is_string(t) or pa.types.is_large_string(t)):
        try:
            return col.cast(pa.float64())
        except pa.ArrowInvalid:
            return col
    return col


def arrow_to_polars(table: pa.Table, numeric: frozenset[str] = frozenset()) -> pl.DataFrame:
    if not table.num_columns:
        return pl.DataFrame()
    names = table.column_names
    jobs = [(col, name in numeric) for name, col in zip(names, table.columns)]
    if table.num_rows >= 20_000 and len(jobs) > 1 and _POOL_WORKERS > 1:
        cols = list(_pool().map(lambda job: _prepare_column(*job), jobs))
    else:
        cols = [_prepare_column(*job) for job in jobs]
    return pl.from_arrow(pa.table(dict(zip(names, cols))))


_POOL_WORKERS = max(1, min(8, os.cpu_count() or 1))
_POOL: ThreadPoolExecutor | None = None


def _pool() -> ThreadPoolExecutor:
    """Threads for per-column Arrow work (Arrow releases the GIL while casting)."""
    global _POOL
    if _POOL is None:
        _POOL = ThreadPoolExecutor(max_workers=_POOL_WORKERS, thread_name_prefix="deepids-io")
    return _POOL
