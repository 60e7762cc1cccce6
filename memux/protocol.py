# -*- test-case-name: memux.test.test_protocol -*-
"""
The Twisted side of memux: `MemuxProtocol` runs a `MemuxEngine` over any
byte-stream transport and gives each channel a `ChannelTransport`, a
drop-in transport for unmodified Twisted protocols.

This layer turns engine events into protocol callbacks and producer
pause/resume calls, and application writes into engine commands.  Every
protocol rule and credit decision stays in the engine.
"""

from __future__ import annotations

import itertools
import socket
import sys
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, cast

from twisted.internet import defer
from twisted.internet.error import ConnectionAborted, ConnectionDone
from twisted.internet.interfaces import (
    IAddress,
    IConsumer,
    IDelayedCall,
    IHalfCloseableProtocol,
    ILoggingContext,
    IProtocol,
    IProtocolFactory,
    IProtocolNegotiationFactory,
    IPullProducer,
    IPushProducer,
    IReactorTime,
    IStreamClientEndpoint,
    ITransport,
)
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.internet.task import CooperativeTask, Cooperator
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import alsoProvides, implementer, providedBy

from memux._engine import (
    ChannelClosed,
    ChannelOpened,
    DataReceived,
    Event,
    GoAwayReceived,
    LocalHalfClosed,
    MemuxEngine,
    MessagesDropped,
    PeerWarning,
    PingAcknowledged,
    PrefaceReceived,
    RemoteHalfClosed,
    SessionSettings,
    SessionTerminated,
)
from memux._engine import ChannelReset as ChannelResetEvent
from memux._wire import ALPN, ErrorCode, Settings, describeCode
from memux.codes import ChannelClosedError, ChannelState
from memux.error import (
    ChannelRefused,
    ChannelReset,
    MessageTooLarge,
    SessionLost,
    describeService,
)
from memux.interfaces import (
    IChannelTransport,
    IChunkReceiver,
    IDropReceiver,
    IMessageReceiver,
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

#: A channel's producer is paused once this many bytes wait in its send
#: queue (credit exhausted, or others' turn), and resumed below half of it:
#: the role Twisted's TCP bufferSize plays.  Above two 64 KiB writes, so a
#: bulk writer is not paused after every write.  (`BULK_HIGH_WATER` while
#: the session is in bulk mode, see `BULK_AFTER_FLUSHES`.)
WRITE_HIGH_WATER = 128 * 1024

#: The FIN's place among held inbound items.
_FIN = object()

#: How much `MemuxProtocol` hands the connection per write; the connection
#: pauses us when its own buffer fills, which keeps the rest in the engine
#: where the scheduler can still interleave channels fairly.  More than one
#: 64 KiB chunk plus header, so each pause/resume cycle moves two chunks
#: (Twisted's TCP buffer is 64 KiB: one chunk alone would fill it).
FLUSH_BYTES = 128 * 1024

#: A session whose connection has paused it this many times in a row with
#: no small write (under `SMALL_WRITE` queued) on any channel meanwhile is
#: moving bulk data only: it switches to bulk mode, where each flush, each
#: channel's queue and the kernel's unsent bytes may be four times as large
#: (`BULK_FLUSH_BYTES`, `BULK_HIGH_WATER`, `BULK_NOTSENT_LOWAT`): a
#: quarter of the pause/resume cycles per byte, which cut the fan-out
#: client's CPU per 64 KiB from about 60 to 42 us on a 2-core machine.  The
#: next small write switches it back before the next flush: a small message
#: then waits behind at most the normal amounts, not the bulk ones.
BULK_AFTER_FLUSHES = 64
SMALL_WRITE = 16 * 1024
BULK_FLUSH_BYTES = 4 * FLUSH_BYTES
BULK_HIGH_WATER = 4 * WRITE_HIGH_WATER

#: After this many reads in a row that filled the connection's read size
#: (Twisted's TCP ``bufferSize``, 64 KiB), the peer is sending bulk data:
#: the session reads `BULK_READ_SIZE` at a time, which costs a quarter of
#: the reactor turns and Python calls per byte; the next read shorter than
#: the normal read size sets it back.  (Twisted's TCP also pauses its
#: producer past ``bufferSize`` unsent bytes: while reading in bulk, ours
#: is paused a little later.)
BULK_AFTER_READS = 16
BULK_READ_SIZE = 256 * 1024

#: Room for frame headers above `BULK_FLUSH_BYTES` in one send() (see
#: `_roomForHeaders`).
SEND_HEADROOM = 16 * 1024

#: A flush of more pieces (frame headers and chunks) than this is joined
#: into one write; fewer go to ``writeSequence`` as they are.
GATHER_PIECES = 8

#: How many times one flush lets paused producers write again and writes
#: what they wrote, when the connection keeps taking it; the rest waits for
#: the next reactor turn, so one busy session cannot hold the reactor.
FLUSH_ROUNDS = 4

#: Seconds between refills of the peer's allowance of frames that do no
#: work (`SessionSettings.maxUselessFrames`): with the default allowance a
#: peer may send 100 such frames a second on average, in bursts of 1000,
#: far above any keepalive, far below a flood.
LOAD_BUDGET_PERIOD = 10.0

#: The payload of keepalive PINGs (their answers match no `ping` call).
KEEPALIVE_PAYLOAD = b"keepaliv"

#: Frames the engine decodes and acts on per step of a session's input.  A
#: read holding more (a flood of tiny frames, or deep pipelining) is
#: finished in later reactor turns, the connection's reading paused
#: meanwhile, so that one peer's flood does not stall other sessions.
#: Small enough that what a step writes (replies, acks) reaches the peer
#: early, which then works on it in parallel with us: 32 frames gave churn
#: 7.4x TCP against 5.7x for 64, and small messages 0.94 against 0.95.
INPUT_STEP_FRAMES = 32

#: Per reactor turn, the held-back input of a factory's sessions is worked
#: through round robin, a step at a time, for this many seconds at most (or
#: `INPUT_SLICE_STEPS` steps): about the most one session's flood delays
#: another session's reply.
INPUT_SLICE_SECONDS = 0.001
INPUT_SLICE_STEPS = 16

#: A slice that has worked this long ends at the next step that wrote, so
#: that the reactor sends what it wrote (see `_InputSlice.wrote`).  Not
#: after every step: a step of small messages is a few tens of
#: microseconds, and a reactor turn for each would cost more than the
#: parallel work gains.
OUTPUT_DELAY_SECONDS = 0.0004

#: How many transports deep `MemuxProtocol` looks for a connection being
#: closed under it: TLS over HAProxy's wrapper over TCP is three.
_WRAPPERS = 4

#: Channel resets and refusals logged per session; past it they are only
#: counted, and the count logged when the session ends: a peer resetting or
#: opening channels in a loop must not flood the log (or pay for it).
LOGGED_CHANNEL_ENDINGS = 20


@implementer(IAddress)
# Hashable but not frozen, like Twisted's own addresses: a frozen
# dataclass's __init__ costs a setattr call per field, per channel.
@dataclass(unsafe_hash=True, slots=True)
class ChannelAddress:
    """
    The address of one end of a channel: the underlying connection's
    address (``host`` and ``port`` copied from it, so code written for TCP
    addresses keeps working), plus the channel id and service.
    """

    channel: int
    service: bytes
    session: IAddress | None
    host: str | None = None
    port: int | None = None

    @classmethod
    def of(
        cls, channel: int, service: bytes, session: IAddress | None
    ) -> ChannelAddress:
        """
        Build the address of ``channel`` on a connection whose address is
        ``session``.
        """
        host = getattr(session, "host", None)
        port = getattr(session, "port", None)
        return cls(channel, service, session, host, port)


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


#: How a channel delivers to a protocol (0 bytes, 1 messages, 2 chunks), by
#: the interfaces it provides: worked out once per class of protocol (or
#: per set of interfaces an instance declares), not twice per channel.
#: Each entry keeps the declaration's resolution order it was worked out
#: from, which zope.interface replaces when the declaration changes.
_MODES: dict[object, tuple[object, int]] = {}
#: More distinct declarations than this are not remembered.
_MODES_LIMIT = 256


def _deliveryMode(spec: Any) -> int:
    """
    How to deliver to a protocol that provides ``spec``: 1 whole messages
    (`IMessageReceiver`), 2 chunks (`IChunkReceiver`), else 0 bytes.
    Remembered in `_MODES`.
    """
    if spec.isOrExtends(IMessageReceiver):
        mode = 1
    elif spec.isOrExtends(IChunkReceiver):
        mode = 2
    else:
        mode = 0
    if len(_MODES) < _MODES_LIMIT or spec in _MODES:
        _MODES[spec] = (spec.__sro__, mode)
    return mode


@implementer(IChannelTransport, ITransport, IConsumer, IPushProducer, ILoggingContext)
class ChannelTransport:
    """
    The transport of one channel.  A faithful drop-in for Twisted
    protocols: writes, producers and consumers, half-close, abort,
    addresses, logging context.

    Inbound data is delivered as ``dataReceived``, or as whole messages to
    an `IMessageReceiver`, or as chunks to an `IChunkReceiver`.  Credit is
    granted as the protocol takes data, so pausing this transport (it is
    an `IPushProducer`) stops the peer after what it was already invited
    to send, which is held here and delivered on resume.
    """

    # The state every channel starts in, as class attributes: an instance
    # sets only what changes, so opening a channel (thousands a second
    # under churn) costs a few assignments, and an idle one a small dict.
    protocol: IProtocol | None = None
    lossy = False
    connected = True
    disconnecting = False
    disconnected = False
    # Inbound.
    # (data, endOfMessage) chunks, or (None, count) drop notices, in
    # stream order.  Created on first use: most channels never hold
    # anything, and an empty deque costs ~600 bytes (idle channels should
    # cost < 2 KiB).
    _inbox: deque[tuple[bytes | None, Any]] | None = None
    _finArrived = False
    _readClosed = False  # no more delivery (closed or reset)
    _paused = False
    _delivering = False
    _pendingLoss: Failure | None = None
    _deliverCall: IDelayedCall | None = None
    # The chunks of a message being reassembled (a list once there are
    # any: most messages arrive whole and need none).
    _partial: list[bytes] | tuple[()] = ()
    _partialSize = 0
    _mode = 0  # 0 bytes, 1 messages, 2 chunks
    # Outbound.
    _writeClosed = False
    _fullClose = False
    producer: IPushProducer | IPullProducer | None = None
    streamingProducer = False
    _producerPaused = False
    _lost = False
    # The protocol's class name, for `logPrefix` once it is let go.
    _protocolName = "-"

    def __init__(
        self,
        session: MemuxProtocol,
        channel: int,
        service: bytes,
        lossy: bool = False,
        protocol: IProtocol | None = None,
    ) -> None:
        """
        The transport of ``channel`` for ``protocol``; the session then
        connects them (``protocol.makeConnection``).
        """
        self.session = session
        self.channel = channel
        self.service = service
        if lossy:
            self.lossy = True
        self._maxMessage = session.settings.maxMessageSize
        if protocol is None:
            return
        self.protocol = protocol
        spec: Any = providedBy(protocol)
        entry = _MODES.get(spec)
        if entry is not None and entry[0] is spec.__sro__:
            mode = entry[1]
        else:
            mode = _deliveryMode(spec)
        if mode:
            self._mode = mode

    def __repr__(self) -> str:
        return f"<ChannelTransport channel={self.channel} service={self.service!r}>"

    @property
    def state(self) -> ChannelState:
        """
        The channel's state, as the specification names them (read-only):
        OPEN, HALF_CLOSED_LOCAL once our FIN is out, HALF_CLOSED_REMOTE
        once the peer's arrived, CLOSED when it has ended.
        """
        return self.session._engine.channelState(self.channel)

    # ------------------------------------------------------------ ITransport

    def write(self, data: bytes) -> None:
        """
        Append ``data`` to the current message (a byte stream, to a peer
        that reads bytes).  Ignored after the channel is closed, as TCP
        ignores writes after ``loseConnection``.
        """
        if self._writeClosed or not data:
            return
        self._send(data if type(data) is bytes else bytes(data), False)

    def writeSequence(self, data: Any) -> None:
        """
        Write each of ``data`` in turn, in one message.
        """
        self.write(b"".join(data))

    def writeMessage(self, data: bytes) -> None:
        """
        Send ``data`` as the end of the current message: alone, one whole
        message.
        """
        if self._writeClosed:
            return
        # `_send`, inline: a call less for every message.
        session = self.session
        try:
            queued = session._engine.sendData(
                self.channel, data if type(data) is bytes else bytes(data), True
            )
        except ChannelClosedError:
            return  # reset an instant ago (see `_send`)
        if session._flushCall is None and not session._flushing and session.connected:
            session._flushCall = session._reactor.callLater(0, session._flush)
        if queued < SMALL_WRITE:
            session._smallWrites += 1
        if self.producer is not None:
            if not self.lossy and (
                session._transportPaused or queued >= session._highWater
            ):
                self._pauseProducer()

    def _send(self, data: bytes, end: bool) -> None:
        session = self.session
        try:
            queued = session._engine.sendData(self.channel, data, end)
        except ChannelClosedError:
            # Reset an instant ago; connectionLost with the reason is on its
            # way, as with a TCP write racing an RST.
            return
        # Flush next turn (as `_scheduleFlush`, inline: this runs for every
        # message); pause the producer of a channel that has queued enough.
        if session._flushCall is None and not session._flushing and session.connected:
            session._flushCall = session._reactor.callLater(0, session._flush)
        if queued < SMALL_WRITE:
            session._smallWrites += 1
        if (
            self.producer is not None
            and not self.lossy
            and (session._transportPaused or queued >= session._highWater)
        ):
            self._pauseProducer()

    def endMessage(self) -> None:
        """
        End the message that ``write`` calls have been building (an empty
        message if there were none).
        """
        self.writeMessage(b"")

    def loseConnection(self) -> None:
        """
        Close the channel after the data already written is sent: FIN,
        and no more reading.  ``connectionLost(ConnectionDone)`` follows,
        never from inside this call.
        """
        if self.disconnecting or self.disconnected:
            return
        self.disconnecting = True
        self._fullClose = True
        session = self.session
        engine = session._engine
        if not self._writeClosed:
            # `_localFinSent` finishes once FIN is out.  (`_closeWrite`,
            # inline: this runs for every channel.)
            self._writeClosed = True
            engine.closeChannel(self.channel, stopReading=True)
            if (
                self._inbox is None
                and not self._partialSize
                and self._deliverCall is None
            ):
                self._readClosed = True  # all `_stopReading` has to do
            else:
                self._stopReading()
            if session._flushCall is None and not session._flushing:
                session._scheduleFlush()
            return
        engine.stopReading(self.channel)
        self._stopReading()
        if not engine.isOpen(self.channel) or engine.finSent(self.channel):
            # Our FIN is already out (or the channel already ended): no
            # event will come to finish this, so finish it next turn.
            self.session._reactor.callLater(0, self._finishClose)

    def loseWriteConnection(self) -> None:
        """
        Half-close: send FIN after the data already written, keep reading.
        """
        self._closeWrite()

    def abortConnection(self) -> None:
        """
        Reset the channel at once, discarding unsent data;
        ``connectionLost(ConnectionAborted)`` follows, never from inside
        this call.
        """
        if self.disconnected or self._lost:
            return
        self.disconnecting = True
        self._writeClosed = True
        self._stopReading()
        self._pendingLoss = None
        self.session._engine.resetChannel(self.channel, ErrorCode.CANCEL, "aborted")
        self.session._scheduleFlush()
        self.session._channelGone(self)
        self.session._reactor.callLater(
            0, self._connectionLost, Failure(ConnectionAborted())
        )

    def resetChannel(self, code: int, reason: str = "") -> None:
        """
        Reset the channel with a wire error ``code`` and ``reason`` (for
        example CONNECT_ERROR when a tunnel's destination cannot be
        reached): as `abortConnection`, but the peer sees this code.
        """
        if self.disconnected or self._lost:
            return
        self.disconnecting = True
        self._writeClosed = True
        self._stopReading()
        self._pendingLoss = None
        self.session._engine.resetChannel(self.channel, code, reason)
        self.session._scheduleFlush()
        self.session._channelGone(self)
        self.session._reactor.callLater(
            0,
            self._connectionLost,
            Failure(ChannelReset(code, reason, remote=False)),
        )

    def getPeer(self) -> ChannelAddress:
        """
        The peer's end: the connection's peer address plus this channel.
        """
        return ChannelAddress.of(
            self.channel, self.service, self.session._peerAddress()
        )

    def getHost(self) -> ChannelAddress:
        """
        This end: the connection's host address plus this channel.
        """
        return ChannelAddress.of(
            self.channel, self.service, self.session._hostAddress()
        )

    def logPrefix(self) -> str:
        """
        The prefix for log lines about this channel.
        """
        proto = (
            self.protocol.__class__.__name__ if self.protocol else self._protocolName
        )
        return f"{proto},memux:{self.channel}"

    # ------------------------------------------------------------ IConsumer

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        """
        Register a producer of data for this channel: a push producer is
        paused while the channel cannot send (no credit, connection paused,
        its queue full) and resumed when it can; a pull producer is asked
        for more whenever the queue runs low.
        """
        if self.producer is not None:
            raise RuntimeError(
                f"Cannot register producer {producer!r}, because producer"
                f" {self.producer!r} was never unregistered."
            )
        if self.disconnected:
            producer.stopProducing()
            return
        self.producer = producer
        self.streamingProducer = streaming
        self._producerPaused = False
        self.session._watchProducer(self)
        if not streaming:
            self.session._scheduleFlush()

    def unregisterProducer(self) -> None:
        """
        Forget the registered producer.
        """
        self.producer = None
        self.session._unwatchProducer(self)

    def _pauseProducer(self) -> None:
        if (
            self.producer is not None
            and self.streamingProducer
            and not self._producerPaused
        ):
            self._producerPaused = True
            self.session._pausedProducers.add(self)
            producer: Any = self.producer  # (not cast(): a call per pause)
            producer.pauseProducing()

    def _resumeProducer(self) -> None:
        producer: Any = self.producer
        if producer is None:
            return
        if self.streamingProducer:
            if self._producerPaused:
                self._producerPaused = False
                producer.resumeProducing()
        else:
            producer.resumeProducing()

    # ------------------------------------------------------------ IPushProducer

    def pauseProducing(self) -> None:
        """
        Deliver nothing more to the protocol until `resumeProducing`, and
        stop inviting the peer to send (it may still send what it was
        already invited to; that is held here).
        """
        self._paused = True

    def resumeProducing(self) -> None:
        """
        Deliver what was held, then carry on.
        """
        if not self._paused:
            return
        self._paused = False
        if (self._inbox or self._pendingLoss is not None) and self._deliverCall is None:
            # Not from inside this call: callers (twisted.web, TLS) resume
            # from their own callbacks and do not expect re-entry.
            self._deliverCall = self.session._reactor.callLater(0, self._deliver)

    def stopProducing(self) -> None:
        """
        As for TCP: close the channel.
        """
        self.loseConnection()

    # ------------------------------------------------------------ inbound
    #
    # Everything the peer sends reaches the protocol through one loop,
    # `_deliver`, in stream order: chunks, drop notices and the FIN are
    # all items of `_inbox`, and the end of the channel (`_pendingLoss`)
    # comes after the last of them.  So a paused transport calls nothing,
    # and on resume everything comes in the order it arrived.

    def _kick(self) -> None:
        if not self._paused and self._deliverCall is None and not self._delivering:
            self._deliver()

    def _chunkArrived(self, data: bytes, end: bool) -> None:
        if self._readClosed:
            self.session._engine.consumed(self.channel, len(data))
            return
        if (
            self._inbox
            or self._paused
            or self._delivering
            or self._deliverCall is not None
            or self._pendingLoss is not None
        ):
            self._hold((data, end))
            return
        # Fast path, the common case: nothing is held, so hand this chunk
        # straight to the protocol (one per message, for small messages).
        mode = self._mode
        protocol: Any = self.protocol
        engine = self.session._engine
        self._delivering = True
        try:
            if mode == 0:
                engine.consumed(self.channel, len(data))
                if data:
                    protocol.dataReceived(data)
            elif mode == 1:
                n = len(data)
                if end and not self._partial and n <= self._maxMessage:
                    engine.consumed(self.channel, n)
                    protocol.messageReceived(data)
                else:
                    self._assemble(data, end)
            else:
                engine.consumed(self.channel, len(data))
                protocol.chunkReceived(data, end)
        except Exception:
            self._delivering = False
            self._protocolFailed(Failure())
            return
        self._delivering = False
        if self._inbox and not self._paused:
            # The protocol paused and resumed meanwhile; catch up.
            self._kick()

    def _hold(self, item: tuple[bytes | None, Any]) -> None:
        if self._inbox is None:
            self._inbox = deque()
        self._inbox.append(item)
        self._kick()

    def _dropArrived(self, count: int) -> None:
        if not self._readClosed:
            self._hold((None, count))

    def _remoteFin(self) -> None:
        self._finArrived = True
        if not self._readClosed:
            self._hold((None, _FIN))

    def _deliver(self) -> None:
        """
        Hand held items to the protocol until it pauses us or none is left,
        reporting data consumed as it goes; then end the channel if due.
        """
        self._deliverCall = None
        if self._delivering:
            return
        self._delivering = True
        try:
            self._deliverLoop()
        finally:
            self._delivering = False

    def _deliverLoop(self) -> None:
        inbox = self._inbox
        engine = self.session._engine
        protocol = self.protocol
        if protocol is None:
            return  # the channel is over: `_connectionLost` let it go
        while not self._paused and not self._lost:
            if not inbox:
                if self._pendingLoss is not None:
                    self._connectionLost(self._pendingLoss)
                return
            data, extra = inbox.popleft()
            try:
                if data is None:
                    if extra is _FIN:
                        if self._partial:
                            # FIN ends the message in progress (spec:
                            # "Messages"); the end of input comes next.
                            inbox.appendleft((None, _FIN))
                            self._deliverMessage()
                        else:
                            self._endOfInput()
                    else:
                        receiver = IDropReceiver(protocol, None)
                        if receiver is not None:
                            receiver.messagesDropped(extra)
                    continue
                n = len(data)
                if self._mode == 0:
                    engine.consumed(self.channel, n)
                    if n:
                        protocol.dataReceived(data)
                elif self._mode == 1:
                    self._assemble(data, extra)
                else:
                    engine.consumed(self.channel, n)
                    cast(IChunkReceiver, protocol).chunkReceived(data, extra)
            except Exception:
                self._protocolFailed(Failure())
                return
            self.session._scheduleFlush()

    def _assemble(self, data: bytes, end: bool) -> None:
        limit = self.session.settings.maxMessageSize
        # A message may be larger than the channel's credit window, so bytes
        # moved into reassembly give the channel its credit back; they still
        # count against the session until the message is delivered.
        self.session._engine.consumed(self.channel, len(data), holdSession=True)
        if data:
            self._partialSize += len(data)
            if self._partialSize > limit:
                self._partial = ()
                reason = f"message over the maximum of {limit} bytes"
                self.session._log.info(
                    "Resetting channel {channel}: {reason}",
                    channel=self.channel,
                    reason=reason,
                )
                self._fail(MessageTooLarge(reason), ErrorCode.MESSAGE_TOO_LARGE)
                return
            partial = self._partial
            if type(partial) is list:
                partial.append(data)
            else:
                self._partial = [data]
        if end:
            self._deliverMessage()

    def _deliverMessage(self) -> None:
        message = b"".join(self._partial)
        self.session._engine.releaseSession(self.channel, self._partialSize)
        self._partial = ()
        self._partialSize = 0
        cast(IMessageReceiver, self.protocol).messageReceived(message)

    def _endOfInput(self) -> None:
        """
        The peer's FIN, after everything before it was delivered.
        """
        half = IHalfCloseableProtocol(self.protocol, None)
        if half is not None and not self.disconnecting:
            half.readConnectionLost()
            if not (self.disconnecting or self._lost):
                self.session._channelMaybeDone(self)
        elif not self._writeClosed:
            # As with TCP, a protocol that cannot half-close sees the
            # connection end; what it already wrote is still sent first.
            self.disconnecting = True
            self._fullClose = True
            self._closeWrite()
        else:
            self.disconnecting = True
            self.session._channelMaybeDone(self)

    def _stopReading(self) -> None:
        """
        Read no more: discard what is held (its credit goes back).
        """
        self._readClosed = True
        engine = self.session._engine
        inbox = self._inbox
        if inbox is not None:
            for data, _ in inbox:
                if data is not None:
                    engine.consumed(self.channel, len(data))
            inbox.clear()  # a delivery loop in progress sees it empty
            self._inbox = None
        if self._partialSize:
            engine.releaseSession(self.channel, self._partialSize)
            self._partialSize = 0
        self._partial = ()
        call = self._deliverCall
        if call is not None:
            if call.active():
                call.cancel()
            self._deliverCall = None

    def _closeWrite(self) -> None:
        if self._writeClosed:
            return
        self._writeClosed = True
        self.session._engine.closeChannel(self.channel)
        self.session._scheduleFlush()

    def _localFinSent(self) -> None:
        """
        Our FIN went out.
        """
        if self._fullClose:
            # `_finishClose`, inline: every channel closed with
            # loseConnection ends here.
            self.session._channelGone(self)
            self._connectionLost(self._pendingLoss or connectionDone)
            return
        half = IHalfCloseableProtocol(self.protocol, None)
        if half is not None:
            try:
                half.writeConnectionLost()
            except Exception:
                self._protocolFailed(Failure())

    def _finishClose(self) -> None:
        """
        Complete a full close whose FIN has gone out (or that needs none).
        """
        # The engine stopped reading for us (loseConnection): the channel
        # ends there when the peer closes too, or is reset if it sends more.
        self.session._channelGone(self)
        # Nothing is held (a full close stops reading), so a pause has
        # nothing to hold back.
        self._connectionLost(self._pendingLoss or connectionDone)

    def _closed(self) -> None:
        """
        The engine says both directions ended cleanly; the protocol hears it
        after whatever is still held.
        """
        self.session._channelGone(self)
        self._terminate(connectionDone)

    def _terminate(self, reason: Failure) -> None:
        """
        End the channel with ``reason`` once held data is delivered.  For
        anything but a clean end, a partial message is discarded: it is
        never delivered as if complete.
        """
        if self._lost or self._pendingLoss is not None:
            return
        self._writeClosed = True
        if not reason.check(ConnectionDone):
            self._dropPartial()
        self._pendingLoss = reason
        self._kick()

    def _dropPartial(self) -> None:
        if self._mode == 0:
            return
        inbox = self._inbox
        while inbox:
            data, extra = inbox[-1]
            if data is not None and extra:
                return  # a complete message (or chunk run) ends here
            inbox.pop()
        self._partial = ()
        self._partialSize = 0

    def _protocolFailed(self, failure: Failure) -> None:
        """
        The channel's protocol raised: that is a fault in application code,
        which ends this channel only.
        """
        self.session._log.failure(
            "Unhandled error in protocol on memux channel {channel}; resetting it",
            failure,
            channel=self.channel,
        )
        # The peer learns that the channel failed, not our internals.
        self._fail(failure, ErrorCode.INTERNAL_ERROR, "internal error")

    def _fail(self, reason: Any, code: int, text: str | None = None) -> None:
        self._writeClosed = True
        self._stopReading()
        self.session._engine.resetChannel(
            self.channel, code, text if text is not None else str(reason)
        )
        self.session._scheduleFlush()
        self.session._channelGone(self)
        self._connectionLost(reason if isinstance(reason, Failure) else Failure(reason))

    def _connectionLost(self, reason: Failure) -> None:
        if self._lost:
            return
        self._lost = True
        if self._pendingLoss is not None:
            self._pendingLoss = None
        self.connected = False
        if self.disconnecting:
            self.disconnecting = False
        self.disconnected = True
        self._writeClosed = True
        self._readClosed = True
        call = self._deliverCall
        if call is not None:
            if call.active():
                call.cancel()
            self._deliverCall = None
        producer = self.producer
        if producer is not None:
            self.producer = None
            self.session._unwatchProducer(self)
            producer.stopProducing()
        protocol = self.protocol
        assert protocol is not None
        try:
            protocol.connectionLost(reason)
        except Exception:
            self.session._log.failure(
                "Unhandled error in connectionLost of memux channel {channel}",
                channel=self.channel,
            )
        # Let go of the protocol once it has heard, as Twisted's TCP
        # transport does: it refers to us (its ``transport``), and that
        # cycle would leave every closed channel to the garbage collector,
        # whose passes then cost churn more than anything else.
        self._protocolName = protocol.__class__.__name__
        self.protocol = None


#: Unsent bytes the kernel may hold for a memux connection (Linux
#: TCP_NOTSENT_LOWAT).  Without a limit the socket buffer (megabytes on
#: fast links) fills with one channel's bulk data, and a small message on
#: another channel waits behind all of it: head-of-line blocking that memux's
#: scheduler cannot see.  With it, the backlog stays in memux, which
#: interleaves channels.
NOTSENT_LOWAT = 128 * 1024
BULK_NOTSENT_LOWAT = 4 * NOTSENT_LOWAT


def _limitUnsent(transport: Any, limit: int = NOTSENT_LOWAT) -> None:
    option = getattr(socket, "TCP_NOTSENT_LOWAT", None)
    getHandle = getattr(transport, "getHandle", None)
    if option is None or getHandle is None:
        return
    try:
        handle = getHandle()
        if isinstance(handle, socket.socket) and handle.family in (
            socket.AF_INET,
            socket.AF_INET6,
        ):
            handle.setsockopt(socket.IPPROTO_TCP, option, limit)
    except (OSError, AttributeError):
        pass  # not a plain TCP socket (TLS object, UNIX, pipe)


def _roomForHeaders(transport: Any) -> None:
    # Twisted's TCP sends at most SEND_LIMIT (128 KiB) per send(); a flush
    # is up to BULK_FLUSH_BYTES of payload plus frame headers, and a flush
    # split over several send()s costs the last one's few bytes a send()
    # (and the peer a wakeup) of their own, and the producer a turn.
    limit = getattr(transport, "SEND_LIMIT", None)
    if type(limit) is int and limit < BULK_FLUSH_BYTES + SEND_HEADROOM:
        transport.SEND_LIMIT = BULK_FLUSH_BYTES + SEND_HEADROOM


class _InputSlice:
    """
    A `Cooperator` termination predicate: true once this turn's share of
    input work (`INPUT_SLICE_SECONDS`, `INPUT_SLICE_STEPS`) is used up, or
    once a step has written (`endSlice`).
    """

    #: Set by a step that wrote: the slice ends there, so that the reactor
    #: sends it (Twisted writes when it next polls, after the calls then
    #: due, such as the next slice) and the peer works on it while we work
    #: on the rest.  One flag for all: the reactor runs one slice at a time.
    wrote = False

    def __init__(self) -> None:
        _InputSlice.wrote = False  # (a new turn: the last slice's was sent)
        now = time.monotonic()
        self._end = now + INPUT_SLICE_SECONDS
        self._sendAt = now + OUTPUT_DELAY_SECONDS
        self._steps = INPUT_SLICE_STEPS

    def __call__(self) -> bool:
        now = time.monotonic()
        if _InputSlice.wrote and now >= self._sendAt:
            _InputSlice.wrote = False
            return True
        self._steps -= 1
        return self._steps <= 0 or now >= self._end


def _newInputCooperator(reactor: IReactorTime) -> Cooperator:
    """
    A Cooperator for sessions' held-back input: a slice each reactor turn.
    """
    return Cooperator(
        terminationPredicateFactory=_InputSlice,
        scheduler=lambda tick: reactor.callLater(0, tick),
    )


def _resolverFor(services: ServiceMap | ServiceResolver) -> ServiceResolver:
    if callable(services) and not isinstance(services, Mapping):
        return services
    mapping = services

    def resolve(request: ChannelRequest) -> IProtocolFactory | None:
        return mapping.get(request.service)

    return resolve


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
        self._engine = MemuxEngine(client, self.settings)
        self._transports: dict[int, ChannelTransport] = {}
        # Channels whose push producer we paused, and channels with a pull
        # producer: the only ones `_serviceProducers` needs to look at.
        self._pausedProducers: set[ChannelTransport] = set()
        self._pullProducers: set[ChannelTransport] = set()
        self._lossy: set[ChannelTransport] = set()
        # The connection's addresses, cached once final: from the first
        # bytes received on.  Before that a wrapper may still change them
        # (Twisted's ``haproxy:`` endpoint learns the client's address from
        # the PROXY header, which precedes our peer's first byte).
        self._addressesFinal = False
        self._peer: IAddress | None = None
        self._peerHost: str | None = None  # of _peer, once known
        self._peerPort: int | None = None
        self._host: IAddress | None = None
        self._closing = False
        self._idleCall: IDelayedCall | None = None
        # Keepalive: whether anything arrived since the timer was armed, and
        # whether our PING is out waiting for anything at all.
        self._keepAliveCall: IDelayedCall | None = None
        self._heard = False
        self._keepAlivePinged = False
        self._abortCall: IDelayedCall | None = None
        # SessionSettings.handshakeTimeout: armed until the peer's preface.
        self._handshakeCall: IDelayedCall | None = None
        # SessionSettings.writeTimeout: since when the connection has taken
        # none of our output (None: it is taking it), and the timer that
        # checks.  The timer is not cancelled on every resume (that would
        # cost a DelayedCall per flush under load); it looks again when due.
        self._blockedSince: float | None = None
        self._writeCall: IDelayedCall | None = None
        # When the peer's allowance of frames that do no work is next
        # refilled (see SessionSettings.maxUselessFrames).
        self._loadBudgetRefill = 0.0
        self._flushCall: IDelayedCall | None = None
        self._flushing = False
        self._transportPaused = False
        # Bulk mode (see BULK_AFTER_FLUSHES): small writes so far, as last
        # seen by a flush, and pauses by the connection since.
        self._flushBytes = FLUSH_BYTES
        self._highWater = WRITE_HIGH_WATER
        self._smallWrites = 0
        self._smallSeen = 0
        self._fullFlushes = 0
        # Bulk reading (see BULK_AFTER_READS): the connection's own read
        # size, unknown (so never reached) until connected; full reads in a
        # row (at BULK_AFTER_READS and beyond, reading in bulk).
        self._readSize = sys.maxsize
        self._fullReads = 0
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
        # Channel resets and refusals logged, and not logged (past
        # LOGGED_CHANNEL_ENDINGS).
        self._endingsLogged = 0
        self._endingsUnlogged = 0
        self._pings: dict[bytes, tuple[float, defer.Deferred[float]]] = {}
        self._pingIds = itertools.count(1)
        self._draining = False
        self._drained: list[defer.Deferred[None]] = []
        self._closedWaiters: list[defer.Deferred[None]] = []
        self.connected = False
        self.lostReason: Failure | None = None
        self._terminatedWith: tuple[int | None, str] | None = None
        self._goAway: GoAwayReceived | None = None  # the peer's, if any

    # ------------------------------------------------------------ public

    @property
    def engine(self) -> MemuxEngine:
        """
        The sans-IO engine (for introspection).
        """
        return self._engine

    @property
    def peerSettings(self) -> Settings:
        """
        The peer's settings (the protocol's initial values until its
        preface arrives).
        """
        return self._engine.peerSettings

    def isUsable(self) -> bool:
        """
        Whether new channels may be opened on this session: it is connected
        and neither side has started to end it (no GOAWAY either way, no
        close under way).
        """
        engine = self._engine
        return (
            bool(self.connected)
            and not self._closing
            and not engine.terminated
            and engine.goAwayReceived is None
            and engine.goAwaySent is None
        )

    def counters(self) -> dict[str, int]:
        """
        Counters for introspection: bytes and frames moved, channels opened
        by each side, channels open now.
        """
        e = self._engine
        return {
            "bytesSent": e.bytesSent,
            "bytesReceived": e.bytesReceived,
            "framesReceived": e.framesReceived,
            "channelsOpened": e.channelsOpened,
            "channelsAccepted": e.channelsAccepted,
            "channelsOpen": len(self._transports),
        }

    def openChannel(
        self,
        service: bytes,
        factory: IProtocolFactory,
        *,
        metadata: bytes | None = None,
        destination: tuple[str, int] | None = None,
        lossy: bool = False,
    ) -> defer.Deferred[IProtocol]:
        """
        Open a channel for ``service`` and connect a protocol from
        ``factory`` to it.  The Deferred fires at once (no round trip);
        data written goes out as soon as the peer's credit allows.  If the
        peer refuses the channel the protocol's ``connectionLost`` gets a
        `ChannelRefused`.
        """
        if not isinstance(service, bytes):
            return defer.fail(
                TypeError(f"service must be bytes, not {type(service).__name__}")
            )
        engine = self._engine
        if not self.connected or engine.terminated:
            return defer.fail(SessionLost("the session is not connected"))
        if engine.goAwayReceived is not None:
            return defer.fail(ChannelRefused("the peer is going away", remote=True))
        try:
            cid = engine.openChannel(service, metadata, destination, lossy)
        except ValueError as e:
            return defer.fail(e)
        try:
            protocol = factory.buildProtocol(self._channelAddress(cid, service))
        except Exception:
            self._engine.resetChannel(cid)
            return defer.fail()
        if protocol is None:
            self._engine.resetChannel(cid)
            return defer.fail(
                ChannelRefused("the factory built no protocol", remote=False)
            )
        transport = ChannelTransport(self, cid, service, lossy, protocol)
        self._transports[cid] = transport
        if self._idleCall is not None:
            self._disarmIdle()
        if lossy:
            self._lossy.add(transport)
        try:
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
            self._engine.resetChannel(cid, ErrorCode.INTERNAL_ERROR, "internal error")
            self._channelGone(transport)
            return defer.fail(failure)
        if self._flushCall is None and not self._flushing:
            self._scheduleFlush()
        return defer.succeed(protocol)

    def ping(self) -> defer.Deferred[float]:
        """
        Send a PING; the Deferred fires with the round-trip time in seconds.
        """
        if not self.connected or self._engine.terminated:
            return defer.fail(SessionLost("the session is not connected"))
        payload = next(self._pingIds).to_bytes(8, "big")
        d: defer.Deferred[float] = defer.Deferred()
        self._pings[payload] = (self._reactor.seconds(), d)
        self._engine.ping(payload)
        self._scheduleFlush()
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
        self._engine.goAway(code, reason)
        self._draining = True
        self._scheduleFlush()
        return d

    def loseConnection(self) -> None:
        """
        Close the session's connection now, after writing what can be
        written; open channels end with `SessionLost`.  Use this rather
        than ``session.transport.loseConnection()``: the session is its
        connection's producer, and Twisted's TLS layer does not close while
        a producer is registered.  (For a graceful end, use `goAway`.)
        """
        if not self.connected:
            return
        if self._flushCall is not None and self._flushCall.active():
            self._flushCall.cancel()
        self._flush()
        self._closeConnection()

    def abortConnection(self, reason: str = "aborted") -> None:
        """
        Abort the session's connection at once, discarding what is unsent;
        open channels end with `SessionLost` carrying ``reason``.
        """
        self._abort(None, reason)

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
        # memux already gathers a reactor turn's writes into one; Nagle's
        # algorithm on top only delays small messages (and acknowledgements)
        # by up to an RTT, making throughput erratic.
        setNoDelay = getattr(transport, "setTcpNoDelay", None)
        if setNoDelay is not None:
            try:
                setNoDelay(True)
            except Exception:  # not a TCP socket after all (UNIX, pipes)
                pass
        _limitUnsent(transport)
        _roomForHeaders(transport)
        readSize = getattr(transport, "bufferSize", None)
        if type(readSize) is int and 0 < readSize < BULK_READ_SIZE:
            self._readSize = readSize
        factory = self.factory
        if isinstance(factory, MultiplexingFactory):
            factory._sessionStarted(self)
        handshake = self.settings.handshakeTimeout
        if handshake is not None and not self._engine.prefaceReceived:
            self._handshakeCall = self._reactor.callLater(
                handshake, self._handshakeExpired
            )
        self._armIdle()
        self._loadBudgetRefill = self._reactor.seconds() + LOAD_BUDGET_PERIOD
        self._armKeepAlive()
        if self.client:
            self._log.info("memux session to {peer}", peer=self._peerAddress())
        self._flush()

    def dataReceived(self, data: bytes) -> None:
        """
        Feed the engine and act on its events.  A full channel holds back
        only its own credit, never reading.  A read of more than
        `INPUT_STEP_FRAMES` frames is finished in later reactor turns,
        shared fairly with other sessions, with reading paused meanwhile.
        """
        self._heard = True
        if not self._addressesFinal:
            self._addressesFinal = True
            self._peer = self._host = None  # (any cached before now)
            if not self.client:
                self._log.info("memux session from {peer}", peer=self._peerAddress())
        if len(data) >= self._readSize:
            # A read of at least the normal size (in bulk, of up to the
            # bulk size): the peer keeps the connection full.
            self._fullReads += 1
            if self._fullReads == BULK_AFTER_READS:
                cast(Any, self.transport).bufferSize = BULK_READ_SIZE
        elif self._fullReads:
            if self._fullReads >= BULK_AFTER_READS:
                cast(Any, self.transport).bufferSize = self._readSize
            self._fullReads = 0
        now = self._reactor.seconds()
        if now >= self._loadBudgetRefill:
            self._loadBudgetRefill = now + LOAD_BUDGET_PERIOD
            self._engine.refillLoadBudget()
        # While input is held, this (from a transport that could not pause,
        # or a TLS record of the same read) queues behind it: still a step.
        engine = self._engine
        sent = engine.bytesSent
        self._receive(data)
        if self._inputTask is None and engine.inputPending and self.connected:
            self._holdInput(engine.bytesSent != sent)

    def _receive(self, data: bytes) -> None:
        events = self._engine.receiveData(data, INPUT_STEP_FRAMES)
        if events:
            self._handleEvents(events)
        # Write now what the input called for (replies, credit): a turn
        # of its own for that would cost a reactor iteration per read.
        self._flush()

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
                self._cooperator = _newInputCooperator(self._reactor)
            cooperator = self._cooperator
        self._inputTask = cooperator.cooperate(self._inputSteps(wrote))

    def _inputSteps(self, wrote: bool) -> Iterator[defer.Deferred[None] | None]:
        """
        Work through the held input, one step per iteration, then read
        again.  After a step that wrote, the next waits for a reactor turn.
        """
        engine = self._engine
        if wrote:
            # What the read's first step wrote goes before the next step
            # (see `_InputSlice.wrote`); the Cooperator would run that
            # step first thing in the next turn, before the reactor polls.
            yield self._afterTurn()
        try:
            while self.connected and engine.inputPending:
                self._inInputStep = True
                sent = engine.bytesSent
                self._receive(b"")
                self._inInputStep = False
                if self.connected and engine.inputPending:
                    if engine.bytesSent != sent:
                        _InputSlice.wrote = True
                    yield None
        except Exception:
            # As an exception from dataReceived is to a transport: fatal.
            self._inInputStep = False
            self._log.failure(
                "Error handling input from {peer}", peer=self._peerAddress()
            )
            self._abort(None, "internal error")
        self._inputTask = None
        if self._readingPaused:
            self._readingPaused = False
            transport: Any = self.transport
            if self.connected and not getattr(transport, "disconnecting", False):
                transport.resumeProducing()

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
        self.connected = False
        self.lostReason = reason
        self._disarmIdle()
        for call in (
            self._keepAliveCall,
            self._abortCall,
            self._handshakeCall,
            self._writeCall,
        ):
            if call is not None and call.active():
                call.cancel()
        self._keepAliveCall = self._abortCall = None
        self._handshakeCall = self._writeCall = None
        if self._flushCall is not None and self._flushCall.active():
            self._flushCall.cancel()
        self._flushCall = None
        task, self._inputTask = self._inputTask, None
        if task is not None and not self._inInputStep:
            # Held input is dropped.  (From within a step, the task ends
            # itself: stopping a running task confuses the Cooperator.)
            task.stop()
        if self._terminatedWith is not None:
            code, why = self._terminatedWith
            lost = SessionLost(why, code)
        elif reason.check(ConnectionDone):
            # Not Twisted's "Connection was closed cleanly": for the
            # channels cut off it was not clean.
            g = self._goAway
            if g is not None:
                why = f"the peer went away (GOAWAY {describeCode(g.code)}"
                lost = SessionLost(f"{why}: {g.reason})" if g.reason else f"{why})")
            elif self._closing:
                lost = SessionLost("the session was closed")
            else:
                lost = SessionLost("the peer closed the connection without GOAWAY")
        else:
            lost = SessionLost(str(reason.value))
        self._log.info(
            "memux session with {peer} ended: {reason}",
            peer=self._peerAddress(),
            reason=(
                "closed cleanly"
                if self._terminatedWith is None and reason.check(ConnectionDone)
                else lost
            ),
        )
        if self._endingsUnlogged:
            self._log.info(
                "... and {count} more channel resets and refusals with {peer},"
                " not logged",
                count=self._endingsUnlogged,
                peer=self._peerAddress(),
            )
        transports = list(self._transports.values())
        paused = list(self._pausedProducers)
        self._transports.clear()
        self._pausedProducers.clear()
        self._pullProducers.clear()
        for transport in transports:
            # Held data that is complete is still delivered (if the channel
            # is paused, on resume); a partial message is not.
            transport._terminate(Failure(lost))
        for transport in paused:
            # Paused for the connection's sake, which nothing will now
            # resume; writes are discarded from here on.  A channel that is
            # its own producer (as Echo is) hears of the loss only so.
            transport._resumeProducer()
        pings = self._pings
        self._pings = {}
        for _, d in pings.values():
            d.errback(Failure(lost))
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
        buffered bytes stay bounded (pausing every registered producer at
        once would cost O(channels) per pause, many times a second).
        If it stays paused for `SessionSettings.writeTimeout`, the peer is
        not reading: the connection is aborted.
        """
        self._transportPaused = True
        self._fullFlushes += 1
        if self._fullFlushes == BULK_AFTER_FLUSHES:
            self._bulkMode(True)
        if self._blockedSince is None:
            self._outputBlocked()

    def resumeProducing(self) -> None:
        """
        The connection drained: write again, then resume producers.  (A
        connection that is closing resumes us too, instead of closing, as
        long as we are its producer: then we finish the close, see
        `_flush`.)
        """
        self._transportPaused = False
        if not self._closing and not self._closedUnderUs():
            self._blockedSince = None
        self._flush()

    def stopProducing(self) -> None:
        """
        The connection is going away; `connectionLost` follows.
        """

    # ------------------------------------------------------------ internals

    @property
    def _connection(self) -> ITransport:
        assert self.transport is not None
        return self.transport

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
        peer = self._peerAddress()
        if self._peer is None:
            return ChannelAddress.of(channel, service, peer)
        return ChannelAddress(channel, service, peer, self._peerHost, self._peerPort)

    def _scheduleFlush(self) -> None:
        # One flush per reactor turn: many writes share one transport.write,
        # and a channel opened in this turn rides on its first data.  (Not
        # during a flush: it writes what is added meanwhile.)
        if self._flushCall is None and not self._flushing and self.connected:
            self._flushCall = self._reactor.callLater(0, self._flush)

    def _shedLoad(self) -> None:
        """
        Lossy channels still over the high-water mark after a flush (so: not
        for size, for lack of credit or connection) discard the queued
        messages not yet begun but the newest, and tell the peer.  One long
        message cannot be shed; then its producer is paused as usual.
        """
        engine = self._engine
        for transport in list(self._lossy):
            channel = transport.channel
            if engine.queuedBytes(channel) < WRITE_HIGH_WATER:
                continue
            if engine.isOpen(channel) and not engine.finSent(channel):
                engine.discardQueuedMessages(channel, keepNewest=True)
            if (
                transport.producer is not None
                and engine.queuedBytes(channel) >= WRITE_HIGH_WATER
            ):
                transport._pauseProducer()

    def _flush(self) -> None:
        """
        Write what the engine has for the connection, until it pauses us,
        then let paused producers write again, and write what they wrote:
        all in this turn, so a bulk writer's next chunks do not wait for a
        turn of their own.  Re-entered (from a callback of the writes), it
        leaves the work to the flush under way.
        """
        if self._flushing:
            return
        call = self._flushCall
        if call is not None:
            self._flushCall = None
            if call.active():  # called directly, ahead of the scheduled flush
                call.cancel()
        if not self.connected:
            return
        engine = self._engine
        if engine.terminated:
            # The session is over: write the GOAWAY even if the connection
            # is paused (it buffers), then close.
            data = engine.dataToSend(FLUSH_BYTES)
            if data:
                self._connection.write(data)
            events = engine.popEvents()
            if events:
                self._handleEvents(events)
            self._closeConnection()
            return
        if self._closedUnderUs():
            # ``session.transport.loseConnection()``: Twisted's TCP stops
            # reading and, while we are its producer, resumes us when its
            # buffer drains instead of closing (and TLS waits for us to
            # unregister): no credit can arrive any more, so write what can
            # be written and close as `loseConnection` does.
            self._flushing = True
            try:
                self._writeOut()
            finally:
                self._flushing = False
            self._closeConnection()
            return
        if self._smallWrites != self._smallSeen:
            self._smallSeen = self._smallWrites
            self._fullFlushes = 0
            if self._flushBytes != FLUSH_BYTES:
                self._bulkMode(False)
        self._flushing = True
        more = False  # data left once the rounds are used up
        try:
            for _ in range(FLUSH_ROUNDS):
                self._writeOut()
                if not self.connected:
                    return
                if engine.terminated and not engine.hasDataToSend():
                    self._closeConnection()
                    return
                if self._transportPaused:
                    break
                if self._lossy:
                    self._shedLoad()
                if self._pausedProducers or self._pullProducers:
                    self._serviceProducers()
                more = engine.hasDataToSend()
                if not more:
                    break
        finally:
            self._flushing = False
        if not self.connected:
            return
        if self._transportPaused:
            if self._lossy:
                self._shedLoad()
        elif more:
            self._scheduleFlush()  # rounds used up: the rest next turn
        if (
            self._draining
            and not self._transports
            and not engine.hasOpenChannels()
            and not engine.hasDataToSend()
        ):
            # (A channel closed with loseConnection lets go of its transport
            # once our FIN is out, but is open until the peer's FIN.)
            self._closeConnection()

    def _closedUnderUs(self) -> bool:
        """
        Whether the connection is being closed by someone else than us:
        ``session.transport.loseConnection()``, or, beneath a wrapper such
        as TLS, the wrapper closing the connection under it (TLS does when
        the peer's close_notify arrives, while it still holds us as its
        producer).
        """
        if self._closing:
            return False
        transport: Any = self.transport
        for _ in range(_WRAPPERS):
            if transport is None:
                return False
            if getattr(transport, "disconnecting", False):
                return True
            transport = getattr(transport, "transport", None)
        return False

    def _bulkMode(self, on: bool) -> None:
        """
        Switch bulk mode on or off (see `BULK_AFTER_FLUSHES`).
        """
        self._flushBytes = BULK_FLUSH_BYTES if on else FLUSH_BYTES
        self._highWater = BULK_HIGH_WATER if on else WRITE_HIGH_WATER
        _limitUnsent(self.transport, BULK_NOTSENT_LOWAT if on else NOTSENT_LOWAT)

    def _writeOut(self) -> None:
        """
        Hand the connection what the engine has, a flush's worth at a time,
        until it pauses us or nothing is left; act on the events.
        """
        engine = self._engine
        connection = self._connection
        while not self._transportPaused:
            pieces = engine.piecesToSend(self._flushBytes)
            events = engine.popEvents()
            if len(pieces) > GATHER_PIECES:
                # Many small frames: one string (Twisted checks each piece
                # of a writeSequence with a Python call).
                connection.write(b"".join(pieces))
            elif pieces:
                # A few large chunks: the transport gathers its buffer
                # anyway, so each payload byte is copied once, not twice.
                connection.writeSequence(pieces)
            if events:
                self._handleEvents(events)
            elif not pieces:
                return
            if not self.connected:
                return

    def _closeConnection(self) -> None:
        """
        Close the connection once what is written has gone.  Unregister as
        its producer first: Twisted's TLS layer (and a TCP transport whose
        producer is paused) waits for that before it really closes.
        """
        if self._closing or not self.connected:
            return
        self._closing = True
        connection: Any = self._connection
        connection.unregisterProducer()
        connection.loseConnection()
        # A peer that does not read never lets the close finish (TCP and
        # TLS wait for unsent bytes): that is output blocked too.
        if self.connected and self._blockedSince is None:
            self._outputBlocked()

    def _serviceProducers(self) -> None:
        """
        Resume the producers we paused whose queue has drained, and ask pull
        producers for more: only those, not every registered producer.
        """
        low = self._highWater // 2
        queued = self._engine.queuedBytes
        for transport in list(self._pausedProducers):
            if transport.producer is None:
                self._pausedProducers.discard(transport)
            elif queued(transport.channel) < low:
                self._pausedProducers.discard(transport)
                transport._resumeProducer()
        for transport in list(self._pullProducers):
            if transport.producer is not None and queued(transport.channel) < low:
                transport._resumeProducer()

    def _watchProducer(self, transport: ChannelTransport) -> None:
        if not transport.streamingProducer:
            self._pullProducers.add(transport)
        elif self._transportPaused:
            transport._pauseProducer()

    def _unwatchProducer(self, transport: ChannelTransport) -> None:
        self._pausedProducers.discard(transport)
        self._pullProducers.discard(transport)

    def _armIdle(self) -> None:
        timeout = self.settings.idleTimeout
        if timeout is not None and self._idleCall is None and self.connected:
            self._idleCall = self._reactor.callLater(timeout, self._idleExpired)

    def _disarmIdle(self) -> None:
        if self._idleCall is not None:
            if self._idleCall.active():
                self._idleCall.cancel()
            self._idleCall = None

    def _idleExpired(self) -> None:
        self._idleCall = None
        if self._transports or not self.connected:
            return
        timeout = self.settings.idleTimeout
        self._log.info(
            "Ending memux session with {peer}: no channel for {timeout} s",
            peer=self._peerAddress(),
            timeout=timeout,
        )
        self.goAway(ErrorCode.IDLE_TIMEOUT, f"idle for {timeout:g} s")

    def _armKeepAlive(self) -> None:
        interval = self.settings.keepAliveInterval
        if interval is not None and self.connected:
            self._keepAliveCall = self._reactor.callLater(
                interval, self._keepAliveExpired
            )

    def _keepAliveExpired(self) -> None:
        """
        Another keepAliveInterval passed: if anything arrived meanwhile the
        peer is alive; else send a PING, and if it was already sent, end
        the session: the peer is dead or unreachable.
        """
        self._keepAliveCall = None
        if not self.connected or self._engine.terminated:
            return
        interval = self.settings.keepAliveInterval
        if self._heard:
            self._heard = False
            self._keepAlivePinged = False
        elif not self._keepAlivePinged:
            self._keepAlivePinged = True
            self._engine.ping(KEEPALIVE_PAYLOAD)
            self._scheduleFlush()
        else:
            self._log.warn(
                "Ending memux session with {peer}: nothing received for {t:g} s,"
                " not even a PING answer",
                peer=self._peerAddress(),
                t=2 * (interval or 0),
            )
            reason = f"no answer to PING in {interval:g} s"
            self._terminatedWith = (ErrorCode.IDLE_TIMEOUT, reason)
            self.goAway(ErrorCode.IDLE_TIMEOUT, reason)
            # A dead peer never reads the GOAWAY: do not wait for its
            # buffer to drain longer than another interval.
            if self.connected:
                self._abortCall = self._reactor.callLater(
                    interval or 0, self._abortDead
                )
            return
        self._armKeepAlive()

    def _abortDead(self) -> None:
        self._abortCall = None
        self._abort(None, "")

    def _abort(self, code: int | None, reason: str) -> None:
        """
        Abort the connection now; channels end with `SessionLost` carrying
        ``code`` and ``reason`` unless the session already ended otherwise.
        """
        if not self.connected:
            return
        if self._terminatedWith is None and reason:
            self._terminatedWith = (code, reason)
        connection: Any = self._connection
        abort = getattr(connection, "abortConnection", None)
        if abort is not None:
            abort()
        else:
            connection.loseConnection()

    def _handshakeExpired(self) -> None:
        self._handshakeCall = None
        if not self.connected or self._engine.prefaceReceived:
            return
        timeout = self.settings.handshakeTimeout
        self._log.info(
            "Ending memux session with {peer}: no preface within {timeout:g} s",
            peer=self._peerAddress(),
            timeout=timeout,
        )
        reason = f"no preface from the peer in {timeout:g} s"
        self._terminatedWith = (ErrorCode.IDLE_TIMEOUT, reason)
        if self._transportPaused:
            # The connection takes nothing more: a GOAWAY would never go.
            self._abort(ErrorCode.IDLE_TIMEOUT, reason)
            return
        # Tell the peer why (it may be a memux peer on a slow link), then
        # close; a peer that does not read either is bounded by writeTimeout.
        self._engine.goAway(ErrorCode.IDLE_TIMEOUT, reason)
        self._flush()

    def _outputBlocked(self) -> None:
        """
        The connection stopped taking our output (it paused us, or a close
        waits on unsent bytes): start the writeTimeout clock.
        """
        timeout = self.settings.writeTimeout
        if timeout is None:
            return
        self._blockedSince = self._reactor.seconds()
        if self._writeCall is None:
            self._writeCall = self._reactor.callLater(timeout, self._writeExpired)

    def _writeExpired(self) -> None:
        """
        writeTimeout after output was first blocked: if it has been blocked
        all along, abort; if it has moved since, look again when due.
        """
        self._writeCall = None
        since = self._blockedSince
        timeout = self.settings.writeTimeout
        if since is None or timeout is None or not self.connected:
            return
        left = since + timeout - self._reactor.seconds()
        if left > 0:
            self._writeCall = self._reactor.callLater(left, self._writeExpired)
            return
        self._log.warn(
            "Aborting memux session with {peer}: it has read none of our output"
            " for {timeout:g} s",
            peer=self._peerAddress(),
            timeout=timeout,
        )
        self._abort(ErrorCode.IDLE_TIMEOUT, f"the peer read nothing for {timeout:g} s")

    def _channelGone(self, transport: ChannelTransport) -> None:
        transports = self._transports
        transports.pop(transport.channel, None)
        if not transports:
            self._armIdle()
            if self._draining:
                self._scheduleFlush()
        # (Most channels are in none of these: skip the calls.)
        if self._pausedProducers:
            self._pausedProducers.discard(transport)
        if self._pullProducers:
            self._pullProducers.discard(transport)
        if self._lossy:
            self._lossy.discard(transport)

    def _channelMaybeDone(self, transport: ChannelTransport) -> None:
        """
        After the end of input: if the engine has closed the channel both
        ways (and nothing else ended it meanwhile), it is done.
        """
        channel = transport.channel
        if self._transports.get(channel) is transport and not self._engine.isOpen(
            channel
        ):
            self._channelGone(transport)
            transport._terminate(connectionDone)

    def _handleEvents(self, events: list[Event]) -> None:
        # Dispatch on the exact type; no typing.cast() here: it is a real
        # function call, and this runs for every event.
        transports = self._transports
        for event in events:
            t = type(event)
            if t is DataReceived:
                e: DataReceived = event  # type: ignore[assignment]
                transport = transports.get(e.channel)
                if transport is not None:
                    transport._chunkArrived(e.data, e.endMessage)
                else:
                    self._engine.consumed(e.channel, len(e.data))
            elif t is ChannelOpened:
                self._channelOpened(event)  # type: ignore[arg-type]
            elif t is RemoteHalfClosed:
                transport = transports.get(event.channel)  # type: ignore[union-attr]
                if transport is not None:
                    transport._remoteFin()
            elif t is LocalHalfClosed:
                transport = transports.get(event.channel)  # type: ignore[union-attr]
                if transport is not None:
                    transport._localFinSent()
            elif t is ChannelClosed:
                transport = transports.get(event.channel)  # type: ignore[union-attr]
                if transport is not None:
                    transport._closed()
            elif t is ChannelResetEvent:
                self._channelReset(event)  # type: ignore[arg-type]
            elif t is MessagesDropped:
                e2: MessagesDropped = event  # type: ignore[assignment]
                transport = transports.get(e2.channel)
                if transport is not None:
                    transport._dropArrived(e2.count)
            elif t is PingAcknowledged:
                entry = self._pings.pop(event.payload, None)  # type: ignore[union-attr]
                if entry is not None:
                    started, d = entry
                    d.callback(self._reactor.seconds() - started)
            elif t is GoAwayReceived:
                g: GoAwayReceived = event  # type: ignore[assignment]
                self._goAway = g
                self._log.info(
                    "Peer {peer} is going away (last channel {last}, {code}: {reason})",
                    peer=self._peerAddress(),
                    last=g.lastChannel,
                    code=describeCode(g.code),
                    reason=g.reason,
                )
            elif t is SessionTerminated:
                s: SessionTerminated = event  # type: ignore[assignment]
                self._terminatedWith = (s.code, s.reason)
                if s.remote:
                    self._log.warn(
                        "Peer {peer} ended the session: {reason}",
                        peer=self._peerAddress(),
                        reason=s.reason,
                    )
                else:
                    self._log.warn(
                        "Protocol violation by {peer}: {code}: {reason}",
                        peer=self._peerAddress(),
                        code=describeCode(s.code),
                        reason=s.reason,
                    )
                self._scheduleFlush()
            elif t is PeerWarning:
                self._log.warn(
                    "Peer {peer}: {why}",
                    peer=self._peerAddress(),
                    why=event.message,  # type: ignore[union-attr]
                )
            elif t is PrefaceReceived:
                if self._handshakeCall is not None:
                    if self._handshakeCall.active():
                        self._handshakeCall.cancel()
                    self._handshakeCall = None

    def _channelOpened(self, event: ChannelOpened) -> None:
        why = ""
        services = self._serviceMap
        if services is not None:
            if event.destination is None:
                factory = services.get(event.service)
            else:
                # Forwarding needs a services callable that says where to.
                factory = None
                why = "this session forwards to no destination"
        else:
            request = ChannelRequest(
                event.service,
                event.metadata,
                event.destination,
                event.channel,
                event.lossy,
                self,
            )
            try:
                factory = self._resolve(request)
            except ChannelRefused as refused:
                # The resolver refused with a reason of its own.
                factory = None
                why = refused.reason or "refused"
            except Exception:
                self._log.failure(
                    "Error choosing a factory for channel {channel}",
                    channel=event.channel,
                )
                factory = None
                why = "internal error"
        if factory is None and not why:
            why = (
                f"no service {describeService(event.service)}"
                if event.service
                else "no default service"
            )
        protocol = None
        if factory is not None:
            try:
                protocol = factory.buildProtocol(
                    self._channelAddress(event.channel, event.service)
                )
            except Exception:
                self._log.failure(
                    "Error building a protocol for channel {channel}",
                    channel=event.channel,
                )
            if protocol is None:
                why = f"service {describeService(event.service)} declined the channel"
        if protocol is None:
            if self._mayLogEnding():
                self._log.info(
                    "Refused channel {channel} from {peer}: {why}",
                    channel=event.channel,
                    peer=self._peerAddress(),
                    why=why,
                )
            self._engine.refuseChannel(event.channel, why)
            return
        transport = ChannelTransport(
            self, event.channel, event.service, event.lossy, protocol
        )
        self._transports[event.channel] = transport
        if self._idleCall is not None:
            self._disarmIdle()
        if event.lossy:
            self._lossy.add(transport)
        try:
            protocol.makeConnection(transport)
        except Exception:
            transport._protocolFailed(Failure())

    def _mayLogEnding(self) -> bool:
        """
        Whether to log one more channel reset or refusal (else count it).
        """
        if self._endingsLogged < LOGGED_CHANNEL_ENDINGS:
            self._endingsLogged += 1
            return True
        self._endingsUnlogged += 1
        return False

    def _channelReset(self, event: ChannelResetEvent) -> None:
        transport = self._transports.get(event.channel)
        if transport is None:
            return
        reason: ChannelReset
        if event.code == ErrorCode.REFUSED:
            reason = ChannelRefused(event.reason, event.remote)
        elif event.code == ErrorCode.MESSAGE_TOO_LARGE:
            reason = MessageTooLarge(event.reason, event.remote)
        else:
            reason = ChannelReset(event.code, event.reason, event.remote)
        if not self._mayLogEnding():
            pass  # counted, logged at the end of the session
        elif event.remote:
            self._log.info(
                "{reason} (channel {channel})", reason=reason, channel=event.channel
            )
        else:
            self._log.warn(
                "Peer {peer} broke the rules on channel {channel}: {reason}",
                peer=self._peerAddress(),
                channel=event.channel,
                reason=reason,
            )
        self._channelGone(transport)
        transport._terminate(Failure(reason))


class MultiplexingFactory(Factory):
    """
    A factory of memux sessions.  Each channel the peer opens is handed to
    the factory that ``services`` names for it: a mapping of service name
    to `IProtocolFactory`, or a callable taking a `ChannelRequest` and
    returning a factory or None (refuse).

    @param client: build the side that initiated the connection (odd
        channel ids); `connectSession` sets it.
    """

    protocol = MemuxProtocol
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
            self._cooperator = _newInputCooperator(reactor)
        return self._cooperator

    def _clock(self) -> IReactorTime:
        if self.reactor is not None:
            return self.reactor
        from twisted.internet import reactor

        return cast(IReactorTime, reactor)

    def _sessionStarted(self, session: MemuxProtocol) -> None:
        self._sessions.add(session)
        if len(self._sessions) > self.peakSessions:
            self.peakSessions = len(self._sessions)
        if self._draining:
            # Accepted while the listeners were closing: drain it too.
            session.goAway(ErrorCode.NO_ERROR, "shutting down")

    def _sessionEnded(self, session: MemuxProtocol) -> None:
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
    ) -> None:
        self.session = session
        self.service = service
        self.metadata = metadata
        self.destination = destination

    def connect(self, protocolFactory: IProtocolFactory) -> defer.Deferred[IProtocol]:
        """
        Open a channel and connect a protocol from ``protocolFactory``.
        """
        return self.session.openChannel(
            self.service,
            protocolFactory,
            metadata=self.metadata,
            destination=self.destination,
        )
