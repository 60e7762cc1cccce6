# -*- test-case-name: memux.test.test_attackbench -*-
"""
What each attack of ``doc/security.rst`` costs a memux server:
``python -m memux.attackbench``.

For each attack a fresh ``twistd -n memux`` server (built-in services,
default settings) runs in a child process.  A well-behaved client, in a
second child process (``python -m memux.bench.attack --pinger PORT``),
pings the ``echo`` service with 64-byte messages one at a time: first for
``--seconds`` alone (the baseline), then as long again while the attack
runs from crafted raw connections made by this process
(`memux.bench.attackers`).  Meanwhile the server's resident set size is
sampled every 50 ms (and its peak, VmHWM, reset at the start of the attack)
and its CPU time read.  The table reports peak memory and growth over the
pre-attack figure, latency under attack against the baseline, whether the
well-behaved session survived, and how the server dealt with the
attacker's connections.

The exit status is 1 only when a run could not be made (server or client
failed to start); what an attack does is reported, not judged.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from twisted.internet import defer, stdio, task
from twisted.internet.protocol import connectionDone
from twisted.logger import (
    FilteringLogObserver,
    LogLevel,
    LogLevelFilterPredicate,
    globalLogBeginner,
    textFileLogObserver,
)
from twisted.protocols.basic import LineOnlyReceiver
from twisted.python.failure import Failure

from memux.bench.attackers import (
    Attacker,
    Campaign,
    ChannelFlood,
    Dribble,
    DropFlood,
    EmptyFrames,
    EndlessMessage,
    GarbagePreface,
    IdleChannels,
    NeverRead,
    NeverReadChargen,
    OversizedFrame,
    PingFlood,
    RapidReset,
    Slowloris,
)
from memux.bench.latency import Pinger
from memux.bench.peers import channel, replyLine, session
from memux.bench.processes import (
    ChildProcess,
    ProcessReactor,
    cpuSeconds,
    emit,
    logLines,
    resetPeak,
    rssBytes,
    spawn,
    startServer,
)
from memux.bench.report import MiB, alignTable, fmt, machineInfo, percentile
from memux.settings import SessionSettings

__all__ = ["ATTACKS", "Attack", "buildParser", "main"]

#: how often the server's memory is sampled during an attack
SAMPLE_INTERVAL = 0.05
#: the well-behaved client's message size and warm-up pings
PING_SIZE = 64
WARMUP_PINGS = 100
#: how long past its period a measurement may wait for an outstanding echo
STALL_SECONDS = 10.0
#: the settings of the server (twistd memux's defaults, unless changed with
#: --server-option; attackers learn the real figures from its preface)
SERVER = SessionSettings()
#: the well-behaved client's module (``python -m PINGER --pinger PORT``)
PINGER = "memux.bench.attack"


def describeOutcome(summary: dict[str, Any]) -> str:
    """
    The attacker's fate in a few words.
    """
    text = ", ".join(f"{n:,} {what}" for what, n in summary["outcomes"].items())
    if summary["medianSecondsToClose"] is not None:
        text += f"; {fmt(summary['medianSecondsToClose'] * 1000)} ms to close"
    return text or "-"


@dataclass(frozen=True)
class Attack:
    """
    One attack class: how each connection attacks, and how many attack at
    once (each replaced as soon as the server closes it).
    """

    name: str
    title: str
    attacker: type[Attacker]
    connections: int
    quickConnections: int


ATTACKS: tuple[Attack, ...] = (
    Attack("rapid-reset", "OPEN + RESET at once, in a loop", RapidReset, 4, 2),
    Attack("ping-flood", "PINGs, answers never read", PingFlood, 4, 2),
    Attack("empty-frames", "empty DATA + no-op CREDIT", EmptyFrames, 4, 2),
    Attack("drop-flood", "DROP frames with no data between", DropFlood, 4, 2),
    Attack("dribble", "1-byte chunks + CREDIT +1 on 1000 channels", Dribble, 1, 1),
    Attack("never-read", "fill echo channels, never read", NeverRead, 4, 2),
    Attack(
        "never-read-chargen", "16 chargen channels, never read", NeverReadChargen, 4, 2
    ),
    Attack("channel-flood", "open maxChannels + 1 channels", ChannelFlood, 4, 2),
    Attack(
        "idle-channels", "open maxChannels channels, never use", IdleChannels, 16, 2
    ),
    Attack("oversized-frame", "DATA header of 16 MiB - 1", OversizedFrame, 4, 2),
    Attack("endless-message", "one message with no end to echo", EndlessMessage, 1, 1),
    Attack("slowloris", "preface at 1 byte/s", Slowloris, 200, 20),
    Attack("garbage-preface", "HTTP request / TLS ClientHello", GarbagePreface, 4, 2),
)


BY_NAME = {attack.name: attack for attack in ATTACKS}


# ---------------------------------------------------------------- the pinger


class TimedPinger(Pinger):
    """
    The well-behaved client: ping-pong on one echo channel for a while.
    """

    measuring = False
    lost: Failure | None = None
    deadline = 0.0

    def runFor(self, seconds: float) -> defer.Deferred[list[float]]:
        """
        Ping for ``seconds``; fire with the round-trip times.
        """
        if self.lost is not None:
            return defer.fail(self.lost)
        self.deadline = time.perf_counter() + seconds
        self.measuring = True
        d = self.run(sys.maxsize)

        def over(result: object) -> object:
            self.measuring = False
            return result

        return d.addBoth(over)

    def messageReceived(self, message: bytes) -> None:
        """
        Time the echo; stop at the deadline.  An echo after a measurement
        gave up waiting is ignored.
        """
        if self.done.called:
            return
        if time.perf_counter() >= self.deadline:
            self.remaining = 0
        super().messageReceived(message)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        """
        A measurement under way fails with the reason.
        """
        self.lost = reason
        if self.measuring and not self.done.called:
            self.done.errback(reason)


class PingerControl(LineOnlyReceiver):
    """
    The pinger's standard input and output: each line in is a number of
    seconds to measure for; each line out a JSON result.
    """

    delimiter = b"\n"

    def __init__(self, reactor: ProcessReactor, pinger: TimedPinger) -> None:
        self.reactor = reactor
        self.pinger = pinger
        self.finished: defer.Deferred[None] = defer.Deferred()

    def connectionMade(self) -> None:
        """
        Say we are ready.
        """
        replyLine(self.transport, {"ready": True})

    def lineReceived(self, line: bytes) -> None:
        """
        Measure for that many seconds.
        """
        defer.ensureDeferred(self.measure(float(line)))

    async def measure(self, seconds: float) -> None:
        """
        Ping for ``seconds`` and report the latencies (or the error).
        """
        d = self.pinger.runFor(seconds)
        d.addTimeout(seconds + STALL_SECONDS, self.reactor)
        try:
            result = latencies(await d)
        except defer.TimeoutError:
            result = {"error": f"stalled: no echo {STALL_SECONDS:g} s past the end"}
        except Exception as e:
            result = {"error": str(e) or repr(e)}
        replyLine(self.transport, result)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        """
        Standard input closed: we are done.
        """
        if not self.finished.called:
            self.finished.callback(None)


def latencies(times: list[float]) -> dict[str, Any]:
    """
    A measurement's figures, in milliseconds.
    """
    ms = [t * 1000 for t in times]
    return {
        "pings": len(ms),
        "p50": percentile(ms, 0.50),
        "p99": percentile(ms, 0.99),
        "max": max(ms),
    }


async def runPinger(reactor: ProcessReactor, port: int) -> None:
    """
    The pinger child process: connect, warm up, then measure on request.
    """
    try:
        s = await session(reactor, {}, port)
        pinger = TimedPinger(PING_SIZE)
        await channel(s, b"echo", pinger)
        await pinger.run(WARMUP_PINGS)
    except Exception as e:
        emit({"error": f"could not start pinging: {e}"})
        return
    control = PingerControl(reactor, pinger)
    stdio.StandardIO(control, reactor=reactor)
    await control.finished


# ---------------------------------------------------------------- measuring


class MemorySampler:
    """
    Samples a process's resident set size, keeping the peak.
    """

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak = 0
        self.samples = 0

    def sample(self) -> None:
        """
        Take one sample.
        """
        rss = rssBytes(self.pid)
        if rss >= 0:
            self.samples += 1
            self.peak = max(self.peak, rss)


def ratio(attacked: dict[str, Any], baseline: dict[str, Any], key: str) -> float | None:
    """
    The attacked figure over the baseline one, where both exist.
    """
    if key in attacked and key in baseline and baseline[key] > 0:
        return float(attacked[key] / baseline[key])
    return None


async def runAttack(
    reactor: ProcessReactor,
    attack: Attack,
    connections: int,
    seconds: float,
    drain: float,
    options: Sequence[str],
) -> dict[str, Any]:
    """
    One attack against a fresh server: baseline, then attack; the figures.
    """
    result: dict[str, Any] = {
        "title": attack.title,
        "connections": connections,
        "seconds": seconds,
        "error": None,
    }
    with tempfile.TemporaryDirectory(prefix="memux-attack-") as where:
        server, port, log = await startServer(reactor, where, options)
        pinger: ChildProcess | None = None
        try:
            pinger = spawn(reactor, ["-m", PINGER, "--pinger", str(port)], where)
            ready = await pinger.nextLine(reactor, 60)
            if "error" in ready:
                raise RuntimeError(f"the well-behaved client: {ready['error']}")
            pinger.send(str(seconds))
            baseline = await pinger.nextLine(reactor, seconds + STALL_SECONDS + 30)
            if "error" in baseline:
                raise RuntimeError(f"baseline: {baseline['error']}")
            pid = server.pid
            before = rssBytes(pid)
            peakReset = resetPeak(pid)
            cpuBefore = cpuSeconds(pid)
            logBefore = logLines(log)
            sampler = MemorySampler(pid)
            sampling = task.LoopingCall(sampler.sample)
            sampling.clock = reactor
            campaign = Campaign(reactor, port, attack.attacker, connections)
            started = time.monotonic()
            sampling.start(SAMPLE_INTERVAL)
            campaign.start()
            pinger.send(str(seconds))
            attacked = await pinger.nextLine(reactor, seconds + STALL_SECONDS + 30)
            sampling.stop()
            sampler.sample()
            elapsed = time.monotonic() - started
            cpu = (cpuSeconds(pid) - cpuBefore) / elapsed * 100
            peak = max(sampler.peak, rssBytes(pid, "VmHWM") if peakReset else 0)
            await campaign.stop(drain)
            result.update(
                baseline=baseline,
                attacked=attacked,
                ratio={
                    "p50": ratio(attacked, baseline, "p50"),
                    "p99": ratio(attacked, baseline, "p99"),
                },
                rss={
                    "beforeMiB": before / MiB,
                    "peakMiB": peak / MiB,
                    "growthMiB": (peak - before) / MiB,
                    "samples": sampler.samples,
                    "peakIncludesVmHWM": peakReset,
                },
                serverCpuPercent=cpu,
                serverLogLines=logLines(log) - logBefore,
                attacker=campaign.summary(),
                sessionSurvived="error" not in attacked,
                serverAlive=server.alive,
            )
        except Exception as e:
            result["error"] = str(e)
        finally:
            if pinger is not None:
                await pinger.stop(reactor)
            result.setdefault("serverAlive", server.alive)
            await server.stop(reactor)
    return result


# ---------------------------------------------------------------- report


def table(results: dict[str, dict[str, Any]]) -> str:
    """
    The results as a plain-text table.
    """
    rows: list[tuple[str, ...]] = [
        (
            "attack",
            "conns",
            "peak RSS MiB",
            "growth MiB",
            "server CPU %",
            "log lines",
            "p50 ms base->attack",
            "x",
            "p99 ms base->attack",
            "x",
            "session",
            "attacker outcome",
        )
    ]
    rows.extend(row(name, r) for name, r in results.items())
    return alignTable(rows, numeric={1, 2, 3, 4, 5, 6, 7, 8, 9})


def row(name: str, r: dict[str, Any]) -> tuple[str, ...]:
    """
    One attack's row of the table.
    """
    if r["error"]:
        return (name, str(r["connections"]), *["-"] * 8, "ERROR", r["error"])
    base, hit = r["baseline"], r["attacked"]
    cells = [name, str(r["connections"])]
    cells += [fmt(r["rss"]["peakMiB"]), fmt(r["rss"]["growthMiB"])]
    cells += [fmt(r["serverCpuPercent"]), fmt(r["serverLogLines"])]
    for key in ("p50", "p99"):
        cells.append(f"{fmt(base[key])}->{fmt(hit.get(key))}")
        x = r["ratio"][key]
        cells.append("-" if x is None else f"{x:.1f}")
    session = "ok" if r["sessionSurvived"] else "LOST"
    if not r["serverAlive"]:
        session += ", server DIED"
    return (*cells, session, describeOutcome(r["attacker"]))


# ---------------------------------------------------------------- command line


def buildParser(prog: str = "python -m memux.attackbench") -> argparse.ArgumentParser:
    """
    The command line of ``python -m memux.attackbench``.
    """
    names = ", ".join(a.name for a in ATTACKS)
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Measure what each attack costs a twistd memux server:"
        " its peak memory and CPU, and the latency of a well-behaved session"
        " alongside, against that session's latency without the attack.",
        epilog=f"Attacks: {names}.",
    )
    parser.add_argument(
        "--attack",
        action="append",
        choices=[a.name for a in ATTACKS],
        metavar="NAME",
        help=f"run only this attack (repeatable): {names}",
    )
    parser.add_argument(
        "--seconds",
        type=float,
        metavar="N",
        help="how long the baseline and the attack each last (default 10;"
        " with --quick, 1)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="short periods and fewer attacker connections: a smoke run",
    )
    parser.add_argument(
        "--server-option",
        action="append",
        default=[],
        metavar="OPTION",
        help="pass this option to twistd memux, e.g. --server-option=--keepalive=5"
        " (repeatable)",
    )
    parser.add_argument("--json", metavar="FILE", help="write the results as JSON")
    parser.add_argument("--list", action="store_true", help="list the attacks")
    parser.add_argument("--pinger", type=int, metavar="PORT", help=argparse.SUPPRESS)
    return parser


async def runAll(reactor: ProcessReactor, args: argparse.Namespace) -> None:
    """
    Run the chosen attacks and report.
    """
    seconds = (
        args.seconds if args.seconds is not None else (1.0 if args.quick else 10.0)
    )
    if not seconds > 0:
        raise SystemExit("--seconds must be positive")
    drain = 1.0 if args.quick else 3.0
    chosen = [a for a in ATTACKS if not args.attack or a.name in args.attack]
    machine = machineInfo()
    print(
        f"machine: {machine['cpu']}, {machine['cores']} cores, {machine['python']},"
        f" Twisted {machine['twisted']}, memux {machine['memux']}"
        + (f" ({machine['commit']})" if "commit" in machine else ""),
        flush=True,
    )
    print(
        f"server: twistd -n memux {' '.join(args.server_option)} (defaults otherwise);"
        f" {seconds:g} s baseline, then {seconds:g} s under attack, each attack"
        f" against a fresh server",
        flush=True,
    )
    results: dict[str, dict[str, Any]] = {}
    for attack in chosen:
        connections = attack.quickConnections if args.quick else attack.connections
        print(f"{attack.name}: {attack.title}, {connections} connection(s)", flush=True)
        results[attack.name] = await runAttack(
            reactor, attack, connections, seconds, drain, args.server_option
        )
        if results[attack.name]["error"]:
            print(f"  ERROR {results[attack.name]['error']}", flush=True)
    print()
    print(table(results))
    print(
        "\nlatency: a 64-byte echo ping-pong on one channel of a well-behaved"
        " session; x = under attack / baseline.  peak RSS: the server process"
        " during the attack; growth: over its RSS just before."
    )
    if args.json:
        report = {
            "machine": machine,
            "serverSettings": dataclasses.asdict(SERVER),
            "serverOptions": args.server_option,
            "seconds": seconds,
            "quick": args.quick,
            "attacks": results,
        }
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.json}")
    if any(r["error"] for r in results.values()):
        raise SystemExit(1)


def listAttacks() -> str:
    """
    The attacks and their connections.
    """
    return "\n".join(
        f"{a.name}: {a.title}; {a.connections} connection(s), each replaced"
        " when the server closes it"
        for a in ATTACKS
    )


def main(argv: Sequence[str] | None = None) -> None:
    """
    Run the attack bench as the command line ``argv`` says.
    """
    args = buildParser().parse_args(argv)
    if args.list:
        print(listAttacks())
        return
    observer = FilteringLogObserver(
        textFileLogObserver(sys.stderr),
        [LogLevelFilterPredicate(defaultLogLevel=LogLevel.warn)],
    )
    globalLogBeginner.beginLoggingTo([observer], redirectStandardIO=False)
    if args.pinger is not None:
        task.react(runPinger, (args.pinger,))
    task.react(runAll, (args,))


if __name__ == "__main__":
    main()
