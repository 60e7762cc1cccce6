"""
Tests for L{memux.mptcp}: the ``mptcp:`` endpoint strings and their
plugin, a memux session over MPTCP on loopback, fallback to TCP, and the
path information API.
"""

from __future__ import annotations

import errno
import socket
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

from twisted.internet import defer, tcp
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.endpoints import (
    _WrappingFactory,
    clientFromString,
    connectProtocol,
    serverFromString,
)
from twisted.internet.error import (
    CannotListenError,
    ConnectionRefusedError,
    DNSLookupError,
)
from twisted.internet.interfaces import (
    IAddress,
    IHostnameResolver,
    IHostResolution,
    IListeningPort,
    IResolutionReceiver,
    ISSLTransport,
    IStreamClientEndpoint,
    IStreamClientEndpointStringParserWithReactor,
    IStreamServerEndpoint,
    IStreamServerEndpointStringParser,
)
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import ILogObserver, globalLogPublisher
from twisted.plugin import getPlugins
from twisted.trial.unittest import SkipTest, SynchronousTestCase, TestCase
from zope.interface import directlyProvides, implementer
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
    PathInfo,
    isMPTCP,
    mptcpAvailable,
    mptcpInfo,
    pathInfo,
)
from memux.protocol import MemuxProtocol
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


class _SocketTransport:
    """
    A transport whose handle is C{sock}, as a Twisted TCP transport's is.
    """

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    def getHandle(self) -> socket.socket:
        return self.sock


def _requireIPv6Loopback() -> None:
    try:
        probe = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        probe.bind(("::1", 0))
        probe.close()
    except OSError as e:
        raise SkipTest(f"no IPv6 loopback here: {e}") from e


def _recordingFactory() -> tuple[MultiplexingFactory, list[MemuxProtocol]]:
    """
    A server factory with the built-in services, and the list of the
    sessions it builds.
    """
    mux = MultiplexingFactory(builtinServices(_reactor()))
    sessions: list[MemuxProtocol] = []
    build = mux.buildProtocol

    def recording(addr: Any) -> MemuxProtocol:
        proto = build(addr)
        sessions.append(proto)
        return proto

    mux.buildProtocol = recording  # type: ignore[method-assign]
    return mux, sessions


def _closeAtEnd(case: TestCase, *groups: list[MemuxProtocol]) -> None:
    """
    At the end of C{case}, close the sessions of C{groups} (as they are
    then) and wait until both ends are closed.
    """

    def close() -> defer.Deferred[Any]:
        sessions = [s for group in groups for s in group]
        for s in sessions:
            s.loseConnection()
        return defer.gatherResults([s.whenClosed() for s in sessions])

    case.addCleanup(close)


@implementer(IHostResolution)
@dataclass
class _Resolution:
    name: str

    def cancel(self) -> None:
        pass


@implementer(IHostnameResolver)
class _Names:
    """
    A name resolver that knows only C{names}: each name's addresses, in
    order, or L{None} for a lookup that never ends.  It keeps the address
    types each lookup asked for.
    """

    def __init__(self, names: dict[str, list[str] | None]) -> None:
        self.names = names
        self.asked: list[list[type[IAddress]]] = []

    def resolveHostName(
        self,
        resolutionReceiver: IResolutionReceiver,
        hostName: str,
        portNumber: int = 0,
        addressTypes: Sequence[type[IAddress]] | None = None,
        transportSemantics: str = "TCP",
    ) -> IHostResolution:
        types = list(addressTypes or [IPv4Address, IPv6Address])
        self.asked.append(types)
        resolution = _Resolution(hostName)
        resolutionReceiver.resolutionBegan(resolution)
        hosts = self.names.get(hostName, [])
        if hosts is None:
            return resolution
        for host in hosts:
            address = (
                IPv6Address("TCP", host, portNumber)
                if ":" in host
                else IPv4Address("TCP", host, portNumber)
            )
            if type(address) in types:
                resolutionReceiver.addressResolved(address)
        resolutionReceiver.resolutionComplete()
        return resolution


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
            ":bindAddress=127.0.0.2:fallback=no",
        )
        self.assertIsInstance(ep, MPTCPClientEndpoint)
        assert isinstance(ep, MPTCPClientEndpoint)
        verifyObject(IStreamClientEndpoint, ep)
        self.assertEqual(
            (ep.host, ep.port, ep.timeout, ep.bindAddress, ep.fallback),
            ("example.com", 7400, 2.5, ("127.0.0.2", 0), False),
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

        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.addCleanup(sock.close)
        if not hasattr(socket, "SO_PROTOCOL"):
            raise SkipTest("this platform has no SO_PROTOCOL: not Linux")
        self.assertFalse(isMPTCP(_SocketTransport(sock)))
        self.assertIsNone(mptcpInfo(_SocketTransport(sock)))


class PathInfoTests(SynchronousTestCase):
    """
    L{pathInfo} and what L{PathInfo.describe} says, without a connection.
    """

    def test_describe(self) -> None:
        """
        Plain paths are named, with TLS and a fallback from MPTCP noted;
        they count no subflows.
        """
        self.assertEqual(PathInfo("TCP").describe(), "TCP")
        self.assertEqual(PathInfo("TCP", tls=True).describe(), "TLS over TCP")
        self.assertEqual(
            PathInfo("TCP", fellBack=True).describe(), "TCP (MPTCP fell back to TCP)"
        )
        self.assertEqual(PathInfo("UNIX").describe(), "UNIX")
        self.assertIsNone(PathInfo("TCP").subflows)

    def test_describeMPTCP(self) -> None:
        """
        An MPTCP path counts its subflows (the first one included), the
        addresses accepted and announced, and the kernel's byte and
        retransmission counters where it reports them.
        """
        info = MPTCPInfo(1, 0, 1, 2, 0, 2, 0, 7, 0, 0, 0)
        self.assertEqual(PathInfo("MPTCP", mptcp=info).subflows, 2)
        self.assertEqual(
            PathInfo("MPTCP", mptcp=info).describe(),
            "MPTCP, 2 subflows, 1 address accepted",
        )
        counted = MPTCPInfo(
            0, 2, 0, 2, 2, 2, 0, 7, 0, 0, 0, 1, 2, False,
            retransmits=3, bytesRetrans=0, bytesSent=5 * 1024 * 1024,
            bytesReceived=512, bytesAcked=0,
        )  # fmt: skip
        self.assertEqual(
            PathInfo("MPTCP", tls=True, mptcp=counted).describe(),
            "TLS over MPTCP, 1 subflow, 2 announced, 5.0 MiB sent, 512 B received,"
            " 3 retransmits",
        )

    def test_sockets(self) -> None:
        """
        A TCP socket is TCP, a UNIX socket UNIX, and a transport with no
        socket under it unknown.
        """
        tcpSocket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.addCleanup(tcpSocket.close)
        unixSocket = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.addCleanup(unixSocket.close)
        if not hasattr(socket, "SO_PROTOCOL"):
            raise SkipTest("this platform has no SO_PROTOCOL: not Linux")
        self.assertEqual(pathInfo(_SocketTransport(tcpSocket)), PathInfo("TCP"))
        self.assertEqual(pathInfo(tcpSocket), PathInfo("TCP"))
        self.assertEqual(pathInfo(_SocketTransport(unixSocket)), PathInfo("UNIX"))
        self.assertEqual(pathInfo(object()), PathInfo("unknown"))

    def test_throughLayers(self) -> None:
        """
        Given a session over TLS, L{pathInfo} looks through the session and
        the TLS layer (whose handle is no socket) to the socket, and notes
        the TLS; L{isMPTCP} and L{mptcpInfo} look through them too.
        """
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.addCleanup(sock.close)
        if not hasattr(socket, "SO_PROTOCOL"):
            raise SkipTest("this platform has no SO_PROTOCOL: not Linux")

        class TLSLayer:
            transport = _SocketTransport(sock)

            def getHandle(self) -> object:
                return object()  # as TLSMemoryBIOProtocol: its TLS connection

        class Session:
            transport = TLSLayer()

        directlyProvides(Session.transport, ISSLTransport)
        self.assertEqual(pathInfo(Session()), PathInfo("TCP", tls=True))
        self.assertFalse(isMPTCP(Session()))
        self.assertIsNone(mptcpInfo(Session()))


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
        self.assertEqual(pathInfo(proto.transport), PathInfo("TCP"))
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
        mux, serverProtocols = _recordingFactory()
        port = yield serverFromString(reactor, serverDescription).listen(mux)
        self.addCleanup(port.stopListening)
        self.assertTrue(IListeningPort.providedBy(port))
        portNumber = port.getHost().port
        session = yield connectSession(
            clientFromString(reactor, f"mptcp:host={host}:port={portNumber}")
        )
        _closeAtEnd(self, [session], serverProtocols)
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
        path = pathInfo(session)
        self.assertEqual((path.kind, path.tls, path.subflows), ("MPTCP", False, 1))
        self.assertTrue(path.describe().startswith("MPTCP, 1 subflow"))
        # The data went through MPTCP's data sequence space.
        info = mptcpInfo(session)
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

    def test_refused(self) -> Any:
        """
        A refused connection fails with L{ConnectionRefusedError}, as over
        TCP (the reactor sees a failed MPTCP connect as a hang-up, not as
        writable).
        """
        holder = socket.socket()
        self.addCleanup(holder.close)
        holder.bind(("127.0.0.1", 0))
        unused = holder.getsockname()[1]  # bound, not listening: refused
        endpoint = MPTCPClientEndpoint(_reactor(), "127.0.0.1", unused, fallback=False)
        return self.assertFailure(
            endpoint.connect(Factory.forProtocol(Protocol)), ConnectionRefusedError
        )

    def test_echoIPv6(self) -> Any:
        """
        IPv6 literals work, on both ends.
        """
        _requireIPv6Loopback()
        return self._echo(r"mptcp:0:interface=\:\:1", r"\:\:1")


class NameResolutionTests(TestCase):
    """
    The client endpoint resolves names to IPv4 and IPv6 addresses with the
    reactor's name resolver and tries them in order.
    """

    def setUp(self) -> None:
        _requireMPTCP()
        self.reactor = _reactor()
        self.serverSessions: list[MemuxProtocol] = []

    def useNames(self, names: dict[str, list[str] | None]) -> _Names:
        """
        Make the reactor resolve C{names} only, for this test.
        """
        resolver = _Names(names)
        old = self.reactor.installNameResolver(resolver)
        self.addCleanup(self.reactor.installNameResolver, old)
        return resolver

    @defer.inlineCallbacks
    def listen(self, interface: str) -> Any:
        """
        Serve memux over MPTCP on C{interface}; fire with the port number.
        """
        mux, self.serverSessions = _recordingFactory()
        port = yield MPTCPServerEndpoint(
            self.reactor, 0, interface=interface, fallback=False
        ).listen(mux)
        self.addCleanup(port.stopListening)
        return port.getHost().port

    @defer.inlineCallbacks
    def echo(self, endpoint: MPTCPClientEndpoint) -> Any:
        """
        Connect a session through C{endpoint}, check an echo round trip,
        and fire with the session's socket.
        """
        session = yield connectSession(endpoint)
        _closeAtEnd(self, [session], self.serverSessions)
        client = yield session.openChannel(b"echo", Factory.forProtocol(_Collector))
        client.transport.writeMessage(b"by name")
        self.assertEqual((yield client.got), b"by name")
        return session.transport.getHandle()

    @defer.inlineCallbacks
    def test_nameResolvingToIPv6(self) -> Any:
        """
        A name whose only address is IPv6 is reached with an IPv6 MPTCP
        socket.
        """
        _requireIPv6Loopback()
        self.useNames({"six.example": ["::1"]})
        number = yield self.listen("::1")
        handle = yield self.echo(
            MPTCPClientEndpoint(self.reactor, "six.example", number, fallback=False)
        )
        self.assertEqual(handle.family, socket.AF_INET6)
        self.assertTrue(isMPTCP(handle))
        self.assertEqual(handle.getpeername()[:2], ("::1", number))

    @defer.inlineCallbacks
    def test_triesEachAddress(self) -> Any:
        """
        When the first address refuses the connection, the next one is
        tried: here an IPv4 address with nothing listening, then IPv6.
        """
        _requireIPv6Loopback()
        self.useNames({"both.example": ["127.0.0.1", "::1"]})
        number = yield self.listen("::1")
        handle = yield self.echo(
            MPTCPClientEndpoint(self.reactor, "both.example", number, fallback=False)
        )
        self.assertEqual(handle.family, socket.AF_INET6)

    @defer.inlineCallbacks
    def test_lastError(self) -> Any:
        """
        When every address fails, C{connect} fails with the last error.
        """
        holder = socket.socket()
        self.addCleanup(holder.close)
        holder.bind(("127.0.0.1", 0))
        unused = holder.getsockname()[1]  # bound, not listening: refused
        self.useNames({"down.example": ["127.0.0.1", "127.0.0.1"]})
        endpoint = MPTCPClientEndpoint(self.reactor, "down.example", unused)
        yield self.assertFailure(
            endpoint.connect(Factory.forProtocol(Protocol)), ConnectionRefusedError
        )

    def test_noAddress(self) -> None:
        """
        A name without addresses fails with L{DNSLookupError} naming it.
        """
        self.useNames({})
        endpoint = MPTCPClientEndpoint(self.reactor, "nowhere.example", 7400)
        failure = self.failureResultOf(
            endpoint.connect(Factory.forProtocol(Protocol)), DNSLookupError
        )
        self.assertIn("nowhere.example", str(failure.value))

    def test_bindAddressFamily(self) -> None:
        """
        With a bind address, only addresses of its family are asked for.
        """
        names = self.useNames({})
        for bind, family in [("::1", IPv6Address), ("127.0.0.1", IPv4Address)]:
            endpoint = MPTCPClientEndpoint(
                self.reactor, "any.example", 7400, bindAddress=(bind, 0)
            )
            self.failureResultOf(
                endpoint.connect(Factory.forProtocol(Protocol)), DNSLookupError
            )
            self.assertEqual(names.asked[-1], [family])

    def test_cancelWhileResolving(self) -> None:
        """
        Cancelling while the name is being resolved fails the attempt with
        L{defer.CancelledError}.
        """
        self.useNames({"slow.example": None})
        endpoint = MPTCPClientEndpoint(self.reactor, "slow.example", 7400)
        d = endpoint.connect(Factory.forProtocol(Protocol))
        self.assertNoResult(d)
        d.cancel()
        self.failureResultOf(d, defer.CancelledError)


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
        info = mptcpInfo(_SocketTransport(client))
        assert info is not None
        self.assertTrue(isMPTCP(_SocketTransport(client)))
        self.assertTrue(isMPTCP(_SocketTransport(server)))
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
        self.assertTrue(isMPTCP(_SocketTransport(client)))
        self.assertIsNone(mptcpInfo(_SocketTransport(client)))
        self.assertEqual(pathInfo(client), PathInfo("TCP", fellBack=True))

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
        self.assertFalse(isMPTCP(_SocketTransport(server)))
        self.assertIsNone(mptcpInfo(_SocketTransport(server)))
        self.assertEqual(pathInfo(server), PathInfo("TCP"))
