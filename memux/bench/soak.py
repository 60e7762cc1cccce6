# -*- test-case-name: memux.test.test_soak -*-
"""
A soak test of a real memux server: ``python -m memux.bench soak``.

The harness starts ``twistd -n memux`` (built-in services ``echo``,
``discard`` and ``chargen``, default settings) and a client process,
``python -m memux.bench.soak --client PARAMS`` (`memux.bench.soakclient`),
which keeps ``--sessions`` sessions busy for ``--minutes`` with a mixed
workload (`memux.bench.soakops`, `memux.bench.soakstreams`): whole
messages of 0 B to 2 MiB echoed (as messages, as chunks, as a byte stream),
stream uploads and downloads, half-close, aborts in the middle of a
message, bursts of channel churn, ``discard`` and ``chargen``, pings.
With ``--tls`` the server speaks TLS (a certificate made for the run)
and the client connects over it.  Readers pause and resume at random.
Sessions live 30 to 120 s, end cleanly (the session's or its
transport's ``loseConnection``, ``goAway``) or by abort, and are
replaced.  Every byte that comes back is checked against the
pattern it was generated from (or RFC 864's, for ``chargen``) as it
arrives.

Each minute the client reports what it did and saw, and the harness adds
what it measured of both processes: the server's RSS and its peak, its open
file descriptors, both processes' CPU.  At the end every session closes, and
after `QUIET_SECONDS` the server's RSS and descriptors are compared with
their values at the start.

A *stall* is an operation that made no progress (no byte written or read,
no step of its close) for ``STALL_SECONDS`` while its reader was not paused
on purpose; it is *explained* when the client was itself saturated through
most of that time (see `memux.bench.soakbase.LoadMonitor`), and counts
against memux otherwise.

The exit status is 1 when something went wrong: an integrity failure, an
unexplained stall, a close still hanging after ``HUNG_CLOSE_SECONDS``, an
unexpected reset (a channel or session ended in a way the workload did not
cause), an error in the server's or the client's log, or server descriptors
still open after every session closed.  It is 2 when the run could not be
made.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import random
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

from twisted.internet import task
from twisted.internet.interfaces import IProcessTransport
from twisted.logger import (
    FilteringLogObserver,
    LogLevel,
    LogLevelFilterPredicate,
    globalLogBeginner,
    textFileLogObserver,
)

from memux.bench.certificate import selfSignedPEM
from memux.bench.processes import (
    ChildProcess,
    ProcessReactor,
    cpuSeconds,
    fdCount,
    resetPeak,
    rssBytes,
    spawn,
    startServer,
)
from memux.bench.report import KiB, MiB, alignTable, fmt, machineInfo
from memux.bench.soakbase import FAILURES, STALL_SECONDS, Tally
from memux.bench.soakclient import SoakParams, runClient
from memux.bench.soakops import CHURN_CHANNEL_COST

__all__ = ["buildParser", "main", "summarize", "table", "verdict"]

#: the client process's module (``python -m CLIENT --client PARAMS``)
CLIENT = "memux.bench.soak"


#: the quiet after every session closed, before the server's RSS is compared
QUIET_SECONDS = 10.0


# ---------------------------------------------------------------- the harness


def known(figure: float) -> float | None:
    """
    ``figure``, or None where it could not be measured (the process is
    gone: negative or NaN).
    """
    return None if math.isnan(figure) or figure < 0 else figure


class ProcessWatch:
    """
    Samples the server's RSS and descriptors twice a second; for each
    interval, the server's figures and both processes' CPU.
    """

    def __init__(self, reactor: ProcessReactor, server: int, client: int) -> None:
        self.reactor = reactor
        self.server = server
        self.client = client
        self.peak = 0
        self.fdsMax = 0
        self.peakReset = resetPeak(server)
        self.mark = time.monotonic()
        self.serverCpu = cpuSeconds(server)
        self.clientCpu = cpuSeconds(client)
        self.loop = task.LoopingCall(self.sample)
        self.loop.clock = reactor

    def start(self) -> None:
        """
        Start sampling.
        """
        self.loop.start(0.5)

    def stop(self) -> None:
        """
        Stop sampling.
        """
        if self.loop.running:
            self.loop.stop()

    def sample(self) -> None:
        """
        One sample.
        """
        rss, fds = rssBytes(self.server), fdCount(self.server)
        self.peak = max(self.peak, rss)
        self.fdsMax = max(self.fdsMax, fds)

    def interval(self) -> dict[str, Any]:
        """
        The figures since the last call.
        """
        self.sample()
        now = time.monotonic()
        wall = now - self.mark
        serverCpu, clientCpu = cpuSeconds(self.server), cpuSeconds(self.client)
        peak = self.peak
        if self.peakReset:
            peak = max(peak, rssBytes(self.server, "VmHWM"))
            resetPeak(self.server)
        rss, fds = rssBytes(self.server), fdCount(self.server)
        figures = {
            "serverRssMiB": known(rss / MiB),
            "serverPeakMiB": known(peak / MiB),
            "serverFds": known(fds),
            "serverFdsMax": known(self.fdsMax),
            "serverCpuPercent": known((serverCpu - self.serverCpu) / wall * 100),
            "clientCpuPercent": known((clientCpu - self.clientCpu) / wall * 100),
            "wallSeconds": wall,
        }
        self.peak = self.fdsMax = 0
        self.mark, self.serverCpu, self.clientCpu = now, serverCpu, clientCpu
        return figures


def scanLog(log: Path) -> dict[str, list[str]]:
    """
    The warnings and errors in twistd's log (rotated files included).
    """
    found: dict[str, list[str]] = {"warn": [], "error": []}
    paths = sorted(
        p
        for p in log.parent.glob(log.name + "*")
        if p.name == log.name or p.suffix[1:].isdigit()
    )
    for path in paths:
        for line in path.read_text(errors="replace").splitlines():
            if "#warn]" in line:
                found["warn"].append(line)
            elif "#error]" in line or "#critical]" in line or "Traceback" in line:
                found["error"].append(line)
    return found


# ---------------------------------------------------------------- the report


def row(label: str, figures: dict[str, Any]) -> tuple[str, ...]:
    """
    One row of the table.
    """
    tally = figures["tally"]
    problems = tally["problems"]
    stalls = str(problems["stall"])
    if problems["explained-stall"]:
        stalls += f" (+{problems['explained-stall']} sat.)"
    return (
        label,
        fmt(figures["serverRssMiB"]),
        fmt(figures["serverPeakMiB"]),
        fmt(figures["serverFds"]),
        fmt(figures["serverCpuPercent"]),
        fmt(figures["clientCpuPercent"]),
        fmt(figures["lagMaxMs"]),
        fmt(tally["pingMaxMs"]),
        fmt(tally["sessionsOpened"]),
        fmt(sum(tally["closes"].values())),
        fmt(tally["opsDone"]),
        fmt(tally["channels"]),
        fmt((tally["bytesIn"] + tally["bytesOut"]) / 1e6),
        stalls,
        fmt(problems["hung-close"]),
        fmt(problems["unexpected-reset"]),
        fmt(problems["integrity"]),
    )


HEADER = (
    "minute",
    "RSS MiB",
    "peak MiB",
    "fds",
    "srv CPU %",
    "cli CPU %",
    "lag ms",
    "ping ms",
    "sessions",
    "closed",
    "ops",
    "channels",
    "MB",
    "stalls",
    "hung",
    "resets",
    "integrity",
)


def addTallies(tallies: list[dict[str, Any]]) -> dict[str, Any]:
    """
    Intervals' tallies (as JSON) added up, but for the pings' round trips.
    """
    total = Tally()
    for t in tallies:
        total.add(
            Tally(
                ops=Counter(t["ops"]),
                cut=t["cut"],
                failedOps=t["failedOps"],
                bytesOut=t["bytesOut"],
                bytesIn=t["bytesIn"],
                channels=t["channels"],
                pauses=t["pauses"],
                sessionsOpened=t["sessionsOpened"],
                closes=Counter(t["closes"]),
                closeSeconds=dict(t["closeSecondsMax"]),
                problems=Counter(t["problems"]),
            )
        )
    return total.toJSON()


def summarize(rows: list[dict[str, Any]], totals: dict[str, Any]) -> dict[str, Any]:
    """
    The whole run as one row's figures (``totals``: the client's tally of
    the whole run).
    """

    def mean(key: str) -> float | None:
        known = [(r[key], r["wallSeconds"]) for r in rows if r[key] is not None]
        wall = sum(w for _, w in known)
        return sum(x * w for x, w in known) / wall if wall else None

    def most(key: str) -> float | None:
        return max((r[key] for r in rows if r[key] is not None), default=None)

    return {
        "tally": totals,
        "serverRssMiB": rows[-1]["serverRssMiB"],
        "serverPeakMiB": most("serverPeakMiB"),
        "serverFds": most("serverFdsMax"),
        "serverCpuPercent": mean("serverCpuPercent"),
        "clientCpuPercent": mean("clientCpuPercent"),
        "lagMaxMs": most("lagMaxMs"),
        "sessionsOpen": None,
        "wallSeconds": sum(r["wallSeconds"] for r in rows),
    }


def table(rows: list[dict[str, Any]], summary: dict[str, Any]) -> str:
    """
    One row per interval, and the summary.
    """
    lines: list[tuple[str, ...]] = [HEADER]
    for r in rows:
        lines.append(row(str(r["interval"]) if r["phase"] == "run" else "close", r))
    lines.append(row("all", summary))
    return alignTable(lines, numeric=set(range(1, len(HEADER))))


def verdict(report: dict[str, Any]) -> list[str]:
    """
    What failed, in words (empty if nothing did).
    """
    failures = []
    problems = report["summary"]["tally"]["problems"]
    for kind in FAILURES:
        if problems[kind]:
            failures.append(f"{problems[kind]} {kind}")
    end = report["end"]
    if (end["serverFdsAfter"] or 0) > end["serverFdsStart"]:
        leaked = end["serverFdsAfter"] - end["serverFdsStart"]
        failures.append(f"{leaked} server descriptors still open after close")
    if report["serverLog"]["error"]:
        failures.append(f"{len(report['serverLog']['error'])} server log errors")
    if end.get("serverDied"):
        failures.append("the server exited during the run")
    elif not end["serverStopped"]:
        failures.append("server did not stop on SIGTERM")
    return failures


def describeEnd(report: dict[str, Any]) -> list[str]:
    """
    The lines under the table.
    """
    end, summary = report["end"], report["summary"]
    tally = summary["tally"]
    after = end["serverRssAfterMiB"]
    growth = "" if after is None else f" ({after - end['serverRssStartMiB']:+.1f} MiB)"
    if end.get("serverDied"):
        stop = "server: EXITED during the run"
    elif end["serverStopped"]:
        stop = f"server: stopped on SIGTERM in {fmt(end['stopSeconds'])} s"
    else:
        stop = "server: did NOT stop on SIGTERM (killed)"
    lines = [
        f"server RSS: {fmt(end['serverRssStartMiB'])} MiB at start, peak"
        f" {fmt(summary['serverPeakMiB'])} MiB, {fmt(after)} MiB after every"
        f" session closed and {fmt(end['quietSeconds'])} s of quiet{growth}",
        f"server fds: {end['serverFdsStart']} at start, at most"
        f" {fmt(summary['serverFds'])}, {fmt(end['serverFdsAfter'])} after close",
        stop,
        f"server log: {len(report['serverLog']['error'])} errors,"
        f" {len(report['serverLog']['warn'])} warnings",
        "ops done: "
        + ", ".join(f"{k} {fmt(v)}" for k, v in sorted(tally["ops"].items()))
        + f"; cut by session closes {fmt(tally['cut'])};"
        f" failed {fmt(tally['failedOps'])}; reader pauses {fmt(tally['pauses'])}",
        f"pings: {fmt(tally['pings'])}, round trip p50 {fmt(tally['pingP50Ms'])} ms,"
        f" p99 {fmt(tally['pingP99Ms'])} ms, max {fmt(tally['pingMaxMs'])} ms",
        "sessions closed (how many, the slowest close): "
        + ", ".join(
            f"{k} {fmt(v)} ({fmt(tally['closeSecondsMax'][k] * 1000)} ms)"
            for k, v in sorted(tally["closes"].items())
        ),
    ]
    return lines


# ---------------------------------------------------------------- the command line


def buildParser(prog: str = "python -m memux.bench soak") -> argparse.ArgumentParser:
    """
    The command line of the soak test.
    """
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Soak a twistd memux server with a mixed, checked workload"
        " for a while; report memory, descriptors, CPU, stalls, hung closes,"
        " unexpected resets and integrity failures per minute.",
        epilog="Exit status: 0 if all went well, 1 if anything failed, 2 if"
        " the run could not be made.",
    )
    parser.add_argument(
        "--minutes", type=float, default=15.0, metavar="N", help="how long (default 15)"
    )
    parser.add_argument(
        "--sessions",
        type=int,
        default=40,
        metavar="N",
        help="sessions kept open at once (default 40)",
    )
    parser.add_argument(
        "--seed", type=int, default=None, metavar="N", help="the workload's seed"
    )
    parser.add_argument(
        "--rate",
        type=float,
        default=SoakParams.rate,
        metavar="MB/S",
        help="pace the workload at this many MB a second through the client"
        f" (default {SoakParams.rate:g}; a churn channel counts"
        f" {CHURN_CHANNEL_COST // KiB} KiB)",
    )
    parser.add_argument(
        "--lanes",
        type=int,
        default=SoakParams.lanes,
        metavar="N",
        help=f"operations each session runs at once (default {SoakParams.lanes})",
    )
    parser.add_argument(
        "--lifetime",
        default="30-120",
        metavar="LOW-HIGH",
        help="seconds a session lives before it is closed (default 30-120)",
    )
    parser.add_argument(
        "--interval",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="seconds per row of the table (default 60)",
    )
    parser.add_argument(
        "--quiet",
        type=float,
        default=QUIET_SECONDS,
        metavar="SECONDS",
        help="quiet after every session closed, before the server's RSS is"
        f" compared with its start (default {QUIET_SECONDS:g})",
    )
    parser.add_argument(
        "--server-option",
        action="append",
        default=[],
        metavar="OPTION",
        help="pass this option to twistd memux, e.g."
        " --server-option=--max-channels=2048 (repeatable)",
    )
    parser.add_argument(
        "--tls",
        action="store_true",
        help="serve and connect over TLS (a certificate made for the run)",
    )
    parser.add_argument("--json", metavar="FILE", help="write the results as JSON")
    parser.add_argument("--client", metavar="PARAMS", help=argparse.SUPPRESS)
    return parser


def paramsFrom(args: argparse.Namespace, port: int) -> SoakParams:
    """
    The client's parameters from the command line.
    """
    low, sep, high = args.lifetime.partition("-")
    try:
        lifetime = (float(low), float(high if sep else low))
    except ValueError:
        raise SystemExit(f"--lifetime {args.lifetime}: expected LOW-HIGH") from None
    if not 0 < lifetime[0] <= lifetime[1]:
        raise SystemExit("--lifetime: 0 < LOW <= HIGH")
    if args.minutes <= 0 or args.interval <= 0 or args.rate <= 0:
        raise SystemExit("--minutes, --interval and --rate must be positive")
    if args.sessions < 1 or args.lanes < 1:
        raise SystemExit("--sessions and --lanes must be at least 1")
    return SoakParams(
        port=port,
        seconds=args.minutes * 60,
        interval=args.interval,
        sessions=args.sessions,
        lanes=args.lanes,
        seed=args.seed,
        rate=args.rate,
        lifetime=lifetime,
    )


async def stopServer(
    reactor: ProcessReactor, server: ChildProcess
) -> tuple[bool, float]:
    """
    SIGTERM the server; whether it stopped within 30 s (else it is
    killed), and how long it took.
    """
    started = time.monotonic()
    if not server.alive:
        return False, 0.0
    transport = cast(IProcessTransport, server.transport)
    transport.closeStdin()
    transport.signalProcess("TERM")
    while server.alive and time.monotonic() - started < 30:
        await task.deferLater(reactor, 0.05, lambda: None)
    stopped = not server.alive
    await server.stop(reactor)
    return stopped, time.monotonic() - started


async def runSoak(reactor: ProcessReactor, args: argparse.Namespace) -> int:
    """
    Run the soak test; return the exit status.
    """
    if args.seed is None:
        args.seed = random.randrange(2**31)
    paramsFrom(args, 0)  # check the command line before starting anything
    machine = machineInfo()
    say = print
    say(
        f"machine: {machine['cpu']}, {machine['cores']} cores"
        f" ({machine['usableCores']} usable), {machine['python']},"
        f" Twisted {machine['twisted']}, memux {machine['memux']}"
        + (f" ({machine['commit']})" if "commit" in machine else ""),
        flush=True,
    )
    with tempfile.TemporaryDirectory(prefix="memux-soak-") as where:
        options = list(args.server_option)
        certificate = ""
        if args.tls:
            certificate = selfSignedPEM()
            pem = Path(where) / "soak.pem"
            pem.write_text(certificate)
            options.append(f"--tls-cert={pem}")
        try:
            server, port, log = await startServer(reactor, where, options)
        except RuntimeError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        params = dataclasses.replace(paramsFrom(args, port), tls=certificate)
        say(
            f"server: twistd -n memux {' '.join(options)} (defaults"
            f" otherwise), pid {server.pid}, port {port}"
            + (", over TLS" if args.tls else ""),
            flush=True,
        )
        say(
            f"workload: {params.sessions} sessions x {params.lanes} lanes for"
            f" {args.minutes:g} min, sessions living {params.lifetime[0]:g}-"
            f"{params.lifetime[1]:g} s, paced at {params.rate:g} MB/s, seed"
            f" {params.seed}",
            flush=True,
        )
        await task.deferLater(reactor, 1.0, lambda: None)
        startRss, startFds = rssBytes(server.pid), fdCount(server.pid)
        client = spawn(
            reactor,
            ["-m", CLIENT, "--client", json.dumps(dataclasses.asdict(params))],
            where,
        )
        ready = await client.nextLine(reactor, 60)
        if "error" in ready:
            print(f"error: the client did not start: {ready['error']}", file=sys.stderr)
            await client.stop(reactor)
            await server.stop(reactor)
            return 2
        watch = ProcessWatch(reactor, server.pid, client.pid)
        watch.start()
        rows: list[dict[str, Any]] = []
        events: list[dict[str, Any]] = []
        totals: dict[str, Any] = {}
        error = None
        while True:
            line = await client.nextLine(
                reactor, params.interval + 3 * STALL_SECONDS + 60
            )
            if "error" in line:
                error = f"the client failed: {line['error']}"
                break
            if line.get("final"):
                totals = line["totals"]
                break
            figures = {**watch.interval(), **line}
            rows.append(figures)
            events.extend(line["events"])
            for event in line["events"]:
                say(
                    f"  [{event['t']:.0f} s] {event['kind']}: {event['detail']}",
                    flush=True,
                )
            say(progressLine(figures), flush=True)
            if not server.alive:
                died = server.errors.decode("utf-8", "replace").strip()[-2000:]
                say(f"the server exited during the run: {died}", flush=True)
                break
        watch.stop()
        await client.stop(reactor)
        serverDied = not server.alive
        if serverDied and rows:
            totals = addTallies([r["tally"] for r in rows])
        if error is not None or not rows or not totals:
            print(f"error: {error or 'no report'}", file=sys.stderr)
            await server.stop(reactor)
            return 2
        if not serverDied:
            await task.deferLater(reactor, args.quiet, lambda: None)
        afterRss, afterFds = rssBytes(server.pid), fdCount(server.pid)
        stopped, stopSeconds = await stopServer(reactor, server)
        serverLog = scanLog(log)
    summary = summarize(rows, totals)
    report: dict[str, Any] = {
        "machine": machine,
        "params": dataclasses.asdict(params),
        "serverOptions": args.server_option,
        "rows": rows,
        "summary": summary,
        "events": events,
        "end": {
            "serverRssStartMiB": startRss / MiB,
            "serverRssAfterMiB": known(afterRss / MiB),
            "serverFdsStart": startFds,
            "serverFdsAfter": known(afterFds),
            "quietSeconds": args.quiet,
            "serverStopped": stopped,
            "serverDied": serverDied,
            "stopSeconds": stopSeconds,
        },
        "serverLog": {k: v[:50] for k, v in serverLog.items()},
    }
    failures = verdict(report)
    report["failures"] = failures
    say("")
    say(table(rows, summary))
    say("")
    for text in describeEnd(report):
        say(text)
    for kind in ("error", "warn"):
        for text in serverLog[kind][:10]:
            say(f"server log {kind}: {text}")
    if events:
        say(f"\nproblems ({len(events)}):")
        for event in events[:40]:
            say(f"  [{event['t']:.0f} s] {event['kind']}: {event['detail']}")
    say(
        "\nRSS, peak and fds: the twistd server (peak per minute from VmHWM);"
        " CPU: % of one core; lag: the client's largest reactor lag; MB: payload"
        " both ways; stalls: operations with no progress for"
        f" {STALL_SECONDS:g} s (sat.: while the client was saturated, not"
        " counted as failures)."
    )
    say(
        f"result: {'FAIL: ' + ', '.join(failures) if failures else 'PASS'}"
        f" (seed {params.seed})"
    )
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
        say(f"wrote {args.json}")
    return 1 if failures else 0


def progressLine(figures: dict[str, Any]) -> str:
    """
    One interval, as a line printed while the soak runs.
    """
    tally = figures["tally"]
    problems = sum(tally["problems"][k] for k in FAILURES)
    return (
        f"{figures['phase']} {figures['interval']} ({figures['seconds']:.0f} s):"
        f" server RSS {fmt(figures['serverRssMiB'])} MiB,"
        f" fds {fmt(figures['serverFds'])},"
        f" CPU {fmt(figures['serverCpuPercent'])} %; client CPU"
        f" {fmt(figures['clientCpuPercent'])} %; {fmt(tally['opsDone'])} ops,"
        f" {fmt((tally['bytesIn'] + tally['bytesOut']) / 1e6)} MB; problems {problems}"
    )


def main(
    argv: Sequence[str] | None = None, prog: str = "python -m memux.bench soak"
) -> int:
    """
    Run the soak test (or, with the hidden ``--client``, its client) as
    ``argv`` says; return the exit status.
    """
    args = buildParser(prog).parse_args(argv)
    if args.client is not None:
        params = SoakParams.fromJSON(args.client)
        task.react(runClient, (params,))
        return 0
    globalLogBeginner.beginLoggingTo(
        [
            FilteringLogObserver(
                textFileLogObserver(sys.stderr),
                [LogLevelFilterPredicate(defaultLogLevel=LogLevel.warn)],
            )
        ],
        redirectStandardIO=False,
    )
    status: list[int] = []

    async def run(reactor: ProcessReactor) -> None:
        status.append(await runSoak(reactor, args))

    try:
        task.react(run)
    except SystemExit:
        pass
    return status[0] if status else 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
