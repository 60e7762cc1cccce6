# -*- test-case-name: memux.test.test_attackbench -*-
"""
Hostile peers for ``python -m memux.attackbench``: raw connections that
craft memux frames to attack a server (one `Attacker` subclass per attack
class of ``doc/security.rst``), and the `Campaign` that keeps a number of
them going, replacing each the server closes, and records how each ended.
The frames come from `memux.bench.frames`.
"""

from __future__ import annotations

import socket
import statistics
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, cast

from twisted.internet import defer, task
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.error import ConnectingCancelledError
from twisted.internet.interfaces import (
    IConsumer,
    IPushProducer,
    ISystemHandle,
    ITCPTransport,
)
from twisted.internet.protocol import Protocol, connectionDone
from twisted.python.failure import Failure
from zope.interface import implementer

from memux.bench.frames import (
    MAGIC,
    VERSION,
    ChannelCreditFrame,
    CreditFrame,
    DataFrame,
    DropFrame,
    FrameDecoder,
    GoAwayFrame,
    OpenFrame,
    PingFrame,
    Preface,
    ResetFrame,
    encodeDataHeader,
    encodePreface,
    encodeVarint,
)
from memux.bench.processes import LOOPBACK, Reactor
from memux.codes import ErrorCode, ProtocolError, describeCode
from memux.settings import Settings

__all__ = ["Attacker", "Campaign", "Ending"]

#: credit an attacker grants when it wants the server to send all it can
HUGE_CREDIT = 1 << 40
#: Linux TCP states (tcp_info.tcpi_state) meaning the server has closed
TCP_CLOSED_STATES = frozenset((7, 8))  # TCP_CLOSE, TCP_CLOSE_WAIT
#: the most an attacker reads of what is left once its connection is lost
DRAIN_LIMIT = 4 * 1024 * 1024

#: Seconds between looks at a non-reading attacker's TCP state.
WATCH_INTERVAL = 0.02


@dataclass(frozen=True)
class Ending:
    """
    What became of one attacker connection, and after how long.
    """

    what: str
    seconds: float


@implementer(IPushProducer)
class Attacker(Protocol):
    """
    One raw attacker connection: it sends its preface (unless told not
    to), waits for the server's, then writes `nextBatch` as fast as the
    connection takes it until that returns None.  It decodes what the
    server sends, to learn its settings, the credit and channels it grants
    and any GOAWAY; one whose ``reads`` is false stops reading once it has
    the server's preface (until the attack ends).
    """

    reads: ClassVar[bool] = True
    sendPreface: ClassVar[bool] = True
    #: what the attacker announces
    settings: ClassVar[Settings] = Settings()
    service: ClassVar[bytes] = b"echo"

    def __init__(self, campaign: Campaign) -> None:
        self.campaign = campaign
        self.decoder = FrameDecoder(self.settings.maxFrameSize)
        self.server = Settings()
        self.goAway: int | None = None
        self.started = 0.0
        self.handle: socket.socket | None = None
        self.throttled = False
        self.pumping = False
        self.halted = False
        self.openAtHalt = False
        self.begun = False
        # A connection that does not read learns of the server closing it
        # only when it reads again: watch the socket's TCP state instead,
        # for when it really closed.
        self.closedAt: float | None = None
        self.watch: task.LoopingCall | None = None
        # What the server lets us send: channel-count and credit limits.
        self.channelLimit = 0
        self.opened = 0
        self.sessionLimit = 0
        self.sessionSent = 0
        self.creditLimits: dict[int, int] = {}
        self.sentOn: dict[int, int] = {}

    # -- connection

    def connectionMade(self) -> None:
        """
        Keep a duplicate of the socket (to read what the server said even
        after a reset), register as producer, send the preface.
        """
        self.started = time.monotonic()
        transport = self.transport
        assert transport is not None
        system = ISystemHandle(transport, None)
        if system is not None:
            self.handle = cast(socket.socket, system.getHandle()).dup()
        cast(IConsumer, transport).registerProducer(self, True)
        if self.sendPreface:
            self.write(encodePreface(self.settings))

    def write(self, data: bytes) -> None:
        """
        Send ``data``, counting it.
        """
        assert self.transport is not None
        self.campaign.bytesSent += len(data)
        self.transport.write(data)

    def dataReceived(self, data: bytes) -> None:
        """
        Decode what the server sends.
        """
        self.decode(data)

    def decode(self, data: bytes) -> None:
        """
        Learn from the server's frames; start the attack on its preface.
        """
        try:
            items = self.decoder.receive(data)
        except ProtocolError:
            return
        for item in items:
            if isinstance(item, Preface):
                self.server = item.settings
                self.channelLimit = item.settings.initialMaxChannels
                self.sessionLimit = item.settings.initialSessionCredit
                if not self.begun and not self.halted:
                    self.begun = True
                    if not self.reads:
                        cast(IPushProducer, self.transport).pauseProducing()
                        self.watch = task.LoopingCall(self.watchState)
                        self.watch.clock = self.campaign.reactor
                        self.watch.start(WATCH_INTERVAL, now=False)
                    self.begin()
            elif isinstance(item, GoAwayFrame):
                self.goAway = item.code
            elif isinstance(item, CreditFrame):
                if item.channel == 0:
                    self.sessionLimit = max(self.sessionLimit, item.limit)
                else:
                    self.creditLimits[item.channel] = item.limit
                self.wake()
            elif isinstance(item, ChannelCreditFrame):
                self.channelLimit = max(self.channelLimit, item.limit)
                self.wake()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        """
        Read what is left (a GOAWAY may sit unread behind a reset), then
        report how this connection ended.
        """
        if self.watch is not None and self.watch.running:
            self.watch.stop()
        handle, self.handle = self.handle, None
        if handle is not None:
            drained = 0
            try:
                while drained < DRAIN_LIMIT:
                    data = handle.recv(65536)
                    if not data:
                        break
                    drained += len(data)
                    self.decode(data)
            except OSError:
                pass
            finally:
                handle.close()
        what = "open" if self.halted and self.openAtHalt else "closed"
        if self.goAway is not None:
            what += f" (GOAWAY {describeCode(self.goAway)})"
        elif what == "closed":
            what += " (no GOAWAY)"
        end = self.closedAt if self.closedAt is not None else time.monotonic()
        self.campaign.ended(self, Ending(what, end - self.started))

    def watchState(self) -> None:
        """
        Note when the server closed the connection (see `closedAt`).
        """
        if self.closedAt is None and tcpState(self.handle) in TCP_CLOSED_STATES:
            self.closedAt = time.monotonic()

    # -- the attack

    def begin(self) -> None:
        """
        The server's preface is in: start.
        """
        self.wake()

    def nextBatch(self) -> bytes | None:
        """
        The next bytes to send, or None when there is nothing to send now.
        """
        return None

    def wake(self) -> None:
        """
        Write batches until the connection pushes back or none is left.
        """
        if self.pumping or not self.begun:
            return
        self.pumping = True
        try:
            while not self.throttled and not self.halted:
                batch = self.nextBatch()
                if batch is None:
                    break
                self.write(batch)
        finally:
            self.pumping = False

    def pauseProducing(self) -> None:
        """
        The connection's buffer is full.
        """
        self.throttled = True

    def resumeProducing(self) -> None:
        """
        The connection takes more.
        """
        self.throttled = False
        self.wake()

    def stopProducing(self) -> None:
        """
        The connection is going.
        """
        self.halted = True

    def halt(self) -> None:
        """
        The attack is over: send no more; note whether the server had
        closed the connection; read again, to see any GOAWAY.
        """
        self.openAtHalt = self.reads or tcpState(self.handle) not in TCP_CLOSED_STATES
        self.halted = True
        if not self.reads and self.begun and self.transport is not None:
            cast(IPushProducer, self.transport).resumeProducing()

    # -- helpers for attacks

    def openChannels(self, count: int, lossy: bool = False) -> bytes:
        """
        OPEN frames for ``count`` more channels of our service (odd ids:
        we are the client), ``lossy`` ones if asked.
        """
        first = self.opened
        self.opened += count
        return b"".join(
            OpenFrame(2 * n + 1, self.service, lossy=lossy).encode()
            for n in range(first, self.opened)
        )

    def room(self, channel: int) -> int:
        """
        How many DATA payload bytes the server's credit lets us send on
        ``channel`` now.
        """
        limit = self.creditLimits.get(channel, self.server.initialChannelCredit)
        return min(
            limit - self.sentOn.get(channel, 0), self.sessionLimit - self.sessionSent
        )

    def data(self, channel: int, payload: bytes, end: bool = False) -> bytes:
        """
        A DATA frame, counted against the credit.
        """
        self.sentOn[channel] = self.sentOn.get(channel, 0) + len(payload)
        self.sessionSent += len(payload)
        return DataFrame(channel, payload, end=end).encode()


def tcpState(handle: socket.socket | None) -> int | None:
    """
    The Linux TCP state of ``handle`` (None where unknown).
    """
    option = getattr(socket, "TCP_INFO", None)
    if handle is None or option is None:
        return None
    try:
        return handle.getsockopt(socket.IPPROTO_TCP, option, 1)[0]
    except OSError:
        return None


class RapidReset(Attacker):
    """
    OPEN a channel and RESET it at once, over and over, within the
    channel-count credit (CVE-2023-44487).
    """

    def nextBatch(self) -> bytes | None:
        count = min(256, self.channelLimit - self.opened)
        if count <= 0:
            return None
        first = self.opened
        self.opened += count
        return b"".join(
            OpenFrame(2 * n + 1, self.service).encode()
            + ResetFrame(2 * n + 1, ErrorCode.CANCEL).encode()
            for n in range(first, self.opened)
        )


class PingFlood(Attacker):
    """
    PING as fast as the server reads, never reading the answers.
    """

    reads = False
    BATCH = PingFrame(b"12345678").encode() * 1024

    def nextBatch(self) -> bytes | None:
        return self.BATCH


class EmptyFrames(Attacker):
    """
    On one open channel: empty DATA frames and CREDIT frames that raise
    nothing, as fast as the server reads.
    """

    def nextBatch(self) -> bytes | None:
        if not self.opened:
            return self.openChannels(1)
        noOp = CreditFrame(0, self.settings.initialSessionCredit).encode()
        return (DataFrame(1).encode() + noOp) * 512


class DropFlood(Attacker):
    """
    On one lossy channel, DROP frames as fast as the server reads, with no
    data between them: each tells of messages "discarded" that were never
    there.
    """

    def nextBatch(self) -> bytes | None:
        if not self.opened:
            return self.openChannels(1, lossy=True)
        return DropFrame(1, 1).encode() * 1024


class Dribble(Attacker):
    """
    Over many echo channels, 1-byte DATA chunks (never ending a message),
    each with a CREDIT raising that channel's window by one byte.
    """

    CHANNELS = 1000
    settings = Settings(initialSessionCredit=HUGE_CREDIT)

    def __init__(self, campaign: Campaign) -> None:
        super().__init__(campaign)
        self.rounds = 0

    def nextBatch(self) -> bytes | None:
        channels = min(self.CHANNELS, self.channelLimit)
        if self.opened < channels:
            return self.openChannels(channels - self.opened)
        if self.room(1) < 1 or self.sessionLimit - self.sessionSent < channels:
            return None
        self.rounds += 1
        window = self.settings.initialChannelCredit + self.rounds
        return b"".join(
            self.data(c, b"x") + CreditFrame(c, window).encode()
            for c in range(1, 2 * channels, 2)
        )


class NeverRead(Attacker):
    """
    Fill every echo channel the server's session credit allows with
    messages (full frames), never reading the echoes: the server must
    hold what it cannot send.
    """

    reads = False
    settings = Settings(
        initialChannelCredit=HUGE_CREDIT, initialSessionCredit=HUGE_CREDIT
    )

    def __init__(self, campaign: Campaign) -> None:
        super().__init__(campaign)
        self.turn = 0

    def nextBatch(self) -> bytes | None:
        if not self.opened:
            wanted = -(
                -self.server.initialSessionCredit // self.server.initialChannelCredit
            )
            return self.openChannels(min(wanted, self.channelLimit))
        size = min(self.server.maxFrameSize, 65536)
        for _ in range(self.opened):
            channel = 2 * (self.turn % self.opened) + 1
            self.turn += 1
            room = min(size, self.room(channel))
            if room > 0:
                return self.data(channel, b"e" * room, end=True)
        return None


class NeverReadChargen(Attacker):
    """
    Open chargen channels with unbounded credit and never read.
    """

    reads = False
    settings = NeverRead.settings
    service = b"chargen"
    CHANNELS = 16

    def nextBatch(self) -> bytes | None:
        if self.opened:
            return None
        return self.openChannels(min(self.CHANNELS, self.channelLimit))


class ChannelFlood(Attacker):
    """
    Open one channel more than the server's channel-count credit.
    """

    def nextBatch(self) -> bytes | None:
        if self.opened:
            return None
        return self.openChannels(self.channelLimit + 1)


class IdleChannels(Attacker):
    """
    Open as many channels as the server allows and never use them.
    """

    def nextBatch(self) -> bytes | None:
        if self.opened >= self.channelLimit:
            return None
        return self.openChannels(self.channelLimit - self.opened)


class OversizedFrame(Attacker):
    """
    A DATA header announcing 16 MiB - 1 bytes (the largest frame any
    server may accept, far over the default maximum), then one byte.
    """

    def nextBatch(self) -> bytes | None:
        if self.opened:
            return None
        return self.openChannels(1) + encodeDataHeader(1, (1 << 24) - 1, 0) + b"x"


class EndlessMessage(Attacker):
    """
    One message that never ends (far over the server's maximum message
    size) to echo, as fast as the server's credit allows, reading the
    echo.
    """

    settings = NeverRead.settings

    def nextBatch(self) -> bytes | None:
        if not self.opened:
            return self.openChannels(1)
        room = min(self.server.maxFrameSize, 65536, self.room(1))
        return self.data(1, b"m" * room) if room > 0 else None


def paddedPreface(length: int = 1000) -> bytes:
    """
    A valid preface made long with settings of unknown ids (which a
    receiver ignores).
    """
    block = b""
    sid = 0x100
    while len(block) + 3 <= length:
        block += encodeVarint(sid) + encodeVarint(0)
        sid += 1
    return MAGIC + encodeVarint(VERSION) + encodeVarint(len(block)) + block


class Slowloris(Attacker):
    """
    Send a (long) preface one byte a second.
    """

    sendPreface = False
    PREFACE = paddedPreface()

    def begin(self) -> None:
        self.sentBytes = 0
        self.dribble = task.LoopingCall(self.nextByte)
        self.dribble.clock = self.campaign.reactor
        self.dribble.start(1.0)

    def nextByte(self) -> None:
        """
        One more byte of the preface.
        """
        if self.halted or self.sentBytes >= len(self.PREFACE):
            self.dribble.stop()
            return
        self.write(self.PREFACE[self.sentBytes : self.sentBytes + 1])
        self.sentBytes += 1


#: The start of a TLS 1.2 ClientHello record.
TLS_HELLO = (
    bytes.fromhex("16030100c8010000c40303") + bytes(32) + b"\x00\x00\x02\x13\x01"
)


class GarbagePreface(Attacker):
    """
    Connect and send an HTTP/1 request or the start of a TLS ClientHello
    instead of a memux preface (alternately).
    """

    sendPreface = False
    count = 0

    def connectionMade(self) -> None:
        super().connectionMade()
        GarbagePreface.count += 1
        if GarbagePreface.count % 2:
            self.write(b"GET / HTTP/1.1\r\nHost: memux\r\n\r\n")
        else:
            self.write(TLS_HELLO)


# ---------------------------------------------------------------- campaigns


class Campaign:
    """
    One attack in progress: ``connections`` attacker connections, each
    replaced as soon as the server closes it (as a real attacker would).
    """

    def __init__(
        self,
        reactor: Reactor,
        port: int,
        attacker: Callable[[Campaign], Attacker],
        connections: int,
    ) -> None:
        self.reactor = reactor
        self.endpoint = TCP4ClientEndpoint(reactor, LOOPBACK, port)
        self.attacker = attacker
        self.connections = connections
        self.running = False
        self.live: set[Attacker] = set()
        self.connecting: set[defer.Deferred[Attacker]] = set()
        self.endings: list[Ending] = []
        self.bytesSent = 0
        self.emptied: defer.Deferred[None] | None = None

    def start(self) -> None:
        """
        Open the connections.
        """
        self.running = True
        for _ in range(self.connections):
            self.connect()

    def connect(self) -> None:
        """
        Open one attacker connection.
        """
        d = connectProtocol(self.endpoint, self.attacker(self))
        self.connecting.add(d)

        def connected(attacker: Attacker) -> None:
            self.connecting.discard(d)
            self.live.add(attacker)

        def failed(reason: Failure) -> None:
            self.connecting.discard(d)
            if reason.check(defer.CancelledError, ConnectingCancelledError):
                return
            self.endings.append(Ending(f"connect failed: {reason.value}", 0.0))
            if self.running:
                self.reactor.callLater(0.1, self.connect)

        d.addCallbacks(connected, failed)

    def ended(self, attacker: Attacker, ending: Ending) -> None:
        """
        One connection ended; replace it while the attack runs.
        """
        self.live.discard(attacker)
        self.endings.append(ending)
        if self.running:
            self.connect()
        if not self.live and self.emptied is not None:
            emptied, self.emptied = self.emptied, None
            emptied.callback(None)

    async def stop(self, drain: float) -> None:
        """
        End the attack: halt every connection, give the server ``drain``
        seconds to say (and do) what it will, then close what is left.
        """
        self.running = False
        for d in list(self.connecting):
            d.cancel()
        for attacker in list(self.live):
            attacker.halt()
        if not await self.waitEmpty(drain):
            for attacker in list(self.live):
                if attacker.transport is not None:
                    cast(ITCPTransport, attacker.transport).abortConnection()
            await self.waitEmpty(5)

    async def waitEmpty(self, timeout: float) -> bool:
        """
        Wait until no connection is left (True) or ``timeout`` (False).
        """
        if not self.live:
            return True
        self.emptied = defer.Deferred()
        self.emptied.addTimeout(timeout, self.reactor)
        try:
            await self.emptied
        except defer.TimeoutError:
            self.emptied = None
            return False
        return True

    def summary(self) -> dict[str, Any]:
        """
        What became of the attacker's connections.
        """
        closed = [e.seconds for e in self.endings if e.what.startswith("closed")]
        return {
            "connections": len(self.endings),
            "outcomes": dict(Counter(e.what for e in self.endings).most_common()),
            "medianSecondsToClose": statistics.median(closed) if closed else None,
            "bytesSent": self.bytesSent,
        }
