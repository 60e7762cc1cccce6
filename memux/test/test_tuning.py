"""
`memux.tuning`: a plain TCP connection tuned as a memux session tunes its
own, over real loopback connections.
"""

from __future__ import annotations

import socket
from typing import Any

from twisted.internet import defer, reactor
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase, TestCase

from memux import MultiplexingFactory, connectSession
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
