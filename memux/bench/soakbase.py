# -*- test-case-name: memux.test.test_soak -*-
"""
The soak test's foundations: the byte patterns every byte that comes back
is checked against (`Pattern`, `StreamCheck`, RFC 864's `chargenPeriod`),
the sizes of messages and writes, the token bucket that paces the workload
(`Budget`), the client's own load (`LoadMonitor`: whether a stall may be
the client's fault), and what the workload did and saw (`Tally`).
"""

from __future__ import annotations

import math
import random
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from twisted.internet import defer
from twisted.internet.interfaces import IDelayedCall, IReactorTime

from memux.bench.report import KiB, MiB, percentile

__all__ = [
    "Budget",
    "LoadMonitor",
    "Pattern",
    "StreamCheck",
    "Tally",
    "chargenPeriod",
    "messageSize",
    "pieceSize",
]


#: an operation with no progress for this long is stalled
STALL_SECONDS = 30.0
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
    return percentile(seconds, fraction) * 1000 if seconds else None


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
