# -*- test-case-name: memux.test.test_server -*-
"""
The ``twistd memux`` server (L{memux.tap.makeService}) serving for real:
started with the trial reactor on loopback TCP and UNIX sockets, with
forwarded services, Python factories, destinations and logging.
"""

from __future__ import annotations

import io
import os
import socket
import tempfile
from typing import Any

from twisted.internet import defer
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import (
    TCP4ServerEndpoint,
    UNIXClientEndpoint,
    connectProtocol,
)
from twisted.internet.error import ConnectionDone, ConnectionRefusedError
from twisted.internet.interfaces import (
    IHalfCloseableProtocol,
    IProtocol,
    IProtocolFactory,
    IStreamClientEndpoint,
)
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.logger import (
    LogLevel,
    eventsFromJSONLogFile,
    formatEvent,
    globalLogPublisher,
)
from twisted.python.failure import Failure
from twisted.web.client import Agent, readBody
from twisted.web.iweb import IAgentEndpointFactory
from twisted.web.resource import Resource
from twisted.web.server import Site
from twisted.web.static import Data
from zope.interface import implementer

import memux
from memux import (
    ChannelEndpoint,
    ChannelRefused,
    ChannelTransport,
    IChannelTransport,
    IMessageReceiver,
    MemuxProtocol,
    SessionLost,
    connectSession,
    tap,
)
from memux.test._fakes import Collector, MessageCollector
from memux.test._helpers import (
    LOCAL,
    ServerTestCase,
    logged,
)

# ---------------------------------------------------------------- protocols


@implementer(IMessageReceiver)
class Upper(Protocol):
    """
    A message service that answers each message in upper case; mounted by
    dotted name with C{--factory}.
    """

    def messageReceived(self, message: bytes) -> None:
        """
        Send C{message} back in upper case.
        """
        IChannelTransport(self.transport).writeMessage(message.upper())


class PeerTeller(Protocol):
    """
    A service that answers with the addresses its channel transport gives,
    C{b"peer-host peer-port host-host host-port"}, and closes; mounted by
    dotted name with C{--factory}.
    """

    def connectionMade(self) -> None:
        """
        Tell the client what C{getPeer} and C{getHost} say, and close.
        """
        transport = IChannelTransport(self.transport)
        peer: Any = transport.getPeer()  # a ChannelAddress
        host: Any = transport.getHost()
        text = f"{peer.host} {peer.port} {host.host} {host.port}"
        transport.writeMessage(text.encode())
        transport.loseConnection()


@implementer(IHalfCloseableProtocol)
class HalfCloseEcho(Protocol):
    """
    A TCP echo server that closes once its client has finished sending.
    """

    def dataReceived(self, data: bytes) -> None:
        """
        Echo C{data}.
        """
        assert self.transport is not None
        self.transport.write(data)

    def readConnectionLost(self) -> None:
        """
        The client is done: close.
        """
        assert self.transport is not None
        self.transport.loseConnection()

    def writeConnectionLost(self) -> None:
        """
        Nothing to do.
        """


class TrackingFactory(Factory):
    """
    Builds protocols with C{wrapped} and fires L{allLost} once all the
    connections it made are lost.
    """

    def __init__(self, wrapped: IProtocolFactory) -> None:
        self.wrapped = wrapped
        self.built: list[IProtocol] = []
        self._lost: list[Deferred[None]] = []

    def buildProtocol(self, addr: Any) -> Any:
        """
        Build a protocol whose C{connectionLost} is tracked.
        """
        protocol = self.wrapped.buildProtocol(addr)
        assert protocol is not None
        lost: Deferred[None] = Deferred()
        self._lost.append(lost)
        original = protocol.connectionLost

        def connectionLost(reason: Failure = connectionDone) -> None:
            original(reason)
            lost.callback(None)

        protocol.connectionLost = connectionLost  # type: ignore[method-assign]
        self.built.append(protocol)
        return protocol

    def allLost(self) -> Deferred[Any]:
        """
        Fire once every connection built so far is lost.
        """
        return defer.gatherResults(list(self._lost))


@implementer(IAgentEndpointFactory)
class ChannelEndpoints:
    """
    Sends every request an C{Agent} makes over a new channel for
    C{service} on one session.
    """

    def __init__(self, session: MemuxProtocol, service: bytes) -> None:
        self.session = session
        self.service = service

    def endpointForURI(self, uri: Any) -> IStreamClientEndpoint:
        """
        A new channel, whatever the URI.
        """
        return ChannelEndpoint(self.session, self.service)


# ---------------------------------------------------------------- tests


class MakeServiceServesTests(ServerTestCase):
    """
    The service L{tap.makeService} makes really serves memux sessions.
    """

    async def test_tcp(self) -> None:
        """
        Started on a TCP port of the system's choosing, the service serves
        the built-in echo service to L{connectSession}.
        """
        server = self.serve("--listen", LOCAL)
        session = await self.connect(self.tcpEndpoint(self.tcpPort(server)))
        proto = await session.openChannel(b"echo", Factory.forProtocol(Collector))
        assert isinstance(proto, Collector)
        IChannelTransport(proto.transport).write(b"over tcp")
        self.assertEqual(await proto.receivedAtLeast(8), b"over tcp")

    async def test_unixAndTCP(self) -> None:
        """
        With a UNIX socket and a TCP port, the service serves on both at
        once, with the same services.
        """
        path = os.path.join(tempfile.mkdtemp(dir=os.getcwd()), "memux.sock")
        server = self.serve("--listen", f"unix:{path}", "--listen", LOCAL)
        overUnix = await self.connect(UNIXClientEndpoint(self.reactor, path))
        overTCP = await self.connect(self.tcpEndpoint(self.tcpPort(server, 1)))
        for session in (overUnix, overTCP):
            proto = await session.openChannel(
                b"echo", Factory.forProtocol(MessageCollector)
            )
            assert isinstance(proto, MessageCollector)
            IChannelTransport(proto.transport).writeMessage(b"hello")
            await proto.receivedAtLeast(5)
            self.assertEqual(proto.messages, [b"hello"])

    async def test_noBuiltins(self) -> None:
        """
        With C{--no-builtins}, opening echo is refused: the service is not
        there.
        """
        server = self.serve("--listen", LOCAL, "--no-builtins")
        session = await self.connect(self.tcpEndpoint(self.tcpPort(server)))
        proto = await session.openChannel(b"echo", Factory.forProtocol(Collector))
        assert isinstance(proto, Collector)
        reason = await proto.lost
        self.assertIsInstance(reason, ChannelRefused)
        self.assertIn("no service 'echo'", str(reason))

    async def test_settings(self) -> None:
        """
        The session settings options reach the peer in the server's
        preface.
        """
        server = self.serve(
            "--listen", LOCAL, "--max-frame-size", "32K", "--max-channels", "200"
        )
        session = await self.connect(self.tcpEndpoint(self.tcpPort(server)))
        await session.ping()
        self.assertEqual(session.peerSettings.maxFrameSize, 32768)
        self.assertEqual(session.peerSettings.initialMaxChannels, 200)

    async def test_logsWhereAndWhat(self) -> None:
        """
        At startup the server logs, at info, each service it mounts, that
        it refuses destinations, and where it listens (the real port).
        """
        events = self.captureLog()
        server = self.serve(
            "--listen", LOCAL, "--service", "db=tcp:127.0.0.1:5432", "--no-builtins"
        )
        port = self.tcpPort(server)
        [version] = logged(events, "memux {version} serving on {endpoints}")
        self.assertEqual(version["version"], memux.__version__)
        self.assertEqual(version["endpoints"], LOCAL)
        self.assertEqual(
            formatEvent(version), f"memux {memux.__version__} serving on {LOCAL}"
        )
        [service] = logged(events, "memux service {name}")
        self.assertEqual(service["name"], "db")
        self.assertEqual(service["what"], "forwarded to tcp:127.0.0.1:5432")
        [listening] = logged(events, "memux listening on")
        self.assertEqual(listening["address"], f"127.0.0.1:{port}")
        self.assertEqual(listening["description"], LOCAL)
        self.assertEqual(len(logged(events, "refuses every channel")), 1)
        for event in events:
            if event.get("log_namespace") == "memux.tap":
                self.assertEqual(event["log_level"], LogLevel.info)

    def test_portInUse(self) -> None:
        """
        A port already in use stops the service from starting with
        L{tap.StartupError} (which makes C{twistd} exit with status 1), and
        is logged as one critical line saying why.
        """
        events = self.captureLog()
        taken = socket.socket()
        self.addCleanup(taken.close)
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        where = f"tcp:{taken.getsockname()[1]}:interface=127.0.0.1"
        options = tap.Options()
        options.parseOptions(["--listen", where])
        server = tap.makeService(options, self.reactor)
        error = self.assertRaises(tap.StartupError, server.startService)
        self.addCleanup(server.stopService)
        self.assertEqual(
            str(error), f"cannot listen on {where}: Address already in use"
        )
        self.assertEqual(error.code, 1)
        self.assertIsInstance(error, Exception)
        [event] = logged(events, "memux cannot listen")
        self.assertEqual(event["log_level"], LogLevel.critical)
        self.assertEqual(
            formatEvent(event),
            f"memux cannot listen on {where}: Address already in use (another"
            " program listens on that port)",
        )


class ForwardingServiceTests(ServerTestCase):
    """
    C{--service NAME=ENDPOINT} forwards each channel for NAME to a new
    connection.
    """

    async def test_http(self) -> None:
        """
        A web server behind C{--service web=tcp:...} answers an C{Agent}
        whose requests go over channels.
        """
        root = Resource()
        root.putChild(b"hello", Data(b"hello from behind memux", "text/plain"))
        site = Site(root)
        backend = TrackingFactory(site)
        backendPort = await self.listenTCP(backend)
        server = self.serve(
            "--listen", LOCAL, "--service", f"web=tcp:127.0.0.1:{backendPort}"
        )
        session = await self.connect(self.tcpEndpoint(self.tcpPort(server)))
        agent = Agent.usingEndpointFactory(
            self.reactor, ChannelEndpoints(session, b"web")
        )
        for _ in range(2):
            response = await agent.request(b"GET", b"http://backend/hello")
            self.assertEqual(response.code, 200)
            self.assertEqual(await readBody(response), b"hello from behind memux")
        self.assertEqual(len(backend.built), 2)
        await backend.allLost()

    async def test_echoWithHalfClose(self) -> None:
        """
        Bytes go both ways through a forwarded channel, and the channel's
        half-close reaches the TCP server, which closes; the channel then
        ends cleanly.
        """
        backend = TrackingFactory(Factory.forProtocol(HalfCloseEcho))
        backendPort = await self.listenTCP(backend)
        server = self.serve(
            "--listen", LOCAL, "--service", f"tcpecho=tcp:127.0.0.1:{backendPort}"
        )
        session = await self.connect(self.tcpEndpoint(self.tcpPort(server)))
        proto = await session.openChannel(b"tcpecho", Factory.forProtocol(Collector))
        assert isinstance(proto, Collector)
        transport = proto.transport
        assert isinstance(transport, ChannelTransport)
        payload = os.urandom(300000)
        transport.write(payload)
        transport.loseWriteConnection()
        reason = await proto.lost
        self.assertEqual(proto.received, payload)
        self.assertIsInstance(reason, ConnectionDone)
        await backend.allLost()

    async def test_unreachable(self) -> None:
        """
        When the forwarding target cannot be reached, the channel is reset
        with a reason naming the endpoint; the session carries on.
        """
        closed = await TCP4ServerEndpoint(
            self.reactor, 0, interface="127.0.0.1"
        ).listen(Factory.forProtocol(Protocol))
        host = closed.getHost()
        assert isinstance(host, IPv4Address)
        await closed.stopListening()
        target = f"tcp:127.0.0.1:{host.port}"
        server = self.serve("--listen", LOCAL, "--service", f"gone={target}")
        session = await self.connect(self.tcpEndpoint(self.tcpPort(server)))
        proto = await session.openChannel(b"gone", Factory.forProtocol(Collector))
        assert isinstance(proto, Collector)
        reason = await proto.lost
        self.assertIn(f"cannot connect to {target}", str(reason))
        await session.ping()


class FactoryOptionTests(ServerTestCase):
    """
    C{--factory NAME=module.attribute} serves NAME with a Python factory.
    """

    async def test_protocolClass(self) -> None:
        """
        A protocol class named with C{--factory} serves its service.
        """
        server = self.serve(
            "--listen", LOCAL, "--factory", "upper=memux.test.test_server.Upper"
        )
        session = await self.connect(self.tcpEndpoint(self.tcpPort(server)))
        proto = await session.openChannel(
            b"upper", Factory.forProtocol(MessageCollector)
        )
        assert isinstance(proto, MessageCollector)
        IChannelTransport(proto.transport).writeMessage(b"quiet")
        await proto.receivedAtLeast(5)
        self.assertEqual(proto.messages, [b"QUIET"])


class AllowConnectTests(ServerTestCase):
    """
    Channels that name their own destination are forwarded only where
    C{--allow-connect} allows, and refused otherwise.
    """

    async def setUpBackend(self) -> tuple[TrackingFactory, int]:
        """
        Start a TCP echo server; return its factory and port.
        """
        backend = TrackingFactory(Factory.forProtocol(HalfCloseEcho))
        return backend, await self.listenTCP(backend)

    async def echoThrough(
        self, session: MemuxProtocol, destination: tuple[str, int]
    ) -> Collector:
        """
        Open a channel to C{destination}, send a line, half-close, and
        return the protocol once the channel has ended.
        """
        proto = await session.openChannel(
            b"", Factory.forProtocol(Collector), destination=destination
        )
        assert isinstance(proto, Collector)
        transport = proto.transport
        assert isinstance(transport, ChannelTransport)
        transport.write(b"through the tunnel")
        transport.loseWriteConnection()
        await proto.lost
        return proto

    async def test_allowedAndRefused(self) -> None:
        """
        An allowed destination is forwarded to; one outside the allow-list
        is refused with a reason naming it, logged at info with the peer's
        address; the session stays up and the next allowed channel works.
        """
        events = self.captureLog()
        backend, port = await self.setUpBackend()
        server = self.serve("--listen", LOCAL, "--allow-connect", f"127.0.0.1:{port}")
        session = await self.connect(self.tcpEndpoint(self.tcpPort(server)))

        proto = await self.echoThrough(session, ("127.0.0.1", port))
        self.assertEqual(proto.received, b"through the tunnel")

        refused = await self.echoThrough(session, ("db.example", 5432))
        error = await refused.lost
        assert isinstance(error, ChannelRefused)
        self.assertIn("db.example:5432", error.reason)
        self.assertEqual(refused.received, b"")
        [event] = logged(events, "Refused channel")
        self.assertEqual(event["log_level"], LogLevel.info)
        self.assertIn("db.example:5432", event["why"])
        self.assertRegex(event["peer"], r"^127\.0\.0\.1:[0-9]+$")

        again = await self.echoThrough(session, ("127.0.0.1", port))
        self.assertEqual(again.received, b"through the tunnel")
        self.assertEqual(len(backend.built), 2)
        [forwarded, _] = logged(events, "Forwarding channel")
        self.assertEqual(forwarded["destination"], f"127.0.0.1:{port}")
        self.assertEqual(forwarded["log_level"], LogLevel.info)
        await backend.allLost()

    async def test_noAllowListRefusesAll(self) -> None:
        """
        Without C{--allow-connect}, a destination is refused, even one a
        service could reach and even when the channel names a mounted
        service: nothing connects to it.
        """
        backend, port = await self.setUpBackend()
        server = self.serve(
            "--listen", LOCAL, "--service", f"echo2=tcp:127.0.0.1:{port}"
        )
        session = await self.connect(self.tcpEndpoint(self.tcpPort(server)))
        for service in (b"", b"echo", b"echo2"):
            proto = await session.openChannel(
                service, Factory.forProtocol(Collector), destination=("127.0.0.1", port)
            )
            assert isinstance(proto, Collector)
            error = await proto.lost
            assert isinstance(error, ChannelRefused)
            self.assertIn(f"127.0.0.1:{port}", error.reason)
            self.assertIn("forwards to no destination", error.reason)
        await session.ping()
        self.assertEqual(backend.built, [])


class ProtocolLoggingTests(ServerTestCase):
    """
    What L{memux.protocol} logs about the server's sessions: opening,
    refusals, closing and protocol violations, each with the peer's
    address, at info or warn.
    """

    async def test_sessionLifecycle(self) -> None:
        """
        A session's start, a refused channel and its end are logged at
        info, each naming the client's address.
        """
        events = self.captureLog()
        server = self.serve("--listen", LOCAL)
        session = await self.connect(self.tcpEndpoint(self.tcpPort(server)))
        assert session.transport is not None
        host = session.transport.getHost()
        assert isinstance(host, IPv4Address)
        proto = await session.openChannel(b"nothing", Factory.forProtocol(Collector))
        assert isinstance(proto, Collector)
        await proto.lost
        await self.closeSession(session)
        await self.closeServerSessions()
        serverSide = [e for e in events if e.get("log_source") in self.serverSessions]
        formats = [
            "memux session from {peer}",
            "Refused channel {channel} from {peer}: {why}",
            "memux session with {peer} ended: {reason}",
        ]
        for fmt in formats:
            [event] = [e for e in serverSide if e["log_format"] == fmt]
            self.assertEqual(event["log_level"], LogLevel.info)
            self.assertEqual(event["peer"], f"127.0.0.1:{host.port}")

    async def test_protocolViolation(self) -> None:
        """
        A client that speaks something else (HTTP) ends its session with
        a protocol violation, logged at warn with its address.
        """
        events = self.captureLog()
        server = self.serve("--listen", LOCAL)
        raw = Collector()
        await connectProtocol(self.tcpEndpoint(self.tcpPort(server)), raw)
        assert raw.transport is not None
        raw.transport.write(b"GET / HTTP/1.1\r\nHost: memux\r\n\r\n")
        await raw.lost
        await self.closeServerSessions()
        [event] = logged(events, "Protocol violation by {peer}")
        self.assertEqual(event["log_level"], LogLevel.warn)
        self.assertRegex(event["peer"], r"^127\.0\.0\.1:[0-9]+$")
        for e in events:
            if e.get("log_source") in self.serverSessions:
                self.assertIn(e["log_level"], (LogLevel.info, LogLevel.warn))


class HealthCheckTests(ServerTestCase):
    """
    A connection that closes before sending a byte (a load balancer's
    health check, every few seconds) is logged at debug only.
    """

    async def check(self, abort: bool) -> list[dict[str, Any]]:
        """
        Connect, close (or abort) without sending anything; return what the
        server's session logged.
        """
        events = self.captureLog()
        server = self.serve("--listen", LOCAL)
        probe = Collector()
        await connectProtocol(self.tcpEndpoint(self.tcpPort(server)), probe)
        transport: Any = probe.transport
        self.peer = f"127.0.0.1:{transport.getHost().port}"
        if abort:
            transport.abortConnection()
        else:
            transport.loseConnection()
        await self.serverSessionsClosed(1)
        return [e for e in events if e.get("log_source") in self.serverSessions]

    async def test_closed(self) -> None:
        """
        A connection closed without a byte: its end is logged at debug, and
        nothing else.
        """
        events = await self.check(abort=False)
        self.assertEqual(
            [(e["log_level"], formatEvent(e)) for e in events],
            [(LogLevel.debug, f"memux session with {self.peer} ended: closed cleanly")],
        )

    async def test_reset(self) -> None:
        """
        A connection reset without a byte (HAProxy's checks end so): its
        end is logged at debug, and nothing else.
        """
        events = await self.check(abort=True)
        self.assertEqual([e["log_level"] for e in events], [LogLevel.debug])
        self.assertTrue(
            formatEvent(events[0]).startswith(f"memux session with {self.peer} ended: ")
        )


class FactoryNoiseTests(ServerTestCase):
    """
    The factories memux makes for each session and connection do not log
    "Starting factory" and "Stopping factory".
    """

    async def test_sessionAndForwarding(self) -> None:
        """
        A client session (L{connectSession}), a channel forwarded by
        C{--service}, and one forwarded to its own destination log nothing
        of their factories, on either side.
        """
        backend = TrackingFactory(Factory.forProtocol(HalfCloseEcho))
        backend.noisy = False
        backendPort = await self.listenTCP(backend)
        server = self.serve(
            "--listen",
            LOCAL,
            "--service",
            f"tcpecho=tcp:127.0.0.1:{backendPort}",
            "--allow-connect",
            f"127.0.0.1:{backendPort}",
        )
        events = self.captureLog()
        session = await self.connect(self.tcpEndpoint(self.tcpPort(server)))
        for service, destination in [
            (b"tcpecho", None),
            (b"", ("127.0.0.1", backendPort)),
        ]:
            proto = await session.openChannel(
                service, Factory.forProtocol(Collector), destination=destination
            )
            assert isinstance(proto, Collector)
            transport: Any = proto.transport
            transport.write(b"hello")
            transport.loseWriteConnection()
            self.assertIsInstance(await proto.lost, ConnectionDone)
        await backend.allLost()
        await self.closeSession(session)
        await self.closeServerSessions()
        self.assertEqual(len(backend.built), 2)
        self.assertEqual(
            [
                formatEvent(e)
                for e in events
                if "factory" in (e.get("log_format") or "").lower()
            ],
            [],
        )


class JSONLogTests(ServerTestCase):
    """
    L{tap.jsonLogger}, the JSON observer for C{twistd
    --logger=memux.tap.jsonLogger}, writes every field memux logs: addresses
    and reasons as strings, nothing "unpersistable".
    """

    async def test_serialisable(self) -> None:
        """
        A server's startup, sessions, a forwarded channel, refusals, a
        protocol violation and a health check come out of the JSON log with
        every field, and their text, intact.
        """
        out = io.StringIO()
        observer = tap.jsonLogger(out)
        globalLogPublisher.addObserver(observer)
        self.addCleanup(globalLogPublisher.removeObserver, observer)
        backend = TrackingFactory(Factory.forProtocol(HalfCloseEcho))
        backend.noisy = False  # (Twisted's "Starting factory" is not memux's)
        backendPort = await self.listenTCP(backend)
        server = self.serve(
            "--listen", LOCAL, "--allow-connect", f"127.0.0.1:{backendPort}"
        )
        port = self.tcpPort(server)
        session = await self.connect(self.tcpEndpoint(port))
        assert session.transport is not None
        clientPort = session.transport.getHost().port  # type: ignore[attr-defined]
        for service, destination in [
            (b"", ("127.0.0.1", backendPort)),
            (b"nothing", None),
            (b"", ("127.0.0.2", 1)),
        ]:
            proto = await session.openChannel(
                service, Factory.forProtocol(Collector), destination=destination
            )
            assert isinstance(proto, Collector)
            transport: Any = proto.transport
            transport.write(b"hello")
            transport.loseWriteConnection()
            await proto.lost
        await self.closeSession(session)
        for data in (b"GET / HTTP/1.1\r\n\r\n", b""):
            quiet = Factory.forProtocol(Collector)
            quiet.noisy = False
            raw = await self.tcpEndpoint(port).connect(quiet)
            assert isinstance(raw, Collector) and raw.transport is not None
            raw.transport.write(data)
            raw.transport.loseConnection()
            await raw.lost
        await self.serverSessionsClosed(3)
        await backend.allLost()

        text = out.getvalue()
        self.assertNotIn("unpersistable", text)
        events = list(eventsFromJSONLogFile(io.StringIO(text)))
        self.assertEqual(len(events), text.count("\x1e"))
        lines = {formatEvent(e) for e in events}
        for line in [
            f"memux {memux.__version__} serving on {LOCAL}",
            f"memux listening on 127.0.0.1:{port} ({LOCAL})",
            f"memux session to 127.0.0.1:{port}",
            f"memux session from 127.0.0.1:{clientPort}",
            f"Forwarding channel 1 from 127.0.0.1:{clientPort} to"
            f" 127.0.0.1:{backendPort}",
            f"Refused channel 3 from 127.0.0.1:{clientPort}: no service 'nothing'",
            "channel refused: no service 'nothing' (channel 3)",
            f"memux session with 127.0.0.1:{clientPort} ended: closed cleanly",
        ]:
            self.assertIn(line, lines)
        withPeer = [e for e in events if "peer" in e]
        self.assertGreater(len(withPeer), 8)
        for event in withPeer:
            self.assertRegex(event["peer"], r"^127\.0\.0\.1:[0-9]+$")
        [violation] = [e for e in events if "Protocol violation" in e["log_format"]]
        self.assertIsInstance(violation["reason"], str)


class DrainTests(ServerTestCase):
    """
    Stopping the server (as twistd does on SIGTERM) with sessions open on
    loopback TCP: GOAWAY, open channels finish, listening stops, and what
    is left at C{--drain-timeout} is aborted.
    """

    async def test_channelFinishes(self) -> None:
        """
        A client with a channel open when the server stops sees GOAWAY,
        opens no more channels, finishes its channel (echoed to the end);
        then its connection closes cleanly, C{stopService}'s Deferred
        fires, and the server no longer accepts connections.
        """
        server = self.serve("--listen", LOCAL, "--drain-timeout", "20")
        endpoint = self.tcpEndpoint(self.tcpPort(server))
        session = await self.connect(endpoint)
        proto = await session.openChannel(b"echo", Factory.forProtocol(Collector))
        assert isinstance(proto, Collector)
        channel = IChannelTransport(proto.transport)
        channel.writeMessage(b"one ")
        await proto.receivedAtLeast(4)
        stopped = server.stopService()
        channel.writeMessage(b"two")
        # GOAWAY was written before this echo: it has arrived too.
        self.assertEqual(await proto.receivedAtLeast(7), b"one two")
        self.assertIsNotNone(session.engine.goAwayReceived)
        with self.assertRaises(ChannelRefused):
            await session.openChannel(b"echo", Factory.forProtocol(Collector))
        self.assertFalse(stopped.called)
        channel.loseConnection()
        self.assertIsInstance(await proto.lost, ConnectionDone)
        await stopped
        await session.whenClosed()
        assert session.lostReason is not None
        self.assertTrue(session.lostReason.check(ConnectionDone))
        with self.assertRaises(ConnectionRefusedError):
            await connectSession(endpoint, reactor=self.reactor)

    async def test_deadline(self) -> None:
        """
        A client that never finishes its channel is aborted at the drain
        timeout: its channel ends with SessionLost, and C{stopService}'s
        Deferred fires.
        """
        server = self.serve("--listen", LOCAL, "--drain-timeout", "0.2")
        session = await self.connect(self.tcpEndpoint(self.tcpPort(server)))
        proto = await session.openChannel(b"echo", Factory.forProtocol(Collector))
        assert isinstance(proto, Collector)
        IChannelTransport(proto.transport).writeMessage(b"busy")
        await proto.receivedAtLeast(4)
        await server.stopService()
        self.assertIsInstance(await proto.lost, SessionLost)
        await session.whenClosed()
        [serverSide] = self.serverSessions
        self.assertIsNotNone(serverSide.lostReason)


# ---------------------------------------------------------------- HAProxy


def proxyV1(source: tuple[str, int], destination: tuple[str, int]) -> bytes:
    """
    A PROXY protocol version 1 header (text) for a TCP connection from
    C{source} to C{destination} (IPv4 or IPv6 loopback addresses).
    """
    family = "TCP6" if ":" in source[0] else "TCP4"
    return (
        f"PROXY {family} {source[0]} {destination[0]} {source[1]} {destination[1]}\r\n"
    ).encode()


def proxyV2(source: tuple[str, int], destination: tuple[str, int]) -> bytes:
    """
    A PROXY protocol version 2 header (binary) for a TCP connection from
    C{source} to C{destination}.
    """
    import ipaddress
    import struct

    src = ipaddress.ip_address(source[0])
    dst = ipaddress.ip_address(destination[0])
    family = 0x11 if src.version == 4 else 0x21  # TCP over IPv4 / IPv6
    body = src.packed + dst.packed + struct.pack("!HH", source[1], destination[1])
    signature = b"\r\n\r\n\x00\r\nQUIT\n"
    return signature + bytes((0x21, family)) + struct.pack("!H", len(body)) + body


class ProxiedClient(Protocol):
    """
    The client end of a connection through a (pretend) HAProxy: it sends a
    PROXY header, then carries a memux client session.
    """

    def __init__(self, header: bytes, reactor: Any) -> None:
        self.header = header
        self.session = MemuxProtocol(client=True, reactor=reactor)

    def connectionMade(self) -> None:
        """
        The header first, then the session's preface.
        """
        assert self.transport is not None
        self.transport.write(self.header)
        self.session.makeConnection(self.transport)

    def dataReceived(self, data: bytes) -> None:
        """
        Everything the server sends is the session's.
        """
        self.session.dataReceived(data)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        """
        The session's connection is gone.
        """
        self.session.connectionLost(reason)


class HAProxyTests(ServerTestCase):
    """
    Behind HAProxy (C{--listen haproxy:tcp:PORT}, Twisted's PROXY protocol
    wrapper), sessions and channels report the client's address the PROXY
    header gives, not the balancer's: in C{getPeer}/C{getHost} of channel
    transports (so L{ChannelAddress}) and in the log.
    """

    async def proxied(self, header: bytes) -> tuple[bytes, list[dict[str, Any]]]:
        """
        Connect through C{haproxy:} with C{header}, ask the C{peer} service
        what it sees, close; return its answer and the log events.
        """
        events = self.captureLog()
        server = self.serve(
            "--listen",
            "haproxy:" + LOCAL,
            "--factory",
            "peer=memux.test.test_server.PeerTeller",
        )
        port = self.tcpPort(server)
        client = ProxiedClient(header, self.reactor)
        await connectProtocol(self.tcpEndpoint(port), client)
        self.addCleanup(self.closeSession, client.session)
        proto = await client.session.openChannel(
            b"peer", Factory.forProtocol(Collector)
        )
        assert isinstance(proto, Collector)
        await proto.lost
        await self.closeSession(client.session)
        await self.closeServerSessions()
        return proto.received, events

    async def test_v1(self) -> None:
        """
        With a version 1 (text) header, the channel sees the client's
        address and port and the address the client connected to, and the
        session's log lines name the client.
        """
        header = proxyV1(("127.0.0.7", 51000), ("127.0.0.9", 7400))
        answer, events = await self.proxied(header)
        self.assertEqual(answer, b"127.0.0.7 51000 127.0.0.9 7400")
        [started] = logged(events, "memux session from {peer}")
        self.assertEqual(started["peer"], "127.0.0.7:51000")
        [ended] = [
            e
            for e in logged(events, "memux session with {peer} ended")
            if e["log_source"] in self.serverSessions
        ]
        self.assertEqual(ended["peer"], "127.0.0.7:51000")

    async def test_v2(self) -> None:
        """
        With a version 2 (binary) header, likewise.
        """
        header = proxyV2(("127.0.0.8", 52000), ("127.0.0.9", 7401))
        answer, events = await self.proxied(header)
        self.assertEqual(answer, b"127.0.0.8 52000 127.0.0.9 7401")
        [started] = logged(events, "memux session from {peer}")
        self.assertEqual(started["peer"], "127.0.0.8:52000")

    async def test_v2IPv6(self) -> None:
        """
        A version 2 header for an IPv6 client is reported as given.
        """
        import ipaddress

        answer, _ = await self.proxied(proxyV2(("::1", 53000), ("::1", 7402)))
        peer, peerPort, host, hostPort = answer.decode().split()
        self.assertEqual(
            (ipaddress.ip_address(peer), peerPort, ipaddress.ip_address(host)),
            (ipaddress.ip_address("::1"), "53000", ipaddress.ip_address("::1")),
        )
        self.assertEqual(hostPort, "7402")

    async def test_healthCheck(self) -> None:
        """
        A balancer's health check, which sends its PROXY header and closes,
        is logged at debug only, naming the address the header gives.
        """
        events = self.captureLog()
        server = self.serve("--listen", "haproxy:" + LOCAL)
        check = Collector()
        await connectProtocol(self.tcpEndpoint(self.tcpPort(server)), check)
        assert check.transport is not None
        check.transport.write(proxyV1(("127.0.0.7", 51000), ("127.0.0.9", 7400)))
        check.transport.loseConnection()
        await self.serverSessionsClosed(1)
        serverSide = [e for e in events if e.get("log_source") in self.serverSessions]
        self.assertEqual(
            [(e["log_level"], e["log_format"], e["peer"]) for e in serverSide],
            [
                (
                    LogLevel.debug,
                    "memux session with {peer} ended: {reason}",
                    "127.0.0.7:51000",
                )
            ],
        )
