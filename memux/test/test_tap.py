# -*- test-case-name: memux.test.test_tap -*-
"""
Tests for L{memux.tap}, the ``twistd memux`` plugin, and the built-in
services in L{memux.services}.
"""

from __future__ import annotations

from typing import Any

from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import IServiceMaker
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ServerEndpoint, UNIXServerEndpoint
from twisted.internet.interfaces import IProtocolFactory, IPushProducer
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock, deferLater
from twisted.internet.testing import MemoryReactor, StringTransport
from twisted.plugin import getPlugins
from twisted.python.failure import Failure
from twisted.python.usage import UsageError
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface import implementer

from memux import tap
from memux._engine import SessionSettings
from memux.interfaces import IChannelTransport, IChunkReceiver, IMessageReceiver
from memux.services import Chargen, Discard, Echo, builtinServices


def parse(*argv: str) -> tap.Options:
    """
    Parse C{argv} with a fresh L{tap.Options}.
    """
    options = tap.Options()
    options.parseOptions(list(argv))
    return options


class OptionsTests(SynchronousTestCase):
    """
    Tests for L{tap.Options}.
    """

    def test_defaults(self) -> None:
        """
        With no arguments the server listens on tcp:7400, serves the built-in
        services and leaves the maximum message size to the engine.
        """
        options = parse()
        self.assertEqual(options["listen"], ["tcp:7400"])
        self.assertFalse(options["no-builtins"])
        self.assertIsNone(options["max-message-size"])

    def test_listenRepeatable(self) -> None:
        """
        Every C{--listen} is kept, in order, and replaces the default.
        """
        options = parse("--listen", "tcp:7401", "--listen=unix:/tmp/memux.sock")
        self.assertEqual(options["listen"], ["tcp:7401", "unix:/tmp/memux.sock"])

    def test_listenShort(self) -> None:
        """
        C{-l} is short for C{--listen}.
        """
        self.assertEqual(parse("-l", "tcp:7401")["listen"], ["tcp:7401"])

    def test_optionsNotShared(self) -> None:
        """
        The list of endpoints belongs to one L{tap.Options} instance.
        """
        parse("--listen", "tcp:7401")
        self.assertEqual(parse()["listen"], ["tcp:7400"])

    def test_noBuiltins(self) -> None:
        """
        C{--no-builtins} sets the C{no-builtins} flag.
        """
        self.assertTrue(parse("--no-builtins")["no-builtins"])

    def test_maxMessageSize(self) -> None:
        """
        C{--max-message-size} takes a number of bytes.
        """
        self.assertEqual(parse("--max-message-size", "4096")["max-message-size"], 4096)

    def test_maxMessageSizeNotANumber(self) -> None:
        """
        A C{--max-message-size} that is not a whole number is a usage error
        naming the option.
        """
        e = self.assertRaises(UsageError, parse, "--max-message-size", "lots")
        self.assertIn("--max-message-size", str(e))

    def test_maxMessageSizeNotPositive(self) -> None:
        """
        A C{--max-message-size} below one byte is a usage error.
        """
        e = self.assertRaises(UsageError, parse, "--max-message-size", "0")
        self.assertIn("--max-message-size", str(e))

    def test_badEndpointType(self) -> None:
        """
        An endpoint description of an unknown type is a usage error that
        quotes the description.
        """
        e = self.assertRaises(UsageError, parse, "--listen", "nonsense:7400")
        self.assertIn("'nonsense:7400'", str(e))

    def test_badEndpointArgument(self) -> None:
        """
        An endpoint description with a malformed argument is a usage error.
        """
        e = self.assertRaises(UsageError, parse, "--listen", "tcp:port")
        self.assertIn("'tcp:port'", str(e))

    def test_unknownOption(self) -> None:
        """
        An unknown option is a usage error.
        """
        self.assertRaises(UsageError, parse, "--frobnicate")


class PluginTests(SynchronousTestCase):
    """
    Tests for the plugin in C{twisted/plugins/memux_plugin.py}.
    """

    def test_discoverable(self) -> None:
        """
        Twisted's plugin system finds a service maker with the tap name
        C{memux} whose options and C{makeService} are L{memux.tap}'s.
        """
        makers = [m for m in getPlugins(IServiceMaker) if m.tapname == "memux"]
        self.assertEqual(len(makers), 1)
        [maker] = makers
        self.assertIs(maker.options, tap.Options)
        self.assertIs(maker.makeService, tap.makeService)
        self.assertTrue(maker.description)


class FactoryRecorder:
    """
    Stands in for L{memux.protocol.MultiplexingFactory}, recording how
    L{tap.makeService} builds it.
    """

    def __init__(self, services: Any, **kwargs: Any) -> None:
        self.services = services
        self.kwargs = kwargs


class MakeServiceTests(SynchronousTestCase):
    """
    Tests for L{tap.makeService}.
    """

    def makeService(self, *argv: str) -> tuple[MemoryReactor, list[Any]]:
        """
        Make the service for C{argv} with a L{MemoryReactor}; return the
        reactor and the top service's children.
        """
        reactor = MemoryReactor()
        top = tap.makeService(parse(*argv), reactor=reactor)
        return reactor, list(top)

    def recordFactory(self) -> None:
        """
        Make L{tap.makeService} build L{FactoryRecorder}s instead of
        multiplexing factories.
        """
        import memux.protocol

        self.patch(memux.protocol, "MultiplexingFactory", FactoryRecorder)

    def test_oneServicePerListen(self) -> None:
        """
        Each C{--listen} gives one L{StreamServerEndpointService} with the
        endpoint described, all sharing one L{MultiplexingFactory}.
        """
        from memux.protocol import MultiplexingFactory

        reactor, children = self.makeService(
            "--listen", "tcp:7401", "--listen", "unix:/tmp/memux-test.sock"
        )
        self.assertEqual(len(children), 2)
        for child in children:
            self.assertIsInstance(child, StreamServerEndpointService)
            self.assertIsInstance(child.factory, MultiplexingFactory)
            self.assertIs(child.factory, children[0].factory)
        self.assertIsInstance(children[0].endpoint, TCP4ServerEndpoint)
        self.assertEqual(children[0].endpoint._port, 7401)
        self.assertIsInstance(children[1].endpoint, UNIXServerEndpoint)
        self.assertEqual(children[1].endpoint._address, "/tmp/memux-test.sock")

    def test_defaultListens(self) -> None:
        """
        Without C{--listen}, the service listens on TCP port 7400 once
        started, with its multiplexing factory.
        """
        reactor, children = self.makeService()
        [child] = children
        child.startService()
        self.addCleanup(child.stopService)
        [(port, factory, backlog, interface)] = reactor.tcpServers
        self.assertEqual(port, 7400)
        self.assertIs(factory, child.factory)

    def test_builtins(self) -> None:
        """
        By default the factory serves exactly the built-in services.
        """
        self.recordFactory()
        reactor, [child] = self.makeService()
        self.assertEqual(set(child.factory.services), set(builtinServices()))

    def test_noBuiltins(self) -> None:
        """
        With C{--no-builtins} the factory serves no service.
        """
        self.recordFactory()
        reactor, [child] = self.makeService("--no-builtins")
        self.assertEqual(child.factory.services, {})

    def test_defaultSettings(self) -> None:
        """
        Without C{--max-message-size} the factory gets the default settings.
        """
        self.recordFactory()
        reactor, [child] = self.makeService()
        self.assertIsNone(child.factory.kwargs.get("settings"))

    def test_maxMessageSize(self) -> None:
        """
        C{--max-message-size} reaches the factory's session settings.
        """
        self.recordFactory()
        reactor, [child] = self.makeService("--max-message-size", "1234")
        self.assertEqual(child.factory.kwargs["settings"].maxMessageSize, 1234)


@implementer(IChannelTransport)
class MessageStringTransport(StringTransport):
    """
    A L{StringTransport} that also records message boundaries, as a memux
    channel transport sends them.

    @ivar messages: the messages ended so far.
    """

    channel = 2
    service = b"echo"
    session = None

    def __init__(self) -> None:
        super().__init__()
        self.messages: list[bytes] = []
        self._ended = 0

    def writeMessage(self, data: bytes) -> None:
        """
        Write C{data} as the end of the current message.
        """
        self.write(data)
        self.endMessage()

    def endMessage(self) -> None:
        """
        End the current message.
        """
        value: bytes = self.value()
        self.messages.append(value[self._ended :])
        self._ended = len(value)


class EchoTests(SynchronousTestCase):
    """
    Tests for L{Echo}.
    """

    def setUp(self) -> None:
        self.transport = MessageStringTransport()
        self.protocol = Echo()
        self.protocol.makeConnection(self.transport)

    def test_echoesBytes(self) -> None:
        """
        Bytes received are written back unchanged.
        """
        self.protocol.dataReceived(b"hello, ")
        self.protocol.dataReceived(b"world")
        self.assertEqual(self.transport.value(), b"hello, world")

    def test_echoesChunks(self) -> None:
        """
        L{Echo} takes chunks of messages and sends each back at once,
        ending the echoed message where the received one ends.
        """
        self.assertTrue(IChunkReceiver.providedBy(self.protocol))
        self.assertFalse(IMessageReceiver.providedBy(self.protocol))
        self.protocol.chunkReceived(b"on", False)
        self.assertEqual(self.transport.value(), b"on")
        self.assertEqual(self.transport.messages, [])
        self.protocol.chunkReceived(b"e", True)
        self.protocol.chunkReceived(b"", True)
        self.protocol.chunkReceived(b"two", True)
        self.assertEqual(self.transport.messages, [b"one", b"", b"two"])

    def test_throttlesItsPeer(self) -> None:
        """
        L{Echo} registers its transport as the streaming producer of its own
        output, so reading pauses while echoes cannot be sent.
        """
        self.assertIs(self.transport.producer, self.transport)
        self.assertTrue(self.transport.streaming)

    def test_plainTransport(self) -> None:
        """
        On a transport that is not a push producer, L{Echo} registers no
        producer and still echoes.
        """

        class PlainTransport:
            written = b""

            def write(self, data: bytes) -> None:
                self.written += data

        transport = PlainTransport()
        protocol = Echo()
        protocol.makeConnection(transport)
        protocol.dataReceived(b"x")
        self.assertEqual(transport.written, b"x")


class DiscardTests(SynchronousTestCase):
    """
    Tests for L{Discard}.
    """

    def test_discards(self) -> None:
        """
        Nothing received is written back or kept.
        """
        transport = StringTransport()
        protocol = Discard()
        protocol.makeConnection(transport)
        protocol.dataReceived(b"x" * 100000)
        self.assertEqual(transport.value(), b"")
        self.assertFalse(transport.disconnecting)


class PausingTransport(StringTransport):
    """
    A L{StringTransport} that pauses its producer on every write, as TCP
    does when its buffer fills.
    """

    def write(self, data: bytes) -> None:
        """
        Record C{data}, then pause the producer.
        """
        super().write(data)
        assert self.producer is not None
        self.producer.pauseProducing()


class ChargenTests(SynchronousTestCase):
    """
    Tests for L{Chargen}.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.transport = StringTransport()
        self.protocol = Chargen(self.clock, interval=1)
        self.protocol.makeConnection(self.transport)

    def takeOutput(self) -> bytes:
        """
        Return and clear what was written so far.
        """
        value: bytes = self.transport.value()
        self.transport.clear()
        return value

    def test_registersAsStreamingProducer(self) -> None:
        """
        L{Chargen} is an L{IPushProducer} registered, streaming, on its
        transport.
        """
        self.assertTrue(IPushProducer.providedBy(self.protocol))
        self.assertIs(self.transport.producer, self.protocol)
        self.assertTrue(self.transport.streaming)

    def test_pattern(self) -> None:
        """
        The output is the RFC 864 pattern: 72 printable characters per line,
        each line starting one character later, ending in CRLF, wrapping after
        the 95 printable ASCII characters.
        """
        output = self.takeOutput()
        lines = output.split(b"\r\n")
        self.assertEqual(lines[0], bytes(range(0x20, 0x20 + 72)))
        self.assertEqual(lines[1], bytes(range(0x21, 0x21 + 72)))
        self.assertEqual(lines[94], b"~" + bytes(range(0x20, 0x20 + 71)))
        self.assertEqual(output[: 95 * 74], Chargen.block)
        self.clock.advance(1)
        self.assertEqual(self.takeOutput(), Chargen.block)

    def test_streams(self) -> None:
        """
        L{Chargen} writes one block at once and another each reactor turn
        for as long as it is not paused.
        """
        self.assertEqual(len(self.takeOutput()), len(Chargen.block))
        for _ in range(3):
            self.assertEqual(len(self.clock.getDelayedCalls()), 1)
            self.clock.advance(1)
            self.assertEqual(len(self.takeOutput()), len(Chargen.block))

    def test_pauseAndResume(self) -> None:
        """
        After C{pauseProducing} nothing is written and nothing is scheduled
        until C{resumeProducing}, which starts writing again after the
        interval.
        """
        self.takeOutput()
        self.protocol.pauseProducing()
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.clock.advance(10)
        self.assertEqual(self.takeOutput(), b"")
        self.protocol.resumeProducing()
        self.assertEqual(self.takeOutput(), b"")
        self.clock.advance(1)
        self.assertEqual(self.takeOutput(), Chargen.block)

    def test_resumeTwice(self) -> None:
        """
        Resuming an unpaused producer does not schedule a second writer.
        """
        self.protocol.resumeProducing()
        self.protocol.resumeProducing()
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)

    def test_pausedDuringWrite(self) -> None:
        """
        A transport that pauses L{Chargen} inside C{write} gets no further
        block until it resumes it.
        """
        transport = PausingTransport()
        protocol = Chargen(self.clock, interval=1)
        protocol.makeConnection(transport)
        self.assertEqual(transport.value(), Chargen.block)
        self.clock.advance(1)
        self.assertEqual(transport.value(), Chargen.block)
        protocol.resumeProducing()
        self.clock.advance(1)
        self.assertEqual(transport.value(), Chargen.block * 2)

    def test_stopProducing(self) -> None:
        """
        After C{stopProducing} nothing more is written, even if resumed.
        """
        self.takeOutput()
        self.protocol.stopProducing()
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.protocol.resumeProducing()
        self.clock.advance(1)
        self.assertEqual(self.takeOutput(), b"")

    def test_stopsOnConnectionLost(self) -> None:
        """
        Losing the connection stops the generator.
        """
        self.takeOutput()
        self.protocol.connectionLost(Failure(ConnectionError()))
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.clock.advance(1)
        self.assertEqual(self.takeOutput(), b"")

    def test_discardsInput(self) -> None:
        """
        Data received is ignored: the output is the pattern alone.
        """
        self.takeOutput()
        self.protocol.dataReceived(b"ignored")
        self.assertEqual(self.takeOutput(), b"")


class ChargenReactorTests(TestCase):
    """
    Tests for L{Chargen} with its defaults: the global reactor, one block
    per reactor turn.
    """

    def test_blockPerTurn(self) -> Deferred[None]:
        """
        L{Chargen} writes one block per reactor turn: it keeps writing, and
        it returns to the reactor in between.
        """
        from twisted.internet import reactor

        transport = StringTransport()
        protocol = Chargen()
        protocol.makeConnection(transport)
        self.addCleanup(protocol.stopProducing)
        self.assertEqual(transport.value(), Chargen.block)

        def check(ignored: None) -> None:
            written = len(transport.value())
            self.assertEqual(written % len(Chargen.block), 0)
            self.assertGreater(written, len(Chargen.block))

        return deferLater(reactor, 0.01, lambda: None).addCallback(check)


class BuiltinServicesTests(SynchronousTestCase):
    """
    Tests for L{builtinServices}.
    """

    def test_services(self) -> None:
        """
        The built-in services are echo, discard and chargen, each a protocol
        factory building the matching protocol.
        """
        services = builtinServices()
        expected = {b"echo": Echo, b"discard": Discard, b"chargen": Chargen}
        self.assertEqual(set(services), set(expected))
        for name, protocolClass in expected.items():
            factory = services[name]
            self.assertTrue(IProtocolFactory.providedBy(factory))
            assert isinstance(factory, Factory)
            self.assertIsInstance(factory.buildProtocol(None), protocolClass)

    def test_fresh(self) -> None:
        """
        Each call returns a new mapping, so callers may change theirs.
        """
        self.assertIsNot(builtinServices(), builtinServices())


class MessageRecorder(Protocol):
    """
    A channel protocol that keeps whole messages, and can stop reading
    after a number of bytes.

    @ivar pauseAfter: pause the transport once this many bytes arrived.
    """

    pauseAfter: int | None = None

    def __init__(self) -> None:
        self.received = b""
        self.messages: list[bytes] = []

    def dataReceived(self, data: bytes) -> None:
        """
        Keep C{data}; pause the transport once C{pauseAfter} bytes arrived.
        """
        self.received += data
        if self.pauseAfter is not None and len(self.received) >= self.pauseAfter:
            assert self.transport is not None
            IPushProducer(self.transport).pauseProducing()


@implementer(IMessageReceiver)
class WholeMessageRecorder(MessageRecorder):
    """
    A L{MessageRecorder} that takes whole messages.
    """

    def messageReceived(self, message: bytes) -> None:
        """
        Keep C{message}.
        """
        self.messages.append(message)


class BuiltinServicesOverMemuxTests(SynchronousTestCase):
    """
    The built-in services served by real memux sessions, connected in
    memory.
    """

    def setUp(self) -> None:
        from memux.testing import connectedSessions

        self.clock = Clock()
        self.client, self.server, self.pump = connectedSessions(
            builtinServices(self.clock), clock=self.clock
        )

    def open(self, service: bytes, protocol: MessageRecorder) -> MessageRecorder:
        """
        Open a channel for C{service} from the client, connected to
        C{protocol}.
        """
        d = self.client.openChannel(service, Factory.forProtocol(lambda: protocol))
        self.assertIs(self.successResultOf(d), protocol)
        return protocol

    def test_echoMessages(self) -> None:
        """
        The echo service sends each message back as one message.
        """
        proto = self.open(b"echo", WholeMessageRecorder())
        transport = IChannelTransport(proto.transport)
        transport.writeMessage(b"hello")
        transport.writeMessage(b"")
        transport.write(b"wor")
        transport.write(b"ld")
        transport.endMessage()
        self.pump.flush()
        self.assertEqual(proto.messages, [b"hello", b"", b"world"])

    def test_echoBytes(self) -> None:
        """
        The echo service sends bytes back to a protocol that reads bytes.
        """
        proto = self.open(b"echo", MessageRecorder())
        assert proto.transport is not None
        proto.transport.write(b"hello, world")
        self.pump.flush()
        self.assertEqual(proto.received, b"hello, world")

    def test_echoThrottlesNonReader(self) -> None:
        """
        A peer that sends to echo without reading the echoes is stopped by
        flow control: the server stops inviting more once the echoes back up,
        so what it takes in stays within a few credit windows.
        """
        proto = MessageRecorder()
        proto.pauseAfter = 1
        self.open(b"echo", proto)
        assert proto.transport is not None
        window = SessionSettings().channelCredit
        for _ in range(64):
            proto.transport.write(b"x" * 65536)
            self.pump.flush()
        self.assertLess(self.server.counters()["bytesReceived"], 4 * window)

    def test_discard(self) -> None:
        """
        The discard service sends nothing back and keeps the channel open.
        """
        proto = self.open(b"discard", MessageRecorder())
        assert proto.transport is not None
        proto.transport.write(b"x" * 100000)
        self.pump.flush()
        self.assertEqual(proto.received, b"")
        from memux.protocol import ChannelTransport

        assert isinstance(proto.transport, ChannelTransport)
        self.assertTrue(proto.transport.connected)
        self.assertFalse(proto.transport.disconnecting)

    def test_chargenBackpressure(self) -> None:
        """
        The chargen service sends the RFC 864 pattern until the reader stops
        reading; then it stops within the channel's credit, and carries on
        when the reader resumes.
        """
        proto = MessageRecorder()
        proto.pauseAfter = 1
        self.open(b"chargen", proto)
        self.pump.flush()
        held = len(proto.received)
        self.assertEqual(proto.received, Chargen.block[:held])
        sent = self.server.counters()["bytesSent"]
        self.pump.flush()
        self.clock.advance(1)
        self.pump.flush()
        self.assertEqual(self.server.counters()["bytesSent"], sent)
        self.assertLess(sent, 4 * SessionSettings().channelCredit)

        proto.pauseAfter = held + 1000000
        assert proto.transport is not None
        IPushProducer(proto.transport).resumeProducing()
        self.pump.flush()
        self.assertGreaterEqual(len(proto.received), held + 1000000)
        pattern = Chargen.block * (len(proto.received) // len(Chargen.block) + 1)
        self.assertEqual(proto.received, pattern[: len(proto.received)])
