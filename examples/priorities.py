"""
An interactive channel staying responsive beside bulk transfers, on one
connection: ten channels stream bulk data to a sink while another, at
urgency 0, sends small requests to an echo service and times the answers.
The same is then done with the interactive channel at the default
priority, where it takes its turn with the bulk channels.  Self-contained:
it starts a server on a free loopback port, uses it, and exits.

    python examples/priorities.py [--pings N]
"""

import sys
import time

from twisted.internet import task
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import clientFromString, serverFromString
from twisted.internet.interfaces import IReactorCore
from twisted.internet.protocol import Factory, Protocol
from zope.interface import implementer

from memux import IMessageReceiver, MultiplexingFactory, connectSession
from memux.services import Discard, Echo


class Bulk(Protocol):
    """Write 64 KiB chunks for as long as the channel lets us (a producer)."""

    chunk = bytes(65536)

    def connectionMade(self) -> None:
        self.paused = False
        self.transport.registerProducer(self, True)
        self.resumeProducing()

    def pauseProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        self.paused = False
        while not self.paused and self.transport.connected:
            self.transport.write(self.chunk)

    def stopProducing(self) -> None:
        self.paused = True


@implementer(IMessageReceiver)
class Interactive(Protocol):
    """Send a 64-byte request, wait for the echo, again: time each."""

    def run(self, count: int) -> "Deferred[list[float]]":
        self.times: list[float] = []
        self.left = count
        self.done: Deferred[list[float]] = Deferred()
        self.ask()
        return self.done

    def ask(self) -> None:
        self.left -= 1
        self.sent = time.perf_counter()
        self.transport.writeMessage(b"?" * 64)

    def messageReceived(self, message: bytes) -> None:
        self.times.append(time.perf_counter() - self.sent)
        if self.left:
            self.ask()
        else:
            self.done.callback(self.times)


BULK = 10  # bulk channels beside the interactive one


def median(values: list[float]) -> float:
    return sorted(values)[len(values) // 2]


async def roundTrips(reactor: IReactorCore, port: int, pings: int, urgency):  # type: ignore[no-untyped-def]
    session = await connectSession(clientFromString(reactor, f"tcp:127.0.0.1:{port}"))
    for _ in range(BULK):
        await session.openChannel(b"discard", Factory.forProtocol(Bulk))
    # priority=0: the most urgent class (None: the default, 3).
    client = await session.openChannel(
        b"echo", Factory.forProtocol(Interactive), priority=urgency
    )
    await task.deferLater(reactor, 0.3, lambda: None)  # the bulk gets going
    times = await client.run(pings)
    print(
        f"urgency {client.transport.priority.urgency}:"
        f" median round trip {median(times) * 1e3:.2f} ms beside {BULK} bulk channels"
    )
    session.loseConnection()
    await session.whenClosed()
    return median(times)


async def main(reactor: IReactorCore, *argv: str) -> None:
    pings = int(argv[argv.index("--pings") + 1]) if "--pings" in argv else 300
    factory = MultiplexingFactory(
        {b"echo": Factory.forProtocol(Echo), b"discard": Factory.forProtocol(Discard)}
    )
    port = await serverFromString(reactor, "tcp:0:interface=127.0.0.1").listen(factory)
    try:
        urgent = await roundTrips(reactor, port.getHost().port, pings, 0)
        default = await roundTrips(reactor, port.getHost().port, pings, None)
        print(f"the urgent channel answered {default / urgent:.1f} times sooner")
    finally:
        await port.stopListening()


if __name__ == "__main__":
    task.react(lambda reactor: Deferred.fromCoroutine(main(reactor, *sys.argv[1:])))
