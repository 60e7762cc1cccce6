# -*- test-case-name: memux.test.test_soak -*-
"""
A soak test of a real memux server: ``python -m memux.bench soak``.

The harness starts ``twistd -n memux`` (built-in services ``echo``,
``discard`` and ``chargen``, default settings) and a client process,
``python -m memux._soak --client PARAMS``, which keeps ``--sessions``
sessions busy for ``--minutes`` with a mixed workload: whole messages of 0 B
to 2 MiB echoed (as messages, as chunks, as a byte stream), stream uploads
and downloads, half-close, aborts in the middle of a message, bursts of
channel churn, ``discard`` and ``chargen``, pings.  Readers pause and
resume at random.  Sessions live 30 to 120 s, end cleanly (the session's or
its TCP transport's ``loseConnection``, ``goAway``) or by abort, and are
replaced.  Every byte that comes back is checked against the pattern it was
generated from (or RFC 864's, for ``chargen``) as it arrives.

Each minute the client reports what it did and saw, and the harness adds
what it measured of both processes: the server's RSS and its peak, its open
file descriptors, both processes' CPU.  At the end every session closes, and
after `QUIET_SECONDS` the server's RSS and descriptors are compared with
their values at the start.

A *stall* is an operation that made no progress (no byte written or read,
no step of its close) for `STALL_SECONDS` while its reader was not paused on
purpose; it is *explained* when the client was itself saturated through most
of that time (see `LoadMonitor`), and counts against memux otherwise.

The exit status is 1 when something went wrong: an integrity failure, an
unexplained stall, a close still hanging after `HUNG_CLOSE_SECONDS`, an
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
import os
import random
import sys
import tempfile
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, cast

from twisted.internet import defer, task
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.error import ConnectionAborted, ConnectionDone
from twisted.internet.interfaces import (
    IDelayedCall,
    IHalfCloseableProtocol,
    IProcessTransport,
    IPushProducer,
    IReactorTime,
    ITCPTransport,
)
from twisted.internet.protocol import Protocol, connectionDone
from twisted.logger import (
    FilteringLogObserver,
    ILogObserver,
    LogLevel,
    LogLevelFilterPredicate,
    globalLogBeginner,
    textFileLogObserver,
)
from twisted.python.failure import Failure
from zope.interface import implementer

from memux import _benchworkers as workers
from memux.attackbench import ChildProcess, Reactor, cpuSeconds, resetPeak
from memux.attackbench import spawn as spawnChild
from memux.attackbench import startServer as startTwistd
from memux.bench import KiB, MiB, alignTable, fmt, machineInfo
from memux.codes import ErrorCode
from memux.error import SessionLost
from memux.interfaces import IChunkReceiver, IMessageReceiver
from memux.protocol import ChannelTransport, MemuxProtocol, connectSession

__all__ = [
    "LoadMonitor",
    "Pattern",
    "SoakParams",
    "StreamCheck",
    "buildParser",
    "chargenPeriod",
    "main",
]

#: an operation with no progress for this long is stalled
STALL_SECONDS = 30.0
#: a session close not complete this long after it began is hung
HUNG_CLOSE_SECONDS = 30.0
#: the quiet after every session closed, before the server's RSS is compared
QUIET_SECONDS = 10.0
#: how long a clean close waits for the session's operations to finish first
DRAIN_SECONDS = STALL_SECONDS + 15.0
#: the client is saturated in a second when it used this share of a core, or
#: its reactor ran this late ...
SATURATED_CPU = 0.9
SATURATED_LAG = 0.5
#: ... and a stall is explained when this share of its seconds were saturated
SATURATED_SHARE = 0.5
#: how often the client's reactor lag is probed
LAG_PROBE = 0.05
#: the largest echoed message
MAX_MESSAGE = 2 * MiB
#: the period of the echoed pattern: prime, so that no power-of-two chunk
#: size lines up with it and a chunk lost, repeated or misplaced always shows
#: (lengths are checked as well)
ECHO_PERIOD = 1_000_003
#: the channels of one churn burst
CHURN_CHANNELS = 500
#: the budget one churn channel costs, in bytes: roughly what moving that
#: many bytes costs the client in CPU
CHURN_CHANNEL_COST = 24 * KiB
#: the share of reading operations whose reader pauses and resumes at random
PAUSE_SHARE = 0.3
#: how sessions end, and how often: the clean ones half the time after
#: their operations finish, half the time with operations in flight (cut:
#: they end with SessionLost); goAway and the aborts with operations in
#: flight (which goAway lets finish)
CLOSE_MODES: tuple[tuple[str, int], ...] = (
    ("session.loseConnection", 30),
    ("transport.loseConnection", 30),
    ("session.goAway", 10),
    ("session.abortConnection", 15),
    ("transport.abortConnection", 15),
)
CLEAN_CLOSES = frozenset({"session.loseConnection", "transport.loseConnection"})
#: failure kinds that make the exit status 1
FAILURES = (
    "integrity",
    "stall",
    "hung-close",
    "unexpected-reset",
    "client-error",
)


# ---------------------------------------------------------------- patterns


def chargenPeriod(lineLength: int = 72) -> bytes:
    """
    One period of the RFC 864 character generator's output, written from
    the RFC rather than taken from `memux.services`: 95 lines, the first
    starting at ``" "`` and each one character later, each ``lineLength``
    printable characters (wrapping after ``"~"``) and CRLF.
    """
    printable = bytes(range(0x20, 0x7F))
    lines = []
    for first in range(len(printable)):
        line = bytes(printable[(first + i) % len(printable)] for i in range(lineLength))
        lines.append(line + b"\r\n")
    return b"".join(lines)


class Pattern:
    """
    An endless byte sequence repeating ``period``: position ``p`` holds
    ``period[p % len(period)]``.  Slices of up to ``span`` bytes are one
    copy of a precomputed buffer, and checks one comparison (memcmp).
    """

    def __init__(self, period: bytes, span: int) -> None:
        self.period = len(period)
        self.span = span
        repeats = -(-(self.period + span) // self.period)
        self.data = (period * repeats)[: self.period + span]

    def slice(self, offset: int, size: int) -> bytes:
        """
        The ``size`` bytes from position ``offset``.
        """
        if size <= self.span:
            start = offset % self.period
            return self.data[start : start + size]
        return b"".join(
            self.slice(offset + done, min(self.span, size - done))
            for done in range(0, size, self.span)
        )

    def mismatch(self, offset: int, data: bytes) -> int | None:
        """
        The index in ``data`` of its first byte that differs from the
        pattern from position ``offset`` on, or None if it all matches.
        """
        size = len(data)
        if size <= self.span:
            start = offset % self.period
            if data == self.data[start : start + size]:
                return None
            expected = self.data[start : start + size]
            return next(i for i in range(size) if data[i] != expected[i])
        for done in range(0, size, self.span):
            piece = data[done : done + self.span]
            bad = self.mismatch(offset + done, piece)
            if bad is not None:
                return done + bad
        return None

    def describe(self, offset: int, data: bytes, bad: int) -> str:
        """
        What differs at index ``bad`` of ``data`` (read from position
        ``offset``), with a few bytes of each.
        """
        got = data[bad : bad + 8]
        expected = self.slice(offset + bad, len(got))
        return f"expected {expected.hex()} got {got.hex()}"


class StreamCheck:
    """
    Checks a byte stream against a `Pattern` incrementally, from position
    ``start`` of the pattern.
    """

    def __init__(self, pattern: Pattern, start: int = 0) -> None:
        self.pattern = pattern
        self.start = start
        self.position = 0

    def feed(self, data: bytes) -> str | None:
        """
        Check the next bytes; a description of the first wrong one, or None.
        """
        offset = self.start + self.position
        bad = self.pattern.mismatch(offset, data)
        if bad is not None:
            where = self.position + bad
            return f"byte {where:,}: {self.pattern.describe(offset, data, bad)}"
        self.position += len(data)
        return None


def logUniform(rng: random.Random, low: int, high: int) -> int:
    """
    An integer from ``low`` to ``high`` (both at least 1) whose logarithm is
    uniform: as many sizes in 1-2 KiB as in 1-2 MiB.
    """
    return min(high, int(math.exp(rng.uniform(math.log(low), math.log(high + 1)))))


def messageSize(rng: random.Random) -> int:
    """
    An echoed message's size: empty one time in 20, else log-uniform from
    1 B to `MAX_MESSAGE`.
    """
    return 0 if rng.random() < 0.05 else logUniform(rng, 1, MAX_MESSAGE)


def pieceSize(rng: random.Random) -> int:
    """
    The size of one write of a stream: mostly 512 B to 256 KiB, sometimes
    tiny.
    """
    if rng.random() < 0.05:
        return rng.randint(1, 64)
    return logUniform(rng, 512, 256 * KiB)


# ---------------------------------------------------------------- pacing


class Budget:
    """
    A token bucket over the workload's cost (bytes moved through the
    client), served first come first served: an operation waits until the
    bucket is not in debt, then takes its whole cost (which may put the
    bucket in debt).  This paces the workload at ``rate`` without cutting
    operations into pieces.
    """

    def __init__(self, clock: IReactorTime, rate: float, burst: float) -> None:
        self.clock = clock
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self.last = clock.seconds()
        self.waiters: deque[tuple[float, defer.Deferred[None]]] = deque()
        self.call: IDelayedCall | None = None

    def take(self, cost: float) -> defer.Deferred[None]:
        """
        Fire once ``cost`` may be spent; cancelling gives up the place.
        """
        d: defer.Deferred[None] = defer.Deferred(self._cancel)
        self.waiters.append((cost, d))
        self._serve()
        return d

    def _cancel(self, d: defer.Deferred[None]) -> None:
        self.waiters = deque(w for w in self.waiters if w[1] is not d)

    def _timer(self) -> None:
        self.call = None
        self._serve()

    def _serve(self) -> None:
        now = self.clock.seconds()
        self.tokens = min(self.burst, self.tokens + (now - self.last) * self.rate)
        self.last = now
        while self.waiters and self.tokens >= 0:
            cost, d = self.waiters.popleft()
            self.tokens -= cost
            d.callback(None)
        if self.waiters and self.call is None:
            self.call = self.clock.callLater(-self.tokens / self.rate, self._timer)


class LoadMonitor:
    """
    This process's CPU use and reactor lag, one sample a second, to tell
    whether the client itself was saturated while an operation stalled:
    a second is saturated when the process used `SATURATED_CPU` of a core
    or a timer fired `SATURATED_LAG` seconds late.
    """

    def __init__(
        self, clock: IReactorTime, cpu: Callable[[], float] = time.process_time
    ) -> None:
        self.clock = clock
        self.cpu = cpu
        #: (time, share of a core used, largest lag) per second
        self.samples: deque[tuple[float, float, float]] = deque()
        self.secondLag = 0.0
        self.lagMax = 0.0
        self.lagTotal = 0.0
        self.lagCount = 0
        self.lastWall = clock.seconds()
        self.lastCpu = cpu()
        self.due = 0.0
        self.probeCall: IDelayedCall | None = None

    def start(self) -> None:
        """
        Start probing the lag.
        """
        self.lastWall = self.clock.seconds()
        self.lastCpu = self.cpu()
        self.probe()

    def stop(self) -> None:
        """
        Stop probing.
        """
        if self.probeCall is not None and self.probeCall.active():
            self.probeCall.cancel()
        self.probeCall = None

    def probe(self) -> None:
        """
        A timer due at ``due``: how late is it?
        """
        now = self.clock.seconds()
        if self.due:
            self.lag(max(0.0, now - self.due))
        self.due = now + LAG_PROBE
        self.probeCall = self.clock.callLater(LAG_PROBE, self.probe)

    def lag(self, seconds: float) -> None:
        """
        Record one measured lag.
        """
        self.secondLag = max(self.secondLag, seconds)
        self.lagMax = max(self.lagMax, seconds)
        self.lagTotal += seconds
        self.lagCount += 1

    def sample(self) -> None:
        """
        Close the current second's sample (called about once a second).
        """
        now, cpu = self.clock.seconds(), self.cpu()
        if now > self.lastWall:
            share = (cpu - self.lastCpu) / (now - self.lastWall)
            self.samples.append((now, share, self.secondLag))
        self.lastWall, self.lastCpu, self.secondLag = now, cpu, 0.0
        while self.samples and self.samples[0][0] < now - 10 * STALL_SECONDS:
            self.samples.popleft()

    def saturated(self, since: float, until: float) -> bool:
        """
        Whether the process was saturated through most (`SATURATED_SHARE`)
        of the seconds from ``since`` to ``until``.
        """
        window = [s for s in self.samples if since <= s[0] <= until]
        if not window:
            return False
        busy = sum(
            1 for _, cpu, lag in window if cpu >= SATURATED_CPU or lag >= SATURATED_LAG
        )
        return busy >= SATURATED_SHARE * len(window)

    def figures(self) -> dict[str, float]:
        """
        The lag since the last call: largest and mean, in milliseconds.
        """
        result = {
            "lagMaxMs": self.lagMax * 1000,
            "lagMeanMs": self.lagTotal / self.lagCount * 1000 if self.lagCount else 0,
        }
        self.lagMax = self.lagTotal = 0.0
        self.lagCount = 0
        return result


# ---------------------------------------------------------------- tallies


def percentileMs(seconds: list[float], fraction: float) -> float | None:
    """
    A percentile of ``seconds``, in milliseconds (None if there are none).
    """
    return workers.percentile(seconds, fraction) * 1000 if seconds else None


@dataclass
class Tally:
    """
    What the workload did and saw over one interval (or the whole run).
    """

    ops: Counter[str] = field(default_factory=Counter)
    cut: int = 0
    failedOps: int = 0
    bytesOut: int = 0
    bytesIn: int = 0
    channels: int = 0
    pauses: int = 0
    sessionsOpened: int = 0
    closes: Counter[str] = field(default_factory=Counter)
    #: the slowest close, by mode
    closeSeconds: dict[str, float] = field(default_factory=dict)
    problems: Counter[str] = field(default_factory=Counter)
    pings: list[float] = field(default_factory=list)

    def outcome(self, kind: str, outcome: str) -> None:
        """
        Count an operation's end: ``ok``, ``cut`` (its session was closed
        under it on purpose) or ``failed``.
        """
        if outcome == "ok":
            self.ops[kind] += 1
        elif outcome == "cut":
            self.cut += 1
        else:
            self.failedOps += 1

    def closed(self, mode: str, seconds: float) -> None:
        """
        A session closed in ``seconds``.
        """
        self.closeSeconds[mode] = max(self.closeSeconds.get(mode, 0.0), seconds)

    def add(self, other: Tally) -> None:
        """
        Add ``other``'s counts to these.
        """
        self.ops.update(other.ops)
        self.closes.update(other.closes)
        self.problems.update(other.problems)
        for name in ("cut", "failedOps", "bytesOut", "bytesIn", "channels"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.pauses += other.pauses
        self.pings.extend(other.pings)
        self.sessionsOpened += other.sessionsOpened
        for mode, seconds in other.closeSeconds.items():
            self.closed(mode, seconds)

    def toJSON(self) -> dict[str, Any]:
        """
        The counts as JSON.
        """
        return {
            "ops": dict(self.ops),
            "opsDone": sum(self.ops.values()),
            "cut": self.cut,
            "failedOps": self.failedOps,
            "bytesOut": self.bytesOut,
            "bytesIn": self.bytesIn,
            "channels": self.channels,
            "pauses": self.pauses,
            "sessionsOpened": self.sessionsOpened,
            "closes": dict(self.closes),
            "closeSecondsMax": self.closeSeconds,
            "pings": len(self.pings),
            "pingP50Ms": percentileMs(self.pings, 0.5),
            "pingP99Ms": percentileMs(self.pings, 0.99),
            "pingMaxMs": max(self.pings) * 1000 if self.pings else None,
            "problems": {
                kind: self.problems[kind] for kind in (*FAILURES, "explained-stall")
            },
        }


# ---------------------------------------------------------------- operations


class Op:
    """
    One operation of the workload, run by a session's lane: it fires
    ``done`` with ``ok``, ``cut`` or ``failed`` once over, and meanwhile
    notes each step forward (``lastProgress``) for the stall watchdog.
    """

    kind: ClassVar[str] = "op"
    #: whether its reader may be paused at random
    reads: ClassVar[bool] = False

    def __init__(self, owner: SoakSession) -> None:
        self.owner = owner
        self.client = owner.client
        self.rng = owner.rng
        self.done: defer.Deferred[str] = defer.Deferred()
        self.cost = 0
        self.started = self.lastProgress = 0.0
        self.paused = False
        self.stalled = False
        self.ended = False
        self.phase = "opening"

    def begin(self) -> defer.Deferred[str]:
        """
        Start; fire with the outcome.
        """
        self.started = self.lastProgress = self.client.now()
        self.client.active.add(self)
        self.owner.opBegan()
        self.start()
        return self.done

    def start(self) -> None:
        """
        Do the operation's first step.
        """
        raise NotImplementedError

    def progress(self) -> None:
        """
        A step forward.
        """
        self.lastProgress = self.client.now()

    def finish(self, outcome: str) -> None:
        """
        The operation is over.
        """
        if self.ended:
            return
        self.ended = True
        self.client.active.discard(self)
        self.owner.activeOps -= 1
        self.client.tally.outcome(self.kind, outcome)
        self.done.callback(outcome)

    def where(self) -> str:
        """
        Where it runs, for reports.
        """
        return f"session {self.owner.ident}"

    def problem(self, kind: str, detail: str) -> None:
        """
        Record a problem of ``kind`` (see `FAILURES`).
        """
        self.client.record(kind, f"{self.kind} on {self.where()}: {detail}")

    def describe(self) -> str:
        """
        Its state, for a stall report.
        """
        return f"{self.phase}"


def describeReason(reason: Failure) -> str:
    """
    A channel's or session's end, as reported.
    """
    return f"{type(reason.value).__name__}: {reason.value}"


def cutOff(reason: Failure, cutting: bool) -> bool:
    """
    Whether ``reason`` is the workload's own close of the session cutting a
    channel (or a ping) off, when it is ``cutting``.  Never when it carries
    EXCESSIVE_LOAD: the server must not take this workload for an abuser,
    whatever else happens.
    """
    return (
        reason.check(SessionLost) is not None
        and cutting
        and getattr(reason.value, "code", None) != ErrorCode.EXCESSIVE_LOAD
    )


class ChannelOp(Op, Protocol):
    """
    An operation on one channel, as that channel's protocol.  A clean end
    must come after the operation has all it expects; an abort only after
    it aborted; `SessionLost` only when its session is being closed on
    purpose.  Anything else is an unexpected reset.
    """

    service: ClassVar[bytes] = b"echo"
    channel: ChannelTransport | None = None
    aborting = False
    #: the bytes it expects to read (where its reader may pause)
    inbound = 0
    #: the bytes read so far, and at how many the reader pauses next (-1:
    #: never), and the call that resumes it
    bytesIn = 0
    pauseAt = -1
    chaos: IDelayedCall | None = None

    def start(self) -> None:
        """
        Open the channel.
        """
        session = self.owner.session
        assert session is not None
        self.client.tally.channels += 1
        d = session.openChannel(self.service, workers.OneFactory(lambda: self))
        d.addErrback(self.openFailed)

    def openFailed(self, reason: Failure) -> None:
        """
        The channel could not be opened.
        """
        if self.owner.cutting:
            self.finish("cut")
            return
        self.problem("unexpected-reset", f"open failed: {describeReason(reason)}")
        self.finish("failed")

    def where(self) -> str:
        """
        Session and channel.
        """
        channel = self.channel.channel if self.channel is not None else "-"
        return f"session {self.owner.ident} channel {channel}"

    def connectionMade(self) -> None:
        """
        Start the work, and maybe the random pauses.
        """
        self.channel = cast(ChannelTransport, self.transport)
        self.phase = "running"
        self.progress()
        if self.reads and self.rng.random() < PAUSE_SHARE:
            # Pauses are placed by bytes read, not by time: most operations
            # last milliseconds, so a timer would rarely catch one reading.
            self.pauseAt = self.rng.randint(0, self.inbound)
            if not self.pauseAt:
                self.pauseReading()
        self.go()

    def go(self) -> None:
        """
        The work, once the channel is open.
        """

    def pauseReading(self) -> None:
        """
        Pause the channel's transport for a while.
        """
        self.pauseAt = -1
        if self.ended or self.channel is None or self.channel.disconnected:
            return
        self.channel.pauseProducing()
        self.paused = True
        self.client.tally.pauses += 1
        self.chaos = self.client.reactor.callLater(
            self.rng.uniform(0.05, 2.0), self.resumeReading
        )

    def resumeReading(self) -> None:
        """
        Resume it, and perhaps pause again later.
        """
        self.chaos = None
        self.paused = False
        self.progress()
        assert self.channel is not None
        self.channel.resumeProducing()
        left = self.inbound - self.bytesIn
        if left > 0 and self.rng.random() < 0.5:
            self.pauseAt = self.bytesIn + self.rng.randint(1, left)

    def close(self) -> None:
        """
        Close the channel cleanly.
        """
        self.phase = "closing"
        self.progress()
        assert self.channel is not None
        self.channel.loseConnection()

    def abort(self) -> None:
        """
        Abort the channel, as the workload means to.
        """
        self.phase = "aborting"
        self.aborting = True
        assert self.channel is not None
        self.channel.abortConnection()

    def corrupt(self, detail: str) -> None:
        """
        The data is wrong: record it, abort the channel, fail.
        """
        self.problem("integrity", detail)
        self.finish("failed")
        if self.channel is not None and not self.channel.disconnected:
            self.channel.abortConnection()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        """
        Judge the channel's end.
        """
        if self.chaos is not None:
            if self.chaos.active():
                self.chaos.cancel()
            self.chaos = None
        self.paused = False
        if self.ended:
            return
        if cutOff(reason, self.owner.cutting):
            self.finish("cut")
        elif reason.check(ConnectionAborted) and self.aborting:
            self.finish("ok")
        elif reason.check(ConnectionDone):
            missing = self.missing()
            if missing:
                self.problem("integrity", f"clean end with {missing}")
                self.finish("failed")
            else:
                self.finish("ok")
        else:
            self.problem("unexpected-reset", f"{describeReason(reason)} ({self.phase})")
            self.finish("failed")

    def missing(self) -> str | None:
        """
        What the operation still expected, if anything, when the channel
        ended cleanly.
        """
        return None

    def received(self, data: bytes) -> None:
        """
        Count bytes in, as a step forward; pause the reader if due.
        """
        self.client.tally.bytesIn += len(data)
        self.lastProgress = self.client.now()
        self.bytesIn += len(data)
        if 0 <= self.pauseAt <= self.bytesIn:
            self.pauseReading()


@implementer(IPushProducer)
class PatternWriter:
    """
    Writes ``total`` bytes of ``pattern`` from position ``start`` to an
    operation's channel while the channel lets it (a streaming producer), in
    pieces of random sizes, ending a message after a piece with probability
    ``ends``; calls ``done`` after the last.
    """

    def __init__(
        self,
        op: ChannelOp,
        pattern: Pattern,
        start: int,
        total: int,
        ends: float,
        done: Callable[[], object],
    ) -> None:
        self.op = op
        self.pattern = pattern
        self.start = start
        self.total = total
        self.ends = ends
        self.done = done
        self.sent = 0
        self.paused = False
        self.stopped = False
        self.writing = False

    def begin(self) -> None:
        """
        Register and start writing.
        """
        assert self.op.channel is not None
        self.op.channel.registerProducer(self, True)
        self.resumeProducing()

    def pauseProducing(self) -> None:
        """
        Stop writing until resumed.
        """
        self.paused = True

    def resumeProducing(self) -> None:
        """
        Write until paused or done.
        """
        self.paused = False
        if self.writing or self.stopped:
            return
        self.writing = True
        op, channel, rng = self.op, self.op.channel, self.op.rng
        assert channel is not None
        before = self.sent
        try:
            while not self.paused and not self.stopped and self.sent < self.total:
                size = min(self.total - self.sent, pieceSize(rng))
                data = self.pattern.slice(self.start + self.sent, size)
                self.sent += size
                if rng.random() < self.ends:
                    channel.writeMessage(data)
                else:
                    channel.write(data)
        finally:
            self.writing = False
        if self.sent > before:
            op.client.tally.bytesOut += self.sent - before
            op.progress()
        if self.sent >= self.total and not self.stopped:
            self.stopped = True
            channel.unregisterProducer()
            self.done()

    def stopProducing(self) -> None:
        """
        Write no more.
        """
        self.stopped = True


class EchoBase(ChannelOp):
    """
    Send 1 to 8 whole messages of 0 B to 2 MiB to ``echo``, up to 4 at a
    time, and check that each comes back whole, in order and unchanged.
    (No receiver interface: memux would deliver whole messages to a class
    that inherited `IMessageReceiver`, whatever else it declares.)
    """

    reads = True

    def __init__(self, owner: SoakSession) -> None:
        super().__init__(owner)
        rng = self.rng
        self.messages = [
            (rng.randrange(ECHO_PERIOD), messageSize(rng))
            for _ in range(rng.randint(1, 8))
        ]
        self.window = rng.randint(1, 4)
        self.sent = 0
        self.answered = 0
        self.expected: deque[tuple[int, int]] = deque()
        self.inbound = sum(size for _, size in self.messages)
        self.cost = 2 * self.inbound

    def go(self) -> None:
        """
        Send the first window.
        """
        self.sendMore()

    def sendMore(self) -> None:
        """
        Keep ``window`` messages in flight.
        """
        channel, pattern = self.channel, self.client.echo
        assert channel is not None
        while self.sent < len(self.messages) and len(self.expected) < self.window:
            offset, size = self.messages[self.sent]
            self.sent += 1
            channel.writeMessage(pattern.slice(offset, size))
            self.client.tally.bytesOut += size
            self.expected.append((offset, size))
        self.progress()

    def answer(self) -> None:
        """
        One more echo is back whole: send the next, or close after the last.
        """
        self.answered += 1
        if self.answered == len(self.messages):
            self.close()
        else:
            self.sendMore()

    def missing(self) -> str | None:
        """
        Echoes not yet back.
        """
        if self.answered < len(self.messages):
            return f"{self.answered} of {len(self.messages)} echoes back"
        return None

    def describe(self) -> str:
        """
        Its progress.
        """
        return (
            f"{self.phase}, {self.answered} of {len(self.messages)} echoes back,"
            f" {len(self.expected)} in flight"
        )


@implementer(IMessageReceiver)
class EchoMessages(EchoBase):
    """
    `EchoBase`, each echo received as one whole message.
    """

    kind = "echo-msg"

    def messageReceived(self, message: bytes) -> None:
        """
        An echo: check it, send the next, close after the last.
        """
        if self.ended:
            return
        self.received(message)
        number = self.answered + 1
        if not self.expected:
            self.corrupt(f"echo {number} ({len(message):,} B) was never sent")
            return
        offset, size = self.expected.popleft()
        if len(message) != size:
            self.corrupt(
                f"echo {number} of {len(self.messages)} is {len(message):,} B;"
                f" {size:,} B were sent"
            )
            return
        bad = self.client.echo.mismatch(offset, message)
        if bad is not None:
            what = self.client.echo.describe(offset, message, bad)
            self.corrupt(f"echo {number} ({size:,} B), byte {bad:,}: {what}")
            return
        self.answer()


@implementer(IChunkReceiver)
class EchoChunks(EchoBase):
    """
    `EchoBase`, received chunk by chunk: every chunk checked as it
    arrives, and each message's end exactly where the sent one ended.
    """

    kind = "echo-chunk"

    def __init__(self, owner: SoakSession) -> None:
        super().__init__(owner)
        self.partial = 0

    def chunkReceived(self, data: bytes, endOfMessage: bool) -> None:
        """
        Check a chunk; at a message's end, its length.
        """
        if self.ended:
            return
        self.received(data)
        number = self.answered + 1
        if not self.expected:
            self.corrupt(f"a chunk of {len(data):,} B after the last echo")
            return
        offset, size = self.expected[0]
        if self.partial + len(data) > size:
            self.corrupt(
                f"echo {number} runs past the {size:,} B sent"
                f" ({self.partial + len(data):,} B so far)"
            )
            return
        bad = self.client.echo.mismatch(offset + self.partial, data)
        if bad is not None:
            what = self.client.echo.describe(offset + self.partial, data, bad)
            self.corrupt(f"echo {number}, byte {self.partial + bad:,}: {what}")
            return
        self.partial += len(data)
        if not endOfMessage:
            return
        if self.partial != size:
            self.corrupt(
                f"echo {number} ended after {self.partial:,} B;"
                f" {size:,} B were sent in one message"
            )
            return
        self.expected.popleft()
        self.partial = 0
        self.answer()


class EchoStream(ChannelOp):
    """
    Stream 1 KiB to 8 MiB to ``echo`` through a producer (random write
    sizes, random message ends) and read it back as a byte stream, checked
    as it arrives.
    """

    kind = "echo-stream"
    reads = True
    #: the probability that a write ends a message
    ends = 0.1

    def __init__(self, owner: SoakSession) -> None:
        super().__init__(owner)
        self.total = self.size()
        self.check = StreamCheck(self.client.echo, self.rng.randrange(ECHO_PERIOD))
        self.writer = PatternWriter(
            self, self.client.echo, self.check.start, self.total, self.ends, self.sent
        )
        self.inbound = self.total
        self.cost = 2 * self.total

    def size(self) -> int:
        """
        How much to stream.
        """
        return logUniform(self.rng, KiB, 8 * MiB)

    def go(self) -> None:
        """
        Start writing.
        """
        self.writer.begin()

    def sent(self) -> None:
        """
        All written.
        """
        self.phase = "reading the echo"

    def dataReceived(self, data: bytes) -> None:
        """
        Check the echo; close once it is all back.
        """
        if self.ended:
            return
        self.received(data)
        error = self.check.feed(data)
        if error is not None:
            self.corrupt(f"echo {error}")
        elif self.check.position > self.total:
            self.corrupt(
                f"{self.check.position:,} B echoed; {self.total:,} B were sent"
            )
        elif self.check.position == self.total:
            self.allBack()

    def allBack(self) -> None:
        """
        The whole echo is in.
        """
        self.close()

    def missing(self) -> str | None:
        """
        Bytes not yet back.
        """
        if self.check.position < self.total:
            return f"{self.check.position:,} of {self.total:,} B echoed"
        return None

    def describe(self) -> str:
        """
        Its progress.
        """
        return (
            f"{self.phase}, {self.writer.sent:,} of {self.total:,} B written"
            f"{' (writer paused)' if self.writer.paused else ''},"
            f" {self.check.position:,} B echoed"
        )


@implementer(IHalfCloseableProtocol)
class HalfClose(EchoStream):
    """
    Write 0 B to 4 MiB to ``echo``, half-close (``loseWriteConnection``),
    read the echo to its end of file, and expect the channel then to end
    cleanly by itself.
    """

    kind = "half-close"
    eof = False

    def size(self) -> int:
        """
        Sometimes nothing at all.
        """
        return 0 if self.rng.random() < 0.1 else logUniform(self.rng, 1, 4 * MiB)

    def go(self) -> None:
        """
        Write, or half-close at once.
        """
        if self.total:
            self.writer.begin()
        else:
            self.sent()

    def sent(self) -> None:
        """
        Half-close.
        """
        self.phase = "half-closed, reading the echo to EOF"
        self.progress()
        assert self.channel is not None
        self.channel.loseWriteConnection()

    def allBack(self) -> None:
        """
        The end of file must follow.
        """

    def readConnectionLost(self) -> None:
        """
        The echo's end of file: all of it must be in.
        """
        self.progress()
        self.eof = True
        if self.check.position != self.total:
            self.corrupt(
                f"end of file after {self.check.position:,} of {self.total:,} B"
            )
            return
        self.phase = "EOF read, waiting for the channel to end"

    def writeConnectionLost(self) -> None:
        """
        Our FIN went out.
        """
        self.progress()

    def missing(self) -> str | None:
        """
        The end of file.
        """
        return super().missing() or (None if self.eof else "no end of file")


class Upload(EchoStream):
    """
    Stream 1 KiB to 16 MiB to ``discard`` and close; the close must be
    clean.
    """

    kind = "discard"
    service = b"discard"
    reads = False
    ends = 0.2

    def __init__(self, owner: SoakSession) -> None:
        super().__init__(owner)
        self.cost = self.total

    def size(self) -> int:
        """
        Up to 16 MiB.
        """
        return logUniform(self.rng, KiB, 16 * MiB)

    def sent(self) -> None:
        """
        Close after the last byte.
        """
        self.close()

    def dataReceived(self, data: bytes) -> None:
        """
        ``discard`` sends nothing.
        """
        if not self.ended:
            self.corrupt(f"discard sent {len(data):,} B")

    def missing(self) -> str | None:
        """
        Nothing comes back.
        """
        if self.writer.sent < self.total:
            return f"only {self.writer.sent:,} of {self.total:,} B written"
        return None


class Download(ChannelOp):
    """
    Read 1 KiB to 16 MiB from ``chargen``, checked against RFC 864's
    pattern as it arrives, then close.
    """

    kind = "chargen"
    service = b"chargen"
    reads = True

    def __init__(self, owner: SoakSession) -> None:
        super().__init__(owner)
        self.total = self.size()
        self.check = StreamCheck(self.client.chargen)
        self.inbound = self.cost = self.total

    def size(self) -> int:
        """
        Up to 16 MiB.
        """
        return logUniform(self.rng, KiB, 16 * MiB)

    def go(self) -> None:
        """
        Sometimes write a little (chargen must ignore it).
        """
        if self.rng.random() < 0.3:
            assert self.channel is not None
            self.channel.write(b"ignored" * self.rng.randint(1, 100))

    def dataReceived(self, data: bytes) -> None:
        """
        Check; close once enough is in.
        """
        if self.ended or self.phase != "running":
            return
        self.received(data)
        error = self.check.feed(data)
        if error is not None:
            self.corrupt(f"chargen {error}")
        elif self.check.position >= self.total:
            self.enough()

    def enough(self) -> None:
        """
        Read enough.
        """
        self.close()

    def missing(self) -> str | None:
        """
        Bytes not yet read.
        """
        if self.check.position < self.total:
            return f"{self.check.position:,} of {self.total:,} B read"
        return None

    def describe(self) -> str:
        """
        Its progress.
        """
        return f"{self.phase}, {self.check.position:,} of {self.total:,} B read"


class AbortDownload(Download):
    """
    Read part of ``chargen``'s stream, checked, then abort the channel.
    """

    kind = "abort-chargen"

    def size(self) -> int:
        """
        Up to 4 MiB.
        """
        return logUniform(self.rng, 1, 4 * MiB)

    def enough(self) -> None:
        """
        Abort.
        """
        self.abort()


@implementer(IChunkReceiver)
class AbortEcho(ChannelOp):
    """
    Write part of one message (never ended) to ``echo``, then abort: at
    once, or once part of the echo is back.  The echo's chunks are checked,
    and none may end a message.
    """

    kind = "abort-echo"
    reads = True

    def __init__(self, owner: SoakSession) -> None:
        super().__init__(owner)
        rng = self.rng
        size = logUniform(rng, 64 * KiB, 4 * MiB)
        self.written = rng.randint(1, size)
        self.waitFor = rng.randint(1, self.written) if rng.random() < 0.5 else 0
        self.check = StreamCheck(self.client.echo, rng.randrange(ECHO_PERIOD))
        self.writer = PatternWriter(
            self, self.client.echo, self.check.start, self.written, 0.0, self.sent
        )
        self.inbound = self.waitFor
        self.cost = 2 * self.written

    def go(self) -> None:
        """
        Start writing.
        """
        self.writer.begin()

    def sent(self) -> None:
        """
        All of it written: abort now, unless waiting for the echo.
        """
        self.phase = "written"
        if not self.waitFor:
            self.abort()

    def chunkReceived(self, data: bytes, endOfMessage: bool) -> None:
        """
        Check the echo; abort once ``waitFor`` bytes are back.
        """
        if self.ended or self.aborting:
            return
        self.received(data)
        if endOfMessage:
            self.corrupt(
                f"the echo of a message never ended ended after"
                f" {self.check.position + len(data):,} B"
            )
            return
        error = self.check.feed(data)
        if error is not None:
            self.corrupt(f"echo {error}")
        elif self.check.position > self.written:
            self.corrupt(f"{self.check.position:,} B echoed of {self.written:,} B")
        elif self.waitFor and self.check.position >= self.waitFor:
            self.abort()

    def missing(self) -> str | None:
        """
        It should never end cleanly.
        """
        return "no abort"

    def describe(self) -> str:
        """
        Its progress.
        """
        return (
            f"{self.phase}, {self.writer.sent:,} of {self.written:,} B written,"
            f" {self.check.position:,} B echoed, aborting at {self.waitFor:,}"
        )


@implementer(IMessageReceiver)
class ChurnChannel(ChannelOp):
    """
    One channel of a churn burst: a message of up to 1 KiB to ``echo``,
    its echo checked, then a clean close.
    """

    kind = "churn"

    def __init__(self, burst: Churn) -> None:
        super().__init__(burst.owner)
        self.burst = burst
        self.offset = self.rng.randrange(ECHO_PERIOD)
        self.size = self.rng.randint(0, KiB)
        self.answered = False

    def progress(self) -> None:
        """
        Progress of the burst.
        """
        self.burst.progress()

    def received(self, data: bytes) -> None:
        """
        Count bytes in.
        """
        self.client.tally.bytesIn += len(data)
        self.burst.progress()

    def finish(self, outcome: str) -> None:
        """
        Report to the burst.
        """
        if not self.ended:
            self.ended = True
            self.burst.channelDone(self, outcome)

    def go(self) -> None:
        """
        Send the message.
        """
        assert self.channel is not None
        self.channel.writeMessage(self.client.echo.slice(self.offset, self.size))
        self.client.tally.bytesOut += self.size

    def messageReceived(self, message: bytes) -> None:
        """
        Check the echo and close.
        """
        if self.ended:
            return
        self.received(message)
        if self.answered:
            self.corrupt(f"a second echo of {len(message):,} B")
        elif len(message) != self.size:
            self.corrupt(f"echo of {len(message):,} B; {self.size:,} B were sent")
        elif (bad := self.client.echo.mismatch(self.offset, message)) is not None:
            what = self.client.echo.describe(self.offset, message, bad)
            self.corrupt(f"echo byte {bad:,}: {what}")
        else:
            self.answered = True
            self.close()

    def missing(self) -> str | None:
        """
        The echo.
        """
        return None if self.answered else "no echo"


class Churn(Op):
    """
    A burst of `CHURN_CHANNELS` channels opened at once, each used and
    closed (`ChurnChannel`); over when all are.
    """

    kind = "churn"

    def __init__(self, owner: SoakSession) -> None:
        super().__init__(owner)
        self.cost = CHURN_CHANNELS * CHURN_CHANNEL_COST
        self.left: set[ChurnChannel] = set()
        self.outcomes: Counter[str] = Counter()

    def start(self) -> None:
        """
        Open every channel of the burst.
        """
        self.owner.churning = True
        self.phase = "running"
        channels = [ChurnChannel(self) for _ in range(CHURN_CHANNELS)]
        self.left.update(channels)
        for channel in channels:
            if self.ended:
                break
            channel.start()

    def channelDone(self, channel: ChurnChannel, outcome: str) -> None:
        """
        One channel is over; the burst once all are.
        """
        self.left.discard(channel)
        self.outcomes[outcome] += 1
        self.progress()
        if not self.left:
            self.owner.churning = False
            worst = next(o for o in ("failed", "cut", "ok") if self.outcomes[o])
            self.finish(worst)

    def describe(self) -> str:
        """
        Its progress, and the state of a channel still open.
        """
        text = f"{len(self.left)} of {CHURN_CHANNELS} channels not done"
        for channel in list(self.left)[:1]:
            text += f" (e.g. {channel.where()}: {channel.phase})"
        return text


class Ping(Op):
    """
    A PING on the session; the round trip is reported.
    """

    kind = "ping"

    def __init__(self, owner: SoakSession) -> None:
        super().__init__(owner)
        self.cost = KiB

    def start(self) -> None:
        """
        Ping.
        """
        assert self.owner.session is not None
        self.phase = "waiting for the PONG"
        d = self.owner.session.ping()
        d.addCallbacks(self.pong, self.lost)

    def pong(self, seconds: float) -> None:
        """
        The answer.
        """
        self.client.tally.pings.append(seconds)
        self.finish("ok")

    def lost(self, reason: Failure) -> None:
        """
        No answer: the session went away.
        """
        # Even goAway's close cuts a ping off: it waits for channels only.
        if cutOff(reason, self.owner.closingByUs):
            self.finish("cut")
        else:
            self.problem("unexpected-reset", f"ping: {describeReason(reason)}")
            self.finish("failed")


#: the workload's operations and their weights
OPS: tuple[tuple[type[Op], int], ...] = (
    (EchoMessages, 20),
    (EchoChunks, 10),
    (EchoStream, 12),
    (HalfClose, 10),
    (Upload, 8),
    (Download, 10),
    (AbortEcho, 6),
    (AbortDownload, 3),
    (Churn, 3),
    (Ping, 6),
)


# ---------------------------------------------------------------- sessions


class SoakSession:
    """
    One session of the workload: it connects, runs ``lanes`` operations at
    a time for its lifetime, closes in one of `CLOSE_MODES`, and reports
    how long the close took.
    """

    def __init__(self, client: SoakClient, ident: int, rng: random.Random) -> None:
        self.client = client
        self.ident = ident
        self.rng = rng
        self.session: MemuxProtocol | None = None
        self.live = False
        #: whether the workload closes the connection, and whether its
        #: channels may be cut off (all but goAway's close, which lets them
        #: finish)
        self.closingByUs = False
        self.cutting = False
        self.mode = ""
        self.closeStarted: float | None = None
        self.closed = False
        self.hung = False
        self.churning = False
        self.activeOps = 0
        self.busy: defer.Deferred[None] | None = None
        self.waits: set[defer.Deferred[Any]] = set()
        self.stopped: defer.Deferred[None] = defer.Deferred()
        self.lifetime: IDelayedCall | None = None

    def stop(self) -> None:
        """
        End this session's life now.
        """
        if self.lifetime is not None and self.lifetime.active():
            self.lifetime.cancel()
        self.lifetime = None
        if not self.stopped.called:
            self.stopped.callback(None)

    async def run(self) -> None:
        """
        Live, close, and report.
        """
        client = self.client
        endpoint = TCP4ClientEndpoint(client.reactor, workers.LOOPBACK, client.port)
        try:
            session = await connectSession(endpoint)
        except Exception as e:
            client.record("unexpected-reset", f"session {self.ident}: connect: {e}")
            await client.sleep(1.0)  # (not a busy loop if the server is gone)
            return
        self.session = session
        client.tally.sessionsOpened += 1
        closed = session.whenClosed()
        closed.addCallback(self.whenClosed)
        lanes: list[defer.Deferred[None]] = []
        if not client.stopping:
            self.live = True
            lanes = [
                defer.Deferred.fromCoroutine(self.lane())
                for _ in range(client.params.lanes)
            ]
            low, high = client.params.lifetime
            self.lifetime = client.reactor.callLater(
                self.rng.uniform(low, high), self.stop
            )
            await self.stopped
        busy = False
        if not self.closed:
            self.mode = pick(self.rng, CLOSE_MODES)
            # Aborts, and half the clean closes, happen with operations in
            # flight: most of the time a lane is thinking or waiting for the
            # budget, so wait a little for one to be under way.
            busy = self.mode not in CLEAN_CLOSES or self.rng.random() < 0.5
            if busy and lanes:
                await either(self.inFlight(), client.sleep(5.0))
        self.live = False
        for wait in list(self.waits):
            wait.cancel()
        if not self.closed:
            if not busy and lanes:
                # Let the operations finish, so that this clean close closes
                # an idle session (a stalled one is reported, then cut).
                await either(defer.DeferredList(lanes), client.sleep(DRAIN_SECONDS))
            if not self.closed:
                if self.mode in CLEAN_CLOSES:
                    self.mode += " (busy)" if busy else " (idle)"
                self.close()
                await closed
                assert self.closeStarted is not None
                seconds = client.now() - self.closeStarted
                client.tally.closes[self.mode] += 1
                client.tally.closed(self.mode, seconds)
        await defer.DeferredList(lanes)

    def opBegan(self) -> None:
        """
        One of its operations began.
        """
        self.activeOps += 1
        busy, self.busy = self.busy, None
        if busy is not None:
            busy.callback(None)

    def inFlight(self) -> defer.Deferred[None]:
        """
        Fire once an operation is under way (at once if one is).
        """
        if self.activeOps or self.closed:
            return defer.succeed(None)
        if self.busy is None:
            self.busy = defer.Deferred()
        return self.busy

    def close(self) -> None:
        """
        Close the session as ``mode`` says.
        """
        session = self.session
        assert session is not None
        self.closingByUs = True
        self.cutting = self.mode != "session.goAway"
        self.closeStarted = self.client.now()
        transport = cast(ITCPTransport, session.transport)
        if self.mode == "session.goAway":
            session.goAway()
        elif self.mode.startswith("session.loseConnection"):
            session.loseConnection()
        elif self.mode.startswith("transport.loseConnection"):
            transport.loseConnection()
        elif self.mode.startswith("session.abortConnection"):
            session.abortConnection("soak: abort")
        else:
            transport.abortConnection()

    def whenClosed(self, _: object) -> None:
        """
        The connection closed: if not by us, that is an unexpected reset.
        """
        self.closed = True
        busy, self.busy = self.busy, None
        if busy is not None:
            busy.callback(None)
        if not self.closingByUs:
            assert self.session is not None
            reason = self.session.lostReason
            text = describeReason(reason) if reason is not None else "?"
            self.client.record("unexpected-reset", f"session {self.ident} lost: {text}")
            self.stop()

    async def lane(self) -> None:
        """
        Run operations one after another, paced by the client's budget,
        until the session's life ends.
        """
        client, rng = self.client, self.rng
        try:
            while self.live:
                choices = [
                    (op, w) for op, w in OPS if op is not Churn or not self.churning
                ]
                op = pick(rng, choices)(self)
                if op.kind == "churn":
                    # Claimed now, so the other lane does not burst as well.
                    self.churning = True
                if not await self.wait(client.budget.take(op.cost)):
                    self.churning = False
                    return
                await op.begin()
                if not await self.wait(
                    client.sleep(rng.uniform(0, client.params.think))
                ):
                    return
        except Exception:
            client.record("client-error", f"session {self.ident}: {Failure()}")

    async def wait(self, d: defer.Deferred[Any]) -> bool:
        """
        Wait for ``d``; False if the session's life ended meanwhile.
        """
        self.waits.add(d)
        try:
            await d
        except defer.CancelledError:
            return False
        finally:
            self.waits.discard(d)
        return self.live

    def describeClose(self) -> str:
        """
        The state of a close that hangs.
        """
        session = self.session
        assert session is not None
        transport: Any = session.transport
        buffered = len(getattr(transport, "dataBuffer", b"")) + sum(
            len(x) for x in getattr(transport, "_tempDataBuffer", [])
        )
        return (
            f"session {self.ident}: {self.mode} began"
            f" {self.client.now() - (self.closeStarted or 0):.0f} s ago;"
            f" session connected={session.connected},"
            f" channels open={session.counters()['channelsOpen']};"
            f" TCP transport connected={getattr(transport, 'connected', '?')},"
            f" disconnecting={getattr(transport, 'disconnecting', '?')},"
            f" producer={type(getattr(transport, 'producer', None)).__name__},"
            f" producerPaused={getattr(transport, 'producerPaused', '?')},"
            f" {buffered:,} B buffered"
        )


def pick(rng: random.Random, weighted: Sequence[tuple[Any, int]]) -> Any:
    """
    One of ``weighted``'s items, by weight.
    """
    items, weights = zip(*weighted, strict=True)
    return rng.choices(items, weights)[0]


def either(*ds: defer.Deferred[Any]) -> defer.Deferred[None]:
    """
    Fire when the first of ``ds`` fires (the others are left alone).
    """
    first: defer.Deferred[None] = defer.Deferred()

    def fired(result: object) -> object:
        if not first.called:
            first.callback(None)
        return result

    for d in ds:
        d.addBoth(fired)
    return first


# ---------------------------------------------------------------- the client


@dataclass(frozen=True)
class SoakParams:
    """
    What the client runs.
    """

    port: int = 0
    seconds: float = 900.0
    interval: float = 60.0
    sessions: int = 40
    lanes: int = 2
    seed: int = 0
    rate: float = 240.0
    think: float = 1.0
    lifetime: tuple[float, float] = (30.0, 120.0)

    @classmethod
    def fromJSON(cls, text: str) -> SoakParams:
        """
        Parameters from the harness.
        """
        values = json.loads(text)
        values["lifetime"] = tuple(values["lifetime"])
        return cls(**values)


class SoakClient:
    """
    The client process: the sessions, the watchdog, the reports.
    """

    def __init__(
        self,
        reactor: workers.Reactor,
        params: SoakParams,
        emit: Callable[[dict[str, Any]], None] = workers.emit,
    ) -> None:
        self.reactor = reactor
        self.params = params
        self.port = params.port
        self.emit = emit
        self.now = reactor.seconds
        self.rng = random.Random(params.seed)
        self.echo = Pattern(self.rng.randbytes(ECHO_PERIOD), MAX_MESSAGE)
        self.chargen = Pattern(chargenPeriod(), 256 * KiB)
        self.budget = Budget(reactor, params.rate * 1e6, params.rate * 1e6)
        self.monitor = LoadMonitor(reactor)
        self.tally = Tally()
        self.totals = Tally()
        self.events: list[dict[str, Any]] = []
        self.reported = 0
        self.active: set[Op] = set()
        self.sessions: dict[SoakSession, defer.Deferred[None]] = {}
        self.stopping = False
        self.started = self.now()
        self.idents = 0

    def record(self, kind: str, detail: str) -> None:
        """
        A problem: count it and keep its details.
        """
        self.tally.problems[kind] += 1
        if len(self.events) < 1000:
            self.events.append(
                {
                    "t": round(self.now() - self.started, 1),
                    "kind": kind,
                    "detail": detail,
                }
            )

    def sleep(self, seconds: float) -> defer.Deferred[None]:
        """
        Fire after ``seconds`` (cancellable).
        """
        return task.deferLater(self.reactor, seconds, lambda: None)

    def spawn(self) -> None:
        """
        Start one more session; replace it when it ends.
        """
        if self.stopping:
            return
        self.idents += 1
        soak = SoakSession(self, self.idents, random.Random(self.rng.random()))
        d = defer.Deferred.fromCoroutine(soak.run())
        self.sessions[soak] = d

        def ended(_: object) -> None:
            del self.sessions[soak]
            if not self.stopping:
                self.spawn()

        d.addBoth(ended)

    def tick(self) -> None:
        """
        Once a second: sample the load, look for stalls and hung closes.
        """
        self.monitor.sample()
        now = self.now()
        for op in list(self.active):
            if op.paused or op.stalled or now - op.lastProgress < STALL_SECONDS:
                continue
            op.stalled = True
            explained = self.monitor.saturated(op.lastProgress, now)
            kind = "explained-stall" if explained else "stall"
            op.problem(
                kind,
                f"no progress for {now - op.lastProgress:.0f} s ({op.describe()})"
                + ("; the client was saturated" if explained else ""),
            )
        for soak in list(self.sessions):
            started = soak.closeStarted
            if (
                started is None
                or soak.closed
                or soak.hung
                or now - started < HUNG_CLOSE_SECONDS
            ):
                continue
            soak.hung = True
            self.record("hung-close", soak.describeClose())
            # Free the slot: the close is reported; abort the connection.
            assert soak.session is not None
            cast(ITCPTransport, soak.session.transport).abortConnection()

    def report(self, number: int, phase: str, cpu: float, wall: float) -> None:
        """
        Emit one interval's line.
        """
        line = {
            "interval": number,
            "phase": phase,
            "seconds": round(self.now() - self.started, 1),
            "tally": self.tally.toJSON(),
            "cpuPercent": cpu / wall * 100 if wall > 0 else 0,
            **self.monitor.figures(),
            "sessionsOpen": sum(1 for s in self.sessions if s.session and not s.closed),
            "opsActive": len(self.active),
            "events": self.events[self.reported :],
        }
        self.reported = len(self.events)
        self.totals.add(self.tally)
        self.tally = Tally()
        self.emit(line)

    async def run(self) -> None:
        """
        Run the workload for ``seconds``, then close every session.
        """
        params, reactor = self.params, self.reactor
        self.monitor.start()
        ticker = task.LoopingCall(self.tick)
        ticker.clock = reactor
        ticker.start(1.0, now=False)
        self.started = self.now()
        for i in range(params.sessions):
            # Staggered, so the sessions do not start (nor end) in step.
            reactor.callLater(i * 0.05, self.spawn)
        end = self.started + params.seconds
        number = 0
        mark, cpu = self.now(), time.process_time()
        while True:
            number += 1
            due = min(self.started + number * params.interval, end)
            await self.sleep(max(0.0, due - self.now()))
            now, cpuNow = self.now(), time.process_time()
            self.report(number, "run", cpuNow - cpu, now - mark)
            mark, cpu = now, cpuNow
            if due >= end:
                break
        self.stopping = True
        for soak in list(self.sessions):
            soak.stop()
        await defer.DeferredList(list(self.sessions.values()))
        now, cpuNow = self.now(), time.process_time()
        self.report(number + 1, "close", cpuNow - cpu, now - mark)
        ticker.stop()
        self.monitor.stop()
        self.emit({"final": True, "totals": self.totals.toJSON()})


@implementer(ILogObserver)
class ErrorCounter:
    """
    A log observer that records the client's own errors (an exception in a
    channel protocol, say) as problems.
    """

    def __init__(self, client: SoakClient) -> None:
        self.client = client

    def __call__(self, event: dict[str, Any]) -> None:
        """
        Record an error or critical event.
        """
        level = event.get("log_level")
        if level in (LogLevel.error, LogLevel.critical):
            from twisted.logger import formatEvent

            text = formatEvent(event)
            failure = event.get("log_failure")
            if failure is not None:
                text += f": {failure.getTraceback()[-1500:]}"
            self.client.record("client-error", text)


async def runClient(reactor: workers.Reactor, params: SoakParams) -> None:
    """
    The client process.
    """
    client = SoakClient(reactor, params)
    globalLogBeginner.beginLoggingTo(
        [
            FilteringLogObserver(
                textFileLogObserver(sys.stderr),
                [LogLevelFilterPredicate(defaultLogLevel=LogLevel.warn)],
            ),
            ErrorCounter(client),
        ],
        redirectStandardIO=False,
    )
    parent = os.getppid()

    def orphaned() -> None:
        if os.getppid() != parent:
            os._exit(3)

    watch = task.LoopingCall(orphaned)
    watch.clock = reactor
    watch.start(1.0, now=False)
    workers.emit({"ready": True})
    await client.run()


# ---------------------------------------------------------------- the harness


def known(figure: float) -> float | None:
    """
    ``figure``, or None where it could not be measured (the process is
    gone: negative or NaN).
    """
    return None if math.isnan(figure) or figure < 0 else figure


def fdCount(pid: int) -> int:
    """
    How many file descriptors process ``pid`` has open (-1 if unknown).
    """
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return -1


class ProcessWatch:
    """
    Samples the server's RSS and descriptors twice a second; for each
    interval, the server's figures and both processes' CPU.
    """

    def __init__(self, reactor: Reactor, server: int, client: int) -> None:
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
        rss, fds = workers.rssBytes(self.server), fdCount(self.server)
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
            peak = max(peak, workers.rssBytes(self.server, "VmHWM"))
            resetPeak(self.server)
        rss, fds = workers.rssBytes(self.server), fdCount(self.server)
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


async def stopServer(reactor: Reactor, server: ChildProcess) -> tuple[bool, float]:
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


async def runSoak(reactor: Reactor, args: argparse.Namespace) -> int:
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
        try:
            server, port, log = await startTwistd(reactor, where, args.server_option)
        except RuntimeError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        params = paramsFrom(args, port)
        say(
            f"server: twistd -n memux {' '.join(args.server_option)} (defaults"
            f" otherwise), pid {server.pid}, port {port}",
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
        startRss, startFds = workers.rssBytes(server.pid), fdCount(server.pid)
        client = spawnChild(
            reactor,
            ["-m", "memux._soak", "--client", json.dumps(dataclasses.asdict(params))],
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
        afterRss, afterFds = workers.rssBytes(server.pid), fdCount(server.pid)
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

    async def run(reactor: Reactor) -> None:
        status.append(await runSoak(reactor, args))

    try:
        task.react(run)
    except SystemExit:
        pass
    return status[0] if status else 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
