# -*- test-case-name: memux.test.test_protocol -*-
"""
The Twisted front end of memux: `MemuxProtocol` runs a session over any
byte-stream transport (TCP, TLS, UNIX, a channel of another session), and
gives each channel a `ChannelTransport` (see `memux.transport`), a drop-in
transport for unmodified Twisted protocols.

This layer is an adapter: what a session does lives in the sans-IO
`memux._session.SessionCore` (and the engine beneath it).  Here, bytes go
in and out, one ``DelayedCall`` runs the core's timers, the reactor's turns
schedule flushes and the slicing of input floods, channels get Twisted
protocols from factories, and what the core reports is logged.  Twisted
tuning of the connection is `memux._tuning`'s.
"""

from __future__ import annotations

import itertools
import socket
import sys
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, cast

from twisted.internet import defer
from twisted.internet.error import ConnectionClosed, ConnectionDone
from twisted.internet.interfaces import (
    IAddress,
    IDelayedCall,
    IProtocol,
    IProtocolFactory,
    IProtocolNegotiationFactory,
    IPushProducer,
    IReactorTime,
    IStreamClientEndpoint,
)
from twisted.internet.protocol import BaseProtocol, Factory, Protocol, connectionDone
from twisted.internet.task import CooperativeTask, Cooperator
from twisted.logger import Logger, LogLevel
from twisted.python.failure import Failure
from zope.interface import alsoProvides, implementer

from memux._channel import Delivery, Ending
from memux._engine import ChannelOpened, MemuxEngine

# (LOGGED_CHANNEL_ENDINGS: the core's, and named here as it always was.)
from memux._session import LOGGED_CHANNEL_ENDINGS as LOGGED_CHANNEL_ENDINGS
from memux._session import Notice, SessionCore, chooseService
from memux._tuning import (
    BULK_NOTSENT_LOWAT,
    BULK_READ_SIZE,
    DIRECT_WRITE_BYTES,
    GATHER_PIECES,
    LATENCY_NOTSENT_LOWAT,
    NOTSENT_LOWAT,
    TLS_FLUSH_BYTES,
    TLS_RECORD_BYTES,
    TWISTED_BULK_LEAVE_READS,
    TWISTED_SHORT_READ_COST,
    BulkReads,
    InputSlice,
    directSocket,
    keepReadsInHeap,
    limitUnsent,
    newInputCooperator,
    overTLS,
    sendDirect,
    tcpTransport,
    tlsLayer,
    tlsWriter,
    tuneConnection,
    whenTLSClosing,
)
from memux.codes import ErrorCode, describeCode
from memux.error import ChannelRefused, SessionLost, describeService
from memux.introspect import FactorySnapshot, SessionCounters, SessionSnapshot, Totals
from memux.settings import (
    ALPN,
    DEFAULT_URGENCY,
    DEFAULT_WEIGHT,
    Priority,
    SessionSettings,
    Settings,
    checkPriority,
)
from memux.transport import (
    ChannelAddress,
    ChannelTransport,
    describeAddress,
    failureFor,
)

__all__ = [
    "ChannelAddress",
    "ChannelEndpoint",
    "ChannelRequest",
    "ChannelTransport",
    "MemuxProtocol",
    "MultiplexingFactory",
    "connectSession",
]

#: What `BaseProtocol.makeConnection` does, the channels of a protocol that
#: inherits it get inline (see `MemuxProtocol.openChannel`).
_PLAIN_MAKE_CONNECTION: Any = BaseProtocol.makeConnection

#: How many transports deep `MemuxProtocol` looks for a connection being
#: closed under it: TLS over HAProxy's wrapper over TCP is three.
_WRAPPERS = 4


@dataclass(frozen=True)
class ChannelRequest:
    """
    What the peer asked for when it opened a channel; passed to a
    services callable, which returns a factory or None to refuse.
    """

    service: bytes
    metadata: bytes | None
    destination: tuple[str, int] | None
    channel: int
    lossy: bool
    session: MemuxProtocol


ServiceMap = Mapping[bytes, IProtocolFactory]
ServiceResolver = Callable[[ChannelRequest], "IProtocolFactory | None"]


def _resolverFor(services: ServiceMap | ServiceResolver) -> ServiceResolver:
    if callable(services) and not isinstance(services, Mapping):
        return services
    mapping = services

    def resolve(request: ChannelRequest) -> IProtocolFactory | None:
        return mapping.get(request.service)

    return resolve


#: (A name of this module's: `test_tuning` watches the sends through it.)
_sendDirect = sendDirect


class _Host:
    """
    What `SessionCore` asks of its front end (`memux._session.SessionHost`),
    done with Twisted for one `MemuxProtocol`: its connection, its reactor,
    its log.
    """

    __slots__ = ("_proto", "channelRequested", "notice")

    def __init__(self, proto: MemuxProtocol) -> None:
        #: the session (`ChannelTransport.session` reads it here)
        self._proto = proto
        # The protocol's own methods, bound once: a call less per channel.
        self.channelRequested: Callable[[ChannelOpened], ChannelTransport | str] = (
            proto._channelRequested
        )
        self.notice: Callable[[Notice], None] = proto._notice

    def now(self) -> float:
        return self._proto._reactor.seconds()

    def write(self, pieces: list[bytes]) -> None:
        proto = self._proto
        connection: Any = proto.transport
        if len(pieces) > GATHER_PIECES:
            # Many small frames: one string (Twisted checks each piece of a
            # writeSequence with a Python call; a send gathers few).
            pieces = [b"".join(pieces)]
        tlsWrite = proto._tlsWrite
        if tlsWrite is not None:
            # (Not held for the next turn: see `tlsWriter`.)
            data = pieces[0] if len(pieces) == 1 else b"".join(pieces)
            if proto._inInputStep:
                proto._gather(data)
            else:
                if proto._gathered is not None:
                    proto._writeGathered()
                tlsWrite(data)
            return
        sock = proto._directSocket
        if (
            sock is not None
            and (len(pieces[0]) if len(pieces) == 1 else sum(map(len, pieces)))
            <= DIRECT_WRITE_BYTES
            and not connection._tempDataLen
            and not connection.dataBuffer
            and connection.connected
            and not connection.disconnecting
            and not connection._writeDisconnecting
        ):
            # A small flush, and nothing waits in the transport: the kernel
            # takes what it can now (see `directSocket`), and the transport
            # only the rest.
            pieces = _sendDirect(sock, pieces)
            if not pieces:
                return
        if len(pieces) == 1:
            connection.write(pieces[0])
        else:
            # A few large chunks: the transport gathers its buffer anyway,
            # so each payload byte is copied once, not twice.
            connection.writeSequence(pieces)

    def closeConnection(self) -> None:
        self._proto._writeGathered()  # (over TLS: see `MemuxProtocol._gather`)
        # Unregister as its producer first: Twisted's TLS layer (and a TCP
        # transport whose producer is paused) waits for that before it
        # really closes.
        connection: Any = self._proto.transport
        connection.unregisterProducer()
        connection.loseConnection()

    def abortConnection(self) -> None:
        self._proto._writeGathered(discard=True)  # (as what is unsent)
        connection: Any = self._proto.transport
        abort = getattr(connection, "abortConnection", None)
        if abort is not None:
            abort()
        else:
            connection.loseConnection()

    def connectionClosing(self) -> bool:
        # Someone closed the connection (``session.transport.loseConnection()``),
        # or, beneath a wrapper such as TLS, the wrapper closed the
        # connection under it (TLS does when the peer's close_notify
        # arrives, while it still holds us as its producer).
        if self._proto._closedUnder:
            return True  # (see `whenTLSClosing`)
        transport: Any = self._proto.transport
        for _ in range(_WRAPPERS):
            if transport is None:
                return False
            if getattr(transport, "disconnecting", False):
                return True
            transport = getattr(transport, "transport", None)
        return False

    def flushSoon(self) -> Delivery:
        return self._proto._reactor.callLater(0, self._proto._flushNow)

    def wakeAt(self, deadline: float | None) -> None:
        proto = self._proto
        if deadline is None:
            if proto._timerCall is not None and proto._timerCall.active():
                proto._timerCall.cancel()
            proto._timerCall = proto._timerAt = None
            return
        if proto._timerAt is not None and proto._timerAt <= deadline:
            return  # it wakes earlier anyway, and looks again then
        if proto._timerCall is not None and proto._timerCall.active():
            proto._timerCall.cancel()
        proto._timerAt = deadline
        delay = max(0.0, deadline - proto._reactor.seconds())
        proto._timerCall = proto._reactor.callLater(delay, proto._timerFired)

    def callSoon(self, f: Callable[..., object], *args: object) -> Delivery:
        return self._proto._reactor.callLater(0, f, *args)

    def pingAnswered(self, payload: bytes, rtt: float) -> None:
        d = self._proto._pings.pop(payload, None)
        if d is not None:
            d.callback(rtt)

    def bulkMode(self, on: bool) -> None:
        proto = self._proto
        limitUnsent(proto.transport, BULK_NOTSENT_LOWAT if on else NOTSENT_LOWAT)
        if proto._tls:
            proto._bulkSendingOverTLS(on)

    def latencyMode(self, on: bool) -> None:
        # (Bulk mode is off meanwhile: the normal limit after it.)
        proto = self._proto
        limit = LATENCY_NOTSENT_LOWAT if on else NOTSENT_LOWAT
        limitUnsent(proto.transport, limit)
        if proto._tls:
            proto._tlsReadsForLatency(on)


class MemuxProtocol(Protocol):
    """
    One memux session over one connection: the `IProtocol` to run over
    TCP, TLS or any stream transport.

    Channels the peer opens are handed to the factory that ``services``
    gives for them; `openChannel` opens channels to the peer.
    """

    _log = Logger()

    def __init__(
        self,
        services: ServiceMap | ServiceResolver | None = None,
        *,
        client: bool = False,
        settings: SessionSettings | None = None,
        reactor: IReactorTime | None = None,
    ) -> None:
        if reactor is None:
            from twisted.internet import reactor as globalReactor

            reactor = cast(IReactorTime, globalReactor)
        self._reactor = reactor
        if services is None:
            services = {}
        self._resolve = _resolverFor(services)
        # A plain mapping is looked up directly: no ChannelRequest per channel.
        self._serviceMap: ServiceMap | None = (
            None if self._resolve is services else cast(ServiceMap, services)
        )
        self.client = client
        self.settings = settings or SessionSettings()
        self._core = SessionCore(_Host(self), client, self.settings)
        # The connection's addresses, cached once final: from the first
        # bytes received on.  Before that a wrapper may still change them
        # (Twisted's ``haproxy:`` endpoint learns the client's address from
        # the PROXY header, which precedes our peer's first byte).
        self._addressesFinal = False
        self._peer: IAddress | None = None
        self._peerHost: str | None = None  # of _peer, once known
        self._peerPort: int | None = None
        self._host: IAddress | None = None
        # The one DelayedCall for the core's timers, and when it is due.
        self._timerCall: IDelayedCall | None = None
        self._timerAt: float | None = None
        # Bulk reading (see BULK_AFTER_READS): the connection's own read
        # size, unknown (so never reached) until connected, and the rule
        # the asyncio front end applies too.
        self._readSize = sys.maxsize
        self._bulkReads = BulkReads(  # (full: less over TLS)
            sys.maxsize, TWISTED_SHORT_READ_COST, TWISTED_BULK_LEAVE_READS
        )
        self._reads: Any = None  # the transport whose read size it is
        # Over TLS (see `_recordsLeft`): the records of this turn's read
        # after its first, to go in one, and the read's size so far.
        self._tls = False
        # The socket flushes go to directly while the transport holds
        # nothing (`memux._tuning.directSocket`), if any.
        self._directSocket: socket.socket | None = None
        #: over Twisted's TLS, its write that holds nothing (`tlsWriter`)
        self._tlsWrite: Callable[[bytes], None] | None = None
        #: whether our TLS layer was closed under us (see `whenTLSClosing`)
        self._closedUnder = False
        #: over TLS, what steps of held input wrote in this slice (`_gather`)
        self._gathered: list[bytes] | None = None
        self._gatheredBytes = 0
        self._records: list[bytes] | None = None
        self._recordsCall: IDelayedCall | None = None
        self._turnBytes = 0
        # Input held back in the engine (see INPUT_STEP_FRAMES): the task
        # working through it, whether it is in a step now, whether we paused
        # the connection's reading for it, and our own Cooperator when the
        # factory has none to share.
        self._inputTask: (
            CooperativeTask[Iterator[defer.Deferred[None] | None]] | None
        ) = None
        self._inInputStep = False
        self._readingPaused = False
        self._cooperator: Cooperator | None = None
        self._pings: dict[bytes, defer.Deferred[float]] = {}
        self._pingIds = itertools.count(1)
        self._drained: list[defer.Deferred[None]] = []
        self._closedWaiters: list[defer.Deferred[None]] = []
        self.connected = False
        #: why the connection ended (its own words: a clean close after a
        #: GOAWAY is ConnectionDone), once it has
        self.lostReason: Failure | None = None
        #: the error the session's channels and pings got when it ended
        #: (the GOAWAY, timeout or violation that ended it), once it has
        self.lostError: SessionLost | None = None

    # ------------------------------------------------------------ public

    @property
    def engine(self) -> MemuxEngine:
        """
        The sans-IO engine (for introspection).
        """
        return self._core.engine

    @property
    def peerSettings(self) -> Settings:
        """
        The peer's settings (the protocol's initial values until its
        preface arrives).
        """
        return self._core.engine.peerSettings

    @property
    def prefaceReceived(self) -> bool:
        """
        Whether the peer's preface has arrived: the memux handshake is
        done (a peer that never sends it is not a memux peer, or is not
        reachable).
        """
        return self._core.engine.prefaceReceived

    def isUsable(self) -> bool:
        """
        Whether new channels may be opened on this session: it is connected
        and neither side has started to end it (no GOAWAY either way, no
        close under way).
        """
        return self._core.usable()

    def counters(self) -> dict[str, int]:
        """
        Counters for introspection: bytes and frames moved (and of those,
        the bytes of PING frames: liveness and round-trip probes and their
        answers), channels opened by each side, channels open now.
        """
        return self._core.summary()

    def snapshot(self, channels: bool = True) -> SessionSnapshot:
        """
        The session now, as plain data (`memux.introspect.SessionSnapshot`,
        JSON-ready with ``toJSON()``): its peer, path, settings, counters,
        round trip, GOAWAY state, and with ``channels`` each open channel's
        state, bytes, queue and credit.
        """
        return _snapshotSession(self, channels)

    def openChannel(
        self,
        service: bytes,
        factory: IProtocolFactory,
        *,
        metadata: bytes | None = None,
        destination: tuple[str, int] | None = None,
        lossy: bool = False,
        priority: int | None = None,
        weight: int | None = None,
    ) -> defer.Deferred[IProtocol]:
        """
        Open a channel for ``service`` and connect a protocol from
        ``factory`` to it.  The Deferred fires at once (no round trip);
        data written goes out as soon as the peer's credit allows.  If the
        peer refuses the channel the protocol's ``connectionLost`` gets a
        `ChannelRefused`.

        ``priority`` (the urgency, 0 the most urgent to 7) and ``weight``
        (1 to 256) set the channel's priority from the start, as
        `IChannelTransport.setPriority <memux.interfaces.IChannelTransport.setPriority>`
        does (a bad one fails the Deferred
        with ``TypeError`` or ``ValueError``).
        """
        if not isinstance(service, bytes):
            return defer.fail(
                TypeError(f"service must be bytes, not {type(service).__name__}")
            )
        chosen: Priority | None = None
        if priority is not None or weight is not None:
            try:
                chosen = checkPriority(
                    DEFAULT_URGENCY if priority is None else priority,
                    DEFAULT_WEIGHT if weight is None else weight,
                )
            except (TypeError, ValueError) as e:
                return defer.fail(e)
        core = self._core
        engine = core.engine
        if not self.connected or engine.terminated:
            return defer.fail(self._notConnected())
        if engine.goAwayReceived is not None:
            return defer.fail(ChannelRefused("the peer is going away", remote=True))
        try:
            cid = engine.openChannel(service, metadata, destination, lossy)
        except ValueError as e:
            return defer.fail(e)
        if chosen is not None:
            engine.setPriority(cid, chosen.urgency, chosen.weight)
        try:
            peer = self._peer
            if peer is not None:
                # `_channelAddress`, inline once the address is cached.
                address = ChannelAddress(
                    cid, service, peer, self._peerHost, self._peerPort
                )
            else:
                address = self._channelAddress(cid, service)
            protocol = factory.buildProtocol(address)
        except Exception:
            engine.resetChannel(cid)
            return defer.fail()
        if protocol is None:
            engine.resetChannel(cid)
            return defer.fail(
                ChannelRefused("the factory built no protocol", remote=False)
            )
        transport = ChannelTransport(self, cid, service, lossy, protocol)
        core.register(transport)
        try:
            plain: Any = protocol
            if type(plain).makeConnection is _PLAIN_MAKE_CONNECTION:
                # `BaseProtocol.makeConnection`, inline (as most protocols
                # inherit it): a call less for every channel.
                plain.connected = 1
                plain.transport = transport
                plain.connectionMade()
            else:
                protocol.makeConnection(transport)
        except Exception:
            # As a failed connect: the caller gets the error, the channel
            # is reset (never sent, if its opening had not gone out yet).
            failure = Failure()
            transport._stopReading()
            transport._lost = True
            transport.connected = False
            transport.disconnected = True
            transport._writeClosed = True
            engine.resetChannel(cid, ErrorCode.INTERNAL_ERROR, "internal error")
            core.channelGone(transport)
            return defer.fail(failure)
        if core.flushCall is None:  # (its data, if any, asked already)
            core.flushSoon()
        return defer.succeed(protocol)

    def _notConnected(self) -> SessionLost:
        """
        The error for what is asked of a session that has ended, or is
        ending: the one its channels got (or will get, once its connection
        closes: the GOAWAY, timeout or violation that ended it), so the
        caller learns why; else that it is not connected.
        """
        if self.lostError is not None:
            return self.lostError
        terminated = self._core.terminatedWith
        if terminated is not None:
            code, reason = terminated
            return cast(SessionLost, failureFor(Ending("lost", code, reason)).value)
        return SessionLost("the session is not connected")

    def ping(self) -> defer.Deferred[float]:
        """
        Send a PING; the Deferred fires with the round-trip time in seconds.
        """
        if not self.connected or self._core.engine.terminated:
            return defer.fail(self._notConnected())
        payload = next(self._pingIds).to_bytes(8, "big")
        d: defer.Deferred[float] = defer.Deferred()
        self._pings[payload] = d
        self._core.ping(payload)
        return d

    def goAway(
        self, code: int = ErrorCode.NO_ERROR, reason: str = ""
    ) -> defer.Deferred[None]:
        """
        Stop accepting channels from the peer (GOAWAY).  With NO_ERROR, the
        channels open now carry on and the connection closes when the last
        one ends (graceful drain); with an error code it closes at once.
        The Deferred fires when the connection has closed.
        """
        d: defer.Deferred[None] = defer.Deferred()
        if not self.connected:
            d.callback(None)
            return d
        self._drained.append(d)
        self._core.goAway(code, reason)
        return d

    def loseConnection(self) -> None:
        """
        Close the session's connection now, after writing what can be
        written; open channels end with `SessionLost`.  (Closing the
        connection itself, ``session.transport.loseConnection()``, works
        too: the session then closes the same way.  For a graceful end,
        use `goAway`.)
        """
        self._core.loseConnection()

    def abortConnection(self, reason: str = "aborted") -> None:
        """
        Abort the session's connection at once, discarding what is unsent;
        open channels end with `SessionLost` carrying ``reason``.
        """
        self._core.abort(None, reason)

    def whenClosed(self) -> defer.Deferred[None]:
        """
        A Deferred that fires once the connection has closed (at once if it
        already has); the reason is then in `lostReason`.
        """
        if self.lostReason is not None:
            return defer.succeed(None)
        d: defer.Deferred[None] = defer.Deferred()
        self._closedWaiters.append(d)
        return d

    # ------------------------------------------------------------ IProtocol

    def connectionMade(self) -> None:
        """
        Send our preface at once and register as the connection's producer.
        """
        self.connected = True
        transport: Any = self.transport
        transport.registerProducer(self, True)
        readSize = tuneConnection(transport)
        self._tls = overTLS(transport)
        self._directSocket = directSocket(transport)
        layer = tlsLayer(transport)
        if layer is not None:
            self._tlsWrite = tlsWriter(layer)  # (found again at once)
            whenTLSClosing(layer, self._closedUnderUs)
        if readSize is not None:
            self._readSize = self._bulkReads.fullRead = readSize
            self._reads = tcpTransport(transport)
            if self._tls:
                self._bulkReads.fullRead = max(1, readSize - TLS_RECORD_BYTES)
        if self._tls:
            self._core.limitFlushes(TLS_FLUSH_BYTES)
        factory = self.factory
        if isinstance(factory, MultiplexingFactory):
            factory._sessionStarted(self)
        if self.client:
            self._log.info("memux session to {peer}", peer=self._peerText())
        self._core.connectionMade()

    def dataReceived(self, data: bytes) -> None:
        """
        Feed the core.  A full channel holds back only its own credit,
        never reading.  A read of more than ``INPUT_STEP_FRAMES`` frames is
        finished in later reactor turns, shared fairly with other sessions,
        with reading paused meanwhile.
        """
        if not self._addressesFinal:
            self._addressesFinal = True
            self._peer = self._host = None  # (any cached before now)
            if not self.client:
                self._log.info("memux session from {peer}", peer=self._peerText())
        if self._records is not None:
            # Over TLS, a later record of a read whose first this turn fed.
            self._records.append(data)
            self._turnBytes += len(data)
            return
        if self._tls:
            # Twisted's TLS hands us a read one record (16 KiB) at a time:
            # the first is fed now (a small message's reply is not kept
            # waiting), the rest of the read together once the reactor
            # turns, so the per-read work (an engine step, its events, a
            # flush) runs twice per read, not once per record.
            self._records = []
            self._turnBytes = len(data)
            self._recordsCall = self._reactor.callLater(0, self._recordsLeft)
        elif self._bulkReads.fullReads or len(data) >= self._bulkReads.fullRead:
            self._countRead(len(data))  # (else neither full nor counted short)
        # `_feed`, inline: a call less per read.  While input is held, this
        # (from a transport that could not pause) queues behind it: still a
        # step.
        core = self._core
        engine = core.engine
        sent = engine.bytesSent
        core.receiveData(data)
        if self._inputTask is None and engine.inputPending and self.connected:
            self._holdInput(engine.bytesSent != sent)

    def _closedUnderUs(self) -> None:
        """
        Our TLS layer was closed under us (``transport.loseConnection()``)
        and waits for us to let go (see `whenTLSClosing`): flush on the
        next turn, not from inside the close, and the flush sees the close,
        writes what it can and closes as `loseConnection` does.  (A TCP
        transport that started TLS does not say it is closing: its TLS
        layer is.)
        """
        self._closedUnder = True
        self._reactor.callLater(0, self._flushIfConnected)

    def _flushIfConnected(self) -> None:
        if self.connected:
            self._core.flush()

    def _recordsLeft(self) -> None:
        """
        Over TLS: feed what the TLS layer delivered of the last read after
        its first record, in one.
        """
        records = self._records
        self._records = self._recordsCall = None
        self._countRead(self._turnBytes)
        if records and self.connected:
            self._feed(b"".join(records))

    def _countRead(self, size: int) -> None:
        """
        Switch bulk reading on or off (see `BULK_AFTER_READS`) from the
        size of a read.
        """
        switch = self._bulkReads.count(size)
        if switch is None:
            return
        self._core.readingInBulk(switch)
        if switch:
            keepReadsInHeap()
            if not (self._tls and self._core.latency):
                self._reads.bufferSize = BULK_READ_SIZE
        elif not (self._tls and self._core.bulk):
            # (Over TLS in bulk mode it stays: `_bulkSendingOverTLS`.)
            self._reads.bufferSize = self._readSize

    def _tlsReadsForLatency(self, on: bool) -> None:
        """
        Over TLS, in latency mode, reads stay at the normal size even when
        they come back full: the TLS layer decrypts a whole read before
        the session sees any of it, so an urgent message at the end of a
        256 KiB read waited for all of it (with ten bulk channels beside
        a ping-pong at urgency 0, over TLS, the ping's p99 went from 1.74
        to 1.09 times its idle p99, 5 runs alternated).  Bulk reading
        comes back with the mode's end.
        """
        reads = self._reads
        if reads is None:
            return
        if on:
            reads.bufferSize = self._readSize
        elif self._bulkReads.bulk:
            reads.bufferSize = BULK_READ_SIZE

    def _bulkSendingOverTLS(self, on: bool) -> None:
        """
        Over TLS a flush is small (`TLS_FLUSH_BYTES`), and the TCP transport
        pauses the session once more than its ``bufferSize`` waits: in bulk
        mode that is raised to `BULK_READ_SIZE` (as for a bulk baseline,
        see `memux.tuning.tuneLikeSession`), so that a turn still sends
        several flushes in one ``send()``.  (It is also the read size: back
        to normal after bulk mode unless reading in bulk.)
        """
        reads = self._reads
        if reads is None:
            return
        if on:
            keepReadsInHeap()
            reads.bufferSize = max(reads.bufferSize, BULK_READ_SIZE)
        elif not self._bulkReads.bulk:
            reads.bufferSize = self._readSize

    def _feed(self, data: bytes) -> None:
        """
        Feed the core a read.
        """
        # While input is held, this (from a transport that could not pause,
        # or a TLS record of the same read) queues behind it: still a step.
        core = self._core
        engine = core.engine
        sent = engine.bytesSent
        core.receiveData(data)
        if self._inputTask is None and engine.inputPending and self.connected:
            self._holdInput(engine.bytesSent != sent)

    def _holdInput(self, wrote: bool) -> None:
        """
        Pause reading and leave the input held in the engine to later
        turns, a step at a time, in round robin with other sessions'
        (``wrote``: the step so far wrote something).
        """
        transport: Any = self.transport
        if IPushProducer.providedBy(transport) and not getattr(
            transport, "disconnecting", False
        ):
            transport.pauseProducing()
            self._readingPaused = True
        factory = self.factory
        if isinstance(factory, MultiplexingFactory):
            cooperator = factory._inputCooperator(self._reactor)
        else:
            if self._cooperator is None:
                self._cooperator = newInputCooperator(self._reactor)
            cooperator = self._cooperator
        self._inputTask = cooperator.cooperate(self._inputSteps(wrote))

    def _inputSteps(self, wrote: bool) -> Iterator[defer.Deferred[None] | None]:
        """
        Work through the held input, one step per iteration, then read
        again.  After a step that wrote, the next waits for a reactor turn.
        """
        core = self._core
        engine = core.engine
        if wrote:
            # What the read's first step wrote goes before the next step
            # (see `InputSlice.wrote`); the Cooperator would run that
            # step first thing in the next turn, before the reactor polls.
            yield self._afterTurn()
        try:
            while self.connected and engine.inputPending:
                self._inInputStep = True
                sent = engine.bytesSent
                core.receiveData(b"")
                self._inInputStep = False
                if self.connected and engine.inputPending:
                    if engine.bytesSent != sent:
                        InputSlice.wrote = True
                    yield None
        except Exception:
            # As an exception from dataReceived is to a transport: fatal.
            self._inInputStep = False
            self._log.failure("Error handling input from {peer}", peer=self._peerText())
            core.abort(None, "internal error")
        self._writeGathered()
        self._inputTask = None
        if self._readingPaused:
            self._readingPaused = False
            transport: Any = self.transport
            if self.connected:
                # Even if we are closing it: a TLS layer closes once the
                # peer's close_notify is read, so reading must go on (a TCP
                # transport, once closing itself, does not start again).
                transport.resumeProducing()

    def _gather(self, data: bytes) -> None:
        """
        Over TLS, keep what a step of held input writes (more steps follow)
        until the reactor's turn ends its slice of input work
        (`InputSlice.atEnd`), or the held input is done, or anything else
        is written: then write it all in one.  Each write through the TLS
        layer is a record, and some microseconds of Python; written per
        step, with Twisted's own gathering skipped (`tlsWriter`), small
        messages over TLS slowed by 12%.  The data goes out no later than
        if written at once: the reactor sends only when it next polls,
        after the slice.
        """
        gathered = self._gathered
        if gathered is None:
            self._gathered = [data]
            self._gatheredBytes = len(data)
            InputSlice.atEnd.append(self._writeGathered)
        else:
            gathered.append(data)
            self._gatheredBytes += len(data)
        if self._gatheredBytes >= TLS_FLUSH_BYTES:
            self._writeGathered()

    def _writeGathered(self, discard: bool = False) -> None:
        """
        Write what `_gather` kept, if anything (``discard``: drop it).
        """
        gathered = self._gathered
        if gathered is None:
            return
        self._gathered = None
        try:
            # (Not left there: it would hold the session until a slice ends.)
            InputSlice.atEnd.remove(self._writeGathered)
        except ValueError:
            pass  # called from there
        write = self._tlsWrite
        if write is not None and self.connected and not discard:
            write(gathered[0] if len(gathered) == 1 else b"".join(gathered))

    def _afterTurn(self) -> defer.Deferred[None]:
        """
        A Deferred that fires in the next reactor turn: after this turn's
        input and output, unlike a call due now.
        """
        d: defer.Deferred[None] = defer.Deferred()
        self._reactor.callLater(0, d.callback, None)
        return d

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        """
        Every open channel ends with `SessionLost`; pending pings fail.
        """
        if self._records is not None:
            # Over TLS, records that came before the end are still input.
            call, records = self._recordsCall, self._records
            self._records = self._recordsCall = None
            if call is not None and call.active():
                call.cancel()
            if records and self.connected:
                self._feed(b"".join(records))
        self.connected = False
        self.lostReason = reason
        call = self._timerCall
        if call is not None and call.active():
            call.cancel()
        self._timerCall = None
        self._timerAt = None
        task, self._inputTask = self._inputTask, None
        if task is not None and not self._inInputStep:
            # Held input is dropped.  (From within a step, the task ends
            # itself: stopping a running task confuses the Cooperator.)
            task.stop()
        core = self._core
        clean = reason.check(ConnectionDone) is not None
        ending = core.connectionLost(clean, str(reason.value))
        lost = failureFor(ending)
        self.lostError = cast(SessionLost, lost.value)
        # A server's connection closed or reset before its peer sent a byte
        # (a load balancer's health check, a port scan) is logged at debug,
        # as its start was not logged at all; a failed TLS handshake is not.
        quiet = (
            not (self.client or self._addressesFinal)
            and reason.check(ConnectionClosed) is not None
        )
        self._log.emit(
            LogLevel.debug if quiet else LogLevel.info,
            "memux session with {peer} ended: {reason}",
            peer=self._peerText(),
            reason=(
                "closed cleanly"
                if core.terminatedWith is None and clean
                else str(lost.value)
            ),
        )
        if core.endingsUnlogged:
            self._log.info(
                "... and {count} more channel resets and refusals with {peer},"
                " not logged",
                count=core.endingsUnlogged,
                peer=self._peerText(),
            )
        core.endChannels(ending)
        pings = self._pings
        self._pings = {}
        for d in pings.values():
            d.errback(lost)
        drained = self._drained
        self._drained = []
        for d2 in drained:
            d2.callback(None)
        waiters = self._closedWaiters
        self._closedWaiters = []
        for d3 in waiters:
            d3.callback(None)
        factory = self.factory
        if isinstance(factory, MultiplexingFactory):
            factory._sessionEnded(self)

    # ------------------------------------------------------------ IPushProducer

    def pauseProducing(self) -> None:
        """
        The connection's buffer is full: stop writing to it.  Each channel
        that writes meanwhile has its producer paused at that write, so
        buffered bytes stay bounded.  If it stays paused for
        `SessionSettings.writeTimeout`, the peer is not reading: the
        connection is aborted.
        """
        self._core.pauseOutput()

    def resumeProducing(self) -> None:
        """
        The connection drained: write again, then resume producers.  (A
        connection that is closing resumes us too, instead of closing, as
        long as we are its producer: then we finish the close.)
        """
        self._core.resumeOutput()

    def stopProducing(self) -> None:
        """
        The connection is going away; `connectionLost` follows.
        """

    # ------------------------------------------------------------ internals

    def _flushNow(self) -> None:
        core = self._core
        core.flushCall = None  # (this is it)
        core.flush()

    def _timerFired(self) -> None:
        self._timerCall = None
        self._timerAt = None
        core = self._core
        core.handleTimer(self._reactor.seconds())
        deadline = core.nextDeadline()
        if deadline is not None and self.connected:
            _Host(self).wakeAt(deadline)

    def _peerAddress(self) -> IAddress | None:
        # Asked once per channel: cache it (TCP builds a new object each
        # time), and the host and port every channel's address copies; but
        # only once final (see `_addressesFinal`).
        peer = self._peer
        if peer is None and self.transport is not None:
            peer = self.transport.getPeer()
            if self._addressesFinal:
                self._peer = peer
                self._peerHost = getattr(peer, "host", None)
                self._peerPort = getattr(peer, "port", None)
        return peer

    def _peerText(self) -> str:
        """
        The peer's address, as logged: a string, so every log observer
        (JSON too) can keep it.
        """
        return describeAddress(self._peerAddress())

    def _hostAddress(self) -> IAddress | None:
        host = self._host
        if host is None and self.transport is not None:
            host = self.transport.getHost()
            if self._addressesFinal:
                self._host = host
        return host

    def _channelAddress(self, channel: int, service: bytes) -> ChannelAddress:
        """
        The address a channel's factory is given: the peer's end.
        """
        peer = self._peer
        if peer is not None:
            # Cached (`_peerAddress`), as for every channel but the first:
            # no call to ask it.
            return ChannelAddress(
                channel, service, peer, self._peerHost, self._peerPort
            )
        peer = self._peerAddress()
        return ChannelAddress.of(channel, service, peer)

    def _ask(self, event: ChannelOpened) -> IProtocolFactory | None:
        """
        Ask the services callable for a factory for a channel the peer
        opened (see `chooseService`).
        """
        return self._resolve(
            ChannelRequest(
                event.service,
                event.metadata,
                event.destination,
                event.channel,
                event.lossy,
                self,
            )
        )

    def _choiceFailed(self, event: ChannelOpened) -> None:
        self._log.failure(
            "Error choosing a factory for channel {channel}", channel=event.channel
        )

    def _channelRequested(self, event: ChannelOpened) -> ChannelTransport | str:
        """
        The peer opened a channel: build and connect its protocol, or
        return why not (the core refuses it).
        """

        # (The event's fields read once each: compiled, each read of one
        # is a call, and a channel id above 256 a new int.)
        cid = event.channel
        service = event.service
        factory: IProtocolFactory | None = None
        why = ""
        chosen = chooseService(
            event, self._serviceMap, self._ask, ChannelRefused, self._choiceFailed
        )
        if isinstance(chosen, str):
            why = chosen
        else:
            factory = chosen
        protocol = None
        if factory is not None:
            try:
                peer = self._peer
                if peer is not None:
                    # `_channelAddress`, inline once the address is cached.
                    address = ChannelAddress(
                        cid, service, peer, self._peerHost, self._peerPort
                    )
                else:
                    address = self._channelAddress(cid, service)
                protocol = factory.buildProtocol(address)
            except Exception:
                self._log.failure(
                    "Error building a protocol for channel {channel}",
                    channel=cid,
                )
            if protocol is None:
                why = f"service {describeService(service)} declined the channel"
        if protocol is None:
            if self._core.mayLogEnding():
                self._log.info(
                    "Refused channel {channel} from {peer}: {why}",
                    channel=cid,
                    peer=self._peerText(),
                    why=why,
                )
            return why
        transport = ChannelTransport(self, cid, service, event.lossy, protocol)
        self._core.register(transport)
        try:
            plain: Any = protocol
            if type(plain).makeConnection is _PLAIN_MAKE_CONNECTION:
                # (Inline, as in `openChannel`.)
                plain.connected = 1
                plain.transport = transport
                plain.connectionMade()
            else:
                protocol.makeConnection(transport)
        except Exception:
            transport._protocolFailed(transport._failed())
        return transport

    def _notice(self, notice: Notice) -> None:
        """
        Log what the core reports, each at its level: routine events at
        info or warn, never error (that is for faults in code).
        """
        f = notice.fields
        log = self._log
        match notice.what:
            case "channel reset":
                ending: Ending = f["ending"]
                reason = failureFor(ending).value
                if not self._core.mayLogEnding():
                    pass  # counted, logged at the end of the session
                elif ending.remote:
                    log.info(
                        "{reason} (channel {channel})",
                        reason=str(reason),
                        channel=f["channel"],
                    )
                else:
                    log.warn(
                        "Peer {peer} broke the rules on channel {channel}: {reason}",
                        peer=self._peerText(),
                        channel=f["channel"],
                        reason=str(reason),
                    )
            case "message too large":
                log.info(
                    "Resetting channel {channel}: {reason}",
                    channel=f["channel"],
                    reason=f["reason"],
                )
            case "goaway received":
                g = f["goAway"]
                log.info(
                    "Peer {peer} is going away (last channel {last}, {code}: {reason})",
                    peer=self._peerText(),
                    last=g.lastChannel,
                    code=describeCode(g.code),
                    reason=g.reason,
                )
            case "session terminated":
                s = f["event"]
                if s.remote:
                    log.warn(
                        "Peer {peer} ended the session: {reason}",
                        peer=self._peerText(),
                        reason=s.reason,
                    )
                else:
                    log.warn(
                        "Protocol violation by {peer}: {code}: {reason}",
                        peer=self._peerText(),
                        code=describeCode(s.code),
                        reason=s.reason,
                    )
            case "peer warning":
                log.warn("Peer {peer}: {why}", peer=self._peerText(), why=f["message"])
            case "handshake timeout":
                log.info(
                    "Ending memux session with {peer}: no preface within {timeout:g} s",
                    peer=self._peerText(),
                    timeout=f["timeout"],
                )
            case "idle timeout":
                log.info(
                    "Ending memux session with {peer}: no channel for {timeout} s",
                    peer=self._peerText(),
                    timeout=f["timeout"],
                )
            case "peer dead":
                log.warn(
                    "Ending memux session with {peer}: nothing received for {t:g} s,"
                    " not even a PING answer",
                    peer=self._peerText(),
                    t=f["silence"],
                )
            case "write timeout":
                log.warn(
                    "Aborting memux session with {peer}: it has read none of our output"
                    " for {timeout:g} s",
                    peer=self._peerText(),
                    timeout=f["timeout"],
                )
            case what:
                log.info(
                    "memux session with {peer}: {what} {fields}",
                    peer=self._peerText(),
                    what=what,
                    fields=str(f),
                )


class MultiplexingFactory(Factory):
    """
    A factory of memux sessions.  Each channel the peer opens is handed to
    the factory that ``services`` names for it: a mapping of service name
    to `IProtocolFactory`, or a callable taking a `ChannelRequest` and
    returning a factory or None (refuse).

    :param client: build the side that initiated the connection (odd
        channel ids); `connectSession` sets it.
    """

    protocol = MemuxProtocol
    # Not "Starting factory" for every session connectSession makes.
    noisy = False
    _log = Logger()

    def __init__(
        self,
        services: ServiceMap | ServiceResolver | None = None,
        *,
        client: bool = False,
        settings: SessionSettings | None = None,
        reactor: IReactorTime | None = None,
    ) -> None:
        self.services = services if services is not None else {}
        self.client = client
        self.settings = settings or SessionSettings()
        self.reactor = reactor
        # Connected sessions, for `drain`.
        self._sessions: set[MemuxProtocol] = set()
        self._draining = False
        self._drainWaiters: list[defer.Deferred[None]] = []
        self._drainCall: IDelayedCall | None = None
        # Shared by the sessions, so that all their held-back input together
        # gets one slice per reactor turn.
        self._cooperator: Cooperator | None = None
        #: The most sessions connected at once since this was last set
        #: (to watch load drop: ``twistd memux`` gives memory back then).
        self.peakSessions = 0
        # For `totals`: sessions started, and what the ended ones did.
        self._started = 0
        self._endedCounters = SessionCounters.zero()
        self._endCauses: dict[str, int] = {}
        if not client:
            # A TLS layer under a server (an ``ssl:`` endpoint, or
            # tlsServerFactory) then selects ALPN memux/1: Twisted's TLS
            # servers with no ALPN protocols refuse every client that
            # offers some, as memux's clients do.  (Not for clients: that
            # would add memux/1 to whatever their own TLS options offer.)
            alsoProvides(self, IProtocolNegotiationFactory)

    def acceptableProtocols(self) -> list[bytes]:
        """
        The ALPN protocol a TLS layer under a server factory selects:
        ``memux/1`` (see `IProtocolNegotiationFactory`).
        """
        return [ALPN]

    def buildProtocol(self, addr: IAddress | None) -> MemuxProtocol:
        """
        Build one session.
        """
        p = MemuxProtocol(
            self.services,
            client=self.client,
            settings=self.settings,
            reactor=self.reactor,
        )
        p.factory = self
        return p

    def connectedSessions(self) -> list[MemuxProtocol]:
        """
        The sessions this factory built that are connected now.
        """
        return list(self._sessions)

    @property
    def draining(self) -> bool:
        """
        Whether `drain` was called (and the factory not started again).
        """
        return self._draining

    def totals(self) -> Totals:
        """
        What this factory's sessions did, ended and connected ones together,
        and how many are open now (`memux.introspect.Totals`): what metrics
        read, at a cost per connected session, not per channel.
        """
        counters = self._endedCounters
        channelsOpen = 0
        for session in self._sessions:
            counters = counters + session._core.counters()
            channelsOpen += len(session._core.channels)
        return Totals(
            counters,
            len(self._sessions),
            self._started,
            channelsOpen,
            dict(self._endCauses),
        )

    def snapshot(self, channels: bool = True) -> FactorySnapshot:
        """
        Every connected session now (see `MemuxProtocol.snapshot`), and
        `totals`, as plain data (`memux.introspect.FactorySnapshot`).
        """
        import time

        return FactorySnapshot(
            time.time(),
            self._draining,
            self.peakSessions,
            self.totals(),
            [session.snapshot(channels) for session in self._sessions],
        )

    def drain(self, timeout: float | None) -> defer.Deferred[None]:
        """
        End every session gracefully: each sends GOAWAY NO_ERROR (so the
        peer opens no more channels, and learns that channels it opened
        meanwhile were not processed and are safe to retry elsewhere) and
        closes once its open channels have ended.  Sessions made from now
        on (a listener not yet closed) are drained as they start.  Sessions
        still connected ``timeout`` seconds later are aborted (``None``:
        wait for ever; ``0``: at once).  The Deferred fires once no session
        is connected.
        """
        self._draining = True
        d: defer.Deferred[None] = defer.Deferred()
        if not self._sessions:
            d.callback(None)
            return d
        self._drainWaiters.append(d)
        for session in list(self._sessions):
            session.goAway(ErrorCode.NO_ERROR, "shutting down")
        if timeout is not None and self._drainCall is None:
            self._drainCall = self._clock().callLater(
                timeout, self._drainExpired, timeout
            )
        return d

    def startFactory(self) -> None:
        """
        Listening (again): new sessions are served normally.
        """
        self._draining = False

    def _drainExpired(self, timeout: float) -> None:
        self._drainCall = None
        left = list(self._sessions)
        self._log.info(
            "Aborting {count} memux session(s) still open {timeout:g} s after GOAWAY",
            count=len(left),
            timeout=timeout,
        )
        for session in left:
            session.abortConnection(
                f"shutting down: still open {timeout:g} s after GOAWAY"
            )

    def _inputCooperator(self, reactor: IReactorTime) -> Cooperator:
        if self._cooperator is None:
            self._cooperator = newInputCooperator(reactor)
        return self._cooperator

    def _clock(self) -> IReactorTime:
        if self.reactor is not None:
            return self.reactor
        from twisted.internet import reactor

        return cast(IReactorTime, reactor)

    def _sessionStarted(self, session: MemuxProtocol) -> None:
        self._sessions.add(session)
        self._started += 1
        if len(self._sessions) > self.peakSessions:
            self.peakSessions = len(self._sessions)
        if self._draining:
            # Accepted while the listeners were closing: drain it too.
            session.goAway(ErrorCode.NO_ERROR, "shutting down")

    def _sessionEnded(self, session: MemuxProtocol) -> None:
        if session in self._sessions:
            # Its counters move to the ended ones' (so totals never drop).
            core = session._core
            self._endedCounters = self._endedCounters + core.counters()
            reason = session.lostReason
            cause = core.endCause(
                reason is None or reason.check(ConnectionDone) is not None
            )
            self._endCauses[cause] = self._endCauses.get(cause, 0) + 1
        self._sessions.discard(session)
        if self._sessions or not self._drainWaiters:
            return
        if self._drainCall is not None:
            if self._drainCall.active():
                self._drainCall.cancel()
            self._drainCall = None
        waiters, self._drainWaiters = self._drainWaiters, []
        for d in waiters:
            d.callback(None)


def _snapshotSession(session: MemuxProtocol, channels: bool) -> SessionSnapshot:
    from memux.mptcp import pathInfo

    transport = session.transport
    path = pathInfo(session) if transport is not None else None
    alpn = None
    # The TLS layer (Twisted's) says which protocol ALPN chose.
    layer: object = transport
    for _ in range(_WRAPPERS):
        if layer is None:
            break
        chosen = getattr(layer, "negotiatedProtocol", None)
        if isinstance(chosen, bytes):
            alpn = chosen.decode("ascii", "backslashreplace")
            break
        layer = getattr(layer, "transport", None)
    return session._core.snapshot(
        peer=session._peerText(),
        host=describeAddress(session._hostAddress()),
        transport=path.kind if path is not None else "unknown",
        tls=path.tls if path is not None else False,
        alpn=alpn,
        subflows=path.subflows if path is not None else None,
        channels=channels,
    )


def connectSession(
    endpoint: IStreamClientEndpoint,
    services: ServiceMap | ServiceResolver | None = None,
    *,
    settings: SessionSettings | None = None,
    reactor: IReactorTime | None = None,
) -> defer.Deferred[MemuxProtocol]:
    """
    Connect to a memux peer through ``endpoint``; fire with the session
    once the connection is made (channels can be opened at once: the
    preface exchange needs no round trip).  ``services`` serves channels
    the peer opens back to us.
    """
    factory = MultiplexingFactory(
        services, client=True, settings=settings, reactor=reactor
    )
    return cast("defer.Deferred[MemuxProtocol]", endpoint.connect(factory))


@implementer(IStreamClientEndpoint)
class ChannelEndpoint:
    """
    A client endpoint whose connections are channels for ``service`` on an
    existing session, so any code that takes an endpoint can use memux.
    """

    def __init__(
        self,
        session: MemuxProtocol,
        service: bytes,
        *,
        metadata: bytes | None = None,
        destination: tuple[str, int] | None = None,
        priority: int | None = None,
        weight: int | None = None,
    ) -> None:
        """
        ``priority`` and ``weight``: each channel's, as `MemuxProtocol.openChannel`
        takes them (checked here: ``TypeError`` or ``ValueError``).
        """
        if priority is not None or weight is not None:
            checkPriority(
                DEFAULT_URGENCY if priority is None else priority,
                DEFAULT_WEIGHT if weight is None else weight,
            )
        self.session = session
        self.service = service
        self.metadata = metadata
        self.destination = destination
        self.priority = priority
        self.weight = weight

    def connect(self, protocolFactory: IProtocolFactory) -> defer.Deferred[IProtocol]:
        """
        Open a channel and connect a protocol from ``protocolFactory``.
        """
        return self.session.openChannel(
            self.service,
            protocolFactory,
            metadata=self.metadata,
            destination=self.destination,
            priority=self.priority,
            weight=self.weight,
        )
