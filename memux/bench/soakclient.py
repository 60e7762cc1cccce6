# -*- test-case-name: memux.test.test_soak -*-
"""
The soak test's client process (``python -m memux.bench.soak --client
PARAMS``): it keeps ``sessions`` sessions (`SoakSession`) open against the
server, each running ``lanes`` operations at a time (`OPS`, paced by a
`Budget`) for a random lifetime, then closing in one of `CLOSE_MODES` and
replaced; it watches for stalls and hung closes once a second and reports
each interval as a JSON line (`SoakClient`).
"""

from __future__ import annotations

import json
import os
import random
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, cast

from twisted.internet import defer, task
from twisted.internet.interfaces import IDelayedCall, ITCPTransport
from twisted.logger import (
    FilteringLogObserver,
    ILogObserver,
    LogLevel,
    LogLevelFilterPredicate,
    formatEvent,
    globalLogBeginner,
    textFileLogObserver,
)
from twisted.python.failure import Failure
from zope.interface import implementer

from memux.bench.peers import clientEndpoint
from memux.bench.processes import Reactor, emit
from memux.bench.report import KiB
from memux.bench.soakbase import (
    ECHO_PERIOD,
    MAX_MESSAGE,
    STALL_SECONDS,
    Budget,
    LoadMonitor,
    Pattern,
    Tally,
    chargenPeriod,
)
from memux.bench.soakops import (
    Churn,
    EchoChunks,
    EchoMessages,
    Op,
    Ping,
    describeReason,
)
from memux.bench.soakstreams import (
    AbortDownload,
    AbortEcho,
    Download,
    EchoStream,
    HalfClose,
    Upload,
)
from memux.protocol import MemuxProtocol, connectSession

__all__ = ["OPS", "SoakClient", "SoakParams", "SoakSession", "runClient"]


#: a session close not complete this long after it began is hung
HUNG_CLOSE_SECONDS = 30.0
#: how long a clean close waits for the session's operations to finish first
DRAIN_SECONDS = STALL_SECONDS + 15.0
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
        endpoint = clientEndpoint(
            client.reactor, {"tls": client.params.tls}, client.port
        )
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
    #: the server's certificate (PEM), to connect over TLS trusting it;
    #: empty: plain TCP
    tls: str = ""

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
        reactor: Reactor,
        params: SoakParams,
        emit: Callable[[dict[str, Any]], None] = emit,
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
            text = formatEvent(event)
            failure = event.get("log_failure")
            if failure is not None:
                text += f": {failure.getTraceback()[-1500:]}"
            self.client.record("client-error", text)


async def runClient(reactor: Reactor, params: SoakParams) -> None:
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
    emit({"ready": True})
    await client.run()
