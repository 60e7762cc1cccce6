"""
Tests for L{memux.testing}, the helpers for testing code that runs over
memux, and for the testing example of ``doc/testing.rst``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import cast

from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IAddress
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.trial.unittest import SkipTest, SynchronousTestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from memux._engine import SessionSettings
from memux._wire import ErrorCode
from memux.interfaces import IChannelTransport, IMessageReceiver
from memux.protocol import ChannelAddress, ChannelTransport, MemuxProtocol
from memux.services import Echo
from memux.testing import (
    StringChannelTransport,
    connectedChannel,
    connectedSessions,
)

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"


@implementer(IMessageReceiver)
class Hello(Protocol):
    """
    Says hello on connection and keeps the messages it receives.
    """

    def __init__(self) -> None:
        self.messages: list[bytes] = []
        self.reason: Failure | None = None

    def connectionMade(self) -> None:
        IChannelTransport(self.transport).writeMessage(b"hello")

    def messageReceived(self, message: bytes) -> None:
        self.messages.append(message)

    def connectionLost(self, reason: Failure | None = None) -> None:
        self.reason = reason


class ConnectedSessionsTests(SynchronousTestCase):
    """
    L{connectedSessions}.
    """

    def test_pair(self) -> None:
        """
        It returns a client and a server session connected in memory, and a
        pump that carries a channel's data between them.
        """
        client, server, pump = connectedSessions({b"echo": Factory.forProtocol(Echo)})
        self.assertIsInstance(client, MemuxProtocol)
        self.assertTrue(client.client)
        self.assertFalse(server.client)
        proto = cast(
            Hello,
            self.successResultOf(
                client.openChannel(b"echo", Factory.forProtocol(Hello))
            ),
        )
        pump.flush()
        self.assertEqual(proto.messages, [b"hello"])

    def test_settingsAndClock(self) -> None:
        """
        Each side gets its settings, and both run on the given clock.
        """
        clock = Clock()
        client, server, pump = connectedSessions(
            serverSettings=SessionSettings(maxMessageSize=1000),
            clientSettings=SessionSettings(maxMessageSize=2000),
            clock=clock,
        )
        self.assertEqual(server.settings.maxMessageSize, 1000)
        self.assertEqual(client.settings.maxMessageSize, 2000)
        self.assertIs(pump.clock, clock)


class ConnectedChannelTests(SynchronousTestCase):
    """
    L{connectedChannel}.
    """

    def test_bothProtocols(self) -> None:
        """
        It connects the given client protocol to one the server factory
        builds, on real channel transports, and delivers what each wrote on
        connection.
        """
        client = Hello()
        channel = connectedChannel(Factory.forProtocol(Hello), client)
        self.assertIs(channel.client, client)
        self.assertIsInstance(channel.server, Hello)
        self.assertIsInstance(client.transport, ChannelTransport)
        self.assertIsInstance(channel.server.transport, ChannelTransport)
        self.assertEqual(client.messages, [b"hello"])
        self.assertEqual(channel.server.messages, [b"hello"])
        self.assertIs(channel.server.transport.session, channel.serverSession)
        self.assertIs(
            cast(ChannelTransport, client.transport).session, channel.clientSession
        )

    def test_service(self) -> None:
        """
        The channel is opened for the given service, and the server factory
        gets the channel's address.
        """
        addresses: list[IAddress] = []

        class Recording(Factory):
            def buildProtocol(self, addr: IAddress | None) -> Hello:
                assert addr is not None
                addresses.append(addr)
                return Hello()

        channel = connectedChannel(Recording(), Hello(), service=b"greet")
        self.assertEqual(channel.server.transport.service, b"greet")
        [address] = addresses
        self.assertEqual(cast(ChannelAddress, address).service, b"greet")

    def test_clockAndPump(self) -> None:
        """
        The given clock runs both sessions; the pump delivers later writes
        and closes.
        """
        clock = Clock()
        channel = connectedChannel(Factory.forProtocol(Hello), Hello(), clock=clock)
        self.assertIs(channel.clock, clock)
        channel.client.transport.writeMessage(b"more")  # type: ignore[union-attr]
        channel.client.transport.loseConnection()  # type: ignore[union-attr]
        channel.pump.flush()
        self.assertEqual(channel.server.messages, [b"hello", b"more"])
        reason = channel.server.reason
        self.assertIsNotNone(reason)
        self.assertTrue(reason.check(ConnectionDone))

    def test_settings(self) -> None:
        """
        Each session gets its settings.
        """
        channel = connectedChannel(
            Factory.forProtocol(Hello),
            Hello(),
            serverSettings=SessionSettings(maxMessageSize=1000),
            clientSettings=SessionSettings(maxMessageSize=2000),
        )
        self.assertEqual(channel.serverSession.settings.maxMessageSize, 1000)
        self.assertEqual(channel.clientSession.settings.maxMessageSize, 2000)

    def test_noProtocol(self) -> None:
        """
        If the server factory builds no protocol, it says so.
        """

        class Declining(Factory):
            def buildProtocol(self, addr: IAddress | None) -> None:
                return None

        e = self.assertRaises(RuntimeError, connectedChannel, Declining(), Hello())
        self.assertIn("built no protocol", str(e))

    def test_cannotOpen(self) -> None:
        """
        If the channel cannot be opened, it says why.
        """
        e = self.assertRaises(
            RuntimeError,
            connectedChannel,
            Factory.forProtocol(Hello),
            Hello(),
            service="text",
        )
        self.assertIn("service must be bytes", str(e))


class StringChannelTransportTests(SynchronousTestCase):
    """
    L{StringChannelTransport}.
    """

    def test_interface(self) -> None:
        """
        It provides L{IChannelTransport}, with the channel, service and
        session given.
        """
        transport = StringChannelTransport(5, b"svc")
        self.assertTrue(verifyObject(IChannelTransport, transport))
        self.assertEqual(transport.channel, 5)
        self.assertEqual(transport.service, b"svc")
        self.assertIsNone(transport.session)

    def test_messages(self) -> None:
        """
        ``writeMessage`` records one message; ``write`` calls build one
        that ``endMessage`` ends; ``value()`` has every byte.
        """
        transport = StringChannelTransport()
        transport.writeMessage(b"one")
        transport.write(b"t")
        transport.write(b"wo")
        self.assertEqual(transport.partialMessage, b"two")
        transport.endMessage()
        transport.writeMessage(b"")
        transport.write(b"thr")
        transport.writeMessage(b"ee")
        self.assertEqual(transport.messages, [b"one", b"two", b"", b"three"])
        self.assertEqual(transport.partialMessage, b"")
        self.assertEqual(transport.value(), b"onetwothree")

    def test_halfCloseAndReset(self) -> None:
        """
        ``loseWriteConnection`` and ``resetChannel`` are recorded.
        """
        transport = StringChannelTransport()
        transport.loseWriteConnection()
        self.assertTrue(transport.writeClosed)
        self.assertFalse(transport.disconnecting)
        transport.resetChannel(ErrorCode.CONNECT_ERROR, "unreachable")
        self.assertEqual(transport.resetWith, (ErrorCode.CONNECT_ERROR, "unreachable"))
        self.assertTrue(transport.disconnecting)

    def test_drivesAProtocol(self) -> None:
        """
        A message protocol connected to it writes messages to it.
        """
        proto = Hello()
        transport = StringChannelTransport()
        proto.makeConnection(transport)
        self.assertEqual(transport.messages, [b"hello"])


class TestingExampleTests(SynchronousTestCase):
    """
    The example of doc/testing.rst runs, with trial, and passes.
    """

    def test_example(self) -> None:
        """
        ``python -m twisted.trial examples/testing_example.py`` passes all
        its tests.
        """
        script = EXAMPLES / "testing_example.py"
        if not script.exists():
            raise SkipTest(f"{script} is not here (installed without the examples)")
        # Its own directory, so that its _trial_temp is not ours.
        cwd = tempfile.mkdtemp(prefix="memux-")
        self.addCleanup(shutil.rmtree, cwd, ignore_errors=True)
        done = subprocess.run(
            [sys.executable, "-m", "twisted.trial", str(script)],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=cwd,
            env=dict(os.environ, PYTHONPATH=str(ROOT)),
        )
        self.assertEqual(done.returncode, 0, done.stdout + done.stderr)
        self.assertIn("PASSED (successes=5)", done.stdout)

    def test_docShowsTheExample(self) -> None:
        """
        doc/testing.rst shows the example's code as it is in the file.
        """
        doc = ROOT / "doc" / "testing.rst"
        script = EXAMPLES / "testing_example.py"
        if not (doc.exists() and script.exists()):
            raise SkipTest("doc/ or examples/ is not here")
        text = doc.read_text(encoding="utf-8")
        lines = text.split(".. code-block:: python\n\n", 1)[1].splitlines()
        shown: list[str] = []
        for line in lines:
            if line and not line.startswith("    "):
                break
            shown.append(line[4:])
        source = script.read_text(encoding="utf-8")
        code = source[source.index("from __future__ import annotations") :]
        self.assertEqual("\n".join(shown).strip(), code.strip())
