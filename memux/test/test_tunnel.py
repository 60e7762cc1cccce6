"""
Tests for memux.tunnel: channels spliced to TCP connections, real and in
memory; an orderly end stays orderly, an abnormal one stays abnormal.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from typing import Any, cast

from twisted.internet import defer
from twisted.internet.endpoints import (
    TCP4ClientEndpoint,
    TCP4ServerEndpoint,
    connectProtocol,
)
from twisted.internet.error import (
    ConnectionDone,
    ConnectionRefusedError,
)
from twisted.internet.interfaces import (
    IHalfCloseableProtocol,
    IProtocol,
    IProtocolFactory,
    IStreamClientEndpoint,
)
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase
from zope.interface import implementer

from memux import ChannelReset, ErrorCode, MultiplexingFactory, connectSession
from memux.error import SessionLost
from memux.protocol import ChannelTransport, MemuxProtocol
from memux.test._fakes import EndingRecorder, FakeTCP, loseSessions
from memux.testing import connectedSessions
from memux.tunnel import LocalForwardingFactory, SpliceProtocol, forwardTo


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


# ------------------------------------------------------------ abnormal ends


@implementer(IStreamClientEndpoint)
class FakeEndpoint:
    """
    Connects to a L{FakeTCP} each time, at once or, with C{later}, when the
    test fires the Deferred in C{pending}.
    """

    def __init__(self, clock: Clock, later: bool = False) -> None:
        self.clock = clock
        self.later = later
        self.connections: list[FakeTCP] = []
        self.pending: list[defer.Deferred[None]] = []

    def connect(self, factory: IProtocolFactory) -> defer.Deferred[IProtocol]:
        transport = FakeTCP(self.clock)

        def connected(_: object) -> IProtocol:
            protocol = factory.buildProtocol(transport.getPeer())
            assert protocol is not None
            transport.protocol = protocol
            protocol.makeConnection(transport)
            self.connections.append(transport)
            return protocol

        if not self.later:
            return defer.succeed(connected(None))
        d: defer.Deferred[None] = defer.Deferred()
        self.pending.append(d)
        return d.addCallback(connected)


class ForwardToEndingTests(TestCase):
    """
    A channel of a L{forwardTo} service and its connection to the backend
    end the same way: in order (FIN) or abnormally (RST, channel reset).
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.endpoint = FakeEndpoint(self.clock)
        self.client, self.server, self.pump = connectedSessions(
            {b"fwd": forwardTo(self.endpoint, "the backend")}, clock=self.clock
        )

    def open(self, data: bytes = b"upload") -> tuple[EndingRecorder, FakeTCP]:
        """
        Open a channel to the service, send C{data}; return the channel's
        protocol and the backend connection it was forwarded to.
        """
        recorder = EndingRecorder()
        self.client.openChannel(b"fwd", _Just(recorder))
        assert recorder.transport is not None
        recorder.transport.write(data)
        self.pump.flush()
        backend = self.endpoint.connections[-1]
        self.assertEqual(backend.value(), data)
        return recorder, backend

    def test_resetAbortsCleanEndCloses(self) -> None:
        """
        Of two channels, the one reset by the client has its backend
        connection aborted (RST) without any FIN first; the one the
        client half-closes has its backend see a FIN, and a clean close
        once the backend finishes too.
        """
        cut, cutBackend = self.open()
        whole, wholeBackend = self.open()
        cast(ChannelTransport, cut.transport).resetChannel(ErrorCode.CANCEL, "gone")
        cast(ChannelTransport, whole.transport).loseWriteConnection()
        self.pump.flush()
        self.assertEqual(cutBackend.calls, ["abortConnection"])
        self.assertEqual(wholeBackend.calls, ["loseWriteConnection"])
        wholeBackend.protocol.dataReceived(b"answer")
        wholeBackend.peerFin()
        self.pump.flush()
        self.assertEqual(wholeBackend.calls, ["loseWriteConnection", "loseConnection"])
        self.assertEqual(whole.data, b"answer")
        self.assertEqual(whole.events, ["FIN", "lost"])
        assert whole.reason is not None
        self.assertTrue(whole.reason.check(ConnectionDone))

    def test_sessionLostAbortsBackend(self) -> None:
        """
        When the session is lost in the middle of an upload, the backend
        connection is aborted, never closed with a FIN.
        """
        _, backend = self.open()
        loseSessions(self.pump)
        self.assertEqual(backend.calls, ["abortConnection"])

    def test_sessionLostAfterHalfCloseAbortsBackend(self) -> None:
        """
        A backend that got the client's FIN and is still answering is
        aborted when the session is lost: its answer was cut.
        """
        recorder, backend = self.open()
        cast(ChannelTransport, recorder.transport).loseWriteConnection()
        self.pump.flush()
        loseSessions(self.pump)
        self.assertEqual(backend.calls, ["loseWriteConnection", "abortConnection"])

    def test_backendResetResetsChannel(self) -> None:
        """
        A backend connection that is reset resets its channel with CANCEL
        and a reason naming the backend; the client never sees a FIN.
        """
        recorder, backend = self.open()
        backend.protocol.dataReceived(b"partial answer")
        self.pump.flush()
        backend.peerReset()
        self.pump.flush()
        self.assertEqual(recorder.data, b"partial answer")
        self.assertEqual(recorder.events, ["lost"])
        assert recorder.reason is not None
        error = recorder.reason.value
        assert isinstance(error, ChannelReset)
        self.assertEqual(error.code, ErrorCode.CANCEL)
        self.assertEqual(
            error.reason, "the connection to the backend was reset or lost"
        )

    def test_channelResetBeforeConnected(self) -> None:
        """
        A channel reset while its backend connection is still being made
        has that connection aborted as soon as it is made.
        """
        self.endpoint.later = True
        recorder = EndingRecorder()
        self.client.openChannel(b"fwd", _Just(recorder))
        self.pump.flush()
        cast(ChannelTransport, recorder.transport).abortConnection()
        self.pump.flush()
        self.endpoint.pending[0].callback(None)
        self.pump.flush()
        self.assertEqual(self.endpoint.connections[0].calls, ["abortConnection"])


class _Just(Factory):
    """
    A factory of the one protocol it was given.
    """

    def __init__(self, protocol: Protocol) -> None:
        self.protocol_ = protocol

    def buildProtocol(self, addr: Any) -> Protocol:
        return self.protocol_


class LocalForwardingEndingTests(TestCase):
    """
    A local connection accepted by L{LocalForwardingFactory} and its
    channel end the same way: in order (FIN) or abnormally (RST, channel
    reset).
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.served: list[EndingRecorder] = []

        def record() -> EndingRecorder:
            recorder = EndingRecorder()
            self.served.append(recorder)
            return recorder

        self.client, self.server, self.pump = connectedSessions(
            {b"svc": Factory.forProtocol(record)}, clock=self.clock
        )
        self.getSession: Callable[[], defer.Deferred[MemuxProtocol]] = lambda: (
            defer.succeed(self.client)
        )
        self.factory = LocalForwardingFactory(lambda: self.getSession(), b"svc")

    def accept(self, data: bytes = b"upload") -> tuple[SpliceProtocol, FakeTCP]:
        """
        Accept a local connection that sends C{data}; return its protocol
        and transport.
        """
        protocol = self.factory.buildProtocol(None)
        assert isinstance(protocol, SpliceProtocol)
        local = FakeTCP(self.clock)
        local.protocol = protocol
        protocol.makeConnection(local)
        protocol.dataReceived(data)
        self.pump.flush()
        return protocol, local

    def test_channelResetAbortsCleanEndCloses(self) -> None:
        """
        Of two local connections, the one whose channel the server resets
        is aborted (RST) without any FIN first; the one whose channel the
        server closes gets a FIN, then a clean close once it has finished
        too.
        """
        cut, cutLocal = self.accept()
        whole, wholeLocal = self.accept()
        cutServed, wholeServed = self.served
        cast(ChannelTransport, cutServed.transport).resetChannel(
            ErrorCode.INTERNAL_ERROR, "crashed"
        )
        assert wholeServed.transport is not None
        wholeServed.transport.write(b"answer")
        wholeServed.transport.loseConnection()
        self.pump.flush()
        self.assertEqual(cutLocal.calls, ["abortConnection"])
        assert cut.failure is not None
        self.assertIsInstance(cut.failure.value, ChannelReset)
        self.assertEqual(wholeLocal.value(), b"answer")
        self.assertEqual(wholeLocal.calls, ["loseWriteConnection"])
        wholeLocal.peerFin()
        self.pump.flush()
        self.assertEqual(wholeLocal.calls, ["loseWriteConnection", "loseConnection"])
        self.assertIsNone(whole.failure)

    def test_sessionLostAbortsLocal(self) -> None:
        """
        When the session is lost in the middle of a download, the local
        connection is aborted, never closed with a FIN, and its protocol
        says why.
        """
        protocol, local = self.accept()
        assert self.served[0].transport is not None
        self.served[0].transport.write(b"part of a download")
        self.pump.flush()
        loseSessions(self.pump)
        self.assertEqual(local.value(), b"part of a download")
        self.assertEqual(local.calls, ["abortConnection"])
        assert protocol.failure is not None
        self.assertIsInstance(protocol.failure.value, SessionLost)

    def test_localResetResetsChannel(self) -> None:
        """
        A local connection that is reset resets its channel with CANCEL;
        the service never sees a FIN.
        """
        protocol, local = self.accept()
        local.peerReset()
        self.pump.flush()
        served = self.served[0]
        self.assertEqual(served.data, b"upload")
        self.assertEqual(served.events, ["lost"])
        assert served.reason is not None
        error = served.reason.value
        assert isinstance(error, ChannelReset)
        self.assertEqual(error.code, ErrorCode.CANCEL)
        self.assertEqual(error.reason, "the local connection was reset or lost")
        self.assertIs(protocol.failure, protocol.reason)

    def test_noSessionAbortsLocal(self) -> None:
        """
        A local connection that cannot get a session is aborted, not
        closed as if the service had answered nothing; its protocol keeps
        the reason.
        """
        self.getSession = lambda: defer.fail(ConnectionRefusedError("no server"))
        protocol, local = self.accept()
        self.assertEqual(local.calls, ["abortConnection"])
        assert protocol.failure is not None
        self.assertIsInstance(protocol.failure.value, ConnectionRefusedError)

    def test_abortCutsBothSides(self) -> None:
        """
        L{SpliceProtocol.abort} aborts the local connection and resets its
        channel with CANCEL and the reason given.
        """
        protocol, local = self.accept()
        protocol.abort("stopping")
        self.pump.flush()
        self.assertEqual(local.calls, ["abortConnection"])
        served = self.served[0]
        self.assertEqual(served.events, ["lost"])
        assert served.reason is not None
        error = served.reason.value
        assert isinstance(error, ChannelReset)
        self.assertEqual((error.code, error.reason), (ErrorCode.CANCEL, "stopping"))
