# -*- test-case-name: memux.test.test_bench -*-
"""
The memux benchmark suite: ``python -m memux.bench``.

Each scenario runs memux and its baseline side by side, in the same
invocation, over loopback TCP, with client and server in two child
processes (see `memux._benchworkers`).  Repetitions alternate memux and
baseline runs to spread noise; the table reports medians, the ratio
memux / baseline, and whether the scenario's target is met.  The exit
status is 0 whether or not targets are met, and non-zero only when a run
fails.

Run ``python -m memux.bench --help`` for the options, and see
``doc/performance.rst`` for what each scenario measures.
``python -m memux.bench soak`` runs the soak test instead (`memux._soak`).
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import math
import os
import platform
import selectors
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import memux
import twisted
from memux._engine import SessionSettings

__all__ = ["SCENARIOS", "Scenario", "Target", "buildParser", "main"]

KiB = 1024
MiB = 1024 * KiB


@dataclass(frozen=True)
class Target:
    """
    What a scenario must achieve: ``on`` (``"ratio"``, or a figure every run
    reports under ``"check"``) compared by ``op`` (``">="`` or ``"<="``)
    with ``value``.
    """

    on: str
    op: str
    value: float
    unit: str = ""

    def describe(self) -> str:
        """
        The target as the table shows it.
        """
        what = "ratio" if self.on == "ratio" else self.on
        unit = f" {self.unit}" if self.unit else ""
        return f"{what} {self.op} {self.value:g}{unit}"

    def met(self, got: float) -> bool:
        """
        Whether ``got`` meets the target.
        """
        return got >= self.value if self.op == ">=" else got <= self.value


@dataclass(frozen=True)
class Scenario:
    """
    One benchmark scenario.

    @ivar variants: ``(label, role)`` pairs: the label (``memux`` or
        ``baseline``) whose value each worker role measures.  A scenario
        with one variant, labelled ``both``, measures both in one run.
    @ivar scaled: the parameters ``--scale`` multiplies.
    """

    name: str
    #: what it does, with ``{param}`` placeholders
    title: str
    baseline: str
    metric: str
    variants: tuple[tuple[str, str], ...]
    params: Mapping[str, int | float]
    quick: Mapping[str, int | float]
    scaled: tuple[str, ...]
    target: Target
    shown: tuple[str, ...] = ()
    #: what the memux and baseline figures are, for the chart
    labels: tuple[str, str] = ("memux", "baseline")
    clientSettings: Mapping[str, int] = field(default_factory=dict)
    serverSettings: Mapping[str, int] = field(default_factory=dict)


SCENARIOS: tuple[Scenario, ...] = (
    Scenario(
        name="bulk",
        title="one channel, {total} in {write} writes",
        baseline="raw Twisted TCP, same writes",
        metric="MB/s",
        variants=(("memux", "bulk/memux"), ("baseline", "bulk/tcp")),
        params={"total": 512 * MiB, "write": 64 * KiB},
        quick={"total": 16 * MiB, "write": 64 * KiB},
        scaled=("total",),
        target=Target("ratio", ">=", 0.90),
    ),
    Scenario(
        name="fanout",
        title="{channels} channels x {perChannel} at once, in {write} writes",
        baseline="raw Twisted TCP, one connection, same bytes",
        metric="MB/s",
        variants=(("memux", "fanout/memux"), ("baseline", "fanout/tcp")),
        params={"channels": 200, "perChannel": 2 * MiB, "write": 64 * KiB},
        quick={"channels": 50, "perChannel": 256 * KiB, "write": 64 * KiB},
        scaled=("perChannel",),
        target=Target("ratio", ">=", 0.85),
    ),
    Scenario(
        name="small",
        title="{messages} messages of {size} B, {window} in flight, each acked",
        baseline="Int32StringReceiver on one TCP connection",
        metric="msgs/s",
        variants=(("memux", "small/memux"), ("baseline", "small/tcp")),
        params={"messages": 200_000, "size": 64, "window": 1000},
        quick={"messages": 5000, "size": 64, "window": 1000},
        scaled=("messages",),
        target=Target("ratio", ">=", 0.60),
    ),
    Scenario(
        name="churn",
        title="{exchanges} x (open channel, {size} B request, {size} B reply,"
        " close), {inFlight} in flight",
        baseline="a new TCP connection per exchange",
        metric="exchanges/s",
        variants=(("memux", "churn/memux"), ("baseline", "churn/tcp")),
        params={"exchanges": 20_000, "size": 100, "inFlight": 100},
        quick={"exchanges": 500, "size": 100, "inFlight": 100},
        scaled=("exchanges",),
        target=Target("ratio", ">=", 5.0),
    ),
    Scenario(
        name="latency",
        title="p99 of {pings} {size} B ping-pongs on a channel while another"
        " carries bulk",
        baseline="the same ping-pong with no bulk traffic",
        metric="p99 us",
        variants=(("memux", "latency/loaded"), ("baseline", "latency/idle")),
        params={
            "pings": 5000,
            "warmup": 100,
            "size": 64,
            "write": 64 * KiB,
            "settle": 0.5,
        },
        quick={
            "pings": 200,
            "warmup": 20,
            "size": 64,
            "write": 64 * KiB,
            "settle": 0.1,
        },
        scaled=("pings",),
        target=Target("ratio", "<=", 5.0),
        shown=("p50", "p90", "max", "bulkMBps"),
        labels=("memux, loaded", "memux, idle"),
    ),
    Scenario(
        name="idle",
        title="open {channels} channels and hold them: server RSS",
        baseline="server RSS before opening",
        metric="RSS MiB",
        variants=(("both", "idle/memux"),),
        params={"channels": 100_000},
        quick={"channels": 2000},
        scaled=("channels",),
        target=Target("B/channel", "<=", 2048),
        shown=("clientBytesPerChannel", "opensPerSecond"),
        labels=("after opening", "before"),
        serverSettings={"maxChannels": 200_000},
    ),
    Scenario(
        name="overhead-small",
        title="bytes on the wire (both ways) for {messages} messages of {size} B",
        baseline="payload bytes",
        metric="bytes",
        variants=(("both", "overhead-small/memux"),),
        params={"messages": 100_000, "size": 64},
        quick={"messages": 5000, "size": 64},
        scaled=("messages",),
        target=Target("B/chunk", "<=", 3),
        shown=("setupBytes", "reverseBytesPerChunk", "totalOverheadPercent"),
        labels=("on the wire", "payload"),
    ),
    Scenario(
        name="overhead-bulk",
        title="bytes on the wire (both ways) for {total} in {write} writes",
        baseline="payload bytes",
        metric="bytes",
        variants=(("both", "overhead-bulk/memux"),),
        params={"total": 128 * MiB, "write": 64 * KiB},
        quick={"total": 8 * MiB, "write": 64 * KiB},
        scaled=("total",),
        target=Target("overhead %", "<=", 0.05),
        shown=("setupBytes", "reverseBytes", "totalOverheadPercent"),
        labels=("on the wire", "payload"),
    ),
)

BY_NAME = {scenario.name: scenario for scenario in SCENARIOS}


def describeScenario(scenario: Scenario, params: Mapping[str, Any]) -> str:
    """
    What ``scenario`` does with ``params``, in a line.
    """
    return scenario.title.format(
        **{k: formatSize(v, k) for k, v in params.items() if k in scenario.params}
    )


class BenchError(Exception):
    """
    A run failed: a worker exited in error, timed out, or reported errors.
    """


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


def scenarioParams(
    scenario: Scenario, quick: bool, scale: float, overrides: Mapping[str, str]
) -> dict[str, Any]:
    """
    The parameters of one scenario for this invocation: defaults (or quick
    sizes), scaled, then overridden, plus the memux settings.
    """
    params: dict[str, Any] = dict(scenario.quick if quick else scenario.params)
    for key in scenario.scaled:
        params[key] = max(1, int(params[key] * scale))
    for key, text in overrides.items():
        if key not in params:
            raise SystemExit(
                f"--set {scenario.name}.{key}: no such parameter;"
                f" {scenario.name} has {', '.join(params)}"
            )
        params[key] = parseSize(text)
    if "write" in params:
        # Whole writes only: the receiver waits for exactly this many bytes.
        write = params["write"] = max(1, int(params["write"]))
        for key in ("total", "perChannel"):
            if key in params:
                params[key] = max(1, int(params[key]) // write) * write
    params["clientSettings"] = dict(scenario.clientSettings)
    params["serverSettings"] = dict(scenario.serverSettings)
    return params


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


def defaultSettings() -> dict[str, int]:
    """
    memux's default session settings.
    """
    return dataclasses.asdict(SessionSettings())


# ---------------------------------------------------------------- runs


def workerEnvironment() -> dict[str, str]:
    """
    The environment of a worker: this memux importable first.
    """
    root = str(Path(memux.__file__).resolve().parent.parent)
    env = dict(os.environ)
    path = env.get("PYTHONPATH")
    env["PYTHONPATH"] = root + (os.pathsep + path if path else "")
    return env


def readLine(process: subprocess.Popen[bytes], timeout: float) -> bytes:
    """
    Read one line of ``process``'s standard output, waiting at most
    ``timeout`` seconds.
    """
    assert process.stdout is not None
    fd = process.stdout.fileno()
    deadline = time.monotonic() + timeout
    data = b""
    with selectors.DefaultSelector() as selector:
        selector.register(fd, selectors.EVENT_READ)
        while b"\n" not in data:
            left = deadline - time.monotonic()
            if left <= 0 or not selector.select(left):
                raise BenchError(f"no answer from the server in {timeout:g} s")
            chunk = os.read(fd, 4096)
            if not chunk:
                break
            data += chunk
    return data


def tail(stream: IO[bytes] | None, limit: int = 2000) -> str:
    """
    The end of what a worker wrote to its standard error.
    """
    if stream is None:
        return ""
    stream.seek(0)
    text = stream.read().decode("utf-8", "replace").strip()
    return text[-limit:]


def runOnce(role: str, params: Mapping[str, Any], timeout: float) -> dict[str, Any]:
    """
    One run: start the server worker, then the client worker; return the
    client's result.
    """
    worker = [sys.executable, "-m", "memux._benchworkers"]
    encoded = json.dumps(params)
    env = workerEnvironment()
    with tempfile.TemporaryFile() as serverErr:
        server = subprocess.Popen(
            [*worker, "server", role, encoded],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=serverErr,
            env=env,
        )
        try:
            line = readLine(server, 60)
            if not line:
                server.wait(10)
                raise BenchError(
                    f"{role} server exited {server.returncode}:\n{tail(serverErr)}"
                )
            port = json.loads(line)["port"]
            try:
                client = subprocess.run(
                    [*worker, "client", role, encoded, str(port)],
                    stdin=subprocess.DEVNULL,
                    capture_output=True,
                    timeout=timeout,
                    env=env,
                )
            except subprocess.TimeoutExpired as e:
                raise BenchError(f"{role} client took over {timeout:g} s") from e
            if server.poll() is not None:
                raise BenchError(
                    f"{role} server exited {server.returncode} during the run:\n"
                    f"{tail(serverErr)}"
                )
            if client.returncode != 0:
                stderr = client.stderr.decode("utf-8", "replace").strip()[-2000:]
                raise BenchError(f"{role} client exited {client.returncode}:\n{stderr}")
            try:
                result: dict[str, Any] = json.loads(
                    client.stdout.decode().strip().splitlines()[-1]
                )
            except (IndexError, ValueError) as e:
                raise BenchError(f"{role} client gave no result: {e}") from e
        finally:
            if server.poll() is None:
                server.terminate()
                try:
                    server.wait(10)
                except subprocess.TimeoutExpired:
                    server.kill()
                    server.wait()
            assert server.stdout is not None
            server.stdout.close()
    if result.get("errors"):
        raise BenchError(f"{role}: {len(result['errors'])} errors: {result['errors']}")
    return result


@dataclass
class Outcome:
    """
    The runs of one scenario and what they add up to.
    """

    scenario: Scenario
    params: dict[str, Any]
    values: dict[str, list[float]] = field(
        default_factory=lambda: {"memux": [], "baseline": []}
    )
    checks: list[float] = field(default_factory=list)
    details: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None

    def median(self, label: str) -> float:
        """
        The median of the ``label`` runs (NaN if there are none).
        """
        values = self.values[label]
        return statistics.median(values) if values else math.nan

    @property
    def ratio(self) -> float:
        """
        memux / baseline, of the medians.
        """
        baseline = self.median("baseline")
        return self.median("memux") / baseline if baseline else math.nan

    @property
    def got(self) -> float:
        """
        The figure the target is judged on.
        """
        if self.scenario.target.on == "ratio":
            return self.ratio
        return statistics.median(self.checks) if self.checks else math.nan

    @property
    def passed(self) -> bool:
        """
        Whether the target is met.
        """
        return not math.isnan(self.got) and self.scenario.target.met(self.got)

    def record(self, label: str, result: dict[str, Any]) -> None:
        """
        Add one run's result.
        """
        self.details.append({"variant": label, **result})
        if label == "both":
            self.values["memux"].append(result["memux"])
            self.values["baseline"].append(result["baseline"])
        else:
            self.values[label].append(result["value"])
        if "check" in result:
            self.checks.append(result["check"])

    def toJSON(self) -> dict[str, Any]:
        """
        The outcome for the JSON report.
        """
        s = self.scenario

        def number(x: float) -> float | None:
            return None if math.isnan(x) else x

        return {
            "title": describeScenario(s, self.params),
            "baselineIs": s.baseline,
            "metric": s.metric,
            "params": {k: v for k, v in self.params.items() if k in s.params},
            "settings": {
                "client": self.params["clientSettings"],
                "server": self.params["serverSettings"],
            },
            "memux": number(self.median("memux")),
            "baseline": number(self.median("baseline")),
            "ratio": number(self.ratio),
            "target": {
                "on": s.target.on,
                "op": s.target.op,
                "value": s.target.value,
                "text": s.target.describe(),
            },
            "got": number(self.got),
            "pass": self.passed,
            "runs": self.values,
            "checks": self.checks,
            "details": self.details,
            "error": self.error,
        }


def runScenario(
    scenario: Scenario,
    params: dict[str, Any],
    runs: int,
    timeout: float,
    say: Callable[[str], None],
) -> Outcome:
    """
    Run ``scenario`` ``runs`` times, alternating which variant goes first.
    """
    outcome = Outcome(scenario, params)
    for run in range(runs):
        variants = list(scenario.variants)
        if run % 2:
            variants.reverse()
        for label, role in variants:
            started = time.monotonic()
            try:
                result = runOnce(role, params, timeout)
            except BenchError as e:
                outcome.error = str(e)
                say(f"  {scenario.name} run {run + 1}/{runs} {label}: ERROR {e}")
                return outcome
            outcome.record(label, result)
            say(
                f"  {scenario.name} run {run + 1}/{runs} {label}:"
                f" {describeRun(scenario, label, result)}"
                f" ({time.monotonic() - started:.1f} s)"
            )
    return outcome


def describeRun(scenario: Scenario, label: str, result: Mapping[str, Any]) -> str:
    """
    One run's result in a few words.
    """
    if label == "both":
        shown = "".join(
            f", {k} {fmt(result[k])}" for k in scenario.shown if k in result
        )
        return (
            f"memux {fmt(result['memux'])}, baseline {fmt(result['baseline'])}"
            f" {scenario.metric}; {scenario.target.on} {fmt(result['check'])}{shown}"
        )
    shown = ", ".join(f"{k} {fmt(result[k])}" for k in scenario.shown if k in result)
    return f"{fmt(result['value'])} {scenario.metric}" + (
        f" ({shown})" if shown else ""
    )


def describeDetails(outcome: Outcome) -> str | None:
    """
    The medians of the scenario's secondary figures, by variant.
    """
    parts = []
    for label in ("memux", "baseline", "both"):
        runs = [d for d in outcome.details if d["variant"] == label]
        figures = [
            f"{k} {fmt(statistics.median(d[k] for d in runs))}"
            for k in outcome.scenario.shown
            if runs and all(k in d for d in runs)
        ]
        if figures:
            prefix = "" if label == "both" else f"{label}: "
            parts.append(prefix + ", ".join(figures))
    if not parts:
        return None
    return f"  {outcome.scenario.name}: " + "; ".join(parts)


# ---------------------------------------------------------------- report


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
    )
    rows = [header]
    for o in outcomes:
        result = "ERROR" if o.error else ("PASS" if o.passed else "MISS")
        rows.append(
            (
                o.scenario.name,
                o.scenario.metric,
                fmt(o.median("memux")),
                fmt(o.median("baseline")),
                "-" if math.isnan(o.ratio) else f"{o.ratio:.2f}",
                o.scenario.target.describe(),
                fmt(o.got),
                result,
            )
        )
    return alignTable(rows, numeric={2, 3, 4, 6})


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
        description="Benchmark memux against its baselines over loopback TCP,"
        " client and server in two processes.",
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
        "--nodelay",
        action="store_true",
        help="turn Nagle's algorithm off (TCP_NODELAY) on every connection,"
        " memux and baseline alike (by default Nagle stays on, as Twisted"
        " leaves it)",
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
        lines.append(f"    target: {s.target.describe()}")
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
    ``soak ...`` runs the soak test instead (`memux._soak`).
    """
    if argv is None:
        argv = sys.argv[1:]
    if list(argv[:1]) == ["soak"]:
        # Imported here: the soak test imports this module.
        from memux import _soak

        return _soak.main(argv[1:], prog=f"{prog} soak")
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
    for p in params.values():
        p["nodelay"] = args.nodelay
    machine = machineInfo()

    def say(text: str) -> None:
        print(text, flush=True)

    say(describeSetup(machine, chosen, params))
    say(
        "TCP_NODELAY: "
        + ("on, every connection" if args.nodelay else "off (Twisted's default)")
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
            "nodelay": args.nodelay,
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


if __name__ == "__main__":
    sys.exit(main())
