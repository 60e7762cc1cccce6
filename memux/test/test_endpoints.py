"""
Tests for L{memux.endpoints}: the ``memux:`` endpoint strings, their
plugin, session pooling, and web serving over memux, in memory and over
real loopback sockets.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any, cast

from twisted.internet import defer
from twisted.internet.address import IPv4Address
from twisted.internet.endpoints import (
    TCP4ClientEndpoint,
    TCP4ServerEndpoint,
    UNIXClientEndpoint,
    UNIXServerEndpoint,
    clientFromString,
    connectProtocol,
    quoteStringArgument,
    serverFromString,
    wrapServerTLS,
)
from twisted.internet.error import (
    ConnectError,
    ConnectingCancelledError,
    ConnectionDone,
    ConnectionRefusedError,
)
from twisted.internet.interfaces import (
    IAddress,
    IListeningPort,
    IProtocol,
    IProtocolFactory,
    IProtocolNegotiationFactory,
    IReactorCore,
    ISSLTransport,
    IStreamClientEndpoint,
    IStreamClientEndpointStringParserWithReactor,
    IStreamServerEndpoint,
    IStreamServerEndpointStringParser,
)
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.plugin import getPlugins
from twisted.python.failure import Failure
from twisted.trial.unittest import SkipTest, SynchronousTestCase, TestCase
from twisted.web.client import Agent, HTTPConnectionPool, readBody
from twisted.web.iweb import IAgentEndpointFactory, IRequest
from twisted.web.resource import Resource
from twisted.web.server import Site
from zope.interface import implementer
from zope.interface.verify import verifyObject

from memux.endpoints import (
    EndpointDescriptionError,
    MemuxClientEndpoint,
    MemuxListeningPort,
    MemuxServerEndpoint,
    SessionPool,
    defaultPool,
    memuxDescription,
)
from memux.error import ChannelRefused, SessionLost
from memux.protocol import ChannelRequest, MemuxProtocol, MultiplexingFactory
from memux.services import Echo
from memux.test._helpers import isCheckout
from memux.tls import ALPN, serverTLSOptions

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"


def theReactor() -> Any:
    """
    The global reactor, for tests over real sockets (it provides every
    reactor interface, which no one annotation says).
    """
    from twisted.internet import reactor

    return reactor


# ---------------------------------------------------------------- helpers


class Recorder(Protocol):
    """
    Records what it receives and how its connection ended.
    """

    def __init__(self) -> None:
        self.received = b""
        self.lost: defer.Deferred[BaseException] = defer.Deferred()
        self._waiting: list[tuple[int, defer.Deferred[bytes]]] = []

    def dataReceived(self, data: bytes) -> None:
        self.received += data
        still = []
        for size, d in self._waiting:
            if len(self.received) >= size:
                d.callback(self.received)
            else:
                still.append((size, d))
        self._waiting = still

    def receive(self, size: int) -> defer.Deferred[bytes]:
        """
        Fire once at least ``size`` bytes have arrived in all.
        """
        if len(self.received) >= size:
            return defer.succeed(self.received)
        d: defer.Deferred[bytes] = defer.Deferred()
        self._waiting.append((size, d))
        return d

    def connectionLost(self, reason: Failure | None = None) -> None:
        self.lost.callback(
            ConnectionDone() if reason is None else cast(BaseException, reason.value)
        )


@implementer(IProtocolFactory)
@implementer(IProtocolNegotiationFactory)
class CountingFactory:
    """
    Builds protocols with another factory and keeps them (the sessions a
    memux server accepted); passes on the ALPN protocols it accepts.
    """

    def __init__(self, factory: IProtocolFactory, built: list[Any]) -> None:
        self.factory = factory
        self.built = built

    def buildProtocol(self, addr: IAddress) -> IProtocol | None:
        protocol = self.factory.buildProtocol(addr)
        self.built.append(protocol)
        return protocol

    def doStart(self) -> None:
        self.factory.doStart()

    def doStop(self) -> None:
        self.factory.doStop()

    def acceptableProtocols(self) -> list[bytes]:
        negotiating = IProtocolNegotiationFactory(self.factory, None)
        return [] if negotiating is None else list(negotiating.acceptableProtocols())


@implementer(IStreamServerEndpoint)
class CountingServerEndpoint:
    """
    A server endpoint that counts the connections (memux sessions) its
    inner endpoint accepts.
    """

    def __init__(self, inner: IStreamServerEndpoint) -> None:
        self.inner = inner
        self.sessions: list[MemuxProtocol] = []

    def listen(self, factory: IProtocolFactory) -> defer.Deferred[IListeningPort]:
        return self.inner.listen(CountingFactory(factory, self.sessions))


@implementer(IStreamServerEndpoint)
class FakeServerEndpoint:
    """
    A server endpoint that listens on nothing and keeps the factory.
    """

    def __init__(self) -> None:
        self.factory: IProtocolFactory | None = None
        self.port = FakePort()

    def listen(self, factory: IProtocolFactory) -> defer.Deferred[IListeningPort]:
        self.factory = factory
        return defer.succeed(self.port)


@implementer(IListeningPort)
class FakePort:
    """
    A listening port that listens on nothing.
    """

    host = IPv4Address("TCP", "127.0.0.9", 7400)
    stopped = False
    marker = "inner"

    def startListening(self) -> None:
        self.stopped = False

    def stopListening(self) -> None:
        self.stopped = True

    def getHost(self) -> IAddress:
        return self.host


def completeTCP(
    reactor: MemoryReactorClock, index: int = -1
) -> tuple[MemuxProtocol, Any]:
    """
    Complete the connection attempt ``index`` made on ``reactor``; return
    the session and the endpoint's wrapping protocol (to lose it).
    """
    host, port, factory, _, _ = reactor.tcpClients[index]
    wrapper: Any = factory.buildProtocol(IPv4Address("TCP", host, port))
    wrapper.makeConnection(StringTransport())
    return wrapper._wrappedProtocol, wrapper


def failTCP(reactor: MemoryReactorClock, index: int = -1) -> None:
    """
    Fail the connection attempt ``index`` made on ``reactor`` as refused.
    """
    factory = reactor.tcpClients[index][2]
    factory.clientConnectionFailed(
        reactor.connectors[index], Failure(ConnectionRefusedError())
    )


def shortTemporaryDirectory(case: SynchronousTestCase) -> str:
    """
    A new directory under the system's temporary directory, removed after
    the test: UNIX socket paths must be short, and trial's own temporary
    paths are long.
    """
    path = tempfile.mkdtemp(prefix="memux-")
    case.addCleanup(shutil.rmtree, path, ignore_errors=True)
    return path


def sessionOf(protocol: Any) -> MemuxProtocol:
    """
    The session carrying the channel of ``protocol``.
    """
    session: MemuxProtocol = protocol.transport.session
    return session


# ---------------------------------------------------------------- parsing


class ClientParsingTests(SynchronousTestCase):
    """
    ``memux:`` client descriptions given to L{clientFromString}.
    """

    def setUp(self) -> None:
        self.reactor = MemoryReactorClock()

    def parse(self, description: str) -> MemuxClientEndpoint:
        """
        Parse ``description`` and check it is a memux client endpoint.
        """
        endpoint = clientFromString(self.reactor, description)
        self.assertIsInstance(endpoint, MemuxClientEndpoint)
        self.assertTrue(verifyObject(IStreamClientEndpoint, endpoint))
        parsed: MemuxClientEndpoint = endpoint
        return parsed

    def test_escapedInner(self) -> None:
        """
        The inner description is the first argument with its colons
        escaped; ``service=`` names the service, as bytes.
        """
        endpoint = self.parse(r"memux:tcp\:example.com\:7400:service=echo")
        self.assertEqual(endpoint.endpoint, "tcp:example.com:7400")
        self.assertEqual(endpoint.service, b"echo")
        self.assertIsNone(endpoint.metadata)
        self.assertIsNone(endpoint.destination)

    def test_innerKeywords(self) -> None:
        """
        The inner description's own keywords (unescaped ``=``, values with
        escaped colons) come through whole.
        """
        endpoint = self.parse(
            r"memux:tcp\:example.com\:7400\:timeout=5\:bindAddress=127.0.0.2"
            ":service=echo"
        )
        self.assertEqual(
            endpoint.endpoint, "tcp:example.com:7400:timeout=5:bindAddress=127.0.0.2"
        )
        self.assertEqual(endpoint.service, b"echo")

    def test_innerWithEscapedEquals(self) -> None:
        """
        An inner description whose ``=`` are escaped too is read the same.
        """
        endpoint = self.parse(r"memux:tcp\:example.com\:7400\:timeout\=5:service=e")
        self.assertEqual(endpoint.endpoint, "tcp:example.com:7400:timeout=5")

    def test_endpointKeyword(self) -> None:
        """
        The inner description may be given as ``endpoint=``, as with
        Twisted's ``tls:`` endpoint.
        """
        endpoint = self.parse(r"memux:service=echo:endpoint=unix\:/run/memux.sock")
        self.assertEqual(endpoint.endpoint, "unix:/run/memux.sock")

    def test_metadataAndDestination(self) -> None:
        """
        ``metadata=`` is sent as UTF-8 bytes; ``destination=HOST\\:PORT``
        becomes a (host, port) pair, brackets stripped from IPv6 hosts.
        """
        endpoint = self.parse(
            r"memux:tcp\:relay\:7400:service=tcp:metadata=tok\:én"
            r":destination=[2001\:db8\:\:1]\:443"
        )
        self.assertEqual(endpoint.metadata, "tok:én".encode())
        self.assertEqual(endpoint.destination, ("2001:db8::1", 443))

    def test_defaultService(self) -> None:
        """
        ``service=`` with no value is the default service, ``b""``.
        """
        self.assertEqual(self.parse(r"memux:unix\:/s:service=").service, b"")

    def test_missingService(self) -> None:
        """
        Without ``service=`` the description is refused with an error that
        says so and shows the syntax.
        """
        e = self.assertRaises(
            EndpointDescriptionError,
            clientFromString,
            self.reactor,
            r"memux:tcp\:example.com\:7400",
        )
        self.assertIn("service=NAME", str(e))
        self.assertIn(r"memux:tcp\:example.com\:7400:service=echo", str(e))

    def test_unescapedColons(self) -> None:
        """
        An inner description whose colons are not escaped is refused with an
        error saying to escape them.
        """
        e = self.assertRaises(
            EndpointDescriptionError,
            clientFromString,
            self.reactor,
            "memux:tcp:example.com:7400:service=echo",
        )
        self.assertIn("escape its colons", str(e))

    def test_noInner(self) -> None:
        """
        A description with no inner endpoint is refused.
        """
        e = self.assertRaises(
            EndpointDescriptionError, clientFromString, self.reactor, "memux:service=x"
        )
        self.assertIn("needs an inner endpoint", str(e))

    def test_unknownKeyword(self) -> None:
        """
        A keyword memux does not know is refused, naming it.
        """
        e = self.assertRaises(
            EndpointDescriptionError,
            clientFromString,
            self.reactor,
            r"memux:tcp\:h\:1:service=x:servise=y",
        )
        self.assertIn("'servise'", str(e))

    def test_badDestination(self) -> None:
        """
        A destination without a numeric port is refused.
        """
        self.assertRaises(
            EndpointDescriptionError,
            clientFromString,
            self.reactor,
            r"memux:tcp\:h\:1:service=x:destination=example.com",
        )

    def test_badInner(self) -> None:
        """
        An inner description Twisted cannot parse fails at parse time, with
        Twisted's own error.
        """
        e = self.assertRaises(
            ValueError,
            clientFromString,
            self.reactor,
            r"memux:nosuch\:thing:service=x",
        )
        self.assertIn("nosuch", str(e))

    def test_tlsInner(self) -> None:
        """
        A ``tls:`` inner description makes a TLS endpoint inside memux.
        """
        endpoint = self.parse(r"memux:tls\:example.com\:7400:service=echo")
        inner = clientFromString(self.reactor, endpoint.endpoint)
        self.assertEqual(type(inner).__name__, "_WrapperEndpoint")

    def test_usesDefaultPool(self) -> None:
        """
        Endpoints parsed with a reactor share that reactor's default pool.
        """
        a = self.parse(r"memux:tcp\:h\:1:service=a")
        b = self.parse(r"memux:tcp\:h\:2:service=b")
        self.assertIs(a.pool, defaultPool(self.reactor))
        self.assertIs(b.pool, a.pool)
        self.assertIs(a.pool.reactor, self.reactor)

    def test_memuxDescription(self) -> None:
        """
        L{memuxDescription} quotes an inner description holding colons,
        backslashes and ``=`` so that it parses back exactly.
        """
        inner = "unix:path=" + quoteStringArgument("/tmp/a:b\\c=d")
        description = memuxDescription(inner, "we:b", metadata="m:1")
        endpoint = self.parse(description)
        self.assertEqual(endpoint.endpoint, inner)
        self.assertEqual(endpoint.service, b"we:b")
        self.assertEqual(endpoint.metadata, b"m:1")
        unix = clientFromString(self.reactor, endpoint.endpoint)
        self.assertIsInstance(unix, UNIXClientEndpoint)
        self.assertEqual(unix._path, "/tmp/a:b\\c=d")

    def test_memuxDescriptionKeywords(self) -> None:
        """
        L{memuxDescription} keeps an inner description's keywords, with
        escaped values, intact.
        """
        inner = "tcp:host=" + quoteStringArgument("::1") + ":port=80"
        endpoint = self.parse(memuxDescription(inner, "web", destination="h:80"))
        self.assertEqual(endpoint.endpoint, inner)
        self.assertEqual(endpoint.destination, ("h", 80))

    def test_serviceMustBeBytes(self) -> None:
        """
        L{MemuxClientEndpoint} takes the service as bytes, as
        C{openChannel} does.
        """
        self.assertRaises(
            TypeError, MemuxClientEndpoint, self.reactor, "tcp:h:1", "echo"
        )


class ServerParsingTests(SynchronousTestCase):
    """
    ``memux:`` server descriptions given to L{serverFromString}.
    """

    def setUp(self) -> None:
        self.reactor = MemoryReactorClock()

    def test_escapedInner(self) -> None:
        """
        The inner server description, with its own keywords, and the
        service are parsed.
        """
        endpoint = serverFromString(
            self.reactor, r"memux:tcp\:8080\:interface=127.0.0.1:service=web"
        )
        self.assertIsInstance(endpoint, MemuxServerEndpoint)
        self.assertTrue(verifyObject(IStreamServerEndpoint, endpoint))
        self.assertEqual(endpoint.service, b"web")
        self.assertIsInstance(endpoint.endpoint, TCP4ServerEndpoint)
        self.assertEqual(endpoint.endpoint._port, 8080)
        self.assertEqual(endpoint.endpoint._interface, "127.0.0.1")

    def test_unix(self) -> None:
        """
        A UNIX inner endpoint is parsed.
        """
        endpoint = serverFromString(self.reactor, r"memux:unix\:/run/m.sock:service=w")
        self.assertIsInstance(endpoint.endpoint, UNIXServerEndpoint)
        self.assertEqual(endpoint.endpoint._address, "/run/m.sock")

    def test_missingService(self) -> None:
        """
        Without ``service=`` the description is refused.
        """
        e = self.assertRaises(
            EndpointDescriptionError, serverFromString, self.reactor, r"memux:tcp\:80"
        )
        self.assertIn("service=NAME", str(e))

    def test_noMetadata(self) -> None:
        """
        Client-only keywords are refused on the server side.
        """
        self.assertRaises(
            EndpointDescriptionError,
            serverFromString,
            self.reactor,
            r"memux:tcp\:80:service=w:metadata=x",
        )


class PluginTests(SynchronousTestCase):
    """
    The ``memux`` endpoint parsers are plugins Twisted finds.
    """

    def test_discovered(self) -> None:
        """
        twisted.plugin finds a client and a server parser for the prefix
        ``memux``.
        """
        clients = [
            p
            for p in getPlugins(IStreamClientEndpointStringParserWithReactor)
            if p.prefix == "memux"
        ]
        servers = [
            p
            for p in getPlugins(IStreamServerEndpointStringParser)
            if p.prefix == "memux"
        ]
        self.assertTrue(clients)
        self.assertTrue(servers)

    def test_inCheckout(self) -> None:
        """
        Run from a checkout (memux imported from it), the checkout's
        C{twisted/plugins/}, which has no C{__init__.py}, is on
        C{twisted.plugins.__path__}, so its plugin is found without an
        install.
        """
        import memux
        import twisted.plugins

        if (
            Path(memux.__file__).resolve().parents[1] != ROOT
            or not isCheckout(ROOT)
            or not (ROOT / "twisted" / "plugins" / "memux_endpoints.py").exists()
        ):
            raise SkipTest("memux is not imported from a checkout")
        paths = [Path(p).resolve() for p in twisted.plugins.__path__]
        self.assertIn((ROOT / "twisted" / "plugins").resolve(), paths)
        self.assertFalse((ROOT / "twisted" / "plugins" / "__init__.py").exists())

    def test_importSafe(self) -> None:
        """
        Importing the plugin module (as Twisted does to list plugins) loads
        neither memux's Twisted layer nor a reactor.
        """
        plugin = ROOT / "twisted" / "plugins" / "memux_endpoints.py"
        if not plugin.exists():
            raise SkipTest("not run from a checkout")
        code = (
            "import importlib.util, sys\n"
            f"spec = importlib.util.spec_from_file_location('p', {str(plugin)!r})\n"
            "module = importlib.util.module_from_spec(spec)\n"
            "spec.loader.exec_module(module)\n"
            "print(module.memuxClientEndpointParser.prefix,"
            " sorted(m for m in sys.modules if m.startswith('memux')),"
            " 'twisted.internet.reactor' in sys.modules)\n"
        )
        done = subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=str(ROOT),
            env=dict(os.environ, PYTHONPATH=str(ROOT)),
        )
        self.assertEqual(done.returncode, 0, done.stderr)
        self.assertEqual(done.stdout.strip(), "memux [] False")


# ---------------------------------------------------------------- pooling


class PoolTests(SynchronousTestCase):
    """
    L{SessionPool} with a memory reactor: connection attempts are counted
    and completed or failed by hand.
    """

    def setUp(self) -> None:
        self.reactor = MemoryReactorClock()
        self.pool = SessionPool(self.reactor)
        self.endpoint = MemuxClientEndpoint(self.pool, "tcp:example.com:7400", b"echo")

    def connect(self, endpoint: MemuxClientEndpoint | None = None) -> Any:
        """
        Connect a L{Recorder} through ``endpoint`` (this test's by default).
        """
        return connectProtocol(endpoint or self.endpoint, Recorder())

    def test_twoConnectsOneConnection(self) -> None:
        """
        Two connects through two endpoints with the same inner description
        make one connection and open two channels on its session.
        """
        other = MemuxClientEndpoint(self.pool, "tcp:example.com:7400", b"other")
        first = self.connect()
        session, _ = completeTCP(self.reactor)
        a = self.successResultOf(first)
        b = self.successResultOf(self.connect(other))
        self.assertEqual(len(self.reactor.tcpClients), 1)
        self.assertIs(sessionOf(a), session)
        self.assertIs(sessionOf(b), session)
        self.assertEqual(a.transport.service, b"echo")
        self.assertEqual(b.transport.service, b"other")
        self.assertNotEqual(a.transport.channel, b.transport.channel)
        self.assertEqual(self.pool.sessions(), [session])

    def test_concurrentConnects(self) -> None:
        """
        Connects made while the session is being established wait for the
        same connection attempt, and all get channels once it is made.
        """
        waiting = [self.connect() for _ in range(3)]
        self.assertEqual(len(self.reactor.tcpClients), 1)
        for d in waiting:
            self.assertNoResult(d)
        session, _ = completeTCP(self.reactor)
        protocols = [self.successResultOf(d) for d in waiting]
        self.assertEqual({id(sessionOf(p)) for p in protocols}, {id(session)})
        self.assertEqual(len({p.transport.channel for p in protocols}), 3)

    def test_otherDescription(self) -> None:
        """
        A different inner description gets a session of its own.
        """
        self.connect()
        self.connect(MemuxClientEndpoint(self.pool, "tcp:example.com:7401", b"echo"))
        self.assertEqual(len(self.reactor.tcpClients), 2)

    def test_reconnectAfterLoss(self) -> None:
        """
        Once the session is lost, the next connect makes a new one.
        """
        d = self.connect()
        first, wrapper = completeTCP(self.reactor)
        proto = self.successResultOf(d)
        wrapper.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(self.pool.sessions(), [])
        self.assertIsInstance(self.successResultOf(proto.lost), SessionLost)
        again = self.connect()
        self.assertEqual(len(self.reactor.tcpClients), 2)
        second, _ = completeTCP(self.reactor)
        self.assertIsNot(second, first)
        self.assertIs(sessionOf(self.successResultOf(again)), second)

    def test_replacedAfterGoAway(self) -> None:
        """
        A session that has sent GOAWAY takes no new channels from the pool:
        the next connect makes a new session.
        """
        d = self.connect()
        first, _ = completeTCP(self.reactor)
        self.successResultOf(d)
        first.goAway()
        self.connect()
        self.assertEqual(len(self.reactor.tcpClients), 2)

    def test_failureThenSuccess(self) -> None:
        """
        A failed attempt fails every connect waiting for it with the real
        error; the next connect tries again.
        """
        waiting = [self.connect(), self.connect()]
        failTCP(self.reactor)
        for d in waiting:
            self.failureResultOf(d, ConnectionRefusedError)
        again = self.connect()
        self.assertEqual(len(self.reactor.tcpClients), 2)
        session, _ = completeTCP(self.reactor)
        self.assertIs(sessionOf(self.successResultOf(again)), session)

    def test_cancelOneWaiter(self) -> None:
        """
        Cancelling one waiting connect leaves the attempt to the others.
        """
        a, b = self.connect(), self.connect()
        a.cancel()
        self.failureResultOf(a, defer.CancelledError)
        self.assertFalse(self.reactor.connectors[0].stoppedConnecting)
        completeTCP(self.reactor)
        self.successResultOf(b)

    def test_cancelAllWaiters(self) -> None:
        """
        Once every waiting connect is cancelled, the attempt is stopped;
        a later connect starts a new one.
        """
        a = self.connect()
        a.cancel()
        self.failureResultOf(a, defer.CancelledError)
        self.assertTrue(self.reactor.connectors[0].stoppedConnecting)
        self.connect()
        self.assertEqual(len(self.reactor.tcpClients), 2)

    def test_endpointObjects(self) -> None:
        """
        Endpoint objects are pooled by identity: the same object shares a
        session, an equal but distinct one gets its own.
        """
        inner = TCP4ClientEndpoint(self.reactor, "example.com", 7400)
        one = MemuxClientEndpoint(self.pool, inner, b"a")
        two = MemuxClientEndpoint(self.pool, inner, b"b")
        self.connect(one)
        self.connect(two)
        self.assertEqual(len(self.reactor.tcpClients), 1)
        twin = TCP4ClientEndpoint(self.reactor, "example.com", 7400)
        self.connect(MemuxClientEndpoint(self.pool, twin, b"a"))
        self.assertEqual(len(self.reactor.tcpClients), 2)

    def test_sessionByDescription(self) -> None:
        """
        L{SessionPool.session} takes a description string and fires with
        the session; a bad description fails the Deferred.
        """
        d = self.pool.session("tcp:example.com:7400")
        session, _ = completeTCP(self.reactor)
        self.assertIs(self.successResultOf(d), session)
        self.assertTrue(session.client)
        self.failureResultOf(self.pool.session("nosuch:x"), ValueError)

    def test_reactorGivesDefaultPool(self) -> None:
        """
        Given a reactor, L{MemuxClientEndpoint} uses its default pool, so
        endpoints parsed from strings share sessions with it.
        """
        mine = MemuxClientEndpoint(self.reactor, "tcp:example.com:7400", b"a")
        parsed = clientFromString(
            self.reactor, r"memux:tcp\:example.com\:7400:service=b"
        )
        self.assertIs(mine.pool, defaultPool(self.reactor))
        self.connect(mine)
        self.connect(parsed)
        self.assertEqual(len(self.reactor.tcpClients), 1)
        self.assertIsNot(defaultPool(self.reactor), defaultPool(MemoryReactorClock()))

    def test_servicesAndSettings(self) -> None:
        """
        The pool's services and settings are those of its sessions.
        """
        services = {b"back": Factory.forProtocol(Echo)}
        from memux._engine import SessionSettings

        settings = SessionSettings(maxMessageSize=1234)
        pool = SessionPool(self.reactor, services=services, settings=settings)
        d = pool.session("tcp:example.com:7400")
        session, _ = completeTCP(self.reactor)
        self.assertIs(self.successResultOf(d), session)
        self.assertEqual(session.settings.maxMessageSize, 1234)

    def test_closeAll(self) -> None:
        """
        L{SessionPool.closeAll} fails the connects still waiting with the
        cancellation of their attempt, closes the sessions, and fires once
        their connections are closed; the pool then makes new sessions.
        """
        self.connect()
        session, wrapper = completeTCP(self.reactor)
        pending = self.connect(
            MemuxClientEndpoint(self.pool, "tcp:example.com:7401", b"echo")
        )
        done = self.pool.closeAll()
        self.failureResultOf(pending, ConnectingCancelledError)
        self.assertNoResult(done)
        self.reactor.advance(0)
        self.assertTrue(wrapper.transport.disconnecting)
        wrapper.connectionLost(Failure(ConnectionDone()))
        self.successResultOf(done)
        self.assertEqual(self.pool.sessions(), [])
        self.connect()
        self.assertEqual(len(self.reactor.tcpClients), 3)

    def test_endpointRaises(self) -> None:
        """
        An inner endpoint whose C{connect} raises fails the waiting connect
        with that error, and the next connect tries again.
        """

        @implementer(IStreamClientEndpoint)
        class Raising:
            calls = 0

            def connect(self, factory: IProtocolFactory) -> Any:
                Raising.calls += 1
                raise OSError("no")

        endpoint = MemuxClientEndpoint(self.pool, Raising(), b"echo")
        self.failureResultOf(self.connect(endpoint), OSError)
        self.failureResultOf(self.connect(endpoint), OSError)
        self.assertEqual(Raising.calls, 2)
        self.assertEqual(self.pool._slots, {})

    def test_closeAllEmpty(self) -> None:
        """
        Closing a pool with no sessions fires at once.
        """
        self.successResultOf(self.pool.closeAll())


# ---------------------------------------------------------------- server


class ServerEndpointTests(SynchronousTestCase):
    """
    L{MemuxServerEndpoint} over a fake inner endpoint.
    """

    def test_portBehavesLikeInner(self) -> None:
        """
        The listening port has the inner port's address and attributes,
        stops it, and starts and stops the application factory as a TCP
        port would.
        """
        inner = FakeServerEndpoint()
        site = Factory.forProtocol(Protocol)
        events: list[str] = []
        site.startFactory = lambda: events.append("start")  # type: ignore[method-assign]
        site.stopFactory = lambda: events.append("stop")  # type: ignore[method-assign]
        endpoint = MemuxServerEndpoint(MemoryReactorClock(), inner, b"web")
        port = self.successResultOf(endpoint.listen(site))
        self.assertIsInstance(port, MemuxListeningPort)
        self.assertTrue(verifyObject(IListeningPort, port))
        self.assertEqual(port.getHost(), FakePort.host)
        self.assertEqual(cast(Any, port).marker, "inner")
        self.assertEqual(events, ["start"])
        self.assertIsInstance(inner.factory, MultiplexingFactory)
        self.successResultOf(cast("defer.Deferred[None]", port.stopListening()))
        self.assertTrue(inner.port.stopped)
        self.assertEqual(events, ["start", "stop"])

    def test_selectsALPN(self) -> None:
        """
        The factory given to the inner endpoint provides
        L{IProtocolNegotiationFactory} with C{memux/1}, so a Twisted TLS
        layer under it (``ssl:``) selects it for clients that offer it.
        """
        inner = FakeServerEndpoint()
        endpoint = MemuxServerEndpoint(MemoryReactorClock(), inner, b"web")
        self.successResultOf(endpoint.listen(Factory.forProtocol(Protocol)))
        negotiating = IProtocolNegotiationFactory(inner.factory)
        self.assertEqual(list(negotiating.acceptableProtocols()), [ALPN])

    def test_routesService(self) -> None:
        """
        Channels for the endpoint's service reach the listening factory;
        others are refused with a reason naming both services.
        """
        from memux.testing import connectedSessions

        inner = FakeServerEndpoint()
        endpoint = MemuxServerEndpoint(MemoryReactorClock(), inner, b"web")
        self.successResultOf(endpoint.listen(Factory.forProtocol(Echo)))
        assert isinstance(inner.factory, MultiplexingFactory)
        client, server, pump = connectedSessions(inner.factory.services)
        good = self.successResultOf(
            client.openChannel(b"web", Factory.forProtocol(Recorder))
        )
        bad = self.successResultOf(
            client.openChannel(b"ftp", Factory.forProtocol(Recorder))
        )
        good.transport.write(b"hi")
        pump.flush()
        self.assertEqual(good.received, b"hi")
        reason = self.successResultOf(bad.lost)
        assert isinstance(reason, ChannelRefused)
        self.assertEqual(reason.reason, "no service 'ftp' here (only 'web')")


# ---------------------------------------------------------------- loopback


class LoopbackTests(TestCase):
    """
    Pooling and serving over real loopback sockets.
    """

    def setUp(self) -> None:
        self.reactor = theReactor()
        self.pool = SessionPool(self.reactor)

    async def serve(
        self,
        service: bytes = b"echo",
        factory: IProtocolFactory | None = None,
        inner: str | IStreamServerEndpoint = "tcp:0:interface=127.0.0.1",
    ) -> tuple[IListeningPort, list[MemuxProtocol]]:
        """
        Listen with a L{MemuxServerEndpoint} for ``service`` on ``inner``
        (a description or an endpoint); return the port and the list of
        sessions it accepts.  The cleanups close those sessions, then the
        port, after the client pool.
        """
        if isinstance(inner, str):
            counting = CountingServerEndpoint(serverFromString(self.reactor, inner))
        else:
            counting = CountingServerEndpoint(inner)
        endpoint = MemuxServerEndpoint(self.reactor, counting, service)
        port = await endpoint.listen(factory or Factory.forProtocol(Echo))
        self.addCleanup(port.stopListening)
        self.addCleanup(self.closeSessions, counting.sessions)
        self.addCleanup(self.pool.closeAll)
        return port, counting.sessions

    def closeSessions(self, sessions: list[MemuxProtocol]) -> defer.Deferred[Any]:
        """
        Close ``sessions`` (if the clients have not) and wait until closed.
        """
        for session in sessions:
            if session.transport is not None and session.connected:
                session.transport.loseConnection()
        return defer.gatherResults([s.whenClosed() for s in sessions])

    def client(self, port: IListeningPort, service: bytes = b"echo") -> Any:
        """
        A memux client endpoint of this test's pool to ``port``.
        """
        address: Any = port.getHost()
        return MemuxClientEndpoint(self.pool, f"tcp:127.0.0.1:{address.port}", service)

    async def echo(self, endpoint: Any, data: bytes = b"ping") -> Recorder:
        """
        Connect through ``endpoint`` and have ``data`` echoed.
        """
        proto: Recorder = await connectProtocol(endpoint, Recorder())
        proto.transport.write(data)  # type: ignore[union-attr]
        self.assertEqual(await proto.receive(len(data)), data)
        return proto

    async def test_oneConnection(self) -> None:
        """
        Two endpoints with the same inner description, connecting one after
        the other, share one TCP connection: the server accepts one session.
        """
        port, sessions = await self.serve()
        a = await self.echo(self.client(port), b"one")
        b = await self.echo(self.client(port), b"two")
        self.assertIs(sessionOf(a), sessionOf(b))
        self.assertEqual(len(sessions), 1)

    async def test_concurrentConnects(self) -> None:
        """
        Connects made in the same turn wait for one connection attempt.
        """
        port, sessions = await self.serve()
        endpoint = self.client(port)
        protos = await defer.gatherResults(
            [
                defer.Deferred.fromCoroutine(self.echo(endpoint, b"%d" % i))
                for i in range(5)
            ]
        )
        self.assertEqual(len({id(sessionOf(p)) for p in protos}), 1)
        self.assertEqual(len(sessions), 1)

    async def test_reconnect(self) -> None:
        """
        When the server drops the connection, the channels on it end with
        a session loss and the next connect makes a new session.
        """
        port, sessions = await self.serve()
        endpoint = self.client(port)
        first = await self.echo(endpoint)
        sessions[0].transport.loseConnection()  # type: ignore[union-attr]
        await sessionOf(first).whenClosed()

        self.assertIsInstance(await first.lost, SessionLost)
        second = await self.echo(endpoint)
        self.assertIsNot(sessionOf(second), sessionOf(first))
        self.assertEqual(len(sessions), 2)

    async def test_goAwayReplacesSession(self) -> None:
        """
        After the server sends GOAWAY, the channels open on the old session
        carry on, and new connects get a new session.
        """
        port, sessions = await self.serve()
        endpoint = self.client(port)
        first = await self.echo(endpoint)
        old = sessionOf(first)
        sessions[0].goAway()
        # The PING's answer comes after the GOAWAY, so it has been read.
        await old.ping()
        self.assertIsNotNone(old.engine.goAwayReceived)
        second = await self.echo(endpoint)
        self.assertIsNot(sessionOf(second), old)
        await self.echo(endpoint, b"old channel still works")
        first.transport.write(b"!")  # type: ignore[union-attr]
        await first.receive(len(b"ping!"))
        self.assertEqual(len(sessions), 2)

    async def test_closeAllNow(self) -> None:
        """
        L{SessionPool.closeAll} closes the session at once: its open
        channels end with L{SessionLost}, and the server sees it close.
        """
        port, sessions = await self.serve()
        proto = await self.echo(self.client(port))
        await self.pool.closeAll()
        self.assertIsInstance(await proto.lost, SessionLost)
        await sessions[0].whenClosed()
        self.assertEqual(self.pool.sessions(), [])

    async def test_closeAllGraceful(self) -> None:
        """
        ``closeAll(graceful=True)`` lets open channels finish: the session
        closes once the last one has.
        """
        port, sessions = await self.serve()
        proto = await self.echo(self.client(port))
        closed = self.pool.closeAll(graceful=True)
        proto.transport.write(b"!")  # type: ignore[union-attr]
        await proto.receive(len(b"ping!"))
        self.assertNoResult(closed)
        proto.transport.loseConnection()  # type: ignore[union-attr]
        await closed
        self.assertIsInstance(await proto.lost, ConnectionDone)

    async def test_failureThenSuccess(self) -> None:
        """
        With nothing listening on the UNIX socket, the connects fail with
        the connection error; once a server listens, the next one works.
        """
        path = os.path.join(shortTemporaryDirectory(self), "memux.sock")
        endpoint = MemuxClientEndpoint(self.pool, f"unix:{path}", b"echo")
        failures = [connectProtocol(endpoint, Recorder()) for _ in range(2)]
        for d in failures:
            with self.assertRaises(ConnectError):
                await d
        _, sessions = await self.serve(inner=f"unix:{path}")
        await self.echo(endpoint)
        self.assertEqual(len(sessions), 1)

    async def test_metadataAndDestination(self) -> None:
        """
        A parsed endpoint's metadata and destination reach the server's
        service resolver.
        """
        requests: list[ChannelRequest] = []

        def choose(request: ChannelRequest) -> IProtocolFactory:
            requests.append(request)
            return Factory.forProtocol(Echo)

        sessions: list[MemuxProtocol] = []
        port = await serverFromString(self.reactor, "tcp:0:interface=127.0.0.1").listen(
            CountingFactory(MultiplexingFactory(choose), sessions)
        )
        self.addCleanup(port.stopListening)
        self.addCleanup(self.closeSessions, sessions)
        pool = defaultPool(self.reactor)
        self.addCleanup(pool.closeAll)
        endpoint = clientFromString(
            self.reactor,
            rf"memux:tcp\:127.0.0.1\:{port.getHost().port}:service=fwd"
            r":metadata=token:destination=example.com\:80",
        )
        await self.echo(endpoint)
        [request] = requests
        self.assertEqual(request.service, b"fwd")
        self.assertEqual(request.metadata, b"token")
        self.assertEqual(request.destination, ("example.com", 80))

    async def test_otherServiceRefused(self) -> None:
        """
        A channel for another service than the server endpoint's is
        refused, with a reason naming it.
        """
        port, _ = await self.serve(service=b"web")
        proto = await connectProtocol(self.client(port, b"ftp"), Recorder())
        reason = await proto.lost
        assert isinstance(reason, ChannelRefused)
        self.assertEqual(reason.reason, "no service 'ftp' here (only 'web')")

    async def test_stopListening(self) -> None:
        """
        The memux port has the inner port's address; once it stops
        listening, connecting fails as for TCP.
        """
        endpoint = MemuxServerEndpoint(
            self.reactor, "tcp:0:interface=127.0.0.1", b"echo"
        )
        port = await endpoint.listen(Factory.forProtocol(Echo))
        self.addCleanup(self.pool.closeAll)
        host: Any = port.getHost()
        self.assertEqual(host, port.wrappedPort.getHost())  # type: ignore[attr-defined]
        self.assertEqual(host.host, "127.0.0.1")
        client = self.client(port)
        await cast("defer.Deferred[None]", port.stopListening())
        with self.assertRaises(ConnectionRefusedError):
            await connectProtocol(client, Recorder())

    def tlsFiles(self) -> tuple[str, str]:
        """
        Make a CA with trustme and a server certificate for 127.0.0.1;
        return the server's PEM file (key and certificate) and a directory
        holding the CA certificate.
        """
        try:
            import trustme
        except ImportError:
            raise SkipTest("trustme is not installed") from None
        ca = trustme.CA()
        tmp = shortTemporaryDirectory(self)
        key = os.path.join(tmp, "server.pem")
        ca.issue_cert("127.0.0.1").private_key_and_cert_chain_pem.write_to_path(key)
        roots = os.path.join(tmp, "roots")
        os.mkdir(roots)
        ca.cert_pem.write_to_path(os.path.join(roots, "ca.pem"))
        return key, roots

    async def test_tlsInner(self) -> None:
        """
        A ``tls:`` inner client endpoint, verified against a CA, carries
        memux to an ``ssl:`` inner server endpoint; the client offers ALPN
        C{memux/1} and the server endpoint has Twisted's TLS select it.
        """
        key, roots = self.tlsFiles()
        q = quoteStringArgument
        port, sessions = await self.serve(
            inner=f"ssl:0:interface=127.0.0.1:privateKey={q(key)}:certKey={q(key)}"
        )
        address: Any = port.getHost()
        description = memuxDescription(
            f"tls:127.0.0.1:{address.port}:trustRoots={q(roots)}", "echo"
        )
        endpoint = clientFromString(self.reactor, description)
        self.addCleanup(defaultPool(self.reactor).closeAll)
        await self.echo(endpoint, b"secret")
        [session] = defaultPool(self.reactor).sessions()
        self.assertTrue(ISSLTransport.providedBy(session.transport))
        self.assertEqual(len(sessions), 1)
        self.assertEqual(session.transport.negotiatedProtocol, ALPN)  # type: ignore[union-attr]
        self.assertEqual(sessions[0].transport.negotiatedProtocol, ALPN)  # type: ignore[union-attr]

    async def test_tlsInnerOffersALPN(self) -> None:
        """
        A ``memux:tls\\:...`` client endpoint offers ALPN C{memux/1} to a
        memux TLS server (L{serverTLSOptions}, which selects it when
        offered): the server's session records C{memux/1}.
        """
        key, roots = self.tlsFiles()
        inner = wrapServerTLS(
            serverTLSOptions(key),
            TCP4ServerEndpoint(self.reactor, 0, interface="127.0.0.1"),
        )
        port, sessions = await self.serve(inner=inner)
        address: Any = port.getHost()
        description = memuxDescription(
            f"tls:127.0.0.1:{address.port}:trustRoots={quoteStringArgument(roots)}",
            "echo",
        )
        self.addCleanup(defaultPool(self.reactor).closeAll)
        await self.echo(clientFromString(self.reactor, description), b"secret")
        [session] = sessions
        self.assertEqual(session.transport.negotiatedProtocol, ALPN)  # type: ignore[union-attr]

    async def test_poolSessionOffersALPN(self) -> None:
        """
        L{SessionPool.session} given a ``tls:`` description connects a
        session that negotiated ALPN C{memux/1}.
        """
        key, roots = self.tlsFiles()
        inner = wrapServerTLS(
            serverTLSOptions(key),
            TCP4ServerEndpoint(self.reactor, 0, interface="127.0.0.1"),
        )
        port, sessions = await self.serve(inner=inner)
        address: Any = port.getHost()
        roots = quoteStringArgument(roots)
        session = await self.pool.session(
            f"tls:127.0.0.1:{address.port}:trustRoots={roots}"
        )
        await session.ping()
        self.assertEqual(session.transport.negotiatedProtocol, ALPN)  # type: ignore[union-attr]
        self.assertEqual(sessions[0].transport.negotiatedProtocol, ALPN)  # type: ignore[union-attr]

    async def test_tlsUntrusted(self) -> None:
        """
        A server whose certificate the ``tls:`` inner endpoint does not
        trust is never talked to: the channel ends with L{SessionLost}
        saying why, and the pool holds no session.
        """
        try:
            import trustme
        except ImportError:
            raise SkipTest("trustme is not installed") from None
        tmp = shortTemporaryDirectory(self)
        key = os.path.join(tmp, "server.pem")
        trustme.CA().issue_cert(
            "127.0.0.1"
        ).private_key_and_cert_chain_pem.write_to_path(key)
        roots = os.path.join(tmp, "roots")
        os.mkdir(roots)
        trustme.CA().cert_pem.write_to_path(os.path.join(roots, "other.pem"))
        q = quoteStringArgument
        port, sessions = await self.serve(
            inner=f"ssl:0:interface=127.0.0.1:privateKey={q(key)}:certKey={q(key)}"
        )
        address: Any = port.getHost()
        inner = f"tls:127.0.0.1:{address.port}:trustRoots={q(roots)}"
        proto = await connectProtocol(
            MemuxClientEndpoint(self.pool, inner, b"echo"), Recorder()
        )
        proto.transport.write(b"secret")
        reason = await proto.lost
        self.assertIsInstance(reason, SessionLost)
        self.assertIn("certificate verify failed", str(reason))
        self.assertEqual(proto.received, b"")
        self.assertEqual(self.pool.sessions(), [])


# ---------------------------------------------------------------- web


class Page(Resource):
    """
    A page that says which channel of which port served it, and records
    the server sessions that served it.
    """

    isLeaf = True

    def __init__(self) -> None:
        Resource.__init__(self)
        self.sessions: list[MemuxProtocol] = []

    def render_GET(self, request: IRequest) -> bytes:
        transport: Any = request.transport  # type: ignore[attr-defined]
        self.sessions.append(transport.session)
        host: Any = request.getHost()
        return b"channel %d of port %d" % (host.channel, host.port)


@implementer(IAgentEndpointFactory)
class MemuxEndpoints:
    """
    Sends every request of an Agent over a ``memux:`` client endpoint.
    """

    def __init__(self, reactor: IReactorCore, description: str) -> None:
        self.reactor = reactor
        self.description = description

    def endpointForURI(self, uri: Any) -> IStreamClientEndpoint:
        endpoint: IStreamClientEndpoint = clientFromString(
            self.reactor, self.description
        )
        return endpoint


class WebTests(TestCase):
    """
    The acceptance check: twisted.web served and fetched over ``memux:``
    endpoint strings.
    """

    def setUp(self) -> None:
        warnings.filterwarnings("ignore", "Using readBody", DeprecationWarning)

    async def test_agentAndSite(self) -> None:
        """
        A Site listening on ``memux:tcp\\:0\\:interface=127.0.0.1:service=web``
        answers an Agent whose endpoints are ``memux:`` client strings; two
        requests share one session.
        """
        reactor = theReactor()
        page = Page()
        port = await serverFromString(
            reactor, r"memux:tcp\:0\:interface=127.0.0.1:service=web"
        ).listen(Site(page))
        self.addCleanup(port.stopListening)
        self.addCleanup(
            lambda: defer.gatherResults([s.whenClosed() for s in page.sessions])
        )
        self.addCleanup(defaultPool(reactor).closeAll)
        number = port.getHost().port
        agent = Agent.usingEndpointFactory(
            reactor,
            MemuxEndpoints(reactor, rf"memux:tcp\:127.0.0.1\:{number}:service=web"),
            HTTPConnectionPool(reactor, persistent=False),
        )
        bodies = []
        for _ in range(2):
            response = await agent.request(b"GET", b"http://memux.invalid/")
            self.assertEqual(response.code, 200)
            bodies.append(await readBody(response))
        self.assertEqual(
            bodies,
            [b"channel 1 of port %d" % number, b"channel 3 of port %d" % number],
        )
        self.assertEqual(len(set(map(id, page.sessions))), 1)
        self.assertEqual(len(defaultPool(reactor).sessions()), 1)

    async def test_twistdWeb(self) -> None:
        """
        The real ``twistd -n web --listen memux:unix\\:SOCK:service=web``
        serves a file from ``--path`` to an Agent on a ``memux:`` client
        endpoint.
        """
        reactor = theReactor()
        tmp = shortTemporaryDirectory(self)
        sock = os.path.join(tmp, "web.sock")
        docs = os.path.join(tmp, "docs")
        os.mkdir(docs)
        with open(os.path.join(docs, "hello.txt"), "wb") as f:
            f.write(b"hello from twistd over memux\n")
        server = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "from twisted.scripts.twistd import run; run()",
                "-n",
                "--pidfile=",
                "web",
                "--listen",
                "memux:"
                + quoteStringArgument("unix:" + quoteStringArgument(sock))
                + ":service=web",
                "--path",
                docs,
            ],
            cwd=str(ROOT),
            env=dict(os.environ, PYTHONPATH=str(ROOT)),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + 30
            while not os.path.exists(sock):
                if server.poll() is not None or time.monotonic() > deadline:
                    server.kill()
                    log = server.communicate()[0]
                    raise AssertionError(f"twistd did not start: {log.decode()}")
                time.sleep(0.05)
            description = (
                "memux:"
                + quoteStringArgument("unix:" + quoteStringArgument(sock))
                + ":service=web"
            )
            pool = defaultPool(reactor)
            try:
                agent = Agent.usingEndpointFactory(
                    reactor,
                    MemuxEndpoints(reactor, description),
                    HTTPConnectionPool(reactor, persistent=False),
                )
                response = await agent.request(
                    b"GET", b"http://memux.invalid/hello.txt"
                )
                self.assertEqual(response.code, 200)
                body = await readBody(response)
                self.assertEqual(body, b"hello from twistd over memux\n")
                [session] = pool.sessions()
                peer: Any = session.transport.getPeer()  # type: ignore[union-attr]
                self.assertEqual(os.fsdecode(peer.name), sock)
            finally:
                await pool.closeAll()
        finally:
            server.terminate()
            try:
                server.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()
                server.communicate()


class ExampleTests(SynchronousTestCase):
    """
    The endpoints example of doc/endpoints.rst runs and says what it
    promises.
    """

    def test_endpointsWeb(self) -> None:
        """
        endpoints_web.py serves a Site on a ``memux:`` server endpoint and
        fetches two pages through ``memux:`` client endpoints, both on one
        pooled session.
        """
        from memux.test._helpers import runExample

        out = runExample("endpoints_web.py")
        self.assertIn("GET /: 200 hello from memux channel 1", out)
        self.assertIn("GET /again: 200 hello from memux channel 3", out)
        self.assertIn("sessions in the pool: 1", out)
