"""
Issue 11, item 2: an abnormal end must never look like a clean one.

A transfer through a tunnel that is cut short (a process killed, a
connection reset, ``memux forward`` interrupted) reaches the far end as
an abnormal end: an RST on a TCP connection, a reset on a channel, never
a FIN that would pass for a complete transfer.  And ``memux forward``
says so, even with ``-q``, and lets transfers finish for a while when
interrupted.

L{ForwardStopTests} drive L{ForwardCommand} in memory;
L{ProcessTests} run the whole chain with real processes and sockets:
this test's client, ``memux forward``, ``twistd memux --service
sink=tcp:...`` and a sink server in this test's reactor.
"""

from __future__ import annotations

import io
import sys
from typing import Any, cast

from twisted.internet import defer
from twisted.internet.address import IPv4Address
from twisted.internet.endpoints import (
    TCP4ClientEndpoint,
    TCP4ServerEndpoint,
    connectProtocol,
)
from twisted.internet.error import ConnectionLost, ConnectionRefusedError
from twisted.internet.interfaces import (
    IHalfCloseableProtocol,
    IListeningPort,
    IProcessTransport,
    IProtocolFactory,
    IReactorProcess,
    IReactorTCP,
    IStreamClientEndpoint,
    IStreamServerEndpoint,
)
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.internet.task import deferLater
from twisted.internet.testing import MemoryReactorClock
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase
from zope.interface import implementer

from memux import ChannelReset, ErrorCode
from memux._cli import ExitStatus, Reporter, SessionCache, buildParser, makeCommand
from memux._cli._forward import ForwardCommand
from memux.protocol import MemuxProtocol
from memux.test._fakes import EndingRecorder, FakeTCP, loseSessions
from memux.test._helpers import (
    ROOT,
    CLIProcess,
    cliEnvironment,
    freePort,
    spawnCLI,
)
from memux.testing import connectedSessions

# ------------------------------------------------------------ in memory


class InMemorySessions(SessionCache):
    """
    A L{SessionCache} whose one session is already made (in memory).
    """

    def __init__(self, session: MemuxProtocol) -> None:
        super().__init__(cast(IStreamClientEndpoint, None))
        self.session = session

    def get(self) -> defer.Deferred[MemuxProtocol]:
        return defer.succeed(self.session)

    def close(self) -> defer.Deferred[None]:
        self.session.loseConnection()
        return self.session.whenClosed()


class FakePort:
    """
    A listening port that records whether it still listens.
    """

    listening = True

    def stopListening(self) -> defer.Deferred[None]:
        self.listening = False
        return defer.succeed(None)

    def getHost(self) -> IPv4Address:
        return IPv4Address("TCP", "127.0.0.1", 8080)


@implementer(IStreamServerEndpoint)
class FakeServerEndpoint:
    """
    Listens on a L{FakePort}, keeping the factory to build connections.
    """

    def __init__(self) -> None:
        self.port = FakePort()
        self.factory: IProtocolFactory | None = None

    def listen(self, factory: IProtocolFactory) -> defer.Deferred[IListeningPort]:
        self.factory = factory
        return defer.succeed(cast(IListeningPort, self.port))


class ForwardStopTests(TestCase):
    """
    L{ForwardCommand} in memory: its session is an in-memory one to a server
    whose service records its channels, and its local connections are
    L{FakeTCP}s.
    """

    def setUp(self) -> None:
        self.reactor = MemoryReactorClock()
        self.served: list[EndingRecorder] = []

        def record() -> EndingRecorder:
            recorder = EndingRecorder()
            self.served.append(recorder)
            return recorder

        self.client, self.server, self.pump = connectedSessions(
            {b"svc": Factory.forProtocol(record)}, clock=self.reactor
        )
        self.stderr = io.StringIO()
        self.local = FakeServerEndpoint()
        self.interruptAgain: list[Any] = []
        self.command = ForwardCommand(
            self.local,
            cast(IStreamClientEndpoint, None),
            "tcp:server.example:7400",
            b"svc",
            None,
            Reporter(self.stderr, "memux forward: ", quiet=True),
            grace=5.0,
            catchSignals=lambda reactor, callback: self.interruptAgain.append(callback),
        )
        self.command.sessions = InMemorySessions(self.client)
        self.command.run(self.reactor)
        # The command pings its first session before it listens.
        self.pump.flush()

    def accept(self, port: int, data: bytes = b"upload") -> tuple[Any, FakeTCP]:
        """
        A local connection from port C{port} that sends C{data}; return its
        protocol and transport.
        """
        assert self.local.factory is not None
        protocol: Any = self.local.factory.buildProtocol(
            IPv4Address("TCP", "127.0.0.1", port)
        )
        local = FakeTCP(self.reactor)
        local.protocol = protocol
        protocol.makeConnection(local)
        protocol.dataReceived(data)
        self.pump.flush()
        return protocol, local

    def stop(self) -> defer.Deferred[None] | None:
        """
        Do what SIGINT does: run the triggers before the reactor's shutdown.
        """
        [(stopping, args, kw)] = self.reactor.triggers["before"]["shutdown"]
        result: defer.Deferred[None] | None = stopping(*args, **kw)
        return result

    def test_stopLetsOpenConnectionsFinish(self) -> None:
        """
        When stopped, ``forward`` stops listening but holds the shutdown
        while connections are open; once they have ended in order, it lets
        it go on, with status 0 and nothing said of cutting.
        """
        locals = [self.accept(50001)[1], self.accept(50002)[1]]
        stopping = self.stop()
        self.assertFalse(self.local.port.listening)
        assert stopping is not None
        self.assertNoResult(stopping)
        for served in self.served:
            assert served.transport is not None
            served.transport.write(b"answer")
            served.transport.loseConnection()
        self.pump.flush()
        self.assertNoResult(stopping)
        for local in locals:
            local.peerFin()
        self.pump.flush()
        self.successResultOf(stopping)
        for local in locals:
            self.assertEqual(local.value(), b"answer")
            self.assertEqual(local.calls, ["loseWriteConnection", "loseConnection"])
        self.assertEqual(self.command.interrupted(), ExitStatus.OK)
        self.assertEqual(self.stderr.getvalue(), "")

    def test_stopCutsAfterGrace(self) -> None:
        """
        Connections still open after the grace period are aborted, their
        channels reset; ``forward`` says how many it cut (even with
        ``-q``) and its status is not 0.
        """
        protocol, local = self.accept(50001)
        stopping = self.stop()
        assert stopping is not None
        self.reactor.advance(4.9)
        self.assertEqual(local.calls, [])
        self.reactor.advance(0.2)
        self.pump.flush()
        self.assertEqual(local.calls, ["abortConnection"])
        [served] = self.served
        assert served.reason is not None
        error = served.reason.value
        assert isinstance(error, ChannelReset)
        self.assertEqual(
            (error.code, error.reason), (ErrorCode.CANCEL, "memux forward was stopped")
        )
        self.successResultOf(stopping)
        self.assertEqual(
            self.stderr.getvalue(),
            "memux forward: stopped: cut 1 connection still open after 5 s\n",
        )
        self.assertEqual(self.command.interrupted(), ExitStatus.INTERRUPTED)

    def test_interruptAgainCutsNow(self) -> None:
        """
        A second SIGINT or SIGTERM during the grace period cuts what is
        still open at once.
        """
        self.accept(50001)
        self.accept(50002)
        stopping = self.stop()
        assert stopping is not None
        [interruptAgain] = self.interruptAgain
        interruptAgain()
        self.pump.flush()
        self.successResultOf(stopping)
        self.assertEqual(
            self.stderr.getvalue(),
            "memux forward: stopped: cut 2 connections still open"
            " when interrupted again\n",
        )
        self.assertEqual(self.command.interrupted(), ExitStatus.INTERRUPTED)

    def test_abnormalEndsReported(self) -> None:
        """
        Each connection that ends abnormally is reported on its own line,
        even with ``-q``: one cut by the loss of the session, one reset by
        its client.
        """
        self.accept(50001, b"x" * 2048)
        _, local = self.accept(50002)
        local.peerReset()
        assert self.served[0].transport is not None
        self.served[0].transport.write(b"y" * 3000)
        self.pump.flush()
        loseSessions(self.pump)
        lines = self.stderr.getvalue().splitlines()
        self.assertEqual(
            lines[0],
            "memux forward: connection from 127.0.0.1:50002 reset or lost by its"
            " client after 6 B sent and 0 B received; its channel was reset",
        )
        self.assertRegex(
            lines[1],
            r"^memux forward: connection from 127\.0\.0\.1:50001 cut after 2\.0 KiB"
            r" sent and 2\.9 KiB received: memux session lost: ",
        )
        self.assertEqual(len(lines), 2)


class GraceOptionTests(TestCase):
    """
    ``memux forward --grace SECONDS``.
    """

    def command(self, *options: str) -> ForwardCommand:
        """
        The command ``memux forward OPTIONS 8080 server.example:7400 web``
        makes.
        """
        args = buildParser().parse_args(
            ["forward", *options, "8080", "server.example:7400", "web"]
        )
        made = makeCommand(args, MemoryReactorClock(), Reporter(io.StringIO(), ""))
        assert isinstance(made, ForwardCommand)
        return made

    def test_grace(self) -> None:
        """
        The grace period is 5 seconds unless ``--grace`` says otherwise; 0
        is allowed (cut at once), a negative number is not.
        """
        self.assertEqual(self.command().grace, 5.0)
        self.assertEqual(self.command("--grace", "0.5").grace, 0.5)
        self.assertEqual(self.command("--grace", "0").grace, 0.0)
        stderr = io.StringIO()
        self.patch(sys, "stderr", stderr)
        with self.assertRaises(SystemExit) as exit:
            self.command("--grace", "-1")
        self.assertEqual(exit.exception.code, ExitStatus.USAGE)
        self.assertIn("argument --grace: must be at least 0 s", stderr.getvalue())


# ------------------------------------------------------------ real processes


@implementer(IHalfCloseableProtocol)
class Peer(Protocol):
    """
    One end of a test connection, the sink's or the client's: sends
    C{send} on connection, counts what it receives, and records how its
    connection ended in C{ending}: C{"FIN"} when the other end closed in
    order (C{recv} returned C{b""}), C{"RST"} when it was reset (Twisted
    reports C{ECONNRESET} as L{ConnectionLost}, and nothing else ends a
    connection so here).  A FIN is answered with an orderly close, after
    the count of bytes received with C{answer}.
    """

    def __init__(self, send: bytes = b"", answer: bool = False) -> None:
        self.send = send
        self.answer = answer
        self.received = 0
        self.data = b""
        self.ending: str | None = None
        self.ended: defer.Deferred[str] = defer.Deferred()
        self._waiting: list[tuple[int, defer.Deferred[None]]] = []

    def connectionMade(self) -> None:
        assert self.transport is not None
        if self.send:
            self.transport.write(self.send)

    def dataReceived(self, data: bytes) -> None:
        self.received += len(data)
        if len(self.data) < 64:
            self.data += data
        for waiter in list(self._waiting):
            if self.received >= waiter[0]:
                self._waiting.remove(waiter)
                waiter[1].callback(None)

    def whenReceived(self, count: int) -> defer.Deferred[None]:
        """
        Fire once C{count} bytes have come.
        """
        d: defer.Deferred[None] = defer.Deferred()
        self._waiting.append((count, d))
        self.dataReceived(b"")
        return d

    def readConnectionLost(self) -> None:
        self.ending = "FIN"
        assert self.transport is not None
        if self.answer:
            self.transport.write(b"%d bytes" % (self.received,))
        self.transport.loseConnection()

    def writeConnectionLost(self) -> None:
        pass

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self.ending is None:
            self.ending = "RST" if reason.check(ConnectionLost) else str(reason.value)
        for _, d in self._waiting:
            d.errback(AssertionError(f"ended ({self.ending}) first"))
        self._waiting = []
        self.ended.callback(self.ending)


class Sink(Factory):
    """
    The backend: builds a L{Peer} per connection, and fires C{first} with
    the first.
    """

    def __init__(self, send: bytes = b"") -> None:
        self.send = send
        self.first: defer.Deferred[Peer] = defer.Deferred()

    def buildProtocol(self, addr: Any) -> Peer:
        peer = Peer(self.send, answer=True)
        if not self.first.called:
            self.first.callback(peer)
        return peer


MiB = 1 << 20


def _reactor() -> Any:
    from twisted.internet import reactor

    return reactor


def _signal(process: CLIProcess, name: str) -> None:
    cast(IProcessTransport, process.transport).signalProcess(name)


class ProcessTests(TestCase):
    """
    The cases of the issue with real processes and sockets: this test's
    client connects to ``memux forward``, which forwards to ``twistd memux
    --service sink=tcp:...``, which connects to a sink in this test's
    reactor; in the middle of a transfer, one of them is killed, reset or
    interrupted, and the other end must see an RST, never a FIN.
    """

    timeout = 120

    async def startServer(self, sink: Sink) -> str:
        """
        Start ``twistd memux`` forwarding the service ``sink`` to C{sink};
        return the endpoint string to reach it.
        """
        reactor = _reactor()
        port: IListeningPort = await TCP4ServerEndpoint(
            reactor, 0, interface="127.0.0.1"
        ).listen(sink)
        self.addCleanup(port.stopListening)
        backend = f"tcp:127.0.0.1:{port.getHost().port}"  # type: ignore[attr-defined]
        self.server = CLIProcess()
        transport = cast(IReactorProcess, reactor).spawnProcess(
            self.server,
            sys.executable,
            [sys.executable, "-c", "from twisted.scripts.twistd import run; run()"]
            + ["-n", "--pidfile=", "memux", "--listen", "tcp:0:interface=127.0.0.1"]
            + ["--service", f"sink={backend}"],
            env=cliEnvironment(),
            path=str(ROOT),
        )

        def kill() -> defer.Deferred[Any] | None:
            if self.server.ended.called:
                return None
            transport.signalProcess("KILL")
            return self.server.ended

        self.addCleanup(kill)
        listening = await self.server.waitForStdout(
            rb"memux listening on 127\.0\.0\.1:(\d+)"
        )
        return f"tcp:127.0.0.1:{int(listening.group(1))}"

    async def startForward(self, where: str, *options: str) -> tuple[CLIProcess, int]:
        """
        Start ``memux forward`` for the service ``sink`` at C{where}; return
        it and its port once it listens.
        """
        port = freePort()
        process = spawnCLI(
            self, "forward", *options, f"tcp:{port}:interface=127.0.0.1", where, "sink"
        )
        return process, port

    async def connect(self, port: int, client: Peer) -> Peer:
        """
        Connect C{client} to C{port} as soon as something listens there
        (``forward -q`` does not say when it does); abort it at the end of
        the test if it is still connected.
        """
        reactor = _reactor()
        endpoint = TCP4ClientEndpoint(cast(IReactorTCP, reactor), "127.0.0.1", port)
        for _ in range(600):
            try:
                await connectProtocol(endpoint, client)
                break
            except ConnectionRefusedError:
                await deferLater(reactor, 0.05)
        else:
            raise AssertionError(f"nothing listens on port {port}")
        self.addCleanup(self._abort, client)
        return client

    async def _abort(self, peer: Peer) -> None:
        if peer.ending is None and peer.transport is not None:
            cast(Any, peer.transport).abortConnection()
        await peer.ended

    async def uploading(self, *options: str) -> tuple[CLIProcess, Peer, Peer]:
        """
        A client in the middle of an upload (1 MiB sent and received by
        the sink, the connection still open both ways) through ``memux
        forward`` started with C{options}; return the forwarder, the client
        and the sink's end.
        """
        sink = Sink()
        where = await self.startServer(sink)
        forward, port = await self.startForward(where, *options)
        client = await self.connect(port, Peer(send=b"u" * MiB))
        received = await sink.first
        self.addCleanup(self._abort, received)
        await received.whenReceived(MiB)
        return forward, client, received

    async def test_killForwardMidUpload(self) -> None:
        """
        ``kill -9`` of ``memux forward`` in the middle of an upload: the
        server aborts its connection to the backend, which sees an RST.
        """
        forward, client, received = await self.uploading()
        _signal(forward, "KILL")
        self.assertEqual(await received.ended, "RST")

    async def test_killServerMidDownload(self) -> None:
        """
        ``kill -9`` of ``twistd memux`` in the middle of a download through
        ``memux forward -q``: the local client sees an RST, and ``forward``
        says the connection was cut, ``-q`` notwithstanding; stopped later,
        with nothing open, it exits 0.
        """
        sink = Sink(send=b"d" * (2 * MiB))
        where = await self.startServer(sink)
        forward, port = await self.startForward(where, "-q")
        client = await self.connect(port, Peer())
        await client.whenReceived(MiB)
        _signal(self.server, "KILL")
        self.assertEqual(await client.ended, "RST")
        await forward.waitForStderr(
            rb"memux forward: connection from 127\.0\.0\.1:\d+ cut after 0 B sent"
            rb" and \d+\.\d MiB received: memux session lost"
        )
        _signal(forward, "INT")
        out, err, code = await forward.ended
        self.assertEqual(code, ExitStatus.OK)

    async def test_clientResetMidUpload(self) -> None:
        """
        A local client that resets its connection in the middle of an
        upload: the backend sees an RST, and ``forward`` says so.
        """
        forward, client, received = await self.uploading("-q")
        cast(Any, client.transport).abortConnection()
        self.assertEqual(await received.ended, "RST")
        await forward.waitForStderr(
            rb"connection from 127\.0\.0\.1:\d+ reset or lost by its client after"
            rb" 1\.0 MiB sent and 0 B received; its channel was reset"
        )

    async def test_interruptCutsTransfers(self) -> None:
        """
        SIGINT with an upload in flight that does not end within
        ``--grace``: ``forward`` cuts it (an RST at both ends), says so and
        exits with status 130.
        """
        forward, client, received = await self.uploading("--grace", "1")
        _signal(forward, "INT")
        out, err, code = await forward.ended
        self.assertEqual(code, ExitStatus.INTERRUPTED, err)
        self.assertIn(
            b"memux forward: stopped: cut 1 connection still open after 1 s\n", err
        )
        self.assertEqual(await received.ended, "RST")
        self.assertEqual(await client.ended, "RST")

    async def test_interruptLetsTransfersFinish(self) -> None:
        """
        SIGINT with an upload in flight: ``forward`` stops accepting
        connections but lets the upload finish, the answer come back and
        the connection end in order, then exits with status 0.
        """
        forward, client, received = await self.uploading("--grace", "60")
        _signal(forward, "INT")
        await forward.waitForStderr(
            rb"stopping: waiting up to 60 s for 1 connection to end"
        )
        late = Peer()
        port = cast(Any, client.transport).getPeer().port
        endpoint = TCP4ClientEndpoint(_reactor(), "127.0.0.1", port)
        await self.assertFailure(
            connectProtocol(endpoint, late), ConnectionRefusedError
        )
        cast(Any, client.transport).loseWriteConnection()
        self.assertEqual(await client.ended, "FIN")
        self.assertEqual(client.data, b"%d bytes" % (MiB,))
        out, err, code = await forward.ended
        self.assertEqual(code, ExitStatus.OK, err)
        self.assertNotIn(b"stopped: cut", err)
        self.assertEqual(received.ending, "FIN")
