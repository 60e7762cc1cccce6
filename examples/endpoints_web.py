"""
twisted.web over memux, with nothing but endpoint strings: a Site listens
on a ``memux:`` server endpoint and an Agent fetches pages through a
``memux:`` client endpoint.  Both requests ride on one pooled session.
Self-contained: it starts the server on a free loopback port, fetches two
pages, and exits.

    python examples/endpoints_web.py
"""

import warnings
from typing import cast

from twisted.internet.defer import Deferred
from twisted.internet.endpoints import clientFromString, serverFromString
from twisted.internet.interfaces import IReactorCore, IStreamClientEndpoint
from twisted.web.client import URI, Agent, HTTPConnectionPool, readBody
from twisted.web.iweb import IAgentEndpointFactory, IRequest
from twisted.web.resource import Resource
from twisted.web.server import Site
from zope.interface import implementer

from memux import ChannelAddress
from memux.endpoints import defaultPool


class Hello(Resource):
    isLeaf = True

    def __init__(self) -> None:
        Resource.__init__(self)

    def render_GET(self, request: IRequest) -> bytes:
        # A channel's address is the connection's, plus the channel id.
        host = cast(ChannelAddress, request.getHost())
        return b"hello from memux channel %d\n" % host.channel


@implementer(IAgentEndpointFactory)
class OverMemux:
    """Every request the Agent makes goes through one memux: description."""

    def __init__(self, reactor: IReactorCore, description: str) -> None:
        self.reactor = reactor
        self.description = description

    def endpointForURI(self, uri: URI) -> IStreamClientEndpoint:
        endpoint: IStreamClientEndpoint = clientFromString(
            self.reactor, self.description
        )
        return endpoint


async def main(reactor: IReactorCore) -> None:
    server = serverFromString(reactor, r"memux:tcp\:0\:interface=127.0.0.1:service=web")
    port = await server.listen(Site(Hello()))
    number = port.getHost().port
    print(f"server: memux on tcp port {number}, service web")

    description = rf"memux:tcp\:127.0.0.1\:{number}:service=web"
    agent = Agent.usingEndpointFactory(
        reactor,
        OverMemux(reactor, description),
        HTTPConnectionPool(reactor, persistent=False),
    )
    for path in ("/", "/again"):
        response = await agent.request(b"GET", b"http://memux.invalid" + path.encode())
        body = await readBody(response)
        print(f"GET {path}: {response.code} {body.decode().strip()}")

    # Every memux: endpoint parsed with this reactor shares its default pool.
    pool = defaultPool(reactor)
    print(f"sessions in the pool: {len(pool.sessions())}")
    await pool.closeAll()
    await port.stopListening()


if __name__ == "__main__":
    from twisted.internet.task import react

    # Twisted's own HTTP client warns about its TransportProxyProducer,
    # over TCP as much as over memux.
    warnings.filterwarnings("ignore", "Using readBody", DeprecationWarning)

    react(lambda reactor: Deferred.fromCoroutine(main(reactor)))
