# -*- test-case-name: memux.test.test_protocol -*-
"""
The Twisted transport of one memux channel: `ChannelTransport`, a drop-in
for unmodified Twisted protocols (``ITransport``, ``IConsumer``,
``IPushProducer``, half-close, abort, addresses, logging context), plus
message boundaries; and `ChannelAddress`, its addresses.

What a channel does (delivery, reassembly, pausing, closing, producers) is
`memux._session.ChannelCore`'s; this adds Twisted's interfaces and errors.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from twisted.internet.error import ConnectionAborted
from twisted.internet.interfaces import (
    IAddress,
    IConsumer,
    IHalfCloseableProtocol,
    ILoggingContext,
    IProtocol,
    IPushProducer,
    ITransport,
)
from twisted.internet.protocol import connectionDone
from twisted.python.failure import Failure
from zope.interface import implementer, providedBy

from memux._channel import CLEAN, ChannelCore, Ending
from memux.codes import ErrorCode
from memux.error import ChannelRefused, ChannelReset, MessageTooLarge, SessionLost
from memux.interfaces import (
    IChannelTransport,
    IChunkReceiver,
    IDropReceiver,
    IMessageReceiver,
)

if TYPE_CHECKING:
    from memux.protocol import MemuxProtocol, _Host

__all__ = ["ChannelAddress", "ChannelTransport", "describeAddress", "failureFor"]


def describeAddress(address: IAddress | None) -> str:
    """
    An address as memux logs it: ``HOST:PORT`` (``[HOST]:PORT`` for IPv6), a UNIX
    socket's path, else what the address says of itself.
    """
    host, port = getattr(address, "host", None), getattr(address, "port", None)
    if isinstance(host, str) and port is not None:
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    name = getattr(address, "name", address)
    if name is not address:
        if isinstance(name, bytes):
            name = name.decode("utf-8", "replace")
        return str(name) if name else "an unnamed UNIX socket"
    return "an unknown address" if address is None else str(address)


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


def failureFor(ending: Ending) -> Failure:
    """
    The ``connectionLost`` reason for a channel that ended so: a
    `ConnectionDone` for a clean end, else the typed error (a
    `ConnectionLost` subclass), never a clean end for an abnormal one.
    """
    kind = ending.kind
    if kind == "done":
        return connectionDone
    if kind == "aborted":
        return Failure(ConnectionAborted())
    if kind == "failed":
        cause: Failure = ending.cause
        return cause
    if kind == "lost":
        return Failure(SessionLost(ending.reason, ending.code))
    code = ending.code
    assert code is not None
    error: ChannelReset
    if code == ErrorCode.REFUSED:
        error = ChannelRefused(ending.reason, ending.remote)
    elif code == ErrorCode.MESSAGE_TOO_LARGE:
        error = MessageTooLarge(ending.reason, ending.remote)
    else:
        error = ChannelReset(code, ending.reason, ending.remote)
    return Failure(error)


@implementer(IChannelTransport, ITransport, IConsumer, IPushProducer, ILoggingContext)
class ChannelTransport(ChannelCore):
    """
    The transport of one channel.  A faithful drop-in for Twisted
    protocols: writes, producers and consumers, half-close, abort,
    addresses, logging context.

    Inbound data is delivered as ``dataReceived``, or as whole messages to
    an `IMessageReceiver`, or as chunks to an `IChunkReceiver`.  Credit is
    granted as the protocol takes data, so pausing this transport (it is
    an `IPushProducer`) stops the peer after what it was already invited
    to send, which is held here and delivered on resume.  The end reaches
    the protocol's ``connectionLost``: `ConnectionDone` when clean, else a
    typed `ConnectionLost` (`ChannelReset`, `ChannelRefused`,
    `MessageTooLarge`, `SessionLost`, `ConnectionAborted`), never from
    inside ``loseConnection`` or ``abortConnection``.
    """

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
        # `ChannelCore.__init__`, inline: a call less for every channel
        # (``test_protocol.TransportInitTests`` holds the two equal).
        core = session._core
        self._core = core
        self.channel = channel
        self.service = service
        if lossy:
            self.lossy = True
        self._maxMessage = core.settings.maxMessageSize
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

    @property
    def session(self) -> MemuxProtocol:
        """
        The session this channel belongs to.  (Read through the session
        core, not kept here: a reference less for every channel.)
        """
        return cast("_Host", self._core.host)._proto

    def __repr__(self) -> str:
        return f"<ChannelTransport channel={self.channel} service={self.service!r}>"

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

    # ------------------------------------------------------------ the core's

    def _halfCloser(self) -> Any:
        return IHalfCloseableProtocol(self.protocol, None)

    def _dropReceiver(self) -> Any:
        return IDropReceiver(self.protocol, None)

    def _failed(self) -> Failure:
        """
        The protocol raised: that is a fault in application code, which
        ends this channel only.
        """
        failure = Failure()
        self.session._log.failure(
            "Unhandled error in protocol on memux channel {channel}; resetting it",
            failure,
            channel=self.channel,
        )
        return failure

    def _lose(self, ending: Ending) -> None:
        protocol = self.protocol
        assert protocol is not None
        try:
            protocol.connectionLost(
                connectionDone if ending is CLEAN else failureFor(ending)
            )
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
