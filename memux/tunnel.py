# -*- test-case-name: memux.test.test_tunnel -*-
"""
Tunnels: splice a channel to a connection, both ways, with backpressure
and half-close intact.

- `forwardTo` makes a service whose channels are each forwarded to a new
  connection to a client endpoint (``twistd memux --service db=tcp:...``).
- `LocalForwardingFactory` accepts local connections and carries each one
  over a new channel (``memux forward``, like ``ssh -L``).
- `splice` joins any two connected protocols' transports.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet import defer
from twisted.internet.interfaces import (
    IAddress,
    IHalfCloseableProtocol,
    IProtocol,
    IProtocolFactory,
    IStreamClientEndpoint,
)
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from memux._wire import ErrorCode
from memux.protocol import MemuxProtocol

__all__ = ["LocalForwardingFactory", "SpliceProtocol", "forwardTo", "splice"]

_log = Logger()


@implementer(IHalfCloseableProtocol)
class SpliceProtocol(Protocol):
    """
    One end of a splice: what it receives is written to its peer's
    transport.  Each transport is registered as the producer of the other's
    writes, so a slow side pauses reading on the fast one (credit on a
    channel, the TCP window on a socket); a FIN on one side becomes a
    half-close on the other; losing one side closes the other after what
    it had to write.
    """

    def __init__(self) -> None:
        self.peer: SpliceProtocol | None = None
        self._held: list[bytes] = []
        self._readDone = False
        self.done: defer.Deferred[None] = defer.Deferred()

    def dataReceived(self, data: bytes) -> None:
        """
        Pass ``data`` on to the peer (held until there is one).
        """
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
        Close the peer too, after what it still has to write.
        """
        peer = self.peer
        if peer is not None and peer.transport is not None:
            _unregister(peer.transport)
            peer.transport.loseConnection()
        if not self.done.called:
            self.done.callback(None)

    def _linked(self) -> None:
        assert self.transport is not None and self.peer is not None
        held, self._held = self._held, []
        for data in held:
            self.peer.transport.write(data)  # type: ignore[union-attr]
        if self._readDone:
            self.readConnectionLost()


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


def splice(a: SpliceProtocol, b: SpliceProtocol) -> None:
    """
    Join two connected `SpliceProtocol`s: bytes, backpressure and
    half-close flow between their transports.
    """
    a.peer, b.peer = b, a
    ta, tb = a.transport, b.transport
    assert ta is not None and tb is not None
    # Each side's reading is the producer of the other side's writing.
    ta.registerProducer(tb, True)  # type: ignore[attr-defined]
    tb.registerProducer(ta, True)  # type: ignore[attr-defined]
    a._linked()
    b._linked()


class _OutboundSplice(SpliceProtocol):
    """
    The channel end of a forwarded channel: connects out when the channel
    opens, holding the channel's data (within its credit) meanwhile.
    """

    def __init__(self, endpoint: IStreamClientEndpoint, describe: str) -> None:
        super().__init__()
        self.endpoint = endpoint
        self.describe = describe

    def connectionMade(self) -> None:
        transport: Any = self.transport
        transport.pauseProducing()
        d = self.endpoint.connect(Factory.forProtocol(SpliceProtocol))
        d.addCallbacks(self._connected, self._failed)

    def _connected(self, other: SpliceProtocol) -> None:
        transport: Any = self.transport
        if transport is None or transport.disconnected:
            assert other.transport is not None
            other.transport.loseConnection()
            return
        splice(self, other)
        transport.resumeProducing()

    def _failed(self, reason: Failure) -> None:
        _log.info(
            "Forwarding channel to {where} failed: {reason}",
            where=self.describe,
            reason=reason.getErrorMessage(),
        )
        transport: Any = self.transport
        if transport is not None and not transport.disconnected:
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
    channel is reset with CONNECT_ERROR and the reason.
    """
    return _ForwardingFactory(endpoint, describe or repr(endpoint))


class LocalForwardingFactory(Factory):
    """
    Accept local connections and carry each over a new channel for
    ``service`` on the session that ``getSession`` provides (a callable
    returning a Deferred session, so sessions can be pooled and renewed).
    """

    def __init__(
        self,
        getSession: Callable[[], defer.Deferred[MemuxProtocol]],
        service: bytes,
        metadata: bytes | None = None,
    ) -> None:
        self.getSession = getSession
        self.service = service
        self.metadata = metadata

    def buildProtocol(self, addr: IAddress | None) -> Protocol:
        p = _LocalSplice(self)
        p.factory = self
        return p


class _LocalSplice(SpliceProtocol):
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
            Factory.forProtocol(SpliceProtocol),
            metadata=self.owner.metadata,
        )
        d.addCallback(self._haveChannel)
        return d

    def _haveChannel(self, channelEnd: IProtocol) -> None:
        assert isinstance(channelEnd, SpliceProtocol)
        transport: Any = self.transport
        if transport is None or getattr(transport, "disconnected", False):
            channelEnd.transport.loseConnection()  # type: ignore[union-attr]
            return
        splice(self, channelEnd)
        transport.resumeProducing()

    def _failed(self, reason: Failure) -> None:
        _log.warn(
            "Cannot carry a local connection over memux: {reason}",
            reason=reason.getErrorMessage(),
        )
        transport: Any = self.transport
        if transport is not None:
            transport.loseConnection()
