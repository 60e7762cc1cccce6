"""
One TCP connection, several services: a twisted.web site, a line service
and an echo service, all over memux channels.  Self-contained: it starts a
server on a free loopback port, uses it, and exits.

    python examples/web_over_memux.py [--endpoint tcp:0:interface=127.0.0.1]
"""

import sys
import warnings

from twisted.internet.defer import Deferred
from twisted.internet.endpoints import (
    clientFromString,
    connectProtocol,
    serverFromString,
)
from twisted.internet.interfaces import IReactorCore
from twisted.internet.protocol import Factory
from twisted.protocols.basic import LineReceiver
from twisted.web.client import Agent, HTTPConnectionPool, readBody
from twisted.web.iweb import IAgentEndpointFactory
from twisted.web.resource import Resource
from twisted.web.server import Site
from zope.interface import implementer

from memux import ChannelEndpoint, ChannelRequest, MultiplexingFactory, connectSession
from memux.services import Echo


class Page(Resource):
    isLeaf = True

    # Resource and LineReceiver are not annotated; calling their methods
    # through the base class keeps mypy's untyped_calls_exclude in effect.
    def __init__(self) -> None:
        Resource.__init__(self)

    def render_GET(self, request):  # type: ignore[no-untyped-def]
        host = request.getHost()
        return b"served on memux channel %d of port %d\n" % (host.channel, host.port)


class Shout(LineReceiver):
    def lineReceived(self, line: bytes) -> None:
        LineReceiver.sendLine(self, line.upper() + b"!")


class Listener(LineReceiver):
    def connectionMade(self) -> None:
        self.answer: Deferred[bytes] = Deferred()

    def lineReceived(self, line: bytes) -> None:
        self.answer.callback(line)


@implementer(IAgentEndpointFactory)
class Channels:
    """Every request the Agent makes goes over a new channel of one session."""

    def __init__(self, session, service: bytes) -> None:  # type: ignore[no-untyped-def]
        self.session, self.service = session, service

    def endpointForURI(self, uri):  # type: ignore[no-untyped-def]
        return ChannelEndpoint(self.session, self.service)


services = {
    b"web": Site(Page()),
    b"shout": Factory.forProtocol(Shout),
    b"echo": Factory.forProtocol(Echo),
}


def choose(request: ChannelRequest):  # type: ignore[no-untyped-def]
    # A services callable sees each request and may refuse it (None).
    print(f"server: channel {request.channel} asks for {request.service!r}")
    return services.get(request.service)


async def main(reactor: IReactorCore) -> None:
    listen = (
        sys.argv[2] if sys.argv[1:2] == ["--endpoint"] else "tcp:0:interface=127.0.0.1"
    )
    port = await serverFromString(reactor, listen).listen(MultiplexingFactory(choose))
    address = port.getHost()
    session = await connectSession(
        clientFromString(reactor, f"tcp:{address.host}:{address.port}")
    )

    agent = Agent.usingEndpointFactory(
        reactor,
        Channels(session, b"web"),
        HTTPConnectionPool(reactor, persistent=False),
    )
    response = await agent.request(b"GET", b"http://example.invalid/")
    print("web:", (await readBody(response)).decode().strip())

    shout = await connectProtocol(ChannelEndpoint(session, b"shout"), Listener())
    shout.sendLine(b"hello")
    print("shout:", (await shout.answer).decode())

    print(f"ping: {await session.ping() * 1000:.2f} ms")
    print("counters:", session.counters())
    shout.transport.loseConnection()
    await session.goAway()
    await port.stopListening()


if __name__ == "__main__":
    from twisted.internet.task import react

    # Twisted's own HTTP client warns about its TransportProxyProducer,
    # over TCP as much as over memux.
    warnings.filterwarnings("ignore", "Using readBody", DeprecationWarning)

    react(lambda reactor: Deferred.fromCoroutine(main(reactor)))
