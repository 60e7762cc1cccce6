# -*- test-case-name: memux.test.test_testing -*-
"""
Test helpers for code that runs over memux, with no sockets and a
deterministic clock:

- `connectedSessions`: a client session connected to a server session in
  memory, and the pump that moves bytes between them.
- `connectedChannel`: one channel between your client protocol and the
  protocol your server factory builds, over such a pair of sessions.
- `StringChannelTransport`: a ``StringTransport`` that also records
  messages, to unit-test a channel protocol with no session at all.

See ``doc/testing.rst`` for a complete example.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Generic, TypeVar, cast

from twisted.internet.interfaces import IAddress, IProtocol, IProtocolFactory
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.test.iosim import IOPump, connectedServerAndClient
from zope.interface import implementer

from memux.codes import ChannelState
from memux.error import describeService
from memux.interfaces import IChannelTransport
from memux.protocol import (
    ChannelRequest,
    MemuxProtocol,
    ServiceMap,
    ServiceResolver,
)
from memux.settings import DEFAULT_WEIGHT, Priority, SessionSettings, checkPriority

__all__ = [
    "ConnectedChannel",
    "StringChannelTransport",
    "connectedChannel",
    "connectedSessions",
]

_P = TypeVar("_P")


def connectedSessions(
    serverServices: ServiceMap | ServiceResolver | None = None,
    clientServices: ServiceMap | ServiceResolver | None = None,
    *,
    serverSettings: SessionSettings | None = None,
    clientSettings: SessionSettings | None = None,
    clock: Clock | None = None,
    greet: bool = True,
) -> tuple[MemuxProtocol, MemuxProtocol, IOPump]:
    """
    Connect a client session to a server session in memory.

    :returns: ``(client, server, pump)``; ``pump.flush()`` moves bytes both
        ways and runs the clock's pending zero-delay calls until both sides
        are idle.
    """
    clock = clock if clock is not None else Clock()

    def server() -> MemuxProtocol:
        return MemuxProtocol(serverServices, settings=serverSettings, reactor=clock)

    def client() -> MemuxProtocol:
        return MemuxProtocol(
            clientServices, client=True, settings=clientSettings, reactor=clock
        )

    return connectedServerAndClient(server, client, greet=greet, clock=clock)


@dataclass
class ConnectedChannel(Generic[_P]):
    """
    One open channel between two in-memory sessions, made by
    `connectedChannel`.

    :ivar client: the protocol you gave, connected at the opening end.
    :ivar server: the protocol the server factory built for the channel.
    :ivar clientSession: the session that opened the channel.
    :ivar serverSession: the session that accepted it.
    :ivar pump: ``pump.flush()`` delivers what either side wrote.
    :ivar clock: the clock both sessions (and the pump) run on; advance it
        to fire your protocols' timeouts.
    """

    client: _P
    server: Any
    clientSession: MemuxProtocol
    serverSession: MemuxProtocol
    pump: IOPump
    clock: Clock


@implementer(IProtocolFactory)
class _OneProtocol:
    """
    A factory that builds the one protocol it was given.
    """

    def __init__(self, protocol: IProtocol) -> None:
        self._protocol = protocol

    def buildProtocol(self, addr: IAddress) -> IProtocol:
        return self._protocol

    def doStart(self) -> None:
        pass

    def doStop(self) -> None:
        pass


@implementer(IProtocolFactory)
class _RecordingFactory:
    """
    Builds protocols with another factory and keeps them.
    """

    def __init__(self, factory: IProtocolFactory) -> None:
        self._factory = factory
        self.built: list[IProtocol] = []

    def buildProtocol(self, addr: IAddress) -> IProtocol | None:
        protocol = self._factory.buildProtocol(addr)
        if protocol is not None:
            self.built.append(protocol)
        return protocol

    def doStart(self) -> None:
        self._factory.doStart()

    def doStop(self) -> None:
        self._factory.doStop()


def connectedChannel(
    serverFactory: IProtocolFactory,
    clientProtocol: _P,
    *,
    service: bytes = b"",
    serverSettings: SessionSettings | None = None,
    clientSettings: SessionSettings | None = None,
    clock: Clock | None = None,
) -> ConnectedChannel[_P]:
    """
    Open a channel for ``service`` from ``clientProtocol`` to a protocol
    built by ``serverFactory``, over two sessions connected in memory, and
    deliver what was written on connection.

    ``clientProtocol`` is any `IProtocol` (typed loosely so that
    ``result.client`` keeps your protocol's own type).  Both protocols get
    real `~memux.transport.ChannelTransport` transports: messages,
    half-close, backpressure and errors behave as over a socket.

    :raises RuntimeError: if the channel could not be opened or the server
        factory built no protocol for it.
    """
    serving = _RecordingFactory(serverFactory)

    def choose(request: ChannelRequest) -> IProtocolFactory | None:
        return serving if request.service == service else None

    client, server, pump = connectedSessions(
        choose,
        serverSettings=serverSettings,
        clientSettings=clientSettings,
        clock=clock,
    )
    outcome: list[object] = []
    opened = client.openChannel(service, _OneProtocol(cast(IProtocol, clientProtocol)))
    opened.addBoth(outcome.append)
    if outcome and isinstance(outcome[0], Failure):
        raise RuntimeError(f"could not open the channel: {outcome[0].value}")
    pump.flush()
    if not serving.built:
        raise RuntimeError(
            f"the server factory built no protocol for {describeService(service)}"
        )
    return ConnectedChannel(
        clientProtocol, serving.built[0], client, server, pump, pump.clock
    )


@implementer(IChannelTransport)
class StringChannelTransport(StringTransport):
    """
    A ``StringTransport`` that is also an `IChannelTransport`: it records
    whole messages as well as bytes, so a channel protocol can be tested
    with no session at all.

    ``value()`` is every byte written; ``messages`` the messages ended so
    far (by ``writeMessage`` or ``endMessage``); `partialMessage` what
    ``write`` calls have added since.

    :ivar writeClosed: ``loseWriteConnection`` was called (half-close).
    :ivar resetWith: the ``(code, reason)`` of ``resetChannel``, if called.
    :ivar priority: the `Priority` last set by ``setPriority`` (the
        default until then).
    """

    def __init__(
        self,
        channel: int = 1,
        service: bytes = b"",
        session: MemuxProtocol | None = None,
        *,
        hostAddress: IAddress | None = None,
        peerAddress: IAddress | None = None,
    ) -> None:
        StringTransport.__init__(self, hostAddress, peerAddress)
        self.channel = channel
        self.service = service
        self.session = session
        self.messages: list[bytes] = []
        self._partial: list[bytes] = []
        self.writeClosed = False
        self.resetWith: tuple[int, str] | None = None
        self.priority = Priority()

    @property
    def state(self) -> ChannelState:
        """
        OPEN; HALF_CLOSED_LOCAL after ``loseWriteConnection``; CLOSED after
        ``loseConnection``, ``abortConnection`` or ``resetChannel``.
        """
        if self.disconnecting:
            return ChannelState.CLOSED
        return ChannelState.HALF_CLOSED_LOCAL if self.writeClosed else ChannelState.OPEN

    @property
    def partialMessage(self) -> bytes:
        """
        What ``write`` calls have added to a message not ended yet.
        """
        return b"".join(self._partial)

    def write(self, data: bytes) -> None:
        """
        Append ``data`` to the current message.
        """
        StringTransport.write(self, data)
        self._partial.append(data)

    def writeMessage(self, data: bytes) -> None:
        """
        End the current message with ``data``.
        """
        if data:
            self.write(data)
        self.endMessage()

    def endMessage(self) -> None:
        """
        End the current message (an empty one if nothing was written).
        """
        self.messages.append(self.partialMessage)
        self._partial = []

    def setPriority(self, urgency: int, weight: int = DEFAULT_WEIGHT) -> None:
        """
        Record a priority (checked as a real channel checks it).
        """
        self.priority = checkPriority(urgency, weight)

    def loseWriteConnection(self) -> None:
        """
        Record a half-close.
        """
        self.writeClosed = True

    def resetChannel(self, code: int, reason: str = "") -> None:
        """
        Record a reset with ``code`` and ``reason``; the transport is then
        disconnecting, as after ``abortConnection``.
        """
        self.resetWith = (code, reason)
        self.disconnecting = True
