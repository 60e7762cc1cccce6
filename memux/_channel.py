# -*- test-case-name: memux.test.test_session -*-
"""
One channel of a memux session, sans I/O: `ChannelCore`, the base of a
front end's channel object (Twisted: `memux.transport.ChannelTransport`),
and `Ending`, how a channel ended.

It talks to its session (`memux._session.SessionCore`) through the small
interface the session documents for its channels.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from memux.codes import ChannelClosedError, ChannelState, ErrorCode
from memux.settings import DEFAULT_WEIGHT, Priority, checkPriority

if TYPE_CHECKING:
    from _typeshed import IdentityFunction

    from memux._session import SessionCore

try:
    from mypy_extensions import mypyc_attr
except ImportError:  # only mypyc reads it (mypy brings it): else a no-op

    def mypyc_attr(*attrs: str, **kwattrs: object) -> IdentityFunction:
        return lambda cls: cls


__all__ = ["CLEAN", "ChannelCore", "Delivery", "Ending", "Notice"]

#: A write that leaves less than this queued on its channel is small: it
#: ends the session's bulk mode (see `memux._session.BULK_AFTER_FLUSHES`).
SMALL_WRITE = 16 * 1024

#: The FIN's place among held inbound items.
_FIN = object()

#: A front end's handle on a call it will make soon (Twisted: a DelayedCall).
Delivery = Any


@dataclass(frozen=True, slots=True)
class Ending:
    """
    How a channel ended, for its front end to tell its application (as its
    own error types).  ``kind`` is one of:

    - ``"done"``: cleanly, both ways;
    - ``"aborted"``: by this side's application, at once;
    - ``"reset"``: by a RESET (``remote``: the peer's; else ours because
      the peer broke a channel rule), with its ``code`` and ``reason``;
    - ``"lost"``: with its session (``code``: the error code it ended on,
      if any);
    - ``"failed"``: the application's own callback raised ``cause``.
    """

    kind: str
    code: int | None = None
    reason: str = ""
    remote: bool = True
    cause: Any = None

    @property
    def clean(self) -> bool:
        """
        Whether the channel ended cleanly.
        """
        return self.kind == "done"


#: The clean end of a channel.
CLEAN = Ending("done")


@dataclass(frozen=True, slots=True)
class Notice:
    """
    Something worth a log line that the core saw; ``what`` names it (the
    front end words it), ``fields`` give the details.
    """

    what: str
    fields: dict[str, Any]


@mypyc_attr(allow_interpreted_subclasses=True)
class ChannelCore:
    """
    One channel of a session, as its front end's transport object: inbound
    delivery (in order, held while paused, reassembled into messages when
    the protocol wants them), outbound writes and closes, and the producer
    decisions.  Front ends subclass it (Twisted: `ChannelTransport`) and
    provide `_lose` and `_failed`.

    Compiled (see setup.py), it still takes Python subclasses, but its
    methods read its own fields: a subclass that starts a channel in
    another state sets the field in ``__init__``, never as a class
    attribute (``test_session.SubclassTests`` holds the front ends to it).

    The receiving ``protocol`` gets ``dataReceived(data)`` (mode 0),
    ``messageReceived(message)`` (mode 1) or ``chunkReceived(data, end)``
    (mode 2), and, if it has them, ``messagesDropped(count)`` and
    ``readConnectionLost()``/``writeConnectionLost()`` (half-close).
    """

    # The state every channel starts in, as class attributes: an instance
    # sets only what changes, so opening a channel (thousands a second
    # under churn) costs a few assignments, and an idle one a small dict.
    # (Compiled, a struct's fields in this order: the flags together share
    # one word's padding, 16 bytes a channel less than padded in groups.)
    protocol: Any = None
    # Inbound: (data, endOfMessage) chunks, or (None, count) drop notices,
    # in stream order.  Created on first use: most channels never hold
    # anything, and an empty deque costs ~600 bytes.
    _inbox: deque[tuple[bytes | None, Any]] | None = None
    _pendingLoss: Ending | None = None
    _deliverCall: Delivery = None
    # The chunks of a message being reassembled (a list once there are any).
    _partial: list[bytes] | tuple[()] = ()
    _partialSize = 0
    _mode = 0  # 0 bytes, 1 messages, 2 chunks
    _owed = 0  # bytes delivered, not yet reported consumed (`SessionCore.owing`)
    producer: Any = None  # (outbound)
    _refillOwed = 0  # owed to its producer (`SessionCore._refillByWeight`)
    # The protocol's class name once the front end lets go of it (its log
    # prefix): a field here, since compiled one set on a subclass would
    # give each closing channel an attribute dict of its own.
    _protocolName = "-"
    lossy = False
    connected = True
    disconnecting = False
    disconnected = False
    _finArrived = False
    _readClosed = False  # no more delivery (closed or reset)
    _paused = False
    _delivering = False
    _writeClosed = False
    _fullClose = False
    streamingProducer = False
    _producerPaused = False
    _lost = False

    def __init__(
        self,
        core: SessionCore,
        channel: int,
        service: bytes,
        lossy: bool = False,
        protocol: Any = None,
        mode: int = 0,
    ) -> None:
        self._core = core
        self.channel = channel
        self.service = service
        if lossy:
            self.lossy = True
        self._maxMessage = core.settings.maxMessageSize
        if protocol is not None:
            self.protocol = protocol
        if mode:
            self._mode = mode

    # ------------------------------------------------------------ front end

    def _lose(self, ending: Ending) -> None:
        """
        Tell the protocol the channel ended (``connectionLost``).
        """
        raise NotImplementedError

    def _failed(self) -> Any:
        """
        Called inside ``except``: the protocol raised.  Report it; return
        the cause to end the channel with.
        """
        raise NotImplementedError

    def _halfCloser(self) -> Any:
        """
        The protocol's half-close side (``readConnectionLost`` and
        ``writeConnectionLost``), or None: it cannot half-close.
        """
        return None

    def _dropReceiver(self) -> Any:
        """
        What hears of messages the peer discarded (``messagesDropped``), or
        None.
        """
        return None

    # ------------------------------------------------------------ state

    @property
    def state(self) -> ChannelState:
        """
        The channel's state, as the specification names them (read-only):
        OPEN, HALF_CLOSED_LOCAL once our FIN is out, HALF_CLOSED_REMOTE
        once the peer's arrived, CLOSED when it has ended.
        """
        return self._core.engine.channelState(self.channel)

    @property
    def priority(self) -> Priority:
        """
        The priority the channel's data is sent at (read-only: see
        `setPriority`): set by this side, or by the peer's hint.
        """
        return self._core.engine.priority(self.channel)

    def setPriority(self, urgency: int, weight: int = DEFAULT_WEIGHT) -> None:
        """
        Send this channel's data at ``urgency`` (0, the most urgent, to 7;
        `~memux.settings.DEFAULT_URGENCY` by default) and ``weight`` (1 to
        256, within its urgency) from now on, and ask the peer to send its
        data on the channel so too (if it takes hints: see the guide's
        "Priorities").  Ignored once the channel has ended.

        :raises TypeError: ``urgency`` or ``weight`` is not an integer.
        :raises ValueError: either is out of range.
        """
        checkPriority(urgency, weight)
        core = self._core
        if self._lost or not core.engine.isOpen(self.channel):
            return
        core.engine.setPriority(self.channel, urgency, weight)
        if core.flushCall is None:
            core.flushSoon()  # the hint goes out

    @property
    def readingPaused(self) -> bool:
        """
        Whether the application paused reading (``pauseProducing``).
        """
        return self._paused

    @property
    def writingPaused(self) -> bool:
        """
        Whether memux paused the application's producer (its queue is full).
        """
        return self._producerPaused

    # ------------------------------------------------------------ writing

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
        core = self._core
        try:
            queued = core.engine.sendData(
                self.channel, data if type(data) is bytes else bytes(data), True
            )
        except ChannelClosedError:
            return  # reset an instant ago (see `_send`)
        if core.flushCall is None:
            core.flushSoon()
        if queued < SMALL_WRITE:
            core.smallWrites += 1
        if self.producer is not None:
            if not self.lossy and (core.outputPaused or queued >= core.highWater):
                self._pauseProducer()

    def _send(self, data: bytes, end: bool) -> None:
        core = self._core
        try:
            queued = core.engine.sendData(self.channel, data, end)
        except ChannelClosedError:
            # Reset an instant ago; the end with its reason is on its way,
            # as with a TCP write racing an RST.
            return
        # Flush soon (as `SessionCore.flushSoon`, guarded inline: this runs
        # for every write; during a flush ``flushCall`` is not None either);
        # pause the producer of a channel that has queued enough.
        if core.flushCall is None:
            core.flushSoon()
        if queued < SMALL_WRITE:
            core.smallWrites += 1
        if (
            self.producer is not None
            and not self.lossy
            and (core.outputPaused or queued >= core.highWater)
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
        and no more reading.  The end (clean) follows, never from inside
        this call.
        """
        if self.disconnecting or self.disconnected:
            return
        self.disconnecting = True
        self._fullClose = True
        core = self._core
        engine = core.engine
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
            if core.flushCall is None:
                core.flushSoon()
            return
        engine.stopReading(self.channel)
        self._stopReading()
        if not engine.isOpen(self.channel) or engine.finSent(self.channel):
            # Our FIN is already out (or the channel already ended): no
            # event will come to finish this, so finish it soon.
            core.host.callSoon(self._finishClose)

    def loseWriteConnection(self) -> None:
        """
        Half-close: send FIN after the data already written, keep reading.
        """
        self._closeWrite()

    def abortConnection(self) -> None:
        """
        Reset the channel at once, discarding unsent data; the end
        (aborted) follows, never from inside this call.
        """
        if self.disconnected or self._lost:
            return
        self._resetNow(ErrorCode.CANCEL, "aborted", Ending("aborted"))

    def resetChannel(self, code: int, reason: str = "") -> None:
        """
        Reset the channel with a wire error ``code`` and ``reason`` (for
        example CONNECT_ERROR when a tunnel's destination cannot be
        reached): as `abortConnection`, but the peer sees this code.
        """
        if self.disconnected or self._lost:
            return
        self._resetNow(code, reason, Ending("reset", code, reason, remote=False))

    def _resetNow(self, code: int, reason: str, ending: Ending) -> None:
        self.disconnecting = True
        self._writeClosed = True
        self._stopReading()
        self._pendingLoss = None
        core = self._core
        core.engine.resetChannel(self.channel, code, reason)
        core.flushSoon()
        core.channelGone(self)
        core.host.callSoon(self._connectionLost, ending)

    # ------------------------------------------------------------ producers

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
        self._core.watchProducer(self)
        if not streaming:
            self._core.flushSoon()

    def unregisterProducer(self) -> None:
        """
        Forget the registered producer.
        """
        self.producer = None
        self._core.unwatchProducer(self)

    def _pauseProducer(self) -> None:
        producer = self.producer
        if producer is not None and self.streamingProducer:
            if not self._producerPaused:
                self._producerPaused = True
                self._core.producerPaused(self)
            # At every write over the limit, as Twisted's transports do: one
            # that starts itself after registering paused would never stop.
            producer.pauseProducing()

    def _resumeProducer(self) -> None:
        producer = self.producer
        if producer is None:
            return
        if self.streamingProducer:
            if self._producerPaused:
                self._producerPaused = False
                producer.resumeProducing()
        else:
            producer.resumeProducing()

    # ------------------------------------------------------------ reading

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
            self._deliverCall = self._core.host.callSoon(self._deliver)

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
            self._core.engine.consumed(self.channel, len(data))
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
        # What it consumed is owed to the engine, which hears it once for
        # the whole batch of events (`SessionCore.owing`): a call less per
        # message.  (The grants it makes due go out in the same flush.)
        mode = self._mode
        protocol = self.protocol
        n = len(data)
        self._delivering = True
        try:
            if mode == 1:
                if end and not self._partial and n <= self._maxMessage:
                    if n:
                        if not self._owed:
                            self._core.owing.append(self)
                        self._owed += n
                    protocol.messageReceived(data)
                else:
                    self._assemble(data, end)
            else:
                if n:
                    if not self._owed:
                        self._core.owing.append(self)
                    self._owed += n
                if mode == 0:
                    if n:
                        protocol.dataReceived(data)
                else:
                    protocol.chunkReceived(data, end)
        except Exception:
            self._delivering = False
            self._protocolFailed(self._failed())
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
        # A later turn than the read that brought this: the credit granted
        # as it is consumed is timed now (`SessionCore.tickClock`).
        self._core.tickClock()
        self._delivering = True
        try:
            self._deliverLoop()
        finally:
            self._delivering = False

    def _deliverLoop(self) -> None:
        inbox = self._inbox
        engine = self._core.engine
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
                        receiver = self._dropReceiver()
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
                    protocol.chunkReceived(data, extra)
            except Exception:
                self._protocolFailed(self._failed())
                return
            core = self._core
            if core.flushCall is None:  # (`SessionCore.flushSoon`'s guard)
                core.flushSoon()

    def _assemble(self, data: bytes, end: bool) -> None:
        core = self._core
        limit = self._maxMessage
        # A message may be larger than the channel's credit window, so bytes
        # moved into reassembly give the channel its credit back; they still
        # count against the session until the message is delivered.
        core.engine.consumed(self.channel, len(data), holdSession=True)
        if data:
            self._partialSize += len(data)
            if self._partialSize > limit:
                self._partial = ()
                reason = f"message over the maximum of {limit} bytes"
                core.host.notice(
                    Notice(
                        "message too large", {"channel": self.channel, "reason": reason}
                    )
                )
                self._fail(
                    Ending("reset", ErrorCode.MESSAGE_TOO_LARGE, reason, remote=False),
                    ErrorCode.MESSAGE_TOO_LARGE,
                    reason,
                )
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
        self._core.engine.releaseSession(self.channel, self._partialSize)
        self._partial = ()
        self._partialSize = 0
        self.protocol.messageReceived(message)

    def _endOfInput(self) -> None:
        """
        The peer's FIN, after everything before it was delivered.
        """
        half = self._halfCloser()
        if half is not None and not self.disconnecting:
            half.readConnectionLost()
            if not (self.disconnecting or self._lost):
                self._core.channelMaybeDone(self)
        elif not self._writeClosed:
            # As with TCP, a protocol that cannot half-close sees the
            # connection end; what it already wrote is still sent first.
            self.disconnecting = True
            self._fullClose = True
            self._closeWrite()
        else:
            self.disconnecting = True
            self._core.channelMaybeDone(self)

    def _stopReading(self) -> None:
        """
        Read no more: discard what is held (its credit goes back).
        """
        self._readClosed = True
        engine = self._core.engine
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
        core = self._core
        core.engine.closeChannel(self.channel)
        if core.flushCall is None:  # (`SessionCore.flushSoon`'s guard)
            core.flushSoon()

    def _localFinSent(self) -> None:
        """
        Our FIN went out.
        """
        if self._fullClose:
            # `_finishClose`, inline: every channel closed with
            # loseConnection ends here.
            self._core.channelGone(self)
            self._connectionLost(self._pendingLoss or CLEAN)
            return
        half = self._halfCloser()
        if half is not None:
            try:
                half.writeConnectionLost()
            except Exception:
                self._protocolFailed(self._failed())

    def _finishClose(self) -> None:
        """
        Complete a full close whose FIN has gone out (or that needs none).
        """
        # The engine stopped reading for us (loseConnection): the channel
        # ends there when the peer closes too, or is reset if it sends more.
        self._core.channelGone(self)
        # Nothing is held (a full close stops reading), so a pause has
        # nothing to hold back.
        self._connectionLost(self._pendingLoss or CLEAN)

    def _closed(self) -> None:
        """
        The engine says both directions ended cleanly; the protocol hears it
        after whatever is still held.
        """
        self._core.channelGone(self)
        self._terminate(CLEAN)

    def _terminate(self, ending: Ending) -> None:
        """
        End the channel with ``ending`` once held data is delivered.  For
        anything but a clean end, a partial message is discarded: it is
        never delivered as if complete.
        """
        if self._lost or self._pendingLoss is not None:
            return
        self._writeClosed = True
        if not ending.clean:
            self._dropPartial()
        self._pendingLoss = ending
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

    def _protocolFailed(self, cause: Any) -> None:
        """
        The channel's protocol raised: that is a fault in application code,
        which ends this channel only.  The peer learns that the channel
        failed, not our internals.
        """
        self._fail(
            Ending("failed", cause=cause), ErrorCode.INTERNAL_ERROR, "internal error"
        )

    def _fail(self, ending: Ending, code: int, text: str) -> None:
        self._writeClosed = True
        self._stopReading()
        core = self._core
        core.engine.resetChannel(self.channel, code, text)
        core.flushSoon()
        core.channelGone(self)
        self._connectionLost(ending)

    def _connectionLost(self, ending: Ending) -> None:
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
            self._core.unwatchProducer(self)
            producer.stopProducing()
        self._lose(ending)
