"""VSO ids: a keyed hash, so no kernel address can be read back and runs cannot be joined."""

from __future__ import annotations

import re

from fptrace.collectors.columns import VsoNamer

ADDR = 0xFFFF_8881_0A2B_3C40  # a struct fpstate address, as the kernel reports it


def test_the_id_depends_on_the_per_run_key_and_hides_the_address():
    a, b = VsoNamer(), VsoNamer()
    assert a(ADDR, 42) == a(ADDR, 42)  # stable within a run: the same buffer, the same id
    assert a(ADDR, 42) != b(ADDR, 42)  # another run (another key): another id
    assert a(ADDR, 42) != a(ADDR, 43) and a(ADDR, 42) != a(ADDR + 64, 42)
    ident = a(ADDR, 42)
    assert ident is not None and re.fullmatch(r"[0-9a-f]{16}", ident)
    assert f"{ADDR:x}"[-8:] not in ident and str(ADDR) not in ident


def test_the_key_is_not_derived_from_anything_a_reader_has(monkeypatch):
    """Two namers made at the same instant in the same process still disagree."""
    monkeypatch.setattr("time.time", lambda: 0.0)
    ids = {VsoNamer()(ADDR, 1) for _ in range(8)}
    assert len(ids) == 8
    assert VsoNamer()(0, 1) is None  # no buffer (an event without fpu), no id
