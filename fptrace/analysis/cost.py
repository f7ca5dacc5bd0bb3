"""CPU-time cost model for saves and restores: nanoseconds as a function of bytes moved.

``ns = base_ns + ns_per_byte * bytes`` per operation kind.  The numbers come from a
calibration table measured by ``fptrace bench calibrate`` on the same machine when one is
given (a JSON file, or embedded in the recording's manifest under ``calibration``);
otherwise from :data:`DEFAULT`, an order-of-magnitude estimate that every report marks as
such.  The default is derived from published XSAVE/XRSTOR latencies on recent server
cores: on the order of 40 ns for SSE-only state and 100-150 ns for ~2 KB of AVX-512 state
(Intel's XSAVE-latency tracepoint series, LKML 2022-2023; see ../shared/docs/prior-art.md
§1.11), i.e. a base of ~35 ns plus ~0.04 ns per byte.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fptrace.errors import RecordingError
from fptrace.recording.manifest import Manifest

CALIBRATION_FORMAT = "fptrace-calibration"


@dataclass(frozen=True)
class Linear:
    base_ns: float
    ns_per_byte: float

    def __call__(self, nbytes: float) -> float:
        return self.base_ns + self.ns_per_byte * nbytes

    def total(self, ops: Any, nbytes: Any) -> Any:
        """The cost of ``ops`` operations moving ``nbytes`` bytes in all (numbers or
        pandas Series alike): the one place the formula is applied to counts."""
        return ops * self.base_ns + nbytes * self.ns_per_byte


@dataclass(frozen=True)
class CostModel:
    save: Linear
    restore: Linear
    source: str  # where the numbers come from
    estimate: bool  # True for the built-in default: reports say so

    def to_json(self) -> dict[str, Any]:
        return {
            "save": {"base_ns": self.save.base_ns, "ns_per_byte": self.save.ns_per_byte},
            "restore": {"base_ns": self.restore.base_ns, "ns_per_byte": self.restore.ns_per_byte},
            "source": self.source,
            "estimate": self.estimate,
        }


DEFAULT = CostModel(
    save=Linear(35.0, 0.04),
    restore=Linear(35.0, 0.04),
    source="built-in default (order-of-magnitude estimate; run `fptrace bench calibrate`)",
    estimate=True,
)


def from_calibration(data: dict[str, Any], source: str) -> CostModel:
    """A model from a calibration table (``fptrace bench calibrate`` output)."""
    try:
        if data.get("format") != CALIBRATION_FORMAT:
            raise KeyError("format")
        save = Linear(float(data["save"]["base_ns"]), float(data["save"]["ns_per_byte"]))
        restore = Linear(float(data["restore"]["base_ns"]), float(data["restore"]["ns_per_byte"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise RecordingError(
            f"{source} is not an fptrace calibration table (missing or bad {exc}): "
            "give the JSON `fptrace bench calibrate` wrote"
        ) from exc
    return CostModel(save, restore, source, estimate=False)


def load_calibration(path: Path) -> CostModel:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise RecordingError(f"cannot read calibration {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise RecordingError(f"{path} is not an fptrace calibration table")
    return from_calibration(data, str(path))


def choose_model(manifest: Manifest, path: Path | None) -> CostModel:
    """The user's table, else the recording's own, else the documented default."""
    if path is not None:
        return load_calibration(path)
    if manifest.calibration:
        return from_calibration(dict(manifest.calibration), "the recording's calibration table")
    return DEFAULT
