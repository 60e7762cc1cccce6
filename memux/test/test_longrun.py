# -*- test-case-name: memux.test.test_longrun -*-
"""
Long-lived state tested long: a session's per-channel counters, id space,
credit offsets and tables, exercised far past their first power-of-two
boundaries (2^15 channels, 2^21 ids, 32 MiB of session credit, many times).
"""

from __future__ import annotations

from typing import Any

from twisted.internet.error import ConnectionDone
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from memux import IChannelTransport, IMessageReceiver
from memux._engine import (
    ChannelClosed,
    ChannelOpened,
    DataReceived,
    MemuxEngine,
    PrefaceReceived,
    RemoteHalfClosed,
)
from memux.services import builtinServices
from memux.testing import connectedSessions

#: The other events the server sees in the churn.
ALLOWED = (ChannelOpened, ChannelClosed, PrefaceReceived)


def assertQuiet(case: SynchronousTestCase, engine: MemuxEngine) -> None:
    """
    C{engine} holds nothing: no channel, no byte unconsumed, nothing to
    send, and the peer may still send a full session window.
    """
    case.assertEqual(engine.openChannels(), [])
    case.assertFalse(engine.hasDataToSend())
    window = engine._sessionRecv
    case.assertEqual(window.held, 0)
    case.assertGreaterEqual(window.limit - window.received, window.window // 2)


class EngineChurnTests(SynchronousTestCase):
    """
    A million channels through one pair of engines.
    """

    def test_millionChannels(self) -> None:
        """
        1,000,000 channels, each opened by the client (skipping every other
        id) with a 896-byte request and its FIN, echoed and closed by the
        server, in batches of 1000 in flight: every reply arrives whole on
        its channel, both engines end with no channel and no credit held,
        ids pass 2^21 (four-byte varints), the session offsets pass 2^29,
        and nothing counts as a frame that does no work.
        """
        client, server = MemuxEngine(True), MemuxEngine(False)
        replies = 0
        batch, batches = 1000, 1000
        last = 0
        for b in range(batches):
            sent: dict[int, bytes] = {}
            for n in range(batch):
                # Every other id skipped (opened and reset before it went
                # out), as a client that gives up on a channel at once.
                client.resetChannel(client.openChannel())
                cid = client.openChannel()
                request = b"%07d" % (b * batch + n) * 128  # 896 bytes
                client.sendData(cid, request, True)
                client.closeChannel(cid)
                sent[cid] = request
                last = cid
            got: dict[int, bytes] = {}
            for _ in range(100):
                data = client.dataToSend()
                client.popEvents()
                for event in server.receiveData(data):
                    if type(event) is DataReceived:
                        server.consumed(event.channel, len(event.data))
                        server.sendData(event.channel, event.data, event.endMessage)
                    elif type(event) is RemoteHalfClosed:
                        server.closeChannel(event.channel)
                    else:
                        assert type(event) in ALLOWED, event
                back = server.dataToSend()
                server.popEvents()
                for event in client.receiveData(back):
                    if type(event) is DataReceived:
                        client.consumed(event.channel, len(event.data))
                        got[event.channel] = got.get(event.channel, b"") + event.data
                if not data and not back:
                    break
            self.assertEqual(got, sent)
            replies += len(got)
        self.assertEqual(replies, batch * batches)
        self.assertGreater(last, 1 << 21)
        self.assertGreater(server._sessionRecv.received, 1 << 29)
        for engine in (client, server):
            assertQuiet(self, engine)
        self.assertEqual(client.uselessFrames + server.uselessFrames, 0)


@implementer(IMessageReceiver)
class Requester(Protocol):
    """
    Sends one request message on connection, keeps the reply, closes once
    it has it.
    """

    def __init__(self, request: bytes, replies: dict[bytes, bytes]) -> None:
        self.request = request
        self.replies = replies
        self.ended: Failure | None = None

    def connectionMade(self) -> None:
        """
        Send the request.
        """
        IChannelTransport(self.transport).writeMessage(self.request)

    def messageReceived(self, message: bytes) -> None:
        """
        Keep the reply, close the channel.
        """
        self.replies[self.request] = message
        assert self.transport is not None
        self.transport.loseConnection()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        """
        Keep why the channel ended.
        """
        self.ended = reason


class RequesterFactory(Factory):
    """
    Builds one L{Requester} for C{request}.
    """

    def __init__(self, request: bytes, replies: dict[bytes, bytes]) -> None:
        self.request = request
        self.replies = replies

    def buildProtocol(self, addr: Any) -> Requester:
        """
        The requester.
        """
        return Requester(self.request, self.replies)


class SessionChurnTests(SynchronousTestCase):
    """
    A hundred thousand channels through one pair of Twisted sessions.
    """

    def test_hundredThousandChannels(self) -> None:
        """
        100,000 channels to the built-in echo over one session, 100 in
        flight, each a 1 KiB request, its reply and a clean close on both
        sides: every reply comes back right (3 MiB of session credit, many
        times over, and ids past 2^17), every channel ends with
        ConnectionDone, and nothing is left open or held.
        """
        clock = Clock()
        client, server, pump = connectedSessions(builtinServices(clock), clock=clock)
        replies: dict[bytes, bytes] = {}
        inFlight, rounds = 100, 1000
        protocols: list[Any] = []
        for r in range(rounds):
            for n in range(inFlight):
                request = b"%06d" % (r * inFlight + n) * 171  # 1026 bytes
                factory = RequesterFactory(request, replies)
                protocols.append(
                    self.successResultOf(client.openChannel(b"echo", factory))
                )
            pump.flush()
            for proto in protocols:
                self.assertIsNotNone(proto.ended, "channel still open")
                proto.ended.trap(ConnectionDone)
            protocols.clear()
        self.assertEqual(len(replies), inFlight * rounds)
        self.assertEqual([k for k, v in replies.items() if k != v], [])
        self.assertTrue(client.connected and server.connected)
        for session in (client, server):
            assertQuiet(self, session.engine)
        self.assertGreater(server.engine.channelsAccepted, 1 << 16)
