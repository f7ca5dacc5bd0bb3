"""Answers to the planner's BTF questions, kept per kernel build so later runs skip the parse.

Why: indexing the kernel's BTF (~130 k types, probes/btf.py) is ~0.1 s natively but ~4 s in
an emulated `fptrace lab` guest, and the planner asks only a dozen questions (a few structs'
members, sizes, the tp_btf typedef ids).  :class:`BTFFacts` answers them from
``<cache>/btf/<key>.json`` and parses the BTF only for a question the file does not hold,
then adds the answer.  The key is a hash of the BTF blob itself, so an answer can never
outlive the kernel it came from.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import astuple
from typing import Any

from fptrace.cache import cache_dir, cache_write_dir, trusted, write_atomic
from fptrace.probes.btf import BTF, Member

FORMAT = 1


def btf_key(blob: bytes) -> str:
    return hashlib.blake2b(blob, digest_size=16).hexdigest()


class BTFFacts:
    """The planner's view of BTF (probes/kernel.StructInfo), remembered across runs."""

    def __init__(self, blob: bytes, parse: Callable[[bytes], BTF] = BTF) -> None:
        self._blob = blob
        self._parse = parse
        self._btf: BTF | None = None
        self.key = btf_key(blob)
        self.name = f"{self.key}.json"
        self._answers: dict[str, Any] = self._read()
        self.parsed = False  # whether this run needed the BTF itself

    def _read(self) -> dict[str, Any]:
        path = cache_dir() / "btf" / self.name
        if not path.is_file() or not trusted(path):
            return {}
        try:
            d = json.loads(path.read_text())
        except (OSError, ValueError):
            return {}
        if d.get("format") != FORMAT or d.get("key") != self.key:
            return {}
        answers = d.get("answers")
        return answers if isinstance(answers, dict) else {}

    @property
    def cached(self) -> bool:
        """An earlier run on this kernel build left answers."""
        return bool(self._answers)

    def parse(self) -> None:
        """Index the BTF now (raises BTFError for a malformed blob)."""
        if self._btf is None:
            self._btf = self._parse(self._blob)
            self.parsed = True

    def _ask(self, question: str, name: str) -> Any:
        k = f"{question} {name}"
        if k not in self._answers:
            self.parse()
            assert self._btf is not None
            value = getattr(self._btf, question)(name)
            if question == "members" and value is not None:
                value = [astuple(m) for m in value.values()]
            self._answers[k] = value
            write_atomic(
                cache_write_dir() / "btf" / self.name,
                json.dumps({"format": FORMAT, "key": self.key, "answers": self._answers}),
            )
        return self._answers[k]

    def has_func(self, name: str) -> bool:
        return bool(self._ask("has_func", name))

    def typedef_id(self, name: str) -> int | None:
        return self._ask("typedef_id", name)

    def func_id(self, name: str) -> int | None:
        return self._ask("func_id", name)

    def struct_id(self, name: str) -> int | None:
        return self._ask("struct_id", name)

    def struct_size(self, name: str) -> int | None:
        return self._ask("struct_size", name)

    def members(self, name: str) -> dict[str, Member] | None:
        rows = self._ask("members", name)
        if rows is None:
            return None
        return {r[0]: Member(*r) for r in rows}
