"""
MEMUX--: the same channels with and without multiplexing.  An echo server
listens on a free loopback port; three channels go to it through one
``memux:`` description, then through the same description with
``multiplex=no``.  The application code is the same; the server counts one
connection for the first three channels and one per channel for the
others, each closed once its channel has ended (the shared one stays open
for more channels until the pool is closed).

    python examples/nomux.py
"""

from typing import cast

from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.endpoints import (
    TCP4ServerEndpoint,
    clientFromString,
    connectProtocol,
)
from twisted.internet.interfaces import IReactorCore, IReactorTime
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import deferLater

from memux import MultiplexingFactory
from memux.endpoints import defaultPool, memuxDescription
from memux.services import Echo


class Ask(Protocol):
    """Send a question, wait for the whole echo, close."""

    def __init__(self, question: bytes) -> None:
        self.question = question
        self.answer = b""
        self.done: Deferred[bytes] = Deferred()

    def connectionMade(self) -> None:
        assert self.transport is not None
        self.transport.write(self.question)

    def dataReceived(self, data: bytes) -> None:
        self.answer += data
        if len(self.answer) == len(self.question):
            assert self.transport is not None
            self.transport.loseConnection()

    def connectionLost(self, reason: object = None) -> None:
        self.done.callback(self.answer)


async def three(reactor: IReactorCore, description: str) -> list[bytes]:
    """Three channels at once through ``description``: their answers."""
    endpoint = clientFromString(reactor, description)
    asks = [Ask(b"channel %d" % i) for i in range(3)]
    await gatherResults([connectProtocol(endpoint, ask) for ask in asks])
    return list(await gatherResults([ask.done for ask in asks]))


async def main(reactor: IReactorCore) -> None:
    server = MultiplexingFactory({b"echo": Factory.forProtocol(Echo)})
    port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(server)
    inner = f"tcp:127.0.0.1:{port.getHost().port}"  # type: ignore[attr-defined]

    for multiplex in (True, False):
        started = server.totals().sessionsStarted
        description = memuxDescription(inner, "echo", multiplex=multiplex)
        answers = await three(reactor, description)
        # A moment for the connections of ended channels to close.
        await deferLater(cast(IReactorTime, reactor), 0.1, lambda: None)
        print(description)
        print(f"  answers: {b', '.join(answers).decode()}")
        print(
            f"  connections: {server.totals().sessionsStarted - started},"
            f" still open: {len(server.connectedSessions())}"
        )
        # The pooled session stays open for more channels until closed.
        await defaultPool(reactor).closeAll()
        await deferLater(cast(IReactorTime, reactor), 0.1, lambda: None)

    await port.stopListening()


if __name__ == "__main__":
    from twisted.internet.task import react

    react(lambda reactor: Deferred.fromCoroutine(main(reactor)))
