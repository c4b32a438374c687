"""64-bit keys for categorical tokens, computed in bulk over Arrow string arrays.

The prepare step never keeps token strings: each distinct token of a field becomes a 64-bit key
(FNV-1a over its UTF-8 bytes, vectorised over strings, then the splitmix64 finaliser), and
vocabularies are built over keys. Key 0 is reserved for the empty token (= missing). Two
different tokens share a key with probability about ``n^2 / 2^65`` (``n`` distinct tokens of a
field: 1e-8 for ten million), which is what the vocabulary's exactness rests on.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

MISSING_KEY = np.uint64(0)
_FNV_OFFSET = np.uint64(0xCBF29CE484222325)
_FNV_PRIME = np.uint64(0x100000001B3)


def _splitmix64(h: np.ndarray) -> np.ndarray:
    h = h ^ (h >> np.uint64(30))
    h = h * np.uint64(0xBF58476D1CE4E5B9)
    h = h ^ (h >> np.uint64(27))
    h = h * np.uint64(0x94D049BB133111EB)
    return h ^ (h >> np.uint64(31))


def hash_strings(arr: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """Keys ``(len(arr),) uint64`` of a string array without nulls; ``""`` -> :data:`MISSING_KEY`.

    Example::

        >>> k = hash_strings(pa.array(["a", "", "a", "b"]))
        >>> bool(k[0] == k[2]), int(k[1]), bool(k[0] != k[3])
        (True, 0, True)
    """
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks() if arr.num_chunks else pa.array([], pa.string())
    if arr.null_count:
        raise ValueError("hash_strings: the array holds nulls; read categorical columns with strings_can_be_null=False")
    if pa.types.is_large_string(arr.type):
        off_dtype = np.int64
    elif pa.types.is_string(arr.type):
        off_dtype = np.int32
    else:
        raise TypeError(f"hash_strings needs a string array, got {arr.type}")
    n = len(arr)
    bufs = arr.buffers()
    off = np.frombuffer(bufs[1], dtype=off_dtype)[arr.offset : arr.offset + n + 1].astype(np.int64)
    data = np.frombuffer(bufs[2], dtype=np.uint8) if bufs[2] is not None else np.zeros(0, np.uint8)
    lengths = np.diff(off)
    h = np.full(n, _FNV_OFFSET, dtype=np.uint64)
    rows = np.nonzero(lengths > 0)[0]
    j = 0
    while len(rows):  # byte j of every string longer than j
        h[rows] = (h[rows] ^ data[off[rows] + j].astype(np.uint64)) * _FNV_PRIME
        j += 1
        rows = rows[lengths[rows] > j]
    h = _splitmix64(h ^ lengths.astype(np.uint64))
    h[h == MISSING_KEY] = np.uint64(1)  # keep 0 for the empty token
    h[lengths == 0] = MISSING_KEY
    return h
