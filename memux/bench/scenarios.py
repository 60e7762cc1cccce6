# -*- test-case-name: memux.test.test_bench -*-
"""
The benchmark scenarios (`SCENARIOS`), each with its baseline and its
target, and how they run: each run starts a server and then a client
worker process (``python -m memux.bench.workers``, see
`memux.bench.workers`) over loopback TCP; repetitions alternate memux and
baseline runs to spread noise, and an `Outcome` adds a scenario's runs up
(medians, the ratio memux / baseline, whether the target is met).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import selectors
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import IO, Any

from memux.bench.processes import LOOPBACK, workerEnvironment
from memux.bench.report import KiB, MiB, fmt, formatSize, parseSize
from memux.settings import SessionSettings

__all__ = [
    "BY_NAME",
    "SCENARIOS",
    "REFERENCES",
    "BenchError",
    "Outcome",
    "Scenario",
    "Target",
    "runScenario",
    "scenarioParams",
]

#: the worker processes' module (``python -m WORKERS server|client ...``)
WORKERS = "memux.bench.workers"


@dataclass(frozen=True)
class Target:
    """
    What a scenario must achieve: ``on`` (``"ratio"``, memux over the
    baseline; ``"ratio:LABEL"``, memux over the reference ``LABEL``; or a
    figure every run reports under ``"check"``) compared by ``op``
    (``">="`` or ``"<="``) with ``value``.
    """

    on: str
    op: str
    value: float
    unit: str = ""

    def describe(self) -> str:
        """
        The target as the table shows it.
        """
        what = self.on.replace("ratio:", "vs ")
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

    :ivar variants: ``(label, role)`` pairs: the label (``memux`` or
        ``baseline``) whose value each worker role measures.  A scenario
        with one variant, labelled ``both``, measures both in one run.
    :ivar scaled: the parameters ``--scale`` multiplies.
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
    #: ``(label, role)`` pairs measured beside memux and the baseline, in
    #: the same alternation, each reported as a ratio (see `REFERENCES`)
    references: tuple[tuple[str, str], ...] = ()
    #: targets on the references, besides ``target``
    alsoTargets: tuple[Target, ...] = ()


#: What each reference is (the role ``iperf3`` runs iperf3, not a worker).
REFERENCES = {
    "defaults": "the same baseline with Twisted's default socket settings",
    "iperf3": "iperf3 -l 128K over loopback: the machine's limit",
    "connect": "a new TCP connection per exchange",
    "tcp idle": "raw TCP ping-pong, nothing else running",
    "tcp loaded": "raw TCP ping-pong while another connection carries bulk",
    "round robin": "the same ping-pong beside the same bulk channels, all at"
    " the default priority",
    "one session per channel": "memux without multiplexing (MEMUX--):"
    " each channel on a session and connection of its own",
}

#: The baselines are tuned as memux tunes its own connection (see
#: `memux.tuning`): without that, memux's own settings flatter it.
TUNED = "tuned as memux tunes its connection"


SCENARIOS: tuple[Scenario, ...] = (
    Scenario(
        name="bulk",
        title="one channel, {total} in {write} writes",
        baseline=f"raw Twisted TCP, same writes, {TUNED}",
        metric="MB/s",
        variants=(("memux", "bulk/memux"), ("baseline", "bulk/tcp")),
        params={"total": 512 * MiB, "write": 64 * KiB},
        quick={"total": 16 * MiB, "write": 64 * KiB},
        scaled=("total",),
        target=Target("ratio", ">=", 0.90),
        shown=("faultsPerMB",),
        references=(("defaults", "bulk/tcp-defaults"), ("iperf3", "iperf3")),
        alsoTargets=(Target("ratio:iperf3", ">=", 0.75),),
    ),
    Scenario(
        name="fanout",
        title="{channels} channels x {perChannel} at once, in {write} writes",
        baseline=f"raw Twisted TCP, one connection, same bytes, {TUNED}",
        metric="MB/s",
        variants=(("memux", "fanout/memux"), ("baseline", "fanout/tcp")),
        params={"channels": 200, "perChannel": 2 * MiB, "write": 64 * KiB},
        quick={"channels": 50, "perChannel": 256 * KiB, "write": 64 * KiB},
        scaled=("perChannel",),
        target=Target("ratio", ">=", 0.90),
        shown=("faultsPerMB",),
        references=(("defaults", "fanout/tcp-defaults"),),
    ),
    Scenario(
        name="small",
        title="{messages} messages of {size} B, {window} in flight, each acked",
        baseline=f"Int32StringReceiver on one TCP connection, {TUNED}",
        metric="msgs/s",
        variants=(("memux", "small/memux"), ("baseline", "small/tcp")),
        params={"messages": 200_000, "size": 64, "window": 1000},
        quick={"messages": 5000, "size": 64, "window": 1000},
        scaled=("messages",),
        target=Target("ratio", ">=", 1.0),
        references=(("defaults", "small/tcp-defaults"),),
    ),
    Scenario(
        name="churn",
        title="{exchanges} x (open channel, {size} B request, {size} B reply,"
        " close), {inFlight} in flight",
        baseline="the same requests and replies on one TCP connection"
        f" (Int32StringReceiver), {TUNED}",
        metric="exchanges/s",
        variants=(("memux", "churn/memux"), ("baseline", "churn/rr")),
        params={"exchanges": 20_000, "size": 100, "inFlight": 100},
        quick={"exchanges": 500, "size": 100, "inFlight": 100},
        scaled=("exchanges",),
        target=Target("ratio", ">=", 0.5),
        references=(
            ("connect", "churn/tcp"),
            ("one session per channel", "churn/single"),
        ),
        alsoTargets=(Target("ratio:connect", ">=", 5.0),),
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
        target=Target("ratio", "<=", 2.0),
        shown=("p50", "p90", "p999", "max", "bulkMBps"),
        labels=("memux, loaded", "memux, idle"),
        references=(
            ("tcp idle", "latency/tcp-idle"),
            ("tcp loaded", "latency/tcp-loaded"),
            ("one session per channel", "latency/single"),
        ),
    ),
    Scenario(
        name="priority-latency",
        title="p99 of {pings} {size} B ping-pongs on a channel at urgency 0"
        " while {bulk} channels at the default priority carry bulk",
        baseline="the same ping-pong with the bulk stopped, in the same session"
        " (the phases alternate in blocks)",
        metric="p99 us",
        variants=(("both", "priority-latency/phases"),),
        params={
            "pings": 5000,
            "block": 1000,
            "warmup": 50,
            "size": 64,
            "write": 64 * KiB,
            "settle": 0.2,
            "bulk": 10,
        },
        quick={
            "pings": 1000,
            "block": 250,
            "warmup": 20,
            "size": 64,
            "write": 64 * KiB,
            "settle": 0.1,
            "bulk": 10,
        },
        scaled=("pings",),
        target=Target("ratio", "<=", 1.5),
        shown=("p50", "idleP50", "rrP50", "rrP99", "ownP50", "ownP99", "bulkMBps"),
        labels=("memux, urgent beside bulk", "memux, idle"),
    ),
    Scenario(
        name="weighted-shares",
        title="3 channels of weights 1, 2 and 4, {backlog} kept queued on each,"
        " for {seconds} s: each one's share of the bytes sent",
        baseline="the share of the heaviest weight (4 of 7)",
        metric="share %",
        variants=(("both", "weighted-shares/memux"),),
        params={
            "seconds": 5.0,
            "settle": 0.5,
            "write": 64 * KiB,
            "backlog": 512 * MiB,
        },
        quick={
            "seconds": 1.0,
            "settle": 0.2,
            "write": 64 * KiB,
            "backlog": 512 * MiB,
        },
        scaled=("seconds",),
        target=Target("share error", "<=", 0.10),
        shown=("share1", "share2", "share4", "MBps"),
        labels=("heaviest channel's share", "its weight's share"),
        # Windows the channels' shares never reach: credit does not decide.
        serverSettings={"channelCredit": 16 * MiB},
    ),
    Scenario(
        name="weighted-producers",
        title="3 channels of weights 1, 2 and 4, each written by a streaming"
        " producer in {write} writes, for {seconds} s: each one's share",
        baseline="the share of the heaviest weight (4 of 7)",
        metric="share %",
        variants=(("both", "weighted-producers/memux"),),
        params={"seconds": 5.0, "settle": 0.5, "write": 64 * KiB},
        quick={"seconds": 1.0, "settle": 0.2, "write": 64 * KiB},
        scaled=("seconds",),
        target=Target("share error", "<=", 0.10),
        shown=("share1", "share2", "share4", "MBps"),
        labels=("heaviest channel's share", "its weight's share"),
        serverSettings={"channelCredit": 16 * MiB},
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


class Unavailable(Exception):
    """
    A reference cannot run on this machine (iperf3 is not installed): its
    column is skipped, with the reason.
    """


# ---------------------------------------------------------------- parameters


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


def defaultSettings() -> dict[str, int]:
    """
    memux's default session settings.
    """
    return dataclasses.asdict(SessionSettings())


# ---------------------------------------------------------------- runs


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


def freePort() -> int:
    """
    A TCP port of 127.0.0.1 that nothing listens on now.
    """
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        port: int = s.getsockname()[1]
        return port


def runIperf3(params: Mapping[str, Any], timeout: float) -> dict[str, Any]:
    """
    One run of iperf3 over loopback, ``total`` bytes in 128 KiB writes:
    the machine's limit for one TCP stream.
    """
    iperf3 = shutil.which("iperf3")
    if iperf3 is None:
        raise Unavailable("iperf3 is not installed")
    port = str(freePort())
    with tempfile.TemporaryFile() as serverErr:
        server = subprocess.Popen(
            [iperf3, "-s", "-1", "-B", LOOPBACK, "-p", port, "--forceflush"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=serverErr,
        )
        try:
            # "Server listening on PORT" (after a rule): then it accepts.
            while b"listening" not in (line := readLine(server, 30)):
                if not line:
                    raise BenchError(f"iperf3 server exited:\n{tail(serverErr)}")
            command = [iperf3, "-c", LOOPBACK, "-p", port, "-l", "128K", "-J"]
            command += ["-n", str(params["total"])]
            try:
                client = subprocess.run(
                    command,
                    stdin=subprocess.DEVNULL,
                    capture_output=True,
                    timeout=timeout,
                )
            except subprocess.TimeoutExpired as e:
                raise BenchError(f"iperf3 took over {timeout:g} s") from e
            try:
                report = json.loads(client.stdout)
                received = report["end"]["sum_received"]
                sent = report["end"]["sum_sent"]
            except (ValueError, KeyError) as e:
                raise BenchError(
                    f"iperf3 client exited {client.returncode}:"
                    f" {client.stdout[-500:]!r} {client.stderr[-500:]!r}"
                ) from e
        finally:
            if server.poll() is None:
                server.terminate()
            server.wait(10)
            assert server.stdout is not None
            server.stdout.close()
    return {
        # The receiver's rate (what arrived in its measured time).
        "value": received["bytes"] / received["seconds"] / 1e6,
        "seconds": received["seconds"],
        "bytes": sent["bytes"],
    }


def runOnce(role: str, params: Mapping[str, Any], timeout: float) -> dict[str, Any]:
    """
    One run: start the server worker, then the client worker; return the
    client's result.  (The role ``iperf3`` runs iperf3 instead.)
    """
    if role == "iperf3":
        if params.get("tls"):
            raise Unavailable("plain TCP, not compared with --tls")
        return runIperf3(params, timeout)
    worker = [sys.executable, "-m", WORKERS]
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
    values: dict[str, list[float]] = field(default_factory=dict)
    checks: list[float] = field(default_factory=list)
    details: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None
    #: references that could not run here, and why
    unavailable: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for label in ("memux", "baseline", *self.referenceLabels):
            self.values.setdefault(label, [])

    @property
    def referenceLabels(self) -> list[str]:
        """
        The labels of the scenario's references.
        """
        return [label for label, _ in self.scenario.references]

    def median(self, label: str) -> float:
        """
        The median of the ``label`` runs (NaN if there are none).
        """
        values = self.values[label]
        return statistics.median(values) if values else math.nan

    def ratioTo(self, label: str) -> float:
        """
        memux / ``label``, of the medians.
        """
        other = self.median(label)
        return self.median("memux") / other if other else math.nan

    @property
    def ratio(self) -> float:
        """
        memux / baseline, of the medians.
        """
        return self.ratioTo("baseline")

    def figure(self, target: Target) -> float:
        """
        The figure ``target`` is judged on.
        """
        if target.on == "ratio":
            return self.ratio
        if target.on.startswith("ratio:"):
            return self.ratioTo(target.on[len("ratio:") :])
        return statistics.median(self.checks) if self.checks else math.nan

    @property
    def got(self) -> float:
        """
        The figure the main target is judged on.
        """
        return self.figure(self.scenario.target)

    def judged(self) -> list[tuple[Target, float, bool]]:
        """
        Each target that can be judged here: with its figure and whether
        it is met.  (One on a reference that has no runs, as when it cannot
        run here, is left out.)
        """
        judged = []
        for target in (self.scenario.target, *self.scenario.alsoTargets):
            label = target.on[len("ratio:") :] if target.on.startswith("ratio:") else ""
            if label and (label in self.unavailable or not self.values[label]):
                continue
            got = self.figure(target)
            judged.append((target, got, not math.isnan(got) and target.met(got)))
        return judged

    @property
    def passed(self) -> bool:
        """
        Whether every target that can be judged is met.
        """
        return all(ok for _, _, ok in self.judged())

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

        references = {
            label: {
                "is": REFERENCES[label],
                "median": number(self.median(label)),
                "ratio": number(self.ratioTo(label)),
                "runs": self.values[label],
                "unavailable": self.unavailable.get(label),
            }
            for label in self.referenceLabels
        }
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
            "alsoTargets": [
                {"text": t.describe(), "got": number(got), "pass": ok}
                for t, got, ok in self.judged()[1:]
            ],
            "references": references,
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
        variants = [*scenario.variants, *scenario.references]
        if run % 2:
            variants.reverse()
        for label, role in variants:
            if label in outcome.unavailable:
                continue
            started = time.monotonic()
            try:
                result = runOnce(role, params, timeout)
            except Unavailable as e:
                outcome.unavailable[label] = str(e)
                say(f"  {scenario.name} {label}: skipped, {e}")
                continue
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
    for label in ("memux", "baseline", "both", *outcome.referenceLabels):
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
