# Trial's assertions are not annotated; as for memux's own tests
# (pyproject.toml), calling them is allowed here.
# mypy: disallow-untyped-calls=False
"""
Testing your own channel protocols with memux.testing: no sockets, no
real time, every test deterministic.

The protocols under test are a tiny greeting service: the server answers
each message (a name) with a greeting, says goodbye and closes on
``bye``, and closes a channel left idle for 30 seconds.  The client sends
names and gets each answer as a Deferred.

Run the tests with trial (from the root of a checkout, or with memux
installed)::

    python -m twisted.trial examples/testing_example.py
"""

from __future__ import annotations

from collections import deque

from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IAddress, IDelayedCall, IReactorTime
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from memux import IChannelTransport, IMessageReceiver
from memux.testing import StringChannelTransport, connectedChannel

# ---------------------------------------------------------------- the code


@implementer(IMessageReceiver)
class Greeter(Protocol):
    """
    The server side: greet each name; ``bye`` ends the channel.
    """

    idleTimeout = 30.0

    def __init__(self, clock: IReactorTime) -> None:
        self.clock = clock
        self.idle: IDelayedCall | None = None

    def connectionMade(self) -> None:
        self.idle = self.clock.callLater(self.idleTimeout, self.close)

    def messageReceived(self, message: bytes) -> None:
        if self.idle is not None and self.idle.active():
            self.idle.reset(self.idleTimeout)
        transport = IChannelTransport(self.transport)
        if message == b"bye":
            transport.writeMessage(b"goodbye")
            self.close()
        else:
            transport.writeMessage(b"hello, " + message)

    def close(self) -> None:
        assert self.transport is not None
        self.transport.loseConnection()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self.idle is not None and self.idle.active():
            self.idle.cancel()


class GreeterFactory(Factory):
    """
    Builds a L{Greeter} for each channel, with the clock to time it by.
    """

    def __init__(self, clock: IReactorTime) -> None:
        self.clock = clock

    def buildProtocol(self, addr: IAddress | None) -> Greeter:
        return Greeter(self.clock)


@implementer(IMessageReceiver)
class GreetingClient(Protocol):
    """
    The client side: L{greet} sends a name and fires with the answer.
    """

    def __init__(self) -> None:
        self.waiting: deque[Deferred[bytes]] = deque()
        self.lostReason: Failure | None = None
        self.ended: Deferred[None] = Deferred()

    def greet(self, name: bytes) -> Deferred[bytes]:
        answer: Deferred[bytes] = Deferred()
        self.waiting.append(answer)
        IChannelTransport(self.transport).writeMessage(name)
        return answer

    def messageReceived(self, message: bytes) -> None:
        self.waiting.popleft().callback(message)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        while self.waiting:
            self.waiting.popleft().errback(reason)
        self.lostReason = reason
        self.ended.callback(None)


# ---------------------------------------------------------------- the tests


class GreeterOverMemuxTests(SynchronousTestCase):
    """
    The client and the server over a real memux channel, in memory.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.channel = connectedChannel(
            GreeterFactory(self.clock),
            GreetingClient(),
            service=b"greet",
            clock=self.clock,
        )
        self.client = self.channel.client

    def assertEndedCleanly(self) -> None:
        """
        The client's channel has ended with a clean close.
        """
        self.successResultOf(self.client.ended)
        reason = self.client.lostReason
        assert reason is not None
        self.assertTrue(reason.check(ConnectionDone), reason)

    def test_greets(self) -> None:
        """
        Each name is answered with a greeting.
        """
        answer = self.client.greet(b"alice")
        self.channel.pump.flush()
        self.assertEqual(self.successResultOf(answer), b"hello, alice")

    def test_messagesKeepTheirBoundaries(self) -> None:
        """
        Names sent in one go are answered one message each.
        """
        answers = [self.client.greet(name) for name in (b"a", b"b", b"c")]
        self.channel.pump.flush()
        self.assertEqual(
            [self.successResultOf(a) for a in answers],
            [b"hello, a", b"hello, b", b"hello, c"],
        )

    def test_bye(self) -> None:
        """
        ``bye`` is answered, then the server closes the channel cleanly.
        """
        answer = self.client.greet(b"bye")
        self.channel.pump.flush()
        self.assertEqual(self.successResultOf(answer), b"goodbye")
        self.assertEndedCleanly()
        # The session carries on: other channels are unaffected.
        self.assertTrue(self.channel.clientSession.connected)

    def test_idleTimeout(self) -> None:
        """
        A channel idle for 30 seconds is closed by the server; a message
        puts the timeout off.
        """
        self.clock.advance(20)
        self.client.greet(b"bob")
        self.channel.pump.flush()
        self.clock.advance(20)
        self.channel.pump.flush()
        self.assertNoResult(self.client.ended)
        self.clock.advance(10)
        self.channel.pump.flush()
        self.assertEndedCleanly()


class GreeterUnitTests(SynchronousTestCase):
    """
    The server protocol alone, on a L{StringChannelTransport}.
    """

    def test_answersEachMessage(self) -> None:
        """
        Each message received is answered with one message.
        """
        greeter = Greeter(Clock())
        transport = StringChannelTransport(service=b"greet")
        greeter.makeConnection(transport)
        greeter.messageReceived(b"carol")
        greeter.messageReceived(b"bye")
        self.assertEqual(transport.messages, [b"hello, carol", b"goodbye"])
        self.assertTrue(transport.disconnecting)
