"""
Tests for L{memux.mptcp}: the ``mptcp:`` endpoint strings and their
plugin, a memux session over MPTCP on loopback, fallback to TCP, and the
path information API.
"""

from __future__ import annotations

import errno
import socket
from typing import Any, cast

from twisted.internet import defer, tcp
from twisted.internet.endpoints import (
    _WrappingFactory,
    clientFromString,
    connectProtocol,
    serverFromString,
)
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import (
    IListeningPort,
    IStreamClientEndpoint,
    IStreamClientEndpointStringParserWithReactor,
    IStreamServerEndpoint,
    IStreamServerEndpointStringParser,
)
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import ILogObserver, globalLogPublisher
from twisted.plugin import getPlugins
from twisted.trial.unittest import SkipTest, SynchronousTestCase, TestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from memux import MultiplexingFactory, connectSession
from memux import mptcp as mptcpModule
from memux.interfaces import IMessageReceiver
from memux.mptcp import (
    IPPROTO_MPTCP,
    MPTCPClientEndpoint,
    MPTCPDescriptionError,
    MPTCPInfo,
    MPTCPServerEndpoint,
    MPTCPUnavailable,
    isMPTCP,
    mptcpAvailable,
    mptcpInfo,
)
from memux.services import builtinServices


def _reactor() -> Any:
    from twisted.internet import reactor

    return reactor


def _requireMPTCP() -> None:
    if not hasattr(socket, "SO_PROTOCOL"):
        raise SkipTest("this platform has no SO_PROTOCOL: not Linux")
    if not mptcpAvailable():
        raise SkipTest(
            "the kernel refuses MPTCP sockets here (no CONFIG_MPTCP, or"
            " net.mptcp.enabled = 0)"
        )


def _refuse(*args: Any, **kwargs: Any) -> socket.socket:
    """
    A socket factory refusing MPTCP sockets, as a kernel without MPTCP
    does, and making the others.
    """
    if len(args) > 2 and args[2] == IPPROTO_MPTCP:
        raise OSError(errno.EPROTONOSUPPORT, "Protocol not supported")
    return socket.socket(*args, **kwargs)


@implementer(IMessageReceiver)
class _Collector(Protocol):
    """
    Collects the messages of a channel.
    """

    def __init__(self) -> None:
        self.messages: list[bytes] = []
        self.got: defer.Deferred[bytes] = defer.Deferred()

    def messageReceived(self, message: bytes) -> None:
        self.messages.append(message)
        if not self.got.called:
            self.got.callback(message)


class ParsingTests(SynchronousTestCase):
    """
    ``mptcp:`` descriptions become the endpoints they describe.
    """

    def test_plugins(self) -> None:
        """
        Twisted finds both ``mptcp`` parsers among its plugins.
        """
        clients = [
            p
            for p in getPlugins(IStreamClientEndpointStringParserWithReactor)
            if p.prefix == "mptcp"
        ]
        servers = [
            p
            for p in getPlugins(IStreamServerEndpointStringParser)
            if p.prefix == "mptcp"
        ]
        self.assertEqual((len(clients), len(servers)), (1, 1))

    def test_server(self) -> None:
        """
        ``mptcp:PORT:interface=...:backlog=...:fallback=...`` sets every
        option.
        """
        ep = serverFromString(
            _reactor(), "mptcp:7400:interface=127.0.0.1:backlog=7:fallback=no"
        )
        self.assertIsInstance(ep, MPTCPServerEndpoint)
        assert isinstance(ep, MPTCPServerEndpoint)
        verifyObject(IStreamServerEndpoint, ep)
        self.assertEqual(
            (ep.port, ep.interface, ep.backlog, ep.fallback),
            (7400, "127.0.0.1", 7, False),
        )

    def test_serverDefaults(self) -> None:
        """
        By default the server listens on every IPv4 address, with a backlog
        of 50 and fallback to TCP.
        """
        ep = serverFromString(_reactor(), "mptcp:7400")
        assert isinstance(ep, MPTCPServerEndpoint)
        self.assertEqual(
            (ep.port, ep.interface, ep.backlog, ep.fallback), (7400, "", 50, True)
        )

    def test_client(self) -> None:
        """
        ``mptcp:host=H:port=P:timeout=T:bindAddress=A:fallback=no`` sets
        every option.
        """
        ep = clientFromString(
            _reactor(),
            "mptcp:host=example.com:port=7400:timeout=2.5"
            ":bindAddress=10.0.0.1:fallback=no",
        )
        self.assertIsInstance(ep, MPTCPClientEndpoint)
        assert isinstance(ep, MPTCPClientEndpoint)
        verifyObject(IStreamClientEndpoint, ep)
        self.assertEqual(
            (ep.host, ep.port, ep.timeout, ep.bindAddress, ep.fallback),
            ("example.com", 7400, 2.5, ("10.0.0.1", 0), False),
        )

    def test_clientPositionalAndIPv6(self) -> None:
        """
        ``mptcp:HOST:PORT`` works too, and an IPv6 literal is given with its
        colons escaped; ``bindAddress`` may carry a port.
        """
        ep = clientFromString(_reactor(), r"mptcp:\:\:1:7400:bindAddress=[\:\:1]\:9000")
        assert isinstance(ep, MPTCPClientEndpoint)
        self.assertEqual((ep.host, ep.port, ep.timeout), ("::1", 7400, 30))
        self.assertEqual(ep.bindAddress, ("::1", 9000))

    def test_errors(self) -> None:
        """
        Malformed descriptions raise L{MPTCPDescriptionError}, saying what is
        wrong.
        """
        reactor = _reactor()
        for description in [
            "mptcp:host=example.com",
            "mptcp:port=7400",
            "mptcp:host=example.com:port=http",
            "mptcp:host=example.com:port=1:fallback=maybe",
            "mptcp:host=example.com:port=1:timeout=soon",
            "mptcp:host=example.com:port=1:colour=blue",
        ]:
            self.assertRaises(
                MPTCPDescriptionError, clientFromString, reactor, description
            )
        for description in ["mptcp:", "mptcp:1:2", "mptcp:1:backlog=x", "mptcp:1:x=1"]:
            self.assertRaises(
                MPTCPDescriptionError, serverFromString, reactor, description
            )


class PrivateTwistedNamesTests(SynchronousTestCase):
    """
    L{memux.mptcp} relies on a few names Twisted does not document as
    public; these tests fail loudly if Twisted renames or changes them.
    """

    def test_createInternetSocket(self) -> None:
        """
        L{tcp.Client.__init__} makes its socket with
        C{createInternetSocket}, which L{memux.mptcp} overrides; the
        connector sets C{connector} on the client before that.
        """
        self.assertTrue(callable(getattr(tcp.Client, "createInternetSocket", None)))
        made: list[tuple[object, object]] = []

        class Probe(tcp.Client):
            def createInternetSocket(self) -> socket.socket:
                made.append((self.connector, self.addressFamily))
                raise OSError(errno.EPERM, "probe")

        class Connector:
            def connectionFailed(self, reason: object) -> None:
                pass

        connector = Connector()
        reactor = _reactor()
        Probe("127.0.0.1", 1, None, connector, reactor)
        self.assertEqual(made, [(connector, socket.AF_INET)])
        # Let the failure report scheduled by the probe run out.
        for call in reactor.getDelayedCalls():
            if getattr(call.func, "__self__", None).__class__ is Probe:
                call.cancel()

    def test_makeTransport(self) -> None:
        """
        L{tcp.Connector} makes its connection with C{_makeTransport}, which
        L{memux.mptcp} overrides.
        """
        self.assertTrue(callable(getattr(tcp.Connector, "_makeTransport", None)))
        self.assertIn("_makeTransport", tcp.Connector.connect.__code__.co_names)

    def test_wrappingFactory(self) -> None:
        """
        L{twisted.internet.endpoints._WrappingFactory} takes the
        application's factory and fires C{_onConnection} with its protocol.
        """
        wf = _WrappingFactory(Factory.forProtocol(Protocol))
        self.assertIsInstance(wf._onConnection, defer.Deferred)


class InfoTests(SynchronousTestCase):
    """
    L{MPTCPInfo}, L{isMPTCP} and L{mptcpInfo} without a connection.
    """

    def test_decode(self) -> None:
        """
        L{MPTCPInfo.fromBytes} decodes the layout of C{struct mptcp_info}:
        the counts, flags, token and sequence numbers, then the later
        counters when present; too short a buffer gives L{None}.
        """
        import struct

        base = struct.pack("=6B2xIIQQQ", 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11)
        info = MPTCPInfo.fromBytes(base)
        self.assertEqual(
            info,
            MPTCPInfo(1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11),
        )
        full = (
            base + struct.pack("=3Bx", 1, 2, 1) + struct.pack("=IQQQQ", 3, 4, 5, 6, 7)
        )
        info = MPTCPInfo.fromBytes(full)
        assert info is not None
        self.assertEqual(
            (info.localAddrUsed, info.localAddrMax, info.csumEnabled),
            (1, 2, True),
        )
        self.assertEqual(
            (
                info.retransmits,
                info.bytesRetrans,
                info.bytesSent,
                info.bytesReceived,
                info.bytesAcked,
            ),
            (3, 4, 5, 6, 7),
        )
        self.assertIsNone(MPTCPInfo.fromBytes(base[:-1]))

    def test_notASocket(self) -> None:
        """
        Transports without a socket handle are not MPTCP and have no info.
        """
        self.assertFalse(isMPTCP(object()))
        self.assertIsNone(mptcpInfo(object()))

    def test_tcpSocket(self) -> None:
        """
        A plain TCP socket is not MPTCP, and L{mptcpInfo} gives L{None}
        for it instead of raising.
        """

        class Transport:
            def __init__(self, sock: socket.socket) -> None:
                self.sock = sock

            def getHandle(self) -> socket.socket:
                return self.sock

        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.addCleanup(sock.close)
        if not hasattr(socket, "SO_PROTOCOL"):
            raise SkipTest("this platform has no SO_PROTOCOL: not Linux")
        self.assertFalse(isMPTCP(Transport(sock)))
        self.assertIsNone(mptcpInfo(Transport(sock)))


class _FallbackMixin:
    """
    Simulates a kernel refusing MPTCP and records logged warnings.
    """

    def setUpFallback(self, case: TestCase) -> list[dict[str, Any]]:
        case.patch(mptcpModule, "socketFactory", _refuse)
        case.patch(mptcpModule, "_sysctlDisabled", lambda: False)
        events: list[dict[str, Any]] = []
        observer = cast(ILogObserver, events.append)
        globalLogPublisher.addObserver(observer)
        case.addCleanup(globalLogPublisher.removeObserver, observer)
        return events


class FallbackTests(TestCase, _FallbackMixin):
    """
    Where the kernel refuses MPTCP, the endpoints fall back to plain TCP
    with a warning, or fail with L{MPTCPUnavailable} if told not to.
    """

    def _fallbackWarnings(self, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [
            e for e in events if "falling back to plain TCP" in e.get("log_format", "")
        ]

    @defer.inlineCallbacks
    def test_fallbackToTCP(self) -> Any:
        """
        With MPTCP refused, the server listens and the client connects with
        plain TCP, each logging a warning, and data flows.
        """
        events = self.setUpFallback(self)
        reactor = _reactor()
        server = Factory.forProtocol(Protocol)
        port = yield serverFromString(reactor, "mptcp:0:interface=127.0.0.1").listen(
            server
        )
        self.addCleanup(port.stopListening)
        self.assertEqual(len(self._fallbackWarnings(events)), 1)
        client = clientFromString(
            reactor, f"mptcp:host=127.0.0.1:port={port.getHost().port}"
        )
        proto = yield connectProtocol(client, Protocol())
        self.addCleanup(proto.transport.loseConnection)
        self.assertEqual(len(self._fallbackWarnings(events)), 2)
        self.assertFalse(isMPTCP(proto.transport))
        self.assertIsNone(mptcpInfo(proto.transport))
        self.assertEqual(
            proto.transport.getHandle().getsockopt(
                socket.SOL_SOCKET, getattr(socket, "SO_PROTOCOL", 38)
            ),
            socket.IPPROTO_TCP,
        )

    def test_serverNoFallback(self) -> None:
        """
        With C{fallback=no}, the server's C{listen} fails with
        L{MPTCPUnavailable}, an L{OSError} saying why.
        """
        self.setUpFallback(self)
        ep = serverFromString(_reactor(), "mptcp:0:interface=127.0.0.1:fallback=no")
        failure = self.failureResultOf(
            ep.listen(Factory.forProtocol(Protocol)), MPTCPUnavailable
        )
        self.assertIsInstance(failure.value, OSError)
        self.assertIn("fallback=no", str(failure.value))

    def test_clientNoFallback(self) -> None:
        """
        With C{fallback=no}, the client's C{connect} fails with
        L{MPTCPUnavailable}.
        """
        self.setUpFallback(self)
        ep = clientFromString(_reactor(), "mptcp:host=127.0.0.1:port=1:fallback=no")
        self.failureResultOf(
            ep.connect(Factory.forProtocol(Protocol)), MPTCPUnavailable
        )

    def test_sysctlDisabled(self) -> None:
        """
        C{net.mptcp.enabled = 0} counts as a refusal, without even asking
        for an MPTCP socket.
        """
        self.patch(mptcpModule, "_sysctlDisabled", lambda: True)
        sock, isMP = mptcpModule.openSocket(socket.AF_INET)
        sock.close()
        self.assertFalse(isMP)
        self.assertRaises(
            MPTCPUnavailable, mptcpModule.openSocket, socket.AF_INET, fallback=False
        )

    def test_otherErrors(self) -> None:
        """
        Errors other than a refusal of MPTCP (running out of descriptors,
        say) are not hidden by falling back.
        """

        def exhausted(*args: Any, **kwargs: Any) -> socket.socket:
            raise OSError(errno.EMFILE, "Too many open files")

        self.patch(mptcpModule, "socketFactory", exhausted)
        self.patch(mptcpModule, "_sysctlDisabled", lambda: False)
        e = self.assertRaises(OSError, mptcpModule.openSocket, socket.AF_INET)
        self.assertEqual(e.errno, errno.EMFILE)

    def test_cannotListen(self) -> None:
        """
        A port in use fails C{listen} with L{CannotListenError}.
        """
        holder = socket.socket()
        self.addCleanup(holder.close)
        holder.bind(("127.0.0.1", 0))
        holder.listen(1)
        busy = holder.getsockname()[1]
        ep = MPTCPServerEndpoint(_reactor(), busy, interface="127.0.0.1")
        self.failureResultOf(
            ep.listen(Factory.forProtocol(Protocol)), CannotListenError
        )


class SessionTests(TestCase):
    """
    A memux session over real MPTCP loopback connections.
    """

    def setUp(self) -> None:
        _requireMPTCP()

    @defer.inlineCallbacks
    def _echo(self, serverDescription: str, host: str) -> Any:
        reactor = _reactor()
        mux = MultiplexingFactory(builtinServices(reactor))
        serverProtocols: list[Any] = []
        build = mux.buildProtocol

        def recording(addr: Any) -> Any:
            proto = build(addr)
            serverProtocols.append(proto)
            return proto

        mux.buildProtocol = recording  # type: ignore[method-assign]
        port = yield serverFromString(reactor, serverDescription).listen(mux)
        self.addCleanup(port.stopListening)
        self.assertTrue(IListeningPort.providedBy(port))
        portNumber = port.getHost().port
        session = yield connectSession(
            clientFromString(reactor, f"mptcp:host={host}:port={portNumber}")
        )
        self.addCleanup(
            lambda: session.transport.loseConnection() if session.connected else None
        )
        client = yield session.openChannel(b"echo", Factory.forProtocol(_Collector))
        client.transport.writeMessage(b"hello over mptcp")
        reply = yield client.got
        self.assertEqual(reply, b"hello over mptcp")
        self.assertTrue(isMPTCP(session.transport))
        self.assertEqual(len(serverProtocols), 1)
        self.assertTrue(isMPTCP(serverProtocols[0].transport))
        for transport in (session.transport, serverProtocols[0].transport):
            info = mptcpInfo(transport)
            self.assertIsNotNone(info)
            assert info is not None
            self.assertGreaterEqual(info.subflows, 0)
            self.assertNotEqual(info.token, 0)
        # The data went through MPTCP's data sequence space.
        info = mptcpInfo(session.transport)
        assert info is not None
        if info.bytesSent is not None:
            self.assertGreater(info.bytesSent, 0)
            assert info.bytesReceived is not None
            self.assertGreater(info.bytesReceived, 0)

    def test_echoIPv4(self) -> Any:
        """
        An echo channel on a memux session over ``mptcp:`` on 127.0.0.1
        round-trips its data; both ends are MPTCP sockets and report path
        information.
        """
        return self._echo("mptcp:0:interface=127.0.0.1", "127.0.0.1")

    def test_echoLocalhost(self) -> Any:
        """
        The client resolves C{localhost}.
        """
        return self._echo("mptcp:0:interface=127.0.0.1", "localhost")

    def test_echoIPv6(self) -> Any:
        """
        IPv6 literals work, on both ends.
        """
        try:
            probe = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
            probe.bind(("::1", 0))
            probe.close()
        except OSError as e:
            raise SkipTest(f"no IPv6 loopback here: {e}") from e
        return self._echo(r"mptcp:0:interface=\:\:1", r"\:\:1")


class KernelLayoutTests(SynchronousTestCase):
    """
    The decoding of C{struct mptcp_info} matches the running kernel.
    """

    def setUp(self) -> None:
        _requireMPTCP()

    def test_countersMatchTraffic(self) -> None:
        """
        On a real MPTCP connection on loopback, the decoded byte counters
        equal the bytes sent and received, and the sequence numbers agree
        (everything sent was acknowledged).
        """

        class Transport:
            def __init__(self, sock: socket.socket) -> None:
                self.sock = sock

            def getHandle(self) -> socket.socket:
                return self.sock

        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM, IPPROTO_MPTCP)
        self.addCleanup(listener.close)
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        client = socket.socket(socket.AF_INET, socket.SOCK_STREAM, IPPROTO_MPTCP)
        self.addCleanup(client.close)
        client.settimeout(5)
        client.connect(listener.getsockname())
        server, _ = listener.accept()
        self.addCleanup(server.close)
        server.settimeout(5)
        client.sendall(b"x" * 1000)
        received = b""
        while len(received) < 1000:
            received += server.recv(4096)
        server.sendall(b"y" * 300)
        received = b""
        while len(received) < 300:
            received += client.recv(4096)
        info = mptcpInfo(Transport(client))
        assert info is not None
        self.assertTrue(isMPTCP(Transport(client)))
        self.assertTrue(isMPTCP(Transport(server)))
        self.assertEqual(info.subflows, 0)
        self.assertNotEqual(info.token, 0)
        if info.bytesSent is None:
            raise SkipTest("this kernel does not report byte counters (before 6.5)")
        self.assertEqual(
            (info.bytesSent, info.bytesReceived, info.bytesRetrans),
            (1000, 300, 0),
        )
        self.assertEqual(info.writeSeq, info.sndUna)

    def test_kernelFallback(self) -> None:
        """
        When one end speaks plain TCP, the kernel falls back per
        connection: an MPTCP client socket stays an MPTCP socket but reports
        no MPTCP information, and a server accepting a plain TCP client gets
        a plain TCP socket.
        """

        class Transport:
            def __init__(self, sock: socket.socket) -> None:
                self.sock = sock

            def getHandle(self) -> socket.socket:
                return self.sock

        tcpListener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.addCleanup(tcpListener.close)
        tcpListener.bind(("127.0.0.1", 0))
        tcpListener.listen(1)
        client = socket.socket(socket.AF_INET, socket.SOCK_STREAM, IPPROTO_MPTCP)
        self.addCleanup(client.close)
        client.settimeout(5)
        client.connect(tcpListener.getsockname())
        accepted, _ = tcpListener.accept()
        self.addCleanup(accepted.close)
        self.assertTrue(isMPTCP(Transport(client)))
        self.assertIsNone(mptcpInfo(Transport(client)))

        mptcpListener = socket.socket(socket.AF_INET, socket.SOCK_STREAM, IPPROTO_MPTCP)
        self.addCleanup(mptcpListener.close)
        mptcpListener.bind(("127.0.0.1", 0))
        mptcpListener.listen(1)
        plain = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.addCleanup(plain.close)
        plain.settimeout(5)
        plain.connect(mptcpListener.getsockname())
        server, _ = mptcpListener.accept()
        self.addCleanup(server.close)
        self.assertFalse(isMPTCP(Transport(server)))
        self.assertIsNone(mptcpInfo(Transport(server)))
