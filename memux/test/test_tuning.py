"""
`memux.tuning`: a plain TCP connection tuned as a memux session tunes its
own, over real loopback connections; and a session's direct writes to its
socket.
"""

from __future__ import annotations

import hashlib
import os
import socket
import time
from typing import Any

from twisted.internet import defer, reactor
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.internet.task import deferLater
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface import implementer

from memux import (
    MemuxProtocol,
    MultiplexingFactory,
    SessionLost,
    connectSession,
    protocol,
)
from memux._tuning import DIRECT_WRITE_BYTES
from memux.services import Echo
from memux.tuning import (
    BULK_NOTSENT_LOWAT,
    BULK_READ_SIZE,
    NOTSENT_LOWAT,
    tuneLikeSession,
)

NOTSENT = getattr(socket, "TCP_NOTSENT_LOWAT", None)


def settingsOf(transport: Any) -> dict[str, Any]:
    """
    What `tuneLikeSession` sets, as a TCP transport has it now.
    """
    handle: socket.socket = transport.getHandle()
    return {
        "nodelay": handle.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY),
        "notsent": (
            None if NOTSENT is None else handle.getsockopt(socket.IPPROTO_TCP, NOTSENT)
        ),
        "sendLimit": transport.SEND_LIMIT,
        "bufferSize": transport.bufferSize,
    }


class LoopbackTests(TestCase):
    """
    `tuneLikeSession` on real loopback TCP connections.
    """

    async def connect(self) -> Protocol:
        """
        A plain TCP connection to a listener on 127.0.0.1 that does nothing.
        """
        port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(
            Factory.forProtocol(Protocol)
        )
        self.addCleanup(port.stopListening)
        protocol = Protocol()
        await TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port).connect(
            Factory.forProtocol(lambda: protocol)
        )
        self.addCleanup(protocol.transport.loseConnection)  # type: ignore[union-attr]
        return protocol

    @defer.inlineCallbacks
    def test_sameAsSession(self) -> Any:
        """
        A plain connection tuned with `tuneLikeSession` has exactly the
        socket options and Twisted sizes a memux session gives its own
        connection (so a baseline tuned with it cannot drift from memux).
        """
        plain = yield defer.ensureDeferred(self.connect())
        before = settingsOf(plain.transport)
        tuneLikeSession(plain.transport)
        tuned = settingsOf(plain.transport)
        self.assertNotEqual(before, tuned)

        port = yield TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(
            MultiplexingFactory({})
        )
        self.addCleanup(port.stopListening)
        session = yield connectSession(
            TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port)
        )
        self.addCleanup(session.transport.loseConnection)
        self.assertEqual(settingsOf(session.transport), tuned)

    @defer.inlineCallbacks
    def test_settings(self) -> Any:
        """
        Tuned: TCP_NODELAY on, the send limit raised above Twisted's 128
        KiB, and (where Linux has it) at most `NOTSENT_LOWAT` unsent bytes;
        with ``bulk``, reads of `BULK_READ_SIZE` and `BULK_NOTSENT_LOWAT`
        unsent bytes.
        """
        plain = yield defer.ensureDeferred(self.connect())
        tuneLikeSession(plain.transport)
        tuned = settingsOf(plain.transport)
        self.assertTrue(tuned["nodelay"])
        self.assertGreater(tuned["sendLimit"], 128 * 1024)
        self.assertLess(tuned["bufferSize"], BULK_READ_SIZE)
        if NOTSENT is not None:
            self.assertEqual(tuned["notsent"], NOTSENT_LOWAT)

        bulk = yield defer.ensureDeferred(self.connect())
        tuneLikeSession(bulk.transport, bulk=True)
        tuned = settingsOf(bulk.transport)
        self.assertTrue(tuned["nodelay"])
        self.assertEqual(tuned["bufferSize"], BULK_READ_SIZE)
        if NOTSENT is not None:
            self.assertEqual(tuned["notsent"], BULK_NOTSENT_LOWAT)


class OtherTransportTests(SynchronousTestCase):
    """
    Transports that are not TCP.
    """

    def test_notTcp(self) -> None:
        """
        A transport with no socket and no TCP options (here an in-memory
        one) is left as it was, without error.
        """
        transport = StringTransport()
        before = dict(vars(transport))
        tuneLikeSession(transport, bulk=True)
        self.assertEqual(vars(transport), before)


@implementer(IHalfCloseableProtocol)
class Digest(Protocol):
    """
    A channel service that answers, once the peer has half-closed, with
    the SHA-256 of all it received (and pauses its reading now and then,
    so the sender's kernel buffer fills).
    """

    def connectionMade(self) -> None:
        self.digest = hashlib.sha256()
        self.reads = 0

    def dataReceived(self, data: bytes) -> None:
        self.digest.update(data)
        self.reads += 1
        if self.reads % 64 == 0:
            transport: Any = self.transport
            transport.pauseProducing()
            reactor.callLater(0.01, transport.resumeProducing)

    def readConnectionLost(self) -> None:
        transport: Any = self.transport
        transport.writeMessage(self.digest.hexdigest().encode())
        transport.loseConnection()

    def writeConnectionLost(self) -> None:
        pass


class Answers(Protocol):
    """
    A channel's client end: collects what arrives; ``ended`` fires with
    the reason the channel ended.
    """

    def __init__(self) -> None:
        self.received = b""
        self.reason: Failure | None = None
        self.ended: defer.Deferred[None] = defer.Deferred()

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.reason = reason
        self.ended.callback(None)


class DirectWriteTests(TestCase):
    """
    Over plain TCP a session writes each flush to its socket itself while
    its transport holds nothing (`memux._tuning.directSocket`); the rest
    goes to the transport, in order.
    """

    async def sessions(self) -> tuple[MemuxProtocol, list[MemuxProtocol]]:
        """
        A client session to a server on 127.0.0.1 with the ``digest`` and
        ``echo`` services, and the server's sessions.
        """
        factory = MultiplexingFactory(
            {b"digest": Factory.forProtocol(Digest), b"echo": Factory.forProtocol(Echo)}
        )
        servers: list[MemuxProtocol] = []
        build = factory.buildProtocol

        def buildProtocol(addr: Any) -> Any:
            p = build(addr)
            servers.append(p)
            return p

        factory.buildProtocol = buildProtocol  # type: ignore[method-assign]
        port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(
            factory
        )
        self.addCleanup(port.stopListening)
        session = await connectSession(
            TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port)
        )
        self.addCleanup(session.transport.loseConnection)  # type: ignore[union-attr]
        await session.ping()
        return session, servers

    def spySends(self) -> list[tuple[int, int]]:
        """
        From now on, each direct send's (bytes given, bytes left to the
        transport), in a list.
        """
        sends: list[tuple[int, int]] = []
        send = protocol._sendDirect

        def spy(sock: socket.socket, pieces: list[bytes]) -> list[bytes]:
            rest = send(sock, pieces)
            sends.append((sum(map(len, pieces)), sum(map(len, rest))))
            return rest

        self.patch(protocol, "_sendDirect", spy)
        return sends

    async def test_flushSentAtOnce(self) -> None:
        """
        A flush with nothing waiting in the transport is in the kernel when
        it returns: the transport holds none of it and does not wait for
        the reactor to write (no write interest registered).
        """
        session, _ = await self.sessions()
        transport: Any = session.transport
        self.assertIs(session._directSocket, transport.socket)
        answers = Answers()
        await session.openChannel(b"echo", Factory.forProtocol(lambda: answers))
        channel: Any = answers.transport
        channel.write(b"ping" * 100)
        session._core.flush()
        self.assertEqual((transport.dataBuffer, transport._tempDataBuffer), (b"", []))
        self.assertNotIn(transport, reactor.getWriters())
        while len(answers.received) < 400:
            await deferLater(reactor, 0.001)
        self.assertEqual(answers.received, b"ping" * 100)

    async def test_largeFlushThroughTransport(self) -> None:
        """
        A flush of more than `DIRECT_WRITE_BYTES` (bulk data) goes through
        the transport, which sends it when the reactor next polls: sent at
        once, bulk data fills the receiver's socket buffer, and a small
        message on another channel waits behind it there.
        """
        session, _ = await self.sessions()
        transport: Any = session.transport
        answers = Answers()
        await session.openChannel(b"digest", Factory.forProtocol(lambda: answers))
        channel: Any = answers.transport
        channel.write(b"b" * (2 * DIRECT_WRITE_BYTES))
        session._core.flush()
        self.assertGreater(transport._tempDataLen, DIRECT_WRITE_BYTES)
        self.assertIn(transport, reactor.getWriters())
        channel.loseWriteConnection()
        await answers.ended
        expected = hashlib.sha256(b"b" * (2 * DIRECT_WRITE_BYTES)).hexdigest()
        self.assertEqual(answers.received, expected.encode())

    async def test_restInOrder(self) -> None:
        """
        32 MiB in flushes of 32 KiB to a reader that pauses now and then:
        the kernel takes only part of some flushes, the transport sends the
        rest, and every byte arrives once and in order.
        """
        session, _ = await self.sessions()
        sends = self.spySends()
        answers = Answers()
        await session.openChannel(b"digest", Factory.forProtocol(lambda: answers))
        channel: Any = answers.transport
        block = os.urandom(1 << 15)
        digest = hashlib.sha256()
        for i in range(1024):
            piece = i.to_bytes(4, "big") + block[4:]
            digest.update(piece)
            channel.write(piece)
            session._core.flush()
            if i % 8 == 7:
                await deferLater(reactor, 0, lambda: None)
        channel.loseWriteConnection()
        await answers.ended
        assert answers.reason is not None
        answers.reason.trap(ConnectionDone)
        self.assertEqual(answers.received, digest.hexdigest().encode())
        self.assertTrue(any(0 < rest < size for size, rest in sends), sends[:20])
        self.assertLessEqual(max(size for size, _ in sends), DIRECT_WRITE_BYTES)

    async def test_resetMidFlush(self) -> None:
        """
        A direct write that meets the peer's reset sends nothing and leaves
        it all to the transport, which meets the reset too: the session and
        its channel end with `SessionLost`, never as a clean end.
        """
        session, servers = await self.sessions()
        answers = Answers()
        await session.openChannel(b"echo", Factory.forProtocol(lambda: answers))
        [server] = servers
        server.transport.abortConnection()  # type: ignore[union-attr]
        # Twisted closes it (with a reset) when the reactor next runs its
        # calls due; then, before it polls, the reset reaches our socket.
        await deferLater(reactor, 0, lambda: None)
        time.sleep(0.2)
        sends = self.spySends()
        channel: Any = answers.transport
        channel.write(b"x" * 1000)
        session._core.flush()
        self.assertEqual(len(sends), 1)
        self.assertEqual(sends[0][0], sends[0][1])  # the kernel took nothing
        await answers.ended
        assert answers.reason is not None
        self.assertIsInstance(answers.reason.value, SessionLost)
        await session.whenClosed()
