"""
Connect to a memux server over TLS, check the server's certificate and the
negotiated protocol, send one message to its echo service and ping it.

Start a server with a certificate (doc/tls.rst shows how to make one)::

    twistd -n memux --tls-cert server.pem --tls-ca ca.pem

then::

    python examples/tls_client.py --ca ca.pem --cert client.pem \\
        --hostname memux.example tcp:localhost:7400

``--ca`` is the CA that signed the server's certificate (the platform's
trusted CAs if omitted); ``--cert`` (with the key in it, or in ``--key``)
is needed only if the server asks for client certificates (``--tls-ca``);
``--hostname`` is the name the server's certificate must be valid for
(the endpoint's host if omitted).
"""

import argparse
import sys

from twisted.internet.defer import Deferred
from twisted.internet.endpoints import clientFromString, wrapClientTLS
from twisted.internet.interfaces import IReactorCore
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.internet.task import react
from twisted.protocols.tls import TLSMemoryBIOProtocol
from twisted.python.failure import Failure
from zope.interface import implementer

from memux import IChannelTransport, IMessageReceiver, connectSession
from memux.tls import clientTLSOptions


@implementer(IMessageReceiver)
class EchoClient(Protocol):
    """
    Fires C{reply} with the first whole message received, or fails it with
    the reason the channel ended first.
    """

    def __init__(self) -> None:
        self.reply: Deferred[bytes] = Deferred()

    def messageReceived(self, message: bytes) -> None:
        self.reply.callback(message)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if not self.reply.called:
            self.reply.errback(reason)


def parseArguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("endpoint", help="client endpoint, e.g. tcp:localhost:7400")
    parser.add_argument("--ca", help="PEM file of the CA that signed the server")
    parser.add_argument("--cert", help="PEM file of our certificate (and key)")
    parser.add_argument("--key", help="PEM file of our key, if not in --cert")
    parser.add_argument("--hostname", help="the name the server's certificate is for")
    return parser.parse_args()


async def main(reactor: IReactorCore) -> None:
    try:
        await talk(reactor, parseArguments())
    except Exception as e:
        # A refused handshake ends the session: say why, briefly.
        print(f"tls_client: {e}", file=sys.stderr)
        raise SystemExit(1) from None


async def talk(reactor: IReactorCore, args: argparse.Namespace) -> None:
    hostname = args.hostname or args.endpoint.split(":")[1].removeprefix("host=")
    options = clientTLSOptions(hostname, args.ca, args.cert, clientKey=args.key)
    endpoint = wrapClientTLS(options, clientFromString(reactor, args.endpoint))
    session = await connectSession(endpoint)
    client = await session.openChannel(b"echo", Factory.forProtocol(EchoClient))
    assert isinstance(client, EchoClient)
    IChannelTransport(client.transport).writeMessage(b"hello over TLS")
    reply = await client.reply
    # The reply came over TLS, so the handshake (and the check of the
    # server's certificate for `hostname`) is done.
    tls = session.transport
    assert isinstance(tls, TLSMemoryBIOProtocol)
    alpn = (tls.negotiatedProtocol or b"none").decode()
    print(f"TLS to {hostname}: verified, ALPN {alpn}")
    print(f"echo: {reply.decode()}")
    rtt = await session.ping()
    print(f"ping: {rtt * 1000:.1f} ms")


react(lambda reactor: Deferred.fromCoroutine(main(reactor)))
