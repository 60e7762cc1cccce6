"""
Unmodified Twisted protocols over memux channels (LineReceiver, AMP,
twisted.web with an Agent), in memory and over a real loopback TCP
connection.
"""

from __future__ import annotations

import hashlib
import os
from typing import Any

from twisted.internet import defer
from twisted.internet.endpoints import (
    clientFromString,
    connectProtocol,
    serverFromString,
)
from twisted.internet.interfaces import IProtocolFactory
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.internet.task import Clock
from twisted.protocols import amp
from twisted.protocols.basic import LineReceiver
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.client import Agent, HTTPConnectionPool, readBody
from twisted.web.iweb import IAgentEndpointFactory
from twisted.web.resource import Resource
from twisted.web.server import Site
from zope.interface import implementer

from memux import ChannelEndpoint, MemuxProtocol, MultiplexingFactory, connectSession
from memux.protocol import ChannelTransport
from memux.testing import connectedSessions


class Upper(LineReceiver):
    """
    Answers each line with the line in upper case.
    """

    def lineReceived(self, line: bytes) -> None:
        self.sendLine(line.upper())


class LineClient(LineReceiver):
    """
    Collects lines.
    """

    def connectionMade(self) -> None:
        self.lines: list[bytes] = []

    def lineReceived(self, line: bytes) -> None:
        self.lines.append(line)


class Sum(amp.Command):
    """
    Add two integers.
    """

    arguments = [(b"a", amp.Integer()), (b"b", amp.Integer())]
    response = [(b"total", amp.Integer())]


class Adder(amp.AMP):
    """
    An AMP server answering Sum.
    """

    @Sum.responder
    def sum(self, a: int, b: int) -> dict[str, int]:
        return {"total": a + b}


class Hello(Resource):
    """
    A page that says hello and where it was served from.
    """

    isLeaf = True

    def render_GET(self, request: Any) -> bytes:
        host = request.getHost()
        return b"hello over memux channel %d, port %r" % (host.channel, host.port)


@implementer(IAgentEndpointFactory)
class ChannelEndpointFactory:
    """
    Gives an Agent channels on one session, whatever the URI.
    """

    def __init__(self, session: MemuxProtocol, service: bytes) -> None:
        self.session = session
        self.service = service

    def endpointForURI(self, uri: Any) -> ChannelEndpoint:
        return ChannelEndpoint(self.session, self.service)


class Sink(Protocol):
    """
    Collects bytes and fires a Deferred with them at the end.
    """

    def __init__(self) -> None:
        self.chunks: list[bytes] = []
        self.done: defer.Deferred[bytes] = defer.Deferred()

    def dataReceived(self, data: bytes) -> None:
        self.chunks.append(data)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.done.callback(b"".join(self.chunks))


class EchoBack(Protocol):
    """
    Echoes bytes; half-close aware so the whole reply flows before closing.
    """

    def dataReceived(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(data)


class InMemoryTests(SynchronousTestCase):
    """
    Unmodified Twisted protocols over channels of in-memory sessions.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        services: dict[bytes, IProtocolFactory] = {
            b"upper": Factory.forProtocol(Upper),
            b"amp": Factory.forProtocol(Adder),
            b"web": Site(Hello(), reactor=self.clock),
        }
        self.client, self.server, self.pump = connectedSessions(
            services, clock=self.clock
        )

    def test_lineReceiver(self) -> None:
        """
        A LineReceiver serves lines over a channel, split across chunks
        however the writes fall.
        """
        d = connectProtocol(ChannelEndpoint(self.client, b"upper"), LineClient())
        proto = self.successResultOf(d)
        proto.transport.write(b"hello\r\nwor")
        proto.transport.write(b"ld\r\n")
        self.pump.flush()
        self.assertEqual(proto.lines, [b"HELLO", b"WORLD"])

    def test_amp(self) -> None:
        """
        AMP commands and responses travel over a channel.
        """
        proto = self.successResultOf(
            connectProtocol(ChannelEndpoint(self.client, b"amp"), amp.AMP())
        )
        result = proto.callRemote(Sum, a=20, b=22)
        self.pump.flush()
        self.assertEqual(self.successResultOf(result), {"total": 42})

    def test_web(self) -> None:
        """
        A twisted.web Site answers an Agent request made through a
        ChannelEndpoint.
        """
        agent = Agent.usingEndpointFactory(
            self.clock,
            ChannelEndpointFactory(self.client, b"web"),
            pool=HTTPConnectionPool(self.clock, persistent=False),
        )
        d = agent.request(b"GET", b"http://memux.invalid/hello")
        self.pump.flush()
        response = self.successResultOf(d)
        self.assertEqual(response.code, 200)
        body = readBody(response)
        self.pump.flush()
        self.assertIn(b"hello over memux channel 1", self.successResultOf(body))


class LoopbackTests(TestCase):
    """
    Everything together over a real TCP connection on loopback.
    """

    @defer.inlineCallbacks
    def test_everythingOverTCP(self) -> Any:
        """
        Over one real TCP connection: a web page fetched by an Agent, AMP
        calls, LineReceiver lines, and 4 concurrent 4 MiB echo transfers
        arriving intact (sha256), then a ping and a clean close.
        """
        from twisted.internet import reactor

        sessions: list[MemuxProtocol] = []

        class Tracking(MultiplexingFactory):
            def buildProtocol(self, addr: Any) -> MemuxProtocol:
                p = super().buildProtocol(addr)
                sessions.append(p)
                return p

        services: dict[bytes, IProtocolFactory] = {
            b"upper": Factory.forProtocol(Upper),
            b"amp": Factory.forProtocol(Adder),
            b"web": Site(Hello()),
            b"echo": Factory.forProtocol(EchoBack),
        }
        port = yield serverFromString(reactor, "tcp:0:interface=127.0.0.1").listen(
            Tracking(services)
        )
        self.addCleanup(port.stopListening)
        session = yield connectSession(
            clientFromString(reactor, f"tcp:127.0.0.1:{port.getHost().port}")
        )

        agent = Agent.usingEndpointFactory(
            reactor,
            ChannelEndpointFactory(session, b"web"),
            pool=HTTPConnectionPool(reactor, persistent=False),
        )
        response = yield agent.request(b"GET", b"http://memux.invalid/")
        body = yield readBody(response)
        self.assertEqual(
            body,
            b"hello over memux channel 1, port %d" % port.getHost().port,
        )

        ampProto = yield connectProtocol(ChannelEndpoint(session, b"amp"), amp.AMP())
        results = yield defer.gatherResults(
            [ampProto.callRemote(Sum, a=i, b=i) for i in range(50)]
        )
        self.assertEqual([r["total"] for r in results], [2 * i for i in range(50)])

        lines = yield connectProtocol(ChannelEndpoint(session, b"upper"), LineClient())
        lines.sendLine(b"over tcp")
        while not lines.lines:
            yield deferLater(reactor, 0.01)
        self.assertEqual(lines.lines, [b"OVER TCP"])

        payloads = [os.urandom(4 * 1024 * 1024) for _ in range(4)]
        sinks: list[Sink] = []
        for payload in payloads:
            sink = Sink()
            yield connectProtocol(ChannelEndpoint(session, b"echo"), sink)
            transport = sink.transport
            assert isinstance(transport, ChannelTransport)
            transport.write(payload)
            transport.loseWriteConnection()
            sinks.append(sink)
        echoed = yield defer.gatherResults([s.done for s in sinks])
        for payload, got in zip(payloads, echoed, strict=True):
            self.assertEqual(
                hashlib.sha256(got).hexdigest(), hashlib.sha256(payload).hexdigest()
            )

        rtt = yield session.ping()
        self.assertGreaterEqual(rtt, 0)

        ampProto.transport.loseConnection()
        lines.transport.loseConnection()
        yield session.goAway()
        for s in sessions:
            yield s.whenClosed()


def deferLater(reactor: Any, delay: float) -> defer.Deferred[None]:
    """
    A Deferred that fires after ``delay`` seconds.
    """
    from twisted.internet.task import deferLater as later

    return later(reactor, delay, lambda: None)
