"""
memux's measuring tools, outside the library proper:

- ``python -m memux.bench``: the benchmark suite (`suite`, its scenarios in
  `scenarios`, their worker processes in `workers`, made of `servers`,
  `clients` and `peers`; see ``doc/performance.rst``);
- ``python -m memux.bench soak``: the soak test (`soak`, its client process
  in `soakclient`, the workload in `soakops`, `soakstreams` and
  `soakbase`);
- ``python -m memux.attackbench``: the attack bench (`attack`, its hostile
  peers in `attackers`; see ``doc/security.rst``).

`report` (formatting, tables, the machine), `processes` (child processes,
/proc) and `frames` (raw frames, the one door to ``memux._wire``) are shared
at the bottom.  Imports run one way, from the commands (`__main__`,
`suite`, `attack`, `soak`) down to those.  The tools use memux's public
modules only, `frames` aside.

The names below are imported when first used, so that a worker process
(``python -m memux.bench.workers``) imports only what it runs.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from memux.bench.__main__ import main
    from memux.bench.processes import workerEnvironment
    from memux.bench.report import (
        KiB,
        MiB,
        alignTable,
        fmt,
        formatSize,
        machineInfo,
        parseSize,
    )
    from memux.bench.scenarios import (
        BY_NAME,
        SCENARIOS,
        BenchError,
        Outcome,
        Scenario,
        Target,
        runScenario,
        scenarioParams,
    )
    from memux.bench.suite import buildParser, plot, table

__all__ = [
    "BY_NAME",
    "SCENARIOS",
    "BenchError",
    "KiB",
    "MiB",
    "Outcome",
    "Scenario",
    "Target",
    "alignTable",
    "buildParser",
    "fmt",
    "formatSize",
    "machineInfo",
    "main",
    "parseSize",
    "plot",
    "runScenario",
    "scenarioParams",
    "table",
    "workerEnvironment",
]

#: Where each name lives (imported on first use, see above).
_LAZY = {
    "main": "memux.bench.__main__",
    "workerEnvironment": "memux.bench.processes",
    **dict.fromkeys(
        (
            "KiB",
            "MiB",
            "alignTable",
            "fmt",
            "formatSize",
            "machineInfo",
            "parseSize",
        ),
        "memux.bench.report",
    ),
    **dict.fromkeys(
        (
            "BY_NAME",
            "SCENARIOS",
            "BenchError",
            "Outcome",
            "Scenario",
            "Target",
            "runScenario",
            "scenarioParams",
        ),
        "memux.bench.scenarios",
    ),
    **dict.fromkeys(("buildParser", "plot", "table"), "memux.bench.suite"),
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'memux.bench' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value  # once
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
