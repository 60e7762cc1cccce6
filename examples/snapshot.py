"""
Looking inside a running memux server: its sessions and channels as plain
data (``factory.snapshot()``), its Prometheus metrics, and the status site
``twistd memux --status`` serves.  Self-contained: it starts a server on a
free loopback port, opens a few channels to it, shows what the server sees,
and exits.

    python examples/snapshot.py
"""

import json
import warnings

from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, serverFromString
from twisted.internet.interfaces import IReactorCore
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import deferLater, react
from twisted.web.client import Agent, readBody

from memux import MultiplexingFactory, connectSession
from memux.services import Echo
from memux.status import statusSite


class Quiet(Protocol):
    pass


async def main(reactor: IReactorCore) -> None:
    factory = MultiplexingFactory({b"echo": Factory.forProtocol(Echo)})
    port = await serverFromString(reactor, "tcp:0:interface=127.0.0.1").listen(factory)
    # The status site, as twistd memux --status serves it (loopback only).
    status = await serverFromString(reactor, "tcp:0:interface=127.0.0.1").listen(
        statusSite([factory])
    )

    session = await connectSession(
        TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port)
    )
    for size in (100, 2000, 30000):
        channel = await session.openChannel(b"echo", Factory.forProtocol(Quiet))
        channel.transport.write(b"x" * size)
    rtt = await session.ping()
    await deferLater(reactor, 0.1, lambda: None)  # the echoes come back

    # 1. From Python: frozen dataclasses.
    snap = factory.snapshot()
    [server] = snap.sessions
    print(f"server: {len(snap.sessions)} session, from {server.peer.split(':')[0]}")
    for c in server.channels:
        print(
            f"  channel {c.channel} {c.service} {c.state}: {c.bytesReceived} bytes in,"
            f" {c.bytesSent} out, receive credit {c.receiveCredit}"
        )
    known = session.snapshot().rtt is not None
    print(f"client: ping {rtt * 1000:.1f} ms, smoothed rtt known: {known}")
    print("json keys:", ", ".join(sorted(json.loads(json.dumps(snap.toJSON())))))

    # 2. Over HTTP, as memux stat and Prometheus read it.
    agent = Agent(reactor)
    base = f"http://127.0.0.1:{status.getHost().port}".encode()
    metrics = await readBody(await agent.request(b"GET", base + b"/metrics"))
    for line in metrics.decode().splitlines():
        if line.startswith(("memux_sessions_open", "memux_channels_open")):
            print("metrics:", line)
    answer = await agent.request(b"GET", base + b"/sessions")
    sessions = json.loads(await readBody(answer))
    print("/sessions: channels open", sessions[0]["totals"]["channelsOpen"])

    session.loseConnection()
    await session.whenClosed()
    await status.stopListening()
    await port.stopListening()


def run(reactor: IReactorCore) -> Deferred[None]:
    return Deferred.fromCoroutine(main(reactor))


if __name__ == "__main__":
    # (Twisted's Agent hands readBody a transport proxy without
    # abortConnection, and says so: nothing to do with memux.)
    warnings.filterwarnings("ignore", "Using readBody", DeprecationWarning)
    react(run)
