"""Columns of the recording's tables built from kernel data in bulk: opaque VSO ids, event
names, the load_fpu bit."""

from __future__ import annotations

import functools
import hashlib
import secrets
import struct

import numpy as np
import pyarrow as pa

from fptrace.probes.plan import AUX_EVENT_BASE, EVENT_NAMES, LOAD_NOT_READ, REASON_NAMES


class VsoNamer:
    """Opaque VSO ids: a keyed hash of (kernel address, owner pid) with a per-run secret.

    The secret never leaves this process, so ids cannot be turned back into addresses.
    """

    def __init__(self) -> None:
        self._key = secrets.token_bytes(32)

    def __call__(self, addr: int, task: int) -> str | None:
        """The id of buffer ``addr`` of task ``task`` (the recording's task id, not the
        pid: a pid and even an address can be reused by a later task)."""
        if not addr:
            return None
        raw = struct.pack("<QQ", addr, task)
        return hashlib.blake2b(raw, key=self._key, digest_size=8).hexdigest()


def factorize(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(codes, uniques) of ``values``, as pandas.factorize (but uniques sorted)."""
    uniq, inv = np.unique(values, return_inverse=True)
    return inv.reshape(-1), uniq


def load_fpu_column(load_bits: np.ndarray, events: np.ndarray, bit: int | None) -> pa.Array:
    """TIF_NEED_FPU_LOAD per row from the events' load_bits: null for aux events, where it
    was not read (LOAD_NOT_READ) or where the TIF bit is unknown."""
    load = load_bits.astype(np.int64)
    unread = (events >= AUX_EVENT_BASE) | (bit is None) | ((load & LOAD_NOT_READ) != 0)
    return pa.array(((load >> (bit or 0)) & 1).astype(np.int8), mask=unread, type=pa.int8())


def reason_column(codes: np.ndarray) -> pa.DictionaryArray:
    """Why each switch-path save happened ("voluntary", "involuntary"); null where the
    kernel side did not read it (other events, the ftrace backend, no __state in BTF)."""
    names = pa.array(["", *REASON_NAMES.values()], type=pa.string())
    c = codes.astype(np.int32)
    known = np.isin(c, list(REASON_NAMES))
    return pa.DictionaryArray.from_arrays(pa.array(np.where(known, c, 0), mask=~known), names)


def event_names(codes: np.ndarray) -> pa.DictionaryArray:
    """Event codes -> their names, as a dictionary array over :func:`event_name_table`."""
    return pa.DictionaryArray.from_arrays(pa.array(codes.astype(np.int32)), event_name_table())


@functools.cache
def event_name_table() -> pa.Array:
    """Event code -> name, indexable by the code itself (codes are small integers).

    Built on first use: pa.array() probes for pandas, which would otherwise be imported on
    every `record`'s way to attached probes.
    """
    names = [EVENT_NAMES.get(code, f"event{code}") for code in range(max(EVENT_NAMES) + 1)]
    return pa.array(names, type=pa.string())
