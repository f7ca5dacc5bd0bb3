"""The ``bpf()`` and ``perf_event_open()`` system calls fptrace issues itself, through ctypes.

Why not BCC (or libbcc) for these: BCC's loader only runs on a module it compiled in the
same process, and compiling costs clang's start-up on every `fptrace record` (~0.5 s here,
10 s and more in an emulated `fptrace lab` guest).  With these calls a program that BCC
compiled once (collectors/bpf_object.py) is loaded, attached and read without BCC or
libbcc in the process at all.  Only the commands and the leading fields of ``union
bpf_attr`` that fptrace needs are here (include/uapi/linux/bpf.h); the kernel accepts an
attribute block whose unused tail is zero.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import os
import resource
import struct

NR_BPF = 321  # x86-64
NR_PERF_EVENT_OPEN = 298

BPF_MAP_CREATE = 0
BPF_MAP_LOOKUP_ELEM = 1
BPF_MAP_UPDATE_ELEM = 2
BPF_MAP_DELETE_ELEM = 3
BPF_MAP_LOOKUP_AND_DELETE_ELEM = 21
BPF_MAP_GET_NEXT_KEY = 4
BPF_PROG_LOAD = 5
BPF_RAW_TRACEPOINT_OPEN = 17
BPF_MAP_LOOKUP_BATCH = 24
BPF_MAP_DELETE_BATCH = 27

BPF_PROG_TYPE_TRACEPOINT = 5
BPF_PROG_TYPE_RAW_TRACEPOINT = 17
BPF_PROG_TYPE_TRACING = 26
BPF_TRACE_RAW_TP = 23

BPF_MAP_TYPE_HASH = 1
BPF_MAP_TYPE_ARRAY = 2
BPF_MAP_TYPE_PERCPU_HASH = 5
BPF_MAP_TYPE_PERCPU_ARRAY = 6
BPF_MAP_TYPE_RINGBUF = 27
PERCPU_MAP_TYPES = (BPF_MAP_TYPE_PERCPU_HASH, BPF_MAP_TYPE_PERCPU_ARRAY)

PERF_TYPE_TRACEPOINT = 2
PERF_FLAG_FD_CLOEXEC = 8
PERF_EVENT_IOC_ENABLE = 0x2400
PERF_EVENT_IOC_SET_BPF = 0x40042408

ATTR_SIZE = 144  # union bpf_attr as of 6.x; older kernels accept a zeroed tail too
LOG_SIZE = 1 << 16
OBJ_NAME_LEN = 16

# union bpf_attr, BPF_MAP_CREATE: map_type .. map_name.
MAP_CREATE = struct.Struct("<IIIIIII16s")
# BPF_PROG_LOAD: prog_type .. attach_btf_id.
PROG_LOAD = struct.Struct("<IIQQIIQII16sIIIIQIIQII")
# BPF_MAP_*_ELEM: map_fd, pad, key, value (or next_key), flags.
MAP_ELEM = struct.Struct("<IIQQQ")
# BPF_MAP_*_BATCH: in_batch, out_batch, keys, values, count, map_fd, elem_flags, flags.
MAP_BATCH = struct.Struct("<QQQQIIQQ")
# struct perf_event_attr up to wakeup_events (PERF_ATTR_SIZE_VER0 is 64 bytes).
PERF_ATTR = struct.Struct("<IIQQQQQI")
PERF_ATTR_SIZE = 64

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


def bpf(cmd: int, attr: bytes | ctypes.Array[ctypes.c_char]) -> int:
    """One ``bpf(cmd, attr)`` call; raises OSError with errno on failure."""
    buf = attr if isinstance(attr, ctypes.Array) else ctypes.create_string_buffer(attr, ATTR_SIZE)
    ret = _libc.syscall(NR_BPF, cmd, buf, ATTR_SIZE)
    if ret < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return int(ret)


def raise_memlock() -> None:
    """Kernels before 5.11 charge BPF memory to RLIMIT_MEMLOCK (as libbpf, lift it as root)."""
    # Not root, or a hard limit: map creation then says EPERM itself.
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_MEMLOCK, (resource.RLIM_INFINITY,) * 2)


def map_create(
    map_type: int, key_size: int, value_size: int, max_entries: int, flags: int, name: str
) -> int:
    attr = MAP_CREATE.pack(
        map_type, key_size, value_size, max_entries, flags, 0, 0, name.encode()[:15]
    )
    return bpf(BPF_MAP_CREATE, attr)


def prog_load(
    prog_type: int,
    insns: bytes,
    license: bytes,
    name: str,
    attach_type: int = 0,
    attach_btf_id: int = 0,
) -> int:
    """Load a program; returns its fd.  A refusal raises OSError with the verifier's last line."""
    code = ctypes.create_string_buffer(insns, len(insns))
    lic = ctypes.create_string_buffer(license)
    log = ctypes.create_string_buffer(LOG_SIZE)
    # First without a log (the verifier is faster so); again with one only to say why.
    for level in (0, 1):
        attr = PROG_LOAD.pack(
            prog_type,
            len(insns) // 8,
            ctypes.addressof(code),
            ctypes.addressof(lic),
            level,
            LOG_SIZE if level else 0,
            ctypes.addressof(log) if level else 0,
            0,  # kern_version
            0,  # prog_flags
            name.encode()[: OBJ_NAME_LEN - 1],
            0,  # prog_ifindex
            attach_type,
            0,  # prog_btf_fd
            0,
            0,
            0,  # func_info
            0,
            0,
            0,  # line_info
            attach_btf_id,
        )
        try:
            return bpf(BPF_PROG_LOAD, attr)
        except OSError as exc:
            if level == 0 and exc.errno in (13, 22):  # EACCES, EINVAL: the verifier's verdict
                continue
            lines = [ln for ln in log.value.decode(errors="replace").splitlines() if ln.strip()]
            why = f": {lines[-1]}" if lines else ""
            raise OSError(exc.errno, f"{exc.strerror}{why}") from exc
    raise AssertionError("unreachable")


def raw_tracepoint_open(prog_fd: int, name: str | None = None) -> int:
    """Attach a raw tracepoint (by ``name``) or tp_btf program (``None``); returns the link fd."""
    buf = ctypes.create_string_buffer(name.encode()) if name is not None else None
    attr = struct.pack("<QI", ctypes.addressof(buf) if buf is not None else 0, prog_fd)
    return bpf(BPF_RAW_TRACEPOINT_OPEN, attr)


def attach_tracepoint(prog_fd: int, tracepoint_id: int) -> int:
    """Attach a TRACEPOINT program through a perf event (as libbpf does); returns that fd.

    One event on CPU 0 with pid -1 is enough: the program hangs off the tracepoint itself
    and runs on every CPU.  Closing the fd detaches it.
    """
    attr = ctypes.create_string_buffer(
        PERF_ATTR.pack(PERF_TYPE_TRACEPOINT, PERF_ATTR_SIZE, tracepoint_id, 1, 0, 0, 0, 1),
        PERF_ATTR_SIZE + 64,
    )
    fd = _libc.syscall(NR_PERF_EVENT_OPEN, attr, -1, 0, -1, PERF_FLAG_FD_CLOEXEC)
    if fd < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"perf_event_open: {os.strerror(err)}")
    try:
        fcntl.ioctl(fd, PERF_EVENT_IOC_SET_BPF, prog_fd)
        fcntl.ioctl(fd, PERF_EVENT_IOC_ENABLE, 0)
    except OSError:
        os.close(fd)
        raise
    return int(fd)


def map_lookup(
    fd: int, key: ctypes.Array[ctypes.c_char], value: ctypes.Array[ctypes.c_char]
) -> bool:
    """Fill ``value`` with the element at ``key``; False when there is none."""
    return _elem(BPF_MAP_LOOKUP_ELEM, fd, key, value)


def map_update(
    fd: int, key: ctypes.Array[ctypes.c_char], value: ctypes.Array[ctypes.c_char]
) -> None:
    bpf(
        BPF_MAP_UPDATE_ELEM, MAP_ELEM.pack(fd, 0, ctypes.addressof(key), ctypes.addressof(value), 0)
    )


def map_delete(fd: int, key: ctypes.Array[ctypes.c_char]) -> bool:
    """Delete the element at ``key``; False when there was none."""
    return _elem(BPF_MAP_DELETE_ELEM, fd, key, None)


def map_pop(fd: int, key: ctypes.Array[ctypes.c_char], value: ctypes.Array[ctypes.c_char]) -> bool:
    """Remove the element at ``key`` and fill ``value`` with what it held at that instant
    (hash maps: 5.14+, else OSError EINVAL); False when there was none."""
    return _elem(BPF_MAP_LOOKUP_AND_DELETE_ELEM, fd, key, value)


def _elem(
    cmd: int, fd: int, key: ctypes.Array[ctypes.c_char], value: ctypes.Array[ctypes.c_char] | None
) -> bool:
    """One element command on ``key`` (``value``: filled, or None); False: no such key."""
    address = 0 if value is None else ctypes.addressof(value)
    try:
        bpf(cmd, MAP_ELEM.pack(fd, 0, ctypes.addressof(key), address, 0))
    except FileNotFoundError:
        return False
    return True


def map_pop_many(fd: int, keys: bytes, key_size: int, value_size: int) -> tuple[list[bool], bytes]:
    """``map_pop`` for many packed keys: the keys and the values each in one buffer and one
    attr rewritten in place (the per-call Python cost is what dominates when thousands of
    exited tasks' keys go at once).  Returns whether each key was there, and the values
    packed (zeros for a key that was not)."""
    n = len(keys) // key_size
    kbuf = ctypes.create_string_buffer(keys, len(keys))
    vbuf = ctypes.create_string_buffer(value_size * n)
    attr = ctypes.create_string_buffer(ATTR_SIZE)
    k0, v0 = ctypes.addressof(kbuf), ctypes.addressof(vbuf)
    pack, call = MAP_ELEM.pack_into, _libc.syscall
    found = []
    for i in range(n):
        pack(attr, 0, fd, 0, k0 + i * key_size, v0 + i * value_size, 0)
        if call(NR_BPF, BPF_MAP_LOOKUP_AND_DELETE_ELEM, attr, ATTR_SIZE) == 0:
            found.append(True)
            continue
        err = ctypes.get_errno()
        if err != errno.ENOENT:
            raise OSError(err, os.strerror(err))
        found.append(False)
    return found, vbuf.raw


def map_delete_batch(fd: int, keys: ctypes.Array[ctypes.c_char], count: int) -> int:
    """Delete ``count`` packed keys in one call (5.6+; else OSError); returns how many went.

    A key that is not there stops the kernel's walk (ENOENT): the caller deletes the rest
    one by one.
    """
    attr = ctypes.create_string_buffer(
        MAP_BATCH.pack(0, 0, ctypes.addressof(keys), 0, count, fd, 0, 0), ATTR_SIZE
    )
    with contextlib.suppress(FileNotFoundError):
        bpf(BPF_MAP_DELETE_BATCH, attr)
    return int(struct.unpack_from("<I", attr, 32)[0])


def map_next_key(
    fd: int, key: ctypes.Array[ctypes.c_char] | None, out: ctypes.Array[ctypes.c_char]
) -> bool:
    """The key after ``key`` (the first with ``None``) into ``out``; False at the end."""
    attr = MAP_ELEM.pack(
        fd, 0, ctypes.addressof(key) if key is not None else 0, ctypes.addressof(out), 0
    )
    try:
        bpf(BPF_MAP_GET_NEXT_KEY, attr)
    except FileNotFoundError:
        return False
    return True


def map_lookup_batch(
    fd: int,
    keys: ctypes.Array[ctypes.c_char],
    values: ctypes.Array[ctypes.c_char],
    key_size: int,
    value_size: int,
    capacity: int,
) -> int:
    """Copy up to ``capacity`` elements into ``keys``/``values``; returns how many.

    Raises OSError (EINVAL) on kernels without batch operations (before 5.6).
    """
    token_in = ctypes.c_uint32(0)
    token_out = ctypes.c_uint32(0)
    total = 0
    while total < capacity:
        attr = ctypes.create_string_buffer(
            MAP_BATCH.pack(
                ctypes.addressof(token_in) if total else 0,
                ctypes.addressof(token_out),
                ctypes.addressof(keys) + key_size * total,
                ctypes.addressof(values) + value_size * total,
                capacity - total,
                fd,
                0,
                0,
            ),
            ATTR_SIZE,
        )
        try:
            bpf(BPF_MAP_LOOKUP_BATCH, attr)
            done = False
        except FileNotFoundError:  # ENOENT: the last batch (its count is still filled in)
            done = True
        count = struct.unpack_from("<I", attr, 32)[0]
        total += count
        if done or count == 0:
            break
        token_in.value = token_out.value
    return total
