# -*- test-case-name: memux.test.test_tunnel -*-
"""
Tunnels: splice a channel to a connection, both ways, with backpressure
and half-close intact.

- `forwardTo` makes a service whose channels are each forwarded to a new
  connection to a client endpoint (``twistd memux --service db=tcp:...``).
- `LocalForwardingFactory` accepts local connections and carries each one
  over a new channel (``memux forward``, like ``ssh -L``).
- `splice` joins any two connected protocols' transports.

An orderly end passes through as an orderly end (a FIN, or a half-close),
and an abnormal one as an abnormal one: when a channel is reset or its
session is lost, the connection spliced to it is aborted (an RST), and when
a connection is reset or lost, the channel spliced to it is reset.  So
whoever is at either end can tell a cut transfer from a complete one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet import defer
from twisted.internet.error import ConnectionAborted, ConnectionDone
from twisted.internet.interfaces import (
    IAddress,
    IHalfCloseableProtocol,
    IProtocol,
    IProtocolFactory,
    IPushProducer,
    IStreamClientEndpoint,
)
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from memux.codes import ErrorCode
from memux.error import ChannelReset, SessionLost
from memux.protocol import MemuxProtocol

__all__ = [
    "LocalForwardingFactory",
    "SpliceProtocol",
    "forwardTo",
    "splice",
]

_log = Logger()


def _isClean(reason: Failure) -> bool:
    """
    Whether a connection or channel that ended with ``reason`` ended in
    order (`ConnectionDone`), rather than by a reset, an abort, or the loss
    of what carried it.
    """
    return reason.check(ConnectionDone) is not None


@implementer(IHalfCloseableProtocol)
class SpliceProtocol(Protocol):
    """
    One end of a splice: what it receives is written to its peer's
    transport.  Each transport's reading is registered as the producer of
    the other's writes, so a slow side pauses reading on the fast one
    (credit on a channel, the TCP window on a socket).  A FIN on one side
    becomes a half-close on the other; a clean end of one side closes the
    other after what it had to write; an abnormal end aborts it.

    :ivar side: what this side is, for the reason of a reset it causes.
    :ivar received: the bytes received on this side (and passed on).
    :ivar reason: why this side ended, once it has.
    :ivar failure: what ended the splice abnormally, if anything did: this
        side's own abnormal end, or the one on the peer's side for which
        this side was aborted.
    :ivar done: fires when this side has ended.
    """

    side = "the spliced connection"

    def __init__(self) -> None:
        self.peer: SpliceProtocol | None = None
        self._held: list[bytes] = []
        self._readDone = False
        self.received = 0
        self.reason: Failure | None = None
        self.failure: Failure | None = None
        self.done: defer.Deferred[None] = defer.Deferred()
        # How the splice is ending this side, if it is: "close" or "abort".
        self._ending: str | None = None

    def dataReceived(self, data: bytes) -> None:
        """
        Pass ``data`` on to the peer (held until there is one).
        """
        self.received += len(data)
        if self.peer is None or self.peer.transport is None:
            self._held.append(data)
        else:
            self.peer.transport.write(data)

    def readConnectionLost(self) -> None:
        """
        This side will send no more: half-close the peer's write side.
        """
        self._readDone = True
        peer = self.peer
        if peer is not None and peer.transport is not None:
            # Nothing more will be written there, so its producer (our
            # reading) is done with; a TCP transport left with a paused
            # producer would resume it instead of closing.
            _unregister(peer.transport)
            _halfClose(peer.transport)

    def writeConnectionLost(self) -> None:
        """
        Nothing to do: the peer's end of input is already passed on.
        """

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        """
        End the peer the way this side ended: after a clean end, close it
        after what it still has to write; otherwise abort it at once.
        """
        self.reason = reason
        if self.failure is None and not _isClean(reason):
            self.failure = reason
        if self.peer is not None:
            _endSide(self.peer, self.failure, self._resetText())
        if not self.done.called:
            self.done.callback(None)

    def abort(self, why: str) -> None:
        """
        Cut the splice from outside (a forwarder that is stopping, say):
        both sides are aborted at once, a channel reset with CANCEL and
        ``why``, as if this side had failed.
        """
        if self.reason is not None:
            return
        if self.failure is None:
            self.failure = Failure(ConnectionAborted(why))
        if self.peer is not None:
            _endSide(self.peer, self.failure, why)
        _endSide(self, self.failure, why)

    def _resetText(self) -> str:
        """
        The reason a channel spliced to this side is reset with, when this
        side failed: what happened here, in a few words.
        """
        failure = self.failure
        if failure is None:
            return ""
        value = failure.value
        if isinstance(value, ChannelReset | SessionLost):
            return f"{self.side}: {value}"
        if isinstance(value, ConnectionAborted):
            return f"{self.side} was aborted"
        return f"{self.side} was reset or lost"

    def _linked(self) -> None:
        assert self.transport is not None and self.peer is not None
        held, self._held = self._held, []
        for data in held:
            self.peer.transport.write(data)  # type: ignore[union-attr]
        if self._readDone:
            self.readConnectionLost()


@implementer(IPushProducer)
class _Reading:
    """
    A transport's reading, as the producer of the other side's writes.
    Pausing and resuming pass through; stopping does nothing.  A transport
    that is lost stops its producer, and a stopped TCP transport or channel
    closes *in order* (a FIN) whatever the loss was: the splice ends the
    other side itself, knowing why (see `SpliceProtocol.connectionLost`).
    """

    def __init__(self, transport: Any) -> None:
        self._transport = transport

    def pauseProducing(self) -> None:
        self._transport.pauseProducing()

    def resumeProducing(self) -> None:
        self._transport.resumeProducing()

    def stopProducing(self) -> None:
        pass


def _unregister(transport: Any) -> None:
    # Not every transport exposes `producer` (StandardIO does not), so ask
    # it to unregister whenever it can; unregistering nothing is harmless.
    unregister = getattr(transport, "unregisterProducer", None)
    if unregister is not None:
        unregister()


def _halfClose(transport: Any) -> None:
    close = getattr(transport, "loseWriteConnection", None)
    if close is not None:
        close()
    else:
        transport.loseConnection()


def _abort(transport: Any, why: str) -> None:
    """
    End ``transport`` at once, discarding what it has not sent: a channel
    is reset with CANCEL and ``why`` (so its far end learns why), a
    connection aborted (an RST).  Standard I/O, which can do neither, is
    closed.
    """
    reset = getattr(transport, "resetChannel", None)
    if reset is not None:
        reset(ErrorCode.CANCEL, why)
        return
    abort = getattr(transport, "abortConnection", None)
    if abort is not None:
        abort()
    else:
        transport.loseConnection()


def _endSide(side: SpliceProtocol, failure: Failure | None, why: str) -> None:
    """
    End ``side`` because its peer ended: in order if ``failure`` is None,
    else at once (``why`` for a channel's reset).  A side being closed in
    order may still be aborted (what it was writing is then cut short);
    one being aborted is left to it.
    """
    transport = side.transport
    if transport is None or side.reason is not None:
        return
    if failure is None:
        if side._ending is None:
            side._ending = "close"
            _unregister(transport)
            transport.loseConnection()
        return
    if side._ending != "abort":
        side._ending = "abort"
        if side.failure is None:
            side.failure = failure
        _unregister(transport)
        _abort(transport, why)


def splice(a: SpliceProtocol, b: SpliceProtocol) -> None:
    """
    Join two connected `SpliceProtocol` instances: bytes, backpressure,
    half-close and the kind of end (clean or abnormal) flow between their
    transports.
    """
    a.peer, b.peer = b, a
    ta, tb = a.transport, b.transport
    assert ta is not None and tb is not None
    # Each side's reading is the producer of the other side's writing.
    ta.registerProducer(_Reading(tb), True)  # type: ignore[attr-defined]
    tb.registerProducer(_Reading(ta), True)  # type: ignore[attr-defined]
    a._linked()
    b._linked()


def _sideFactory(side: str) -> Factory:
    """
    A factory of `SpliceProtocol` instances that say they are ``side``.
    """

    def build() -> SpliceProtocol:
        protocol = SpliceProtocol()
        protocol.side = side
        return protocol

    factory: Factory = Factory.forProtocol(build)
    # One per connection: not "Starting factory" for each.
    factory.noisy = False
    return factory


#: builds the channel end of each local connection
_CHANNEL_END = _sideFactory("the channel")


class _OutboundSplice(SpliceProtocol):
    """
    The channel end of a forwarded channel: connects out when the channel
    opens, holding the channel's data (within its credit) meanwhile.
    """

    side = "the channel"

    def __init__(self, endpoint: IStreamClientEndpoint, describe: str) -> None:
        super().__init__()
        self.endpoint = endpoint
        self.describe = describe

    def connectionMade(self) -> None:
        transport: Any = self.transport
        transport.pauseProducing()
        d = self.endpoint.connect(_sideFactory(f"the connection to {self.describe}"))
        d.addCallbacks(self._connected, self._failed)

    def _connected(self, other: SpliceProtocol) -> None:
        if self.reason is not None:
            # The channel ended meanwhile: end the new connection the same
            # way (an abort, if the channel was reset or lost).
            _endSide(other, self.failure, "")
            return
        splice(self, other)
        transport: Any = self.transport
        transport.resumeProducing()

    def _failed(self, reason: Failure) -> None:
        _log.info(
            "Forwarding channel to {where} failed: {reason}",
            where=self.describe,
            reason=reason.getErrorMessage(),
        )
        transport: Any = self.transport
        if transport is not None and self.reason is None:
            transport.resetChannel(
                ErrorCode.CONNECT_ERROR,
                f"cannot connect to {self.describe}: {reason.getErrorMessage()}",
            )


class _ForwardingFactory(Factory):
    def __init__(self, endpoint: IStreamClientEndpoint, describe: str) -> None:
        self.endpoint = endpoint
        self.describe = describe

    def buildProtocol(self, addr: IAddress | None) -> Protocol:
        p = _OutboundSplice(self.endpoint, self.describe)
        p.factory = self
        return p


def forwardTo(endpoint: IStreamClientEndpoint, describe: str = "") -> IProtocolFactory:
    """
    A service factory for channels: each channel is forwarded to a new
    connection made through ``endpoint``.  If that connection fails, the
    channel is reset with CONNECT_ERROR and the reason; if it is reset or
    lost later, the channel is reset with CANCEL; if the channel is reset
    or its session lost, the connection is aborted.
    """
    return _ForwardingFactory(endpoint, describe or repr(endpoint))


class LocalForwardingFactory(Factory):
    """
    Accept local connections and carry each over a new channel for
    ``service`` on the session that ``getSession`` provides (a callable
    returning a Deferred session, so sessions can be pooled and renewed).

    Each protocol it builds is a `SpliceProtocol` for the local connection,
    whose ``peer`` is the channel's end once the channel is open.  A local
    connection that cannot get a channel, or whose channel is reset or
    whose session is lost, is aborted; one that is reset or lost resets
    its channel.

    ``priority`` and ``weight``, if given, are each channel's (as
    `MemuxProtocol.openChannel` takes them).
    """

    def __init__(
        self,
        getSession: Callable[[], defer.Deferred[MemuxProtocol]],
        service: bytes,
        metadata: bytes | None = None,
        *,
        priority: int | None = None,
        weight: int | None = None,
    ) -> None:
        self.getSession = getSession
        self.service = service
        self.metadata = metadata
        self.priority = priority
        self.weight = weight

    def buildProtocol(self, addr: IAddress | None) -> Protocol:
        p = _LocalSplice(self)
        p.factory = self
        return p


class _LocalSplice(SpliceProtocol):
    side = "the local connection"

    def __init__(self, owner: LocalForwardingFactory) -> None:
        super().__init__()
        self.owner = owner

    def connectionMade(self) -> None:
        transport: Any = self.transport
        transport.pauseProducing()
        d = self.owner.getSession()
        d.addCallback(self._haveSession)
        d.addErrback(self._failed)

    def _haveSession(self, session: MemuxProtocol) -> defer.Deferred[IProtocol]:
        d = session.openChannel(
            self.owner.service,
            _CHANNEL_END,
            metadata=self.owner.metadata,
            priority=self.owner.priority,
            weight=self.owner.weight,
        )
        d.addCallback(self._haveChannel)
        return d

    def _haveChannel(self, channelEnd: IProtocol) -> None:
        assert isinstance(channelEnd, SpliceProtocol)
        if self.reason is not None:
            _endSide(channelEnd, self.failure, self._resetText())
            return
        splice(self, channelEnd)
        transport: Any = self.transport
        transport.resumeProducing()

    def _failed(self, reason: Failure) -> None:
        _log.warn(
            "Cannot carry a local connection over memux: {reason}",
            reason=reason.getErrorMessage(),
        )
        # No channel, so nothing of what the client sent reached anyone: an
        # abort says so, where a FIN would pass for an empty answer.
        _endSide(self, reason, "")
