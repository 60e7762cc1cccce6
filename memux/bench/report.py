# -*- test-case-name: memux.test.test_bench -*-
"""
What the tools' reports share: units and sizes (`parseSize`,
`formatSize`), figures (`fmt`, `percentile`), plain-text tables
(`alignTable`), and the machine the figures were measured on
(`machineInfo`).
"""

from __future__ import annotations

import math
import os
import platform
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import memux
import twisted

__all__ = [
    "BYTE_SIZES",
    "KiB",
    "MiB",
    "alignTable",
    "fmt",
    "formatSize",
    "gitCommit",
    "machineInfo",
    "parseSize",
    "percentile",
]

KiB = 1024
MiB = 1024 * KiB


# ---------------------------------------------------------------- sizes


_UNITS = {
    "k": KiB,
    "kib": KiB,
    "m": MiB,
    "mib": MiB,
    "g": 1024 * MiB,
    "gib": 1024 * MiB,
}


def parseSize(text: str) -> int | float:
    """
    A number, with an optional binary unit: ``64KiB``, ``512M``, ``0.5``.
    """
    raw = text.strip().lower().replace("_", "")
    for unit in sorted(_UNITS, key=len, reverse=True):
        if raw.endswith(unit):
            return int(float(raw[: -len(unit)]) * _UNITS[unit])
    number = float(raw)
    return int(number) if number.is_integer() and "." not in raw else number


#: The parameters and settings that are byte counts, shown with units.
BYTE_SIZES = frozenset(
    (
        "total",
        "write",
        "perChannel",
        "maxFrameSize",
        "channelCredit",
        "sessionCredit",
        "maxMessageSize",
        "chunkSize",
    )
)


def formatSize(value: int | float, name: str = "") -> str:
    """
    A parameter as a person reads it: ``512 MiB`` for a byte count
    (``name`` in `BYTE_SIZES`), ``20,000`` for a count.
    """
    if name in BYTE_SIZES and isinstance(value, int):
        if value >= MiB and value % MiB == 0:
            return f"{value // MiB} MiB"
        if value >= KiB and value % KiB == 0:
            return f"{value // KiB} KiB"
    return f"{value:g}" if isinstance(value, float) else f"{value:,}"


# ---------------------------------------------------------------- figures


def fmt(x: float | None) -> str:
    """
    A figure with about four significant digits.
    """
    if x is None or math.isnan(x):
        return "-"
    if float(x).is_integer():
        return f"{int(x):,}"
    magnitude = abs(x)
    if magnitude >= 1000:
        return f"{x:,.0f}"
    if magnitude >= 100:
        return f"{x:.1f}"
    if magnitude >= 1:
        return f"{x:.2f}"
    return f"{x:.3g}"


def percentile(values: list[float], fraction: float) -> float:
    """
    The ``fraction`` percentile of ``values`` (nearest rank).
    """
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, int(fraction * len(ordered) + 0.5) - 1))
    return ordered[rank]


def alignTable(rows: Sequence[Sequence[str]], numeric: set[int]) -> str:
    """
    ``rows`` (the first is the header) as aligned plain text, the
    ``numeric`` columns to the right, a rule under the header.
    """
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for n, row in enumerate(rows):
        cells = [
            cell.rjust(w) if i in numeric else cell.ljust(w)
            for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(cells).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


# ---------------------------------------------------------------- machine


def machineInfo() -> dict[str, Any]:
    """
    What the figures were measured on.
    """
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count() or 0
    info: dict[str, Any] = {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "usableCores": usable,
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "twisted": twisted.__version__,
        "memux": memux.__version__,
        "platform": platform.platform(),
    }
    if hasattr(os, "getloadavg"):
        info["loadAverage"] = [round(x, 2) for x in os.getloadavg()]
    commit = gitCommit()
    if commit:
        info["commit"] = commit
    return info


def gitCommit() -> str | None:
    """
    The commit of the memux checkout being measured (with ``+dirty`` when
    it has changes), if it is one.
    """
    root = Path(memux.__file__).resolve().parent.parent
    if not (root / ".git").exists():
        return None
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", "memux"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{head}+dirty" if head and dirty else head or None
