"""
Tests for memux.tunnel: channels spliced to real TCP connections.
"""

from __future__ import annotations

import hashlib
import os
from typing import Any

from twisted.internet import defer
from twisted.internet.endpoints import (
    TCP4ClientEndpoint,
    TCP4ServerEndpoint,
    connectProtocol,
)
from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase
from zope.interface import implementer

from memux import ChannelReset, ErrorCode, MultiplexingFactory, connectSession
from memux.tunnel import LocalForwardingFactory, forwardTo


@implementer(IHalfCloseableProtocol)
class HalfCloseEcho(Protocol):
    """
    Echoes everything, and closes once the client has finished sending.
    """

    def dataReceived(self, data: bytes) -> None:
        self.transport.write(data)  # type: ignore[union-attr]

    def readConnectionLost(self) -> None:
        self.transport.loseConnection()  # type: ignore[union-attr]

    def writeConnectionLost(self) -> None:
        pass


@implementer(IHalfCloseableProtocol)
class Client(Protocol):
    """
    Sends a payload, half-closes, collects the reply until the end.
    """

    def __init__(self, payload: bytes) -> None:
        self.payload = payload
        self.chunks: list[bytes] = []
        self.done: defer.Deferred[bytes] = defer.Deferred()

    def connectionMade(self) -> None:
        self.transport.write(self.payload)  # type: ignore[union-attr]
        self.transport.loseWriteConnection()  # type: ignore[union-attr]

    def dataReceived(self, data: bytes) -> None:
        self.chunks.append(data)

    def readConnectionLost(self) -> None:
        self.transport.loseConnection()  # type: ignore[union-attr]

    def writeConnectionLost(self) -> None:
        pass

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.done.callback(b"".join(self.chunks))


class ForwardingTests(TestCase):
    """
    A local TCP connection, forwarded over a memux channel to a service
    that forwards it to a TCP server: everything arrives, both ways.
    """

    @defer.inlineCallbacks
    def setUpTunnel(self, target: Any) -> Any:
        from twisted.internet import reactor

        echo = yield TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(
            Factory.forProtocol(HalfCloseEcho)
        )
        self.addCleanup(echo.stopListening)
        targetEndpoint = target or TCP4ClientEndpoint(
            reactor, "127.0.0.1", echo.getHost().port
        )
        server = yield TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(
            MultiplexingFactory({b"echo": forwardTo(targetEndpoint, "the echo server")})
        )
        self.addCleanup(server.stopListening)
        session = yield connectSession(
            TCP4ClientEndpoint(reactor, "127.0.0.1", server.getHost().port)
        )
        self.session = session

        def getSession() -> defer.Deferred[Any]:
            return defer.succeed(session)

        local = yield TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(
            LocalForwardingFactory(getSession, b"echo")
        )
        self.addCleanup(local.stopListening)
        return TCP4ClientEndpoint(reactor, "127.0.0.1", local.getHost().port)

    @defer.inlineCallbacks
    def tearDownSession(self) -> Any:
        self.session.transport.loseConnection()
        yield self.session.whenClosed()

    @defer.inlineCallbacks
    def test_bytesBothWaysWithHalfClose(self) -> Any:
        """
        16 MiB sent through local TCP -> channel -> TCP echo come back
        intact, and the half-close travels the whole way (the echo server
        closes only when it sees the client's end of input).
        """
        payload = os.urandom(int(os.environ.get("TUNNEL_BYTES", 16 * 1024 * 1024)))
        endpoint = yield self.setUpTunnel(None)
        client = Client(payload)
        yield connectProtocol(endpoint, client)
        got = yield client.done
        self.assertEqual(hashlib.sha256(got).digest(), hashlib.sha256(payload).digest())
        yield self.tearDownSession()

    @defer.inlineCallbacks
    def test_connectFailureResetsChannel(self) -> Any:
        """
        When the forwarding target refuses the connection, the channel is
        reset with CONNECT_ERROR and a reason naming the target.
        """
        from twisted.internet import reactor

        closed = yield TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(
            Factory.forProtocol(Protocol)
        )
        port = closed.getHost().port
        yield closed.stopListening()
        yield self.setUpTunnel(TCP4ClientEndpoint(reactor, "127.0.0.1", port))

        lost: defer.Deferred[None] = defer.Deferred()
        reasons: list[Failure] = []

        class Watcher(Protocol):
            def connectionLost(self, reason: Failure = connectionDone) -> None:
                reasons.append(reason)
                lost.callback(None)

        yield self.session.openChannel(b"echo", Factory.forProtocol(Watcher))
        yield lost
        [reason] = reasons
        error = reason.value
        assert isinstance(error, ChannelReset)
        self.assertEqual(error.code, ErrorCode.CONNECT_ERROR)
        self.assertIn("the echo server", error.reason)
        yield self.tearDownSession()
