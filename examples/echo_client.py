"""
Send one message to a memux server's echo service and print the reply.

Start a server first (``twistd -n memux``), then run::

    python examples/echo_client.py [CLIENT_ENDPOINT]

CLIENT_ENDPOINT defaults to ``tcp:localhost:7400``.
"""

import sys

from twisted.internet.defer import Deferred
from twisted.internet.endpoints import clientFromString
from twisted.internet.interfaces import IReactorCore
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import react
from zope.interface import implementer

from memux import IChannelTransport, IMessageReceiver, connectSession


@implementer(IMessageReceiver)
class EchoClient(Protocol):
    """
    Fires C{reply} with the first whole message received.
    """

    def __init__(self) -> None:
        self.reply: Deferred[bytes] = Deferred()

    def messageReceived(self, message: bytes) -> None:
        self.reply.callback(message)


async def main(reactor: IReactorCore) -> None:
    where = sys.argv[1] if len(sys.argv) > 1 else "tcp:localhost:7400"
    session = await connectSession(clientFromString(reactor, where))
    client = await session.openChannel(b"echo", Factory.forProtocol(EchoClient))
    assert isinstance(client, EchoClient)
    channel = IChannelTransport(client.transport)
    channel.writeMessage(b"hello")
    print((await client.reply).decode())
    channel.loseConnection()


react(lambda reactor: Deferred.fromCoroutine(main(reactor)))
