# -*- test-case-name: memux.test.test_bench -*-
"""
The memux benchmark suite: ``python -m memux.bench``.

Each scenario (`memux.bench.scenarios`) runs memux and its baseline side by
side, in the same invocation, over loopback TCP (or, with ``--tls``, TLS 1.3
over it, memux and the baselines alike), with client and server in
two child processes (see `memux.bench.workers`).  Repetitions alternate
memux and baseline runs to spread noise; the table reports medians, the
ratio memux / baseline, and whether the scenario's target is met.  The exit
status is 0 whether or not targets are met, and non-zero only when a run
fails.

Run ``python -m memux.bench --help`` for the options, and see
``doc/performance.rst`` for what each scenario measures.
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from memux.bench.certificate import selfSignedPEM
from memux.bench.report import alignTable, fmt, formatSize, machineInfo
from memux.bench.scenarios import (
    BY_NAME,
    REFERENCES,
    SCENARIOS,
    Outcome,
    Scenario,
    defaultSettings,
    describeDetails,
    describeScenario,
    runScenario,
    scenarioParams,
)

__all__ = ["buildParser", "main", "plot", "table"]


# ---------------------------------------------------------------- report


def table(outcomes: Sequence[Outcome]) -> str:
    """
    The results as a plain-text table.
    """
    header = (
        "scenario",
        "metric",
        "memux",
        "baseline",
        "ratio",
        "target",
        "got",
        "result",
        "references (memux / reference)",
    )
    rows = [header]
    for o in outcomes:
        result = "ERROR" if o.error else ("PASS" if o.passed else "MISS")
        targets = {t.on: (t, got, ok) for t, got, ok in o.judged()}
        references = []
        for label in o.referenceLabels:
            if label in o.unavailable:
                references.append(f"{label} -")
                continue
            text = f"{label} {fmt(o.median(label))} = {ratioText(o.ratioTo(label))}"
            if f"ratio:{label}" in targets:
                target, _, ok = targets[f"ratio:{label}"]
                text += f" ({target.op} {target.value:g} {'PASS' if ok else 'MISS'})"
            references.append(text)
        rows.append(
            (
                o.scenario.name,
                o.scenario.metric,
                fmt(o.median("memux")),
                fmt(o.median("baseline")),
                ratioText(o.ratio),
                o.scenario.target.describe(),
                fmt(o.got),
                result,
                "; ".join(references),
            )
        )
    return alignTable(rows, numeric={2, 3, 4, 6})


def ratioText(ratio: float) -> str:
    """
    A ratio as the table shows it.
    """
    return "-" if math.isnan(ratio) else f"{ratio:.2f}"


def describeSetup(
    machine: Mapping[str, Any], scenarios: Sequence[Scenario], params: Mapping[str, Any]
) -> str:
    """
    The machine, the memux settings and the scenarios' sizes.
    """
    lines = [
        f"machine: {machine['cpu']}, {machine['cores']} cores"
        f" ({machine['usableCores']} usable), {machine['python']},"
        f" Twisted {machine['twisted']}, memux {machine['memux']}"
        + (f" ({machine['commit']})" if "commit" in machine else ""),
    ]
    if "loadAverage" in machine:
        lines.append(f"load average at start: {machine['loadAverage']}")
    settings = ", ".join(
        f"{k}={formatSize(v, k) if isinstance(v, int) else v}"
        for k, v in defaultSettings().items()
    )
    lines.append(f"memux settings: defaults ({settings})")
    for s in scenarios:
        sizes = ", ".join(
            f"{k}={formatSize(v, k)}"
            for k, v in params[s.name].items()
            if k in s.params
        )
        custom = [
            f"{side} {k}={formatSize(v, k)}"
            for side, values in (
                ("client", s.clientSettings),
                ("server", s.serverSettings),
            )
            for k, v in values.items()
        ]
        extra = f"; settings: {', '.join(custom)}" if custom else ""
        lines.append(f"  {s.name}: {sizes}{extra}")
    return "\n".join(lines)


def plot(outcomes: Sequence[Outcome], machine: Mapping[str, Any], path: str) -> None:
    """
    Draw one panel per scenario: memux and baseline medians, each run as a
    dot, the ratio and the verdict in the title.
    """
    # Imported by name, so matplotlib stays an optional extra (memux[bench])
    # and type checking does not need it.
    mpl: Any = importlib.import_module("matplotlib")
    mpl.use("Agg")
    plt: Any = importlib.import_module("matplotlib.pyplot")
    shown = [o for o in outcomes if not o.error]
    if not shown:
        return
    columns = min(4, len(shown))
    rows = (len(shown) + columns - 1) // columns
    fig, axes = plt.subplots(
        rows, columns, figsize=(3.4 * columns, 3.2 * rows), squeeze=False
    )
    for ax in axes.flat[len(shown) :]:
        ax.set_visible(False)
    for ax, o in zip(axes.flat, shown, strict=False):
        keys = ["memux", "baseline"]
        medians = [o.median(key) for key in keys]
        ax.bar(o.scenario.labels, medians, color=["tab:blue", "tab:gray"], alpha=0.7)
        for i, key in enumerate(keys):
            ax.plot([i] * len(o.values[key]), o.values[key], "k.", markersize=4)
        verdict = "PASS" if o.passed else "MISS"
        ax.set_title(
            f"{o.scenario.name}\n{o.scenario.target.on} {fmt(o.got)}"
            f" ({o.scenario.target.op} {o.scenario.target.value:g}): {verdict}",
            fontsize=9,
            color="tab:green" if o.passed else "tab:red",
        )
        ax.set_ylabel(o.scenario.metric, fontsize=8)
        ax.tick_params(labelsize=8)
    fig.suptitle(
        f"memux benchmarks: {machine['cpu']}, {machine['cores']} cores,"
        f" {machine['python']}, Twisted {machine['twisted']}",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ---------------------------------------------------------------- command line


def buildParser(prog: str = "python -m memux.bench") -> argparse.ArgumentParser:
    """
    The command line of ``python -m memux.bench`` (or of ``prog``).
    """
    names = ", ".join(s.name for s in SCENARIOS)
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Benchmark memux against its baselines over loopback TCP"
        " (or TLS), client and server in two processes.",
        epilog=f"Scenarios: {names}.  The exit status is 0 whether or not"
        " targets are met; non-zero only when a run fails.  The soak test:"
        f" {prog} soak --help.",
    )
    parser.add_argument(
        "--scenario",
        action="append",
        choices=[s.name for s in SCENARIOS],
        metavar="NAME",
        help=f"run only this scenario (repeatable): {names}",
    )
    parser.add_argument(
        "--runs", type=int, default=5, metavar="N", help="repetitions (default 5)"
    )
    parser.add_argument(
        "--quick", action="store_true", help="small sizes: a fast smoke run"
    )
    parser.add_argument(
        "--scale",
        type=float,
        default=1.0,
        metavar="F",
        help="multiply each scenario's work (bytes, messages, exchanges,"
        " pings, channels) by F",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SCENARIO.PARAM=VALUE",
        dest="overrides",
        help="override one size, e.g. bulk.total=64MiB (repeatable; see --list)",
    )
    parser.add_argument(
        "--tls",
        action="store_true",
        help="run every connection over TLS 1.3 (memux and the baselines"
        " alike, a self-signed certificate made for the run)",
    )
    parser.add_argument("--json", metavar="FILE", help="write the results as JSON")
    parser.add_argument(
        "--plot", metavar="FILE.png", help="draw a chart (needs matplotlib)"
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=600,
        metavar="SECONDS",
        help="the longest one run may take (default 600)",
    )
    parser.add_argument(
        "--list", action="store_true", help="list the scenarios and their sizes"
    )
    return parser


def listScenarios() -> str:
    """
    The scenarios, their default sizes and targets.
    """
    lines = []
    for s in SCENARIOS:
        sizes = ", ".join(f"{k}={formatSize(v, k)}" for k, v in s.params.items())
        lines.append(f"{s.name}: {describeScenario(s, s.params)}")
        lines.append(f"    baseline: {s.baseline}")
        targets = [t.describe() for t in (s.target, *s.alsoTargets)]
        lines.append(f"    target: {'; '.join(targets)}")
        for label, _ in s.references:
            lines.append(f"    reference {label}: {REFERENCES[label]}")
        lines.append(f"    sizes: {sizes}")
    return "\n".join(lines)


def parseOverrides(items: Sequence[str]) -> dict[str, dict[str, str]]:
    """
    ``--set SCENARIO.PARAM=VALUE`` arguments, by scenario.
    """
    overrides: dict[str, dict[str, str]] = {}
    for item in items:
        key, sep, value = item.partition("=")
        name, dot, param = key.partition(".")
        if not sep or not dot or name not in BY_NAME:
            raise SystemExit(f"--set {item}: expected SCENARIO.PARAM=VALUE")
        overrides.setdefault(name, {})[param] = value
    return overrides


def main(argv: Sequence[str] | None = None, prog: str = "python -m memux.bench") -> int:
    """
    Run the benchmarks as the command line ``argv`` says; return the exit
    status (0 even when targets are missed; non-zero when a run fails).
    (``python -m memux.bench soak ...`` runs the soak test instead: see
    `memux.bench.__main__`.)
    """
    args = buildParser(prog).parse_args(argv)
    if args.list:
        print(listScenarios())
        return 0
    if args.runs < 1:
        raise SystemExit("--runs must be at least 1")
    if args.scale <= 0:
        raise SystemExit("--scale must be positive")
    if args.plot:
        try:
            importlib.import_module("matplotlib")
        except ImportError:
            print(
                "--plot needs matplotlib, which is not installed:"
                " pip install 'memux[bench]' (or pip install matplotlib)",
                file=sys.stderr,
            )
            return 2
    overrides = parseOverrides(args.overrides)
    chosen = [s for s in SCENARIOS if not args.scenario or s.name in args.scenario]
    params = {
        s.name: scenarioParams(s, args.quick, args.scale, overrides.get(s.name, {}))
        for s in chosen
    }
    if args.tls:
        pem = selfSignedPEM()
        for values in params.values():
            values["tls"] = pem
    machine = machineInfo()

    def say(text: str) -> None:
        print(text, flush=True)

    say(describeSetup(machine, chosen, params))
    say(
        "baselines: tuned as memux tunes its connection (TCP_NODELAY, send"
        " limit, read size, TCP_NOTSENT_LOWAT: memux.tuning)"
    )
    if args.tls:
        say(
            "over TLS 1.3 (Twisted's TLS, a self-signed P-256 certificate made"
            " for this run): memux and every baseline alike"
        )
    say(
        f"runs: {args.runs}{' (quick sizes)' if args.quick else ''}"
        + (f", scale {args.scale:g}" if args.scale != 1 else "")
    )
    started = time.monotonic()
    outcomes = []
    for scenario in chosen:
        say(f"{scenario.name}: {describeScenario(scenario, params[scenario.name])}")
        outcomes.append(
            runScenario(scenario, params[scenario.name], args.runs, args.timeout, say)
        )
    elapsed = time.monotonic() - started
    say("")
    say(table(outcomes))
    details = [line for o in outcomes if (line := describeDetails(o))]
    if details:
        say("\nother figures (medians):")
        for line in details:
            say(line)
    unavailable = {
        f"{label} ({reason})"
        for o in outcomes
        for label, reason in o.unavailable.items()
    }
    if unavailable:
        say(f"\nnot run here: {', '.join(sorted(unavailable))}")
    say(
        f"\nmedians of {args.runs} runs; ratio = memux / baseline;"
        f" {elapsed:.0f} s in all"
    )
    reactors = {
        str(d["reactor"]) for o in outcomes for d in o.details if "reactor" in d
    }
    machine["reactor"] = ", ".join(sorted(reactors))
    if args.json:
        report = {
            "machine": machine,
            "memuxSettings": defaultSettings(),
            "runs": args.runs,
            "quick": args.quick,
            "scale": args.scale,
            "tls": args.tls,
            "seconds": elapsed,
            "scenarios": {o.scenario.name: o.toJSON() for o in outcomes},
        }
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
        say(f"wrote {args.json}")
    if args.plot:
        plot(outcomes, machine, args.plot)
        say(f"wrote {args.plot}")
    failed = [o.scenario.name for o in outcomes if o.error]
    if failed:
        say(f"errors in: {', '.join(failed)}")
        return 1
    return 0
