# -*- test-case-name: memux.test.test_soak -*-
"""
The soak test's operations: what one is (`Op`; `ChannelOp`, on a channel of
its own: progress, random pauses of its reader, and how the channel's end
is judged), and the message operations: whole messages echoed
(`EchoMessages`, `EchoChunks`), bursts of channel churn (`Churn`) and pings
(`Ping`).  The stream operations are in `memux.bench.soakstreams`.

An operation sees its session and the client process only as `Owner` and
`Client` (`memux.bench.soakclient` implements them).
"""

from __future__ import annotations

import random
import typing
from collections import Counter, deque
from typing import ClassVar, cast

from twisted.internet import defer
from twisted.internet.error import ConnectionAborted, ConnectionDone
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.protocol import Protocol, connectionDone
from twisted.python.failure import Failure
from zope.interface import implementer

from memux.bench.peers import OneFactory
from memux.bench.report import KiB
from memux.bench.soakbase import ECHO_PERIOD, Pattern, Tally, messageSize
from memux.codes import ErrorCode
from memux.error import SessionLost
from memux.interfaces import IChunkReceiver, IMessageReceiver
from memux.protocol import ChannelTransport, MemuxProtocol

__all__ = [
    "ChannelOp",
    "Churn",
    "Client",
    "EchoBase",
    "EchoChunks",
    "EchoMessages",
    "Op",
    "Owner",
    "Ping",
    "cutOff",
]


#: the channels of one churn burst
CHURN_CHANNELS = 500
#: the budget one churn channel costs, in bytes: roughly what moving that
#: many bytes costs the client in CPU
CHURN_CHANNEL_COST = 24 * KiB
#: the share of reading operations whose reader pauses and resumes at random
PAUSE_SHARE = 0.3


class Client(typing.Protocol):
    """
    What an operation needs of the client process that runs it.
    """

    @property
    def reactor(self) -> IReactorTime:
        """
        The reactor.
        """

    @property
    def echo(self) -> Pattern:
        """
        The pattern echoed bytes come from.
        """

    @property
    def chargen(self) -> Pattern:
        """
        RFC 864's pattern.
        """

    @property
    def tally(self) -> Tally:
        """
        The current interval's tally.
        """

    @property
    def active(self) -> set[Op]:
        """
        The operations under way, for the stall watchdog.
        """

    def now(self) -> float:
        """
        The time.
        """

    def record(self, kind: str, detail: str) -> None:
        """
        Record a problem.
        """


class Owner(typing.Protocol):
    """
    What an operation needs of the session that runs it.
    """

    #: whether a churn burst is under way (only one at a time)
    churning: bool
    #: its operations under way
    activeOps: int

    @property
    def client(self) -> Client:
        """
        The client process.
        """

    @property
    def rng(self) -> random.Random:
        """
        The session's random numbers.
        """

    @property
    def ident(self) -> int:
        """
        The session's number, for reports.
        """

    @property
    def session(self) -> MemuxProtocol | None:
        """
        The memux session, once connected.
        """

    @property
    def closingByUs(self) -> bool:
        """
        Whether the workload is closing the session.
        """

    @property
    def cutting(self) -> bool:
        """
        Whether that close may cut operations off.
        """

    def opBegan(self) -> None:
        """
        One of its operations began.
        """


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

    def __init__(self, owner: Owner) -> None:
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
        d = session.openChannel(self.service, OneFactory(lambda: self))
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


# ---------------------------------------------------------------- messages


class EchoBase(ChannelOp):
    """
    Send 1 to 8 whole messages of 0 B to 2 MiB to ``echo``, up to 4 at a
    time, and check that each comes back whole, in order and unchanged.
    (No receiver interface: memux would deliver whole messages to a class
    that inherited `IMessageReceiver`, whatever else it declares.)
    """

    reads = True

    def __init__(self, owner: Owner) -> None:
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

    def __init__(self, owner: Owner) -> None:
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


# ---------------------------------------------------------------- churn and pings


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

    def __init__(self, owner: Owner) -> None:
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

    def __init__(self, owner: Owner) -> None:
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
