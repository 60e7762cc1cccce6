# -*- test-case-name: memux.test.test_cli -*-
"""
Tests for L{memux._cli}, the ``memux`` command line.

Most run ``python -m memux`` as a subprocess against a memux server served
by the test's own reactor (so they spawn it with C{reactor.spawnProcess},
never a blocking call); the acceptance test runs the whole chain, web
server and ``twistd memux`` included, as subprocesses.
"""

from __future__ import annotations

import argparse
import errno
import functools
import hashlib
import io
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import types
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, cast

from OpenSSL import SSL
from twisted.internet import defer
from twisted.internet.endpoints import (
    TCP4ClientEndpoint,
    TCP4ServerEndpoint,
    connectProtocol,
    quoteStringArgument,
)
from twisted.internet.error import (
    ConnectError,
    ConnectionDone,
    ConnectionRefusedError,
)
from twisted.internet.interfaces import (
    IHalfCloseableProtocol,
    IListeningPort,
    IProcessTransport,
    IReactorTCP,
)
from twisted.internet.protocol import (
    Factory,
    Protocol,
    connectionDone,
)
from twisted.internet.task import Clock, deferLater
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.protocols.tls import TLSMemoryBIOProtocol
from twisted.python.failure import Failure
from twisted.trial.unittest import SkipTest, SynchronousTestCase, TestCase
from zope.interface import implementer

import memux
from memux import ChannelRefused, ChannelRequest, ErrorCode, MultiplexingFactory
from memux._cli import (
    COMMAND_MODULES,
    ExitStatus,
    Reporter,
    SessionCache,
    Subcommand,
    UsageError,
    buildParser,
    main,
    makeCommand,
    parseLocal,
    parseRemote,
    subcommands,
)
from memux._cli._common import ChannelCommand, RemoteCommand, _formatBytes
from memux._cli._connect import ConnectCommand
from memux._cli._diagnose import Ending, describeEnding, tlsForm
from memux._cli._forward import ForwardCommand
from memux._cli._ping import PingCommand
from memux.mptcp import MPTCPServerEndpoint, mptcpAvailable
from memux.protocol import ChannelTransport, MemuxProtocol
from memux.services import Echo, builtinServices
from memux.test._helpers import (
    EXAMPLES,
    HOSTNAME,
    LOCAL,
    ROOT,
    Certificates,
    CLIProcess,
    RecordingMultiplexingFactory,
    ServerTestCase,
    cliEnvironment,
    freePort,
    globalReactor,
    spawnCLI,
)
from memux.testing import connectedSessions
from memux.tls import ALPN

# ------------------------------------------------------------ helpers


def runCLI(
    test: TestCase, *args: str, stdin: bytes = b"", timeout: float | None = None
) -> defer.Deferred[tuple[bytes, bytes, int]]:
    """
    Run ``python -m memux ARGS`` to the end; fire with (stdout, stderr,
    exit status).  With C{timeout}, a process still running after that
    many seconds is killed (its status is then -9), so that a command that
    should have given up fails the test rather than hanging it.
    """
    process = spawnCLI(test, *args, stdin=stdin)
    if timeout is not None:
        reactor = globalReactor()

        def kill() -> None:
            if not process.ended.called:
                cast(IProcessTransport, process.transport).signalProcess("KILL")

        call = reactor.callLater(timeout, kill)

        def cancel(result: Any) -> Any:
            if call.active():
                call.cancel()
            return result

        process.ended.addBoth(cancel)
    return process.ended


class _QuietHTTPHandler(SimpleHTTPRequestHandler):
    """
    Python's ``http.server`` handler, without its request log on stderr.
    """

    def log_message(self, format: str, *args: Any) -> None:
        pass


def serveHTTP(test: TestCase, port: int = 0) -> int:
    """
    Serve HTTP on loopback port C{port} (0: one the system chooses) with
    Python's C{http.server} (what ``python -m http.server`` runs), in a
    thread, until the end of C{test}; return the port.
    """
    directory = os.path.abspath(test.mktemp())
    os.makedirs(directory)
    server = ThreadingHTTPServer(
        ("127.0.0.1", port), functools.partial(_QuietHTTPHandler, directory=directory)
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    test.addCleanup(server.server_close)
    test.addCleanup(server.shutdown)
    chosen: int = server.server_address[1]
    return chosen


class ServerSessions(MultiplexingFactory):
    """
    A memux server factory that remembers its sessions, so a test can close
    them and wait for them to be gone.
    """

    def __init__(self, services: Any) -> None:
        super().__init__(services)
        self.sessions: list[MemuxProtocol] = []

    def buildProtocol(self, addr: Any) -> MemuxProtocol:
        session = super().buildProtocol(addr)
        self.sessions.append(session)
        return session

    def closeAll(self) -> defer.Deferred[Any]:
        """
        Close every session; fire once they are all closed.
        """
        waits = []
        for session in self.sessions:
            if session.connected and session.transport is not None:
                session.transport.loseConnection()
            waits.append(session.whenClosed())
        return defer.gatherResults(waits)


@implementer(IHalfCloseableProtocol)
class CountThenReply(Protocol):
    """
    Reads to the end of input, then answers with how many bytes came and
    closes: it can only answer if the client half-closes.
    """

    received = 0

    def dataReceived(self, data: bytes) -> None:
        self.received += len(data)

    def readConnectionLost(self) -> None:
        assert self.transport is not None
        self.transport.write(b"%d bytes\n" % (self.received,))
        self.transport.loseConnection()

    def writeConnectionLost(self) -> None:
        pass


class ResetOnData(Protocol):
    """
    Resets its channel with a reason as soon as anything arrives.
    """

    def dataReceived(self, data: bytes) -> None:
        cast(ChannelTransport, self.transport).resetChannel(
            ErrorCode.CANCEL, "this service takes no input"
        )


@implementer(IHalfCloseableProtocol)
class Client(Protocol):
    """
    Sends a payload, half-closes, and fires C{done} with the sha256 of all
    it received before the end.
    """

    def __init__(self, payload: bytes) -> None:
        self.payload = payload
        self.digest = hashlib.sha256()
        self.size = 0
        self.done: defer.Deferred[tuple[int, str]] = defer.Deferred()

    def connectionMade(self) -> None:
        transport: Any = self.transport
        transport.write(self.payload)
        transport.loseWriteConnection()

    def dataReceived(self, data: bytes) -> None:
        self.digest.update(data)
        self.size += len(data)

    def readConnectionLost(self) -> None:
        assert self.transport is not None
        self.transport.loseConnection()

    def writeConnectionLost(self) -> None:
        pass

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if not self.done.called:
            self.done.callback((self.size, self.digest.hexdigest()))


class ServerMixin:
    """
    Serve memux sessions with the built-in services (and a few test
    services) on a free TCP port of 127.0.0.1 in the test's reactor.
    """

    factory: ServerSessions
    port: IListeningPort

    async def serve(self, test: TestCase, services: Any = None) -> str:
        """
        Start serving; return the client endpoint string to reach it.
        """
        if services is None:
            services = builtinServices()
            services[b"count"] = Factory.forProtocol(CountThenReply)
            services[b"reset"] = Factory.forProtocol(ResetOnData)
        self.factory = ServerSessions(services)
        reactor = globalReactor()
        port: IListeningPort = await TCP4ServerEndpoint(
            reactor, 0, interface="127.0.0.1"
        ).listen(self.factory)
        test.addCleanup(self.factory.closeAll)
        test.addCleanup(port.stopListening)
        self.port = port
        return f"tcp:127.0.0.1:{port.getHost().port}"  # type: ignore[attr-defined]

    async def stopServing(self) -> None:
        """
        Stop listening, and close every session (with GOAWAY: the server
        is going away).
        """
        await defer.maybeDeferred(self.port.stopListening)
        closed = []
        for session in self.factory.sessions:
            closed.append(session.goAway(ErrorCode.NO_ERROR, "shutting down"))
        await defer.gatherResults(closed)


# ------------------------------------------------------------ unit tests


class ParseRemoteTests(SynchronousTestCase):
    """
    L{parseRemote} takes endpoint strings and bare host:port forms.
    """

    def parse(self, text: str) -> tuple[Any, str]:
        return parseRemote(globalReactor(), text)

    def test_endpointString(self) -> None:
        """
        A client endpoint string is used as it is.
        """
        endpoint, shown = self.parse("tcp:example.com:7401")
        self.assertEqual(shown, "tcp:example.com:7401")
        self.assertEqual((endpoint._host, endpoint._port), ("example.com", 7401))

    def test_unix(self) -> None:
        """
        A C{unix:} endpoint string names a UNIX socket.
        """
        endpoint, shown = self.parse("unix:/run/memux.sock")
        self.assertEqual(shown, "unix:/run/memux.sock")
        self.assertEqual(endpoint._path, "/run/memux.sock")

    def test_bareHostPort(self) -> None:
        """
        A bare HOST:PORT means TCP.
        """
        endpoint, shown = self.parse("example.com:7401")
        self.assertEqual(shown, "tcp:example.com:7401")
        self.assertEqual((endpoint._host, endpoint._port), ("example.com", 7401))

    def test_bareHost(self) -> None:
        """
        A bare HOST means TCP port 7400, twistd memux's default.
        """
        endpoint, shown = self.parse("localhost")
        self.assertEqual(shown, "tcp:localhost:7400")
        self.assertEqual((endpoint._host, endpoint._port), ("localhost", 7400))

    def test_bracketedIPv6(self) -> None:
        """
        C{[ADDRESS]:PORT} is an IPv6 address and a port.
        """
        endpoint, shown = self.parse("[::1]:7401")
        self.assertEqual(shown, "tcp:[::1]:7401")
        self.assertEqual((endpoint._host, endpoint._port), ("::1", 7401))

    def test_invalid(self) -> None:
        """
        Neither an endpoint string nor a bare form: a L{UsageError} that
        quotes the argument.
        """
        for text in ["tcp:localhost", "tcp:7400", "host:port", "a b:1", "x:99999"]:
            with self.assertRaises(UsageError) as caught:
                self.parse(text)
            self.assertIn(repr(text), str(caught.exception))


class ParseLocalTests(SynchronousTestCase):
    """
    L{parseLocal} takes server endpoint strings and ssh-like bare ports.
    """

    def parse(self, text: str) -> str:
        return parseLocal(globalReactor(), text)[1]

    def test_barePort(self) -> None:
        """
        A bare PORT listens on 127.0.0.1 only, as C{ssh -L} does.
        """
        self.assertEqual(self.parse("8080"), "tcp:8080:interface=127.0.0.1")

    def test_hostPort(self) -> None:
        """
        HOST:PORT listens on that interface.
        """
        self.assertEqual(self.parse("0.0.0.0:8080"), "tcp:8080:interface=0.0.0.0")
        self.assertEqual(self.parse("[::1]:8080"), r"tcp:8080:interface=\:\:1")
        self.assertEqual(self.parse("localhost:80"), "tcp:80:interface=localhost")

    def test_endpointString(self) -> None:
        """
        Server endpoint strings are used as they are.
        """
        for text in ["tcp:8080", "tcp:0:interface=127.0.0.1", "unix:/tmp/s"]:
            self.assertEqual(self.parse(text), text)

    def test_invalid(self) -> None:
        """
        Anything else is a L{UsageError}.
        """
        for text in ["bogus:1", "tcp:notaport", "70000", "example.com:80"]:
            with self.assertRaises(UsageError):
                self.parse(text)


class BacklogTests(SynchronousTestCase):
    """
    LOCAL_ENDPOINT's listen backlog: C{--backlog}, 1024 by default, for
    the endpoint types that take one.
    """

    def parse(self, text: str, backlog: int | None, explicit: bool = False) -> str:
        return parseLocal(globalReactor(), text, backlog, explicit=explicit)[1]

    def test_added(self) -> None:
        """
        The backlog is added to a bare port and to the endpoint strings
        that take C{backlog=}, and reaches the endpoint.
        """
        self.assertEqual(
            self.parse("8080", 1024), "tcp:8080:interface=127.0.0.1:backlog=1024"
        )
        for text in [
            "tcp:8080",
            "tcp6:8080",
            "unix:/tmp/s",
            "tcp:0:interface=127.0.0.1",
        ]:
            self.assertEqual(self.parse(text, 300), f"{text}:backlog=300")
        endpoint = parseLocal(globalReactor(), "tcp:0:interface=127.0.0.1", 1024)[0]
        self.assertEqual(endpoint._backlog, 1024)  # type: ignore[attr-defined]

    def test_givenInEndpoint(self) -> None:
        """
        LOCAL_ENDPOINT's own C{backlog=} stands against the default, and is
        a usage error with C{--backlog}.
        """
        self.assertEqual(self.parse("tcp:8080:backlog=5", 1024), "tcp:8080:backlog=5")
        with self.assertRaises(UsageError) as caught:
            self.parse("tcp:8080:backlog=5", 1024, explicit=True)
        self.assertIn("--backlog and LOCAL_ENDPOINT's backlog=", str(caught.exception))

    def test_otherEndpointTypes(self) -> None:
        """
        An endpoint type that takes no backlog is left as it is, unless
        C{--backlog} is given: then it is a usage error.
        """
        text = "haproxy:tcp:8080"
        self.assertEqual(self.parse(text, 1024), text)
        with self.assertRaises(UsageError) as caught:
            self.parse(text, 1024, explicit=True)
        self.assertIn("--backlog applies only to", str(caught.exception))

    def test_option(self) -> None:
        """
        C{forward --backlog N} gives the backlog; without it, 1024; 0 or
        less is a usage error.
        """
        for options, expected in [([], 1024), (["--backlog", "4000"], 4000)]:
            args = buildParser().parse_args(
                ["forward", *options, "tcp:0:interface=127.0.0.1", "h:1", "web"]
            )
            command = makeCommand(args, globalReactor(), Reporter(io.StringIO(), ""))
            assert isinstance(command, ForwardCommand)
            local: Any = command.local
            self.assertEqual(local._backlog, expected)
        stderr = io.StringIO()
        self.patch(sys, "stderr", stderr)
        with self.assertRaises(SystemExit):
            main(["forward", "--backlog", "0", "8080", "h:1", "web"])
        self.assertIn("argument --backlog: must be at least 1", stderr.getvalue())


class UsageTests(SynchronousTestCase):
    """
    Wrong arguments exit with status 2 and say what is wrong; help and
    version go to standard output.
    """

    def run_(self, *argv: str) -> tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()
        self.patch(sys, "stdout", out)
        self.patch(sys, "stderr", err)
        with self.assertRaises(SystemExit) as caught:
            main(list(argv))
        code = caught.exception.code
        return (code if isinstance(code, int) else 1), out.getvalue(), err.getvalue()

    def assertUsageError(self, argv: list[str], message: str) -> None:
        code, out, err = self.run_(*argv)
        self.assertEqual(code, ExitStatus.USAGE, err)
        self.assertIn("usage: memux", err)
        self.assertIn(message, err)
        self.assertEqual(out, "")

    def test_noCommand(self) -> None:
        """
        A command is required.
        """
        self.assertUsageError([], "required: COMMAND")

    def test_unknownCommand(self) -> None:
        """
        An unknown command is named with the choices.
        """
        self.assertUsageError(["fetch"], "invalid choice: 'fetch'")

    def test_missingArguments(self) -> None:
        """
        Each command names its missing arguments.
        """
        self.assertUsageError(["forward", "8080"], "REMOTE, SERVICE")
        self.assertUsageError(["connect", "host:1"], "SERVICE")
        self.assertUsageError(["ping"], "REMOTE")

    def test_badNumbers(self) -> None:
        """
        Counts and intervals are checked.
        """
        self.assertUsageError(["ping", "-c", "0", "h:1"], "must be at least 1")
        self.assertUsageError(["ping", "-c", "x", "h:1"], "not a whole number")
        self.assertUsageError(["ping", "-i", "-1", "h:1"], "must be at least")
        self.assertUsageError(["ping", "-W", "soon", "h:1"], "not a number")

    def test_badEndpoints(self) -> None:
        """
        Endpoint strings are checked before anything starts, and the error
        comes with the subcommand's usage line.
        """
        self.assertUsageError(
            ["connect", "tcp:localhost", "echo"], "REMOTE 'tcp:localhost'"
        )
        self.assertUsageError(
            ["forward", "bogus:1", "localhost:1", "echo"], "LOCAL_ENDPOINT 'bogus:1'"
        )
        code, out, err = self.run_("ping", "host:99999")
        self.assertIn("usage: memux ping", err)
        self.assertIn("out of range", err)

    def test_openTooLarge(self) -> None:
        """
        A service name or metadata that cannot fit in a channel's opening
        is a usage error.
        """
        self.assertUsageError(
            ["connect", "h:1", "x" * 256], "SERVICE is 256 bytes long; the most is 255"
        )
        self.assertUsageError(
            ["forward", "1", "h:1", "web", "-m", "x" * 20000], "--metadata is too long"
        )

    def test_notUTF8(self) -> None:
        """
        A service name or metadata given as bytes that are not UTF-8 (as
        Python decodes them from the command line) goes out as exactly
        those bytes, not a traceback.
        """
        argv = ["connect", "h:1", os.fsdecode(b"caf\xe9"), "-m", os.fsdecode(b"\xff")]
        reporter = Reporter(io.StringIO(), "memux")
        command = makeCommand(
            buildParser().parse_args(argv), MemoryReactorClock(), reporter
        )
        assert isinstance(command, ChannelCommand)
        self.assertEqual(
            (command.service, command.metadata),
            (b"caf\xe9", b"\xff"),
        )

    def test_help(self) -> None:
        """
        C{--help}, for the program and each command, shows examples and
        exits 0; the exit statuses are listed once, in the program's help,
        and each command's help points there.
        """
        code, out, err = self.run_("--help")
        self.assertEqual(code, 0)
        self.assertIn("examples:", out)
        self.assertEqual(out.count("exit status:"), 1)
        self.assertIn("130", out)
        for command in ["forward", "connect", "ping"]:
            code, out, err = self.run_(command, "--help")
            self.assertEqual(code, 0)
            self.assertIn("examples:", out)
            self.assertNotIn("exit status:", out)
            self.assertNotIn("130  interrupted", out)
            self.assertIn("'memux --help' lists the exit statuses", out)

    def test_version(self) -> None:
        """
        C{--version} names memux's version, Twisted's, and whether the core
        runs compiled.
        """
        code, out, err = self.run_("--version")
        self.assertEqual(code, 0)
        self.assertIn(f"memux {memux.__version__}", out)
        self.assertIn("Twisted", out)
        core = "compiled core" if memux.compiled else "pure-Python core"
        self.assertIn(core, out)


class _FakeCommand:
    """
    What the C{hello} subcommand of L{RegistryTests} makes: it keeps its
    arguments and does nothing.
    """

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args

    def run(self, reactor: Any) -> defer.Deferred[int]:
        return defer.succeed(0)

    def interrupted(self) -> int:
        return 0


def _addHelloArguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-n", "--times", type=int, default=1)


def _makeHello(args: argparse.Namespace, reactor: Any, reporter: Reporter) -> Any:
    if args.times > 3:
        raise UsageError("--times: at most 3")
    return _FakeCommand(args)


#: a subcommand that is not memux's, for L{RegistryTests} to register
HELLO = Subcommand(
    name="hello",
    help="say hello a few times",
    description="Say hello TIMES times.",
    examples="examples:\n  memux hello -n 2\n\n",
    quietHelp="say nothing",
    addArguments=_addHelloArguments,
    make=_makeHello,
    progress=False,
)


class RegistryTests(SynchronousTestCase):
    """
    Issue 14: the subcommands are a registry, a list of modules each with a
    C{COMMAND}; parsing, help and dispatch come from it, so a new command
    is a module and a line.
    """

    def setUp(self) -> None:
        """
        Register C{hello}, from a module of its own, after memux's commands.
        """
        name = "memux.test._hellocommand"
        module = types.ModuleType(name)
        module.COMMAND = HELLO  # type: ignore[attr-defined]
        sys.modules[name] = module
        self.addCleanup(sys.modules.pop, name)
        self.patch(memux._cli, "COMMAND_MODULES", [*COMMAND_MODULES, name])

    def run_(self, *argv: str) -> tuple[int, str, str]:
        """
        Run C{main} with C{argv} to a usage error or help; return the
        status, standard output and standard error.
        """
        out, err = io.StringIO(), io.StringIO()
        self.patch(sys, "stdout", out)
        self.patch(sys, "stderr", err)
        with self.assertRaises(SystemExit) as caught:
            main(list(argv))
        code = caught.exception.code
        return (code if isinstance(code, int) else 1), out.getvalue(), err.getvalue()

    def test_registered(self) -> None:
        """
        The registry lists memux's commands, then the one registered; the
        program's help lists each with its one-line help.
        """
        self.assertEqual(
            [command.name for command in subcommands()],
            ["forward", "connect", "ping", "stat", "hello"],
        )
        code, out, err = self.run_("--help")
        self.assertEqual(code, 0)
        self.assertRegex(out, r"\n +hello +say hello a few times\n")

    def test_dispatch(self) -> None:
        """
        The registered command's arguments, and the output options every
        command has (before or after the command), are parsed, and
        L{makeCommand} hands them to its C{make}.
        """
        for argv in (["-q", "hello", "-n", "2"], ["hello", "-q", "--times", "2"]):
            args = buildParser().parse_args(argv)
            made = makeCommand(args, MemoryReactorClock(), Reporter(io.StringIO(), ""))
            assert isinstance(made, _FakeCommand)
            self.assertEqual((made.args.times, made.args.quiet), (2, True))

    def test_usageError(self) -> None:
        """
        A L{UsageError} from the command's C{make} is reported with its
        usage line, status 2.
        """
        code, out, err = self.run_("hello", "-n", "5")
        self.assertEqual(code, ExitStatus.USAGE)
        self.assertIn("usage: memux hello [-h] [-q] [-v] [-n TIMES]", err)
        self.assertIn("memux hello: error: --times: at most 3", err)

    def test_help(self) -> None:
        """
        The command's help has its description, options, the output
        options and its examples.
        """
        code, out, err = self.run_("hello", "--help")
        self.assertEqual(code, 0)
        for text in (
            "Say hello TIMES times.",
            "-n TIMES, --times TIMES",
            "-q, --quiet",
            "say nothing",
            "memux hello -n 2",
        ):
            self.assertIn(text, out)

    def test_builtins(self) -> None:
        """
        memux's own commands are made through the registry too.
        """
        for argv, kind in [
            (["forward", "8080", "h:1", "web"], ForwardCommand),
            (["connect", "h:1", "web"], ConnectCommand),
            (["ping", "h:1"], PingCommand),
        ]:
            args = buildParser().parse_args(argv)
            made = makeCommand(args, MemoryReactorClock(), Reporter(io.StringIO(), ""))
            self.assertIsInstance(made, kind)


class DiagnosisTests(SynchronousTestCase):
    """
    L{describeEnding} says why a session ended, in memory: the cases the
    loopback tests of L{ConnectionFailureTests} and L{GoAwayTests} do not
    reach, and what L{sessionLost} must read from a session (private
    state, until MemuxProtocol keeps the error: this fails first if that
    state moves).
    """

    def lostClient(self, received: bytes) -> MemuxProtocol:
        """
        A client session whose server sent C{received}, then closed the
        connection.
        """
        session = MemuxProtocol(client=True, reactor=Clock())
        session.makeConnection(StringTransport())
        if received:
            session.dataReceived(received)
        session.connectionLost(Failure(ConnectionDone()))
        return session

    def test_silent(self) -> None:
        """
        A server that closed without a word: the memux handshake never
        happened, and it may speak TLS (worth asking it).
        """
        ending = describeEnding(self.lostClient(b""), "tcp:h:7400")
        self.assertEqual(
            ending,
            Ending(
                True,
                "the server closed the connection before the memux handshake",
                True,
            ),
        )

    def test_tlsRecord(self) -> None:
        """
        A server that answers with a TLS alert or handshake record speaks
        TLS: the C{tls:} REMOTE is shown, without asking it.
        """
        for record in (b"\x15\x03\x03\x00\x02\x02\x46", b"\x16\x03\x01\x02\x00"):
            ending = describeEnding(self.lostClient(record), "tcp:h:7400")
            self.assertEqual(
                ending,
                Ending(
                    True, "the server seems to speak TLS: for TLS, write tls:h:7400"
                ),
            )

    def test_notMemux(self) -> None:
        """
        A server that is not memux: what it sent, from the protocol's
        check of the preface, without its error code.
        """
        ending = describeEnding(self.lostClient(b"SSH-2.0-OpenSSH_9.6\r\n"), "h")
        self.assertEqual(
            ending,
            Ending(True, "not a memux peer: the stream starts with an SSH banner"),
        )

    def test_goAway(self) -> None:
        """
        A session ended by the server's GOAWAY, with no channel or ping to
        hear of it: its code and reason, never a clean close, and the
        session had worked (not "cannot connect").
        """
        for code, reason, expected in [
            (
                ErrorCode.NO_ERROR,
                "maintenance",
                "the peer went away (GOAWAY NO_ERROR: maintenance)",
            ),
            (
                ErrorCode.IDLE_TIMEOUT,
                "idle for 5 s",
                "the peer went away (GOAWAY IDLE_TIMEOUT: idle for 5 s)",
            ),
        ]:
            client, server, pump = connectedSessions()
            pump.flush()
            server.goAway(code, reason)
            pump.flush()
            self.assertFalse(client.connected)
            self.assertEqual(describeEnding(client, "h"), Ending(False, expected))

    def test_tlsForm(self) -> None:
        """
        A C{tcp:} REMOTE's C{tls:} form: the same arguments, or for the
        shown form of a bare C{[IPV6]:PORT}, the address escaped.
        """
        self.assertEqual(tlsForm("tcp:h:7400"), "tls:h:7400")
        self.assertEqual(tlsForm("tcp:h:7400:timeout=5"), "tls:h:7400:timeout=5")
        self.assertEqual(tlsForm("tcp:[::1]:7400"), r"tls:\:\:1:7400")
        self.assertIsNone(tlsForm("unix:/run/memux.sock"))


class ReporterTests(SynchronousTestCase):
    """
    L{Reporter} draws a progress line only when asked, and keeps messages
    and the line apart.
    """

    def test_progressLine(self) -> None:
        """
        The line is redrawn every second in place, messages go above it,
        and stopping it erases it and prints the summary.
        """
        stream, clock = io.StringIO(), Clock()
        reporter = Reporter(stream, "memux x: ", progress=True)
        counter = iter(range(100))
        reporter.startProgress(clock, lambda: f"step {next(counter)}")
        self.assertEqual(stream.getvalue(), "")
        clock.advance(1)
        self.assertEqual(stream.getvalue(), "\rmemux x: step 0")
        reporter.info("hello")
        clock.advance(1)
        reporter.stopProgress("done")
        self.assertEqual(
            stream.getvalue(),
            "\rmemux x: step 0"
            "\r\x1b[Kmemux x: hello\n\rmemux x: step 0"
            "\r\x1b[K\rmemux x: step 1"
            "\r\x1b[Kmemux x: done\n",
        )
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_noProgress(self) -> None:
        """
        Without C{progress}, nothing is drawn and no summary printed, and
        C{quiet} silences routine messages but not errors.
        """
        stream, clock = io.StringIO(), Clock()
        reporter = Reporter(stream, "memux x: ", quiet=True)
        reporter.startProgress(clock, lambda: "step")
        clock.advance(5)
        reporter.info("routine")
        reporter.error("bad")
        reporter.stopProgress("summary")
        self.assertEqual(stream.getvalue(), "memux x: bad\n")

    def test_formatBytes(self) -> None:
        """
        Sizes are shown in binary units.
        """
        self.assertEqual(_formatBytes(0), "0 B")
        self.assertEqual(_formatBytes(1023), "1023 B")
        self.assertEqual(_formatBytes(1536), "1.5 KiB")
        self.assertEqual(_formatBytes(16 << 20), "16.0 MiB")
        self.assertEqual(_formatBytes(5 << 40), "5120.0 GiB")


class SessionCacheTests(ServerMixin, TestCase):
    """
    L{SessionCache} keeps one session and makes a new one after a loss.
    """

    async def test_shared(self) -> None:
        """
        Callers share one session, including those that ask while it is
        being connected.
        """
        where = await self.serve(self)
        reactor = globalReactor()
        cache = SessionCache(parseRemote(reactor, where)[0])
        self.addCleanup(cache.close)
        first, second = cache.get(), cache.get()
        a, b = await first, await second
        self.assertIs(a, b)
        self.assertIs(await cache.get(), a)
        self.assertEqual(len(self.factory.sessions), 1)

    async def test_reconnects(self) -> None:
        """
        After the session ends, the next caller gets a new one, and the
        loss is reported; the byte totals carry on across sessions.
        """
        where = await self.serve(self)
        cache = SessionCache(parseRemote(globalReactor(), where)[0])
        self.addCleanup(cache.close)
        ended: list[str] = []
        cache.onSessionEnded = lambda session, why: ended.append(why)
        first = await cache.get()
        await first.ping()
        before = cache.totals()
        await self.factory.closeAll()
        await first.whenClosed()
        self.assertEqual(len(ended), 1)
        second = await cache.get()
        self.assertIsNot(first, second)
        await second.ping()
        after = cache.totals()
        self.assertGreater(after["bytesSent"], before["bytesSent"])
        self.assertGreater(after["bytesReceived"], before["bytesReceived"])

    async def test_connectionFails(self) -> None:
        """
        Every caller waiting for a connection that fails gets its error,
        which is reported once; the next call tries again.
        """
        cache = SessionCache(parseRemote(globalReactor(), f"127.0.0.1:{freePort()}")[0])
        failures: list[Failure] = []
        cache.onConnectionFailed = failures.append
        first, second = cache.get(), cache.get()
        for d in (first, second):
            with self.assertRaises(ConnectionRefusedError):
                await d
        self.assertEqual(len(failures), 1)
        with self.assertRaises(ConnectionRefusedError):
            await cache.get()
        self.assertEqual(len(failures), 2)


# ------------------------------------------------------------ the command


class ConnectTests(ServerMixin, TestCase):
    """
    ``memux connect`` copies standard input to a channel and the channel to
    standard output.
    """

    async def test_echo(self) -> None:
        """
        Standard input comes back from the echo service, intact, and the
        command exits 0 once input ends: end of input half-closes the
        channel, the echo closes it, and nothing is written to standard
        error (which is not a terminal, so there is no progress line).
        """
        where = await self.serve(self)
        payload = os.urandom(3 << 20)
        out, err, code = await runCLI(self, "connect", where, "echo", stdin=payload)
        self.assertEqual((code, err), (0, b""))
        self.assertEqual(hashlib.sha256(out).digest(), hashlib.sha256(payload).digest())

    async def test_verbose(self) -> None:
        """
        C{--verbose} logs Twisted's and memux's events to standard error.
        """
        where = await self.serve(self)
        out, err, code = await runCLI(self, "connect", "-v", where, "echo", stdin=b"x")
        self.assertEqual((out, code), (b"x", 0))
        self.assertIn(b"memux session to", err)

    async def test_usageErrorStatus(self) -> None:
        """
        The program itself exits 2 on a usage error, with the message on
        standard error.
        """
        out, err, code = await runCLI(self, "connect", "tcp:nowhere", "echo")
        self.assertEqual((out, code), (b"", ExitStatus.USAGE))
        self.assertIn(b"memux connect: error: REMOTE 'tcp:nowhere'", err)

    async def test_metadata(self) -> None:
        """
        C{--metadata} reaches the server with the channel's opening, where
        a services callable can check it.
        """

        def choose(request: ChannelRequest) -> Any:
            if request.metadata != b"s3cret":
                raise ChannelRefused("bad token")
            return Factory.forProtocol(Echo)

        where = await self.serve(self, choose)
        out, err, code = await runCLI(
            self, "connect", "-m", "s3cret", where, "x", stdin=b"hi"
        )
        self.assertEqual((out, err, code), (b"hi", b"", 0))
        out, err, code = await runCLI(self, "connect", where, "x", stdin=b"hi")
        self.assertEqual(code, ExitStatus.REFUSED)
        self.assertIn(b"channel refused: bad token", err)

    async def test_halfClose(self) -> None:
        """
        End of input reaches the service as end of input, and its answer,
        written after that, still comes back.
        """
        where = await self.serve(self)
        out, err, code = await runCLI(
            self, "connect", where, "count", stdin=b"x" * 100000
        )
        self.assertEqual((out, err, code), (b"100000 bytes\n", b"", 0))

    async def test_unknownService(self) -> None:
        """
        A refused channel exits 4 with the server's reason on one line.
        """
        where = await self.serve(self)
        out, err, code = await runCLI(self, "connect", where, "nope", stdin=b"hi")
        self.assertEqual(code, ExitStatus.REFUSED)
        self.assertEqual(out, b"")
        self.assertEqual(
            err,
            b"memux connect: service 'nope': channel refused: no service 'nope'\n",
        )

    async def test_reset(self) -> None:
        """
        A channel reset by the service exits 5 with the code and reason.
        """
        where = await self.serve(self)
        out, err, code = await runCLI(self, "connect", where, "reset", stdin=b"hi")
        self.assertEqual(code, ExitStatus.RESET)
        self.assertIn(b"CANCEL: this service takes no input", err)
        self.assertEqual(err.count(b"\n"), 1)

    async def test_cannotConnect(self) -> None:
        """
        No server: exit 3, saying where it tried.
        """
        where = f"127.0.0.1:{freePort()}"
        out, err, code = await runCLI(self, "connect", where, "echo")
        self.assertEqual(code, ExitStatus.CONNECT)
        self.assertIn(f"cannot connect to tcp:{where}".encode(), err)
        self.assertEqual(err.count(b"\n"), 1)

    async def test_sessionLost(self) -> None:
        """
        The session going away while the channel is open exits 3.
        """
        where = await self.serve(self)
        process = spawnCLI(self, "connect", where, "discard", stdin=None)
        await waitUntil(
            lambda: any(s.counters()["channelsOpen"] for s in self.factory.sessions)
        )
        await self.factory.closeAll()
        out, err, code = await process.ended
        self.assertEqual(code, ExitStatus.CONNECT)
        self.assertIn(b"memux connect: service 'discard': memux session lost", err)

    async def test_stdoutClosed(self) -> None:
        """
        When the reader of standard output goes away (as with C{| head}),
        the command closes the channel and exits 0, even though the
        service would send forever and standard input is still open.
        """
        where = await self.serve(self)
        process = spawnCLI(self, "connect", where, "chargen", stdin=None)

        def closeStdout(data: bytes) -> None:
            process.onStdout = None
            cast(IProcessTransport, process.transport).closeChildFD(1)

        process.onStdout = closeStdout
        out, err, code = await process.ended
        self.assertEqual((code, err), (0, b""))
        self.assertTrue(out.startswith(b" !\"#$%&'()*+"))

    async def test_progressOnTerminal(self) -> None:
        """
        When standard error is a terminal (and standard input and output
        are not), a stats line is drawn there; C{--quiet} suppresses it.
        """
        try:
            import pty
        except ImportError:
            raise SkipTest("no pseudo-terminals here") from None
        where = await self.serve(self)
        for quiet, expected in [(False, True), (True, False)]:
            master, slave = pty.openpty()
            self.addCleanup(os.close, master)
            args = ["-q"] * quiet + ["connect", where, "echo"]
            process = spawnCLI(
                self, *args, stdin=b"abc", childFDs={0: "w", 1: "r", 2: slave}
            )
            os.close(slave)
            out, err, code = await process.ended
            self.assertEqual((out, code), (b"abc", 0))
            shown = _readAll(master)
            self.assertEqual(
                b"memux connect: sent 3 B, received 3 B in" in shown, expected, shown
            )


def _readAll(fd: int) -> bytes:
    chunks = []
    os.set_blocking(fd, False)
    while True:
        try:
            data = os.read(fd, 65536)
        except OSError:  # EAGAIN once drained; EIO once the other side closed
            break
        if not data:
            break
        chunks.append(data)
    return b"".join(chunks)


async def waitUntil(predicate: Callable[[], bool], timeout: float = 30) -> None:
    """
    Wait until C{predicate()} is true, checking every 20 ms.
    """
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {predicate}")
        await deferLater(globalReactor(), 0.02, lambda: None)


class PingTests(ServerMixin, TestCase):
    """
    ``memux ping`` prints round trips and a summary, like ping.
    """

    async def test_ping(self) -> None:
        """
        Each reply is printed with its round trip in ms, then the summary;
        all answered: exit 0.  A path line after the header, and another in
        the summary, say the session runs over plain TCP.
        """
        where = await self.serve(self)
        out, err, code = await runCLI(self, "ping", "-c", "3", "-i", "0.05", where)
        self.assertEqual((code, err), (0, b""))
        lines = out.decode().splitlines()
        self.assertEqual(lines[0], f"MEMUX PING {where}")
        self.assertEqual(lines[1], "path: TCP")
        for seq, line in enumerate(lines[2:5], 1):
            self.assertRegex(
                line, rf"^reply from 127\.0\.0\.1:\d+: seq={seq} time=\d+\.\d{{3}} ms$"
            )
        self.assertEqual(lines[5], f"--- {where} memux ping statistics ---")
        self.assertRegex(lines[6], r"^3 sent, 3 answered, 0% lost, time \d+ ms$")
        self.assertRegex(lines[7], r"^rtt min/avg/max = [\d.]+/[\d.]+/[\d.]+ ms$")
        self.assertEqual(lines[8], "path: TCP")
        self.assertEqual(len(lines), 9)

    async def test_pathMPTCP(self) -> None:
        """
        Over ``mptcp:`` (on loopback: one path), the path lines say MPTCP,
        with its subflow count and, where the kernel counts them, the bytes
        moved: more in the summary than at the start.
        """
        if not mptcpAvailable():
            raise SkipTest("the kernel refuses MPTCP sockets here")
        self.factory = ServerSessions(builtinServices())
        port: IListeningPort = await MPTCPServerEndpoint(
            globalReactor(), 0, interface="127.0.0.1", fallback=False
        ).listen(self.factory)
        self.addCleanup(self.factory.closeAll)
        self.addCleanup(port.stopListening)
        number = port.getHost().port  # type: ignore[attr-defined]
        where = f"mptcp:host=127.0.0.1:port={number}:fallback=no"
        out, err, code = await runCLI(self, "ping", "-c", "3", "-i", "0.05", where)
        self.assertEqual((code, err), (0, b""))
        lines = out.decode().splitlines()
        self.assertEqual(lines[0], f"MEMUX PING {where}")
        first, last = lines[1], lines[-1]
        for line in (first, last):
            self.assertTrue(line.startswith("path: MPTCP, 1 subflow"), line)
        sent = [re.search(r", (\d+) B sent, ", line) for line in (first, last)]
        if sent[0] is not None and sent[1] is not None:
            self.assertGreater(int(sent[1][1]), int(sent[0][1]))
        elif "sent" in first:
            self.fail(f"unexpected counters: {first}")

    async def test_interrupted(self) -> None:
        """
        Without C{-c}, ping says at start that it goes on until
        interrupted, and does, then prints the summary; all answered: exit
        0.
        """
        where = await self.serve(self)
        process = spawnCLI(self, "ping", "-i", "0.02", where)
        await process.waitForStdout(rb"seq=3 ")
        cast(IProcessTransport, process.transport).signalProcess("INT")
        out, err, code = await process.ended
        self.assertEqual(
            (code, err),
            (
                0,
                b"memux ping: pinging until interrupted (Ctrl-C);"
                b" -c COUNT stops after COUNT pings\n",
            ),
        )
        self.assertRegex(out.decode(), r"\n(\d+) sent, \1 answered, 0% lost")

    async def test_quiet(self) -> None:
        """
        With C{-q} only the summary is printed.
        """
        where = await self.serve(self)
        out, err, code = await runCLI(
            self, "ping", "-q", "-c", "2", "-i", "0.01", where
        )
        self.assertEqual(code, 0)
        lines = out.decode().splitlines()
        self.assertEqual(len(lines), 3)
        self.assertTrue(lines[0].startswith("2 sent, 2 answered, 0% lost"))
        self.assertEqual(lines[2], "path: TCP")

    async def test_unanswered(self) -> None:
        """
        Pings a peer never answers are counted lost after the timeout, and
        the exit status is 1.
        """
        port: IListeningPort = await TCP4ServerEndpoint(
            globalReactor(), 0, interface="127.0.0.1"
        ).listen(Factory.forProtocol(Protocol))
        self.addCleanup(port.stopListening)
        where = f"127.0.0.1:{port.getHost().port}"  # type: ignore[attr-defined]
        out, err, code = await runCLI(
            self, "ping", "-c", "2", "-i", "0.01", "-W", "0.2", where
        )
        self.assertEqual(code, ExitStatus.FAILURE)
        self.assertIn(b"no reply for seq=1 within 0.2 s", out)
        self.assertIn(b"2 sent, 0 answered, 100% lost", out)

    async def test_cannotConnect(self) -> None:
        """
        No server: exit 3.
        """
        out, err, code = await runCLI(self, "ping", f"127.0.0.1:{freePort()}")
        self.assertEqual(code, ExitStatus.CONNECT)
        self.assertIn(b"memux ping: cannot connect to", err)
        self.assertEqual(out, b"")


class ForwardTests(ServerMixin, TestCase):
    """
    ``memux forward`` carries local connections over channels.
    """

    async def startForward(
        self, where: str, service: str = "echo", *extra: str
    ) -> tuple[CLIProcess, int]:
        """
        Start ``memux forward`` on a free port for C{service}; return the
        process and the port once it listens.
        """
        process = spawnCLI(
            self, "forward", "tcp:0:interface=127.0.0.1", where, service, *extra
        )
        listening = await process.waitForStderr(rb"listening on 127\.0\.0\.1:(\d+)")
        return process, int(listening.group(1))

    async def stop(self, process: CLIProcess) -> tuple[bytes, bytes, int]:
        """
        Stop C{process} as Ctrl-C would, and wait for it to end.
        """
        cast(IProcessTransport, process.transport).signalProcess("INT")
        return await process.ended

    async def test_manyConnections(self) -> None:
        """
        Many connections at once are each forwarded over their own channel
        of one session, and a 16 MiB payload among them comes back intact;
        SIGINT then stops the forwarder with status 0 and, its standard
        error not being a terminal, no progress line.
        """
        where = await self.serve(self)
        process, port = await self.startForward(where)
        reactor = cast(IReactorTCP, globalReactor())
        payloads = [os.urandom(16 << 20)] + [os.urandom(n << 14) for n in range(1, 16)]
        clients = [Client(payload) for payload in payloads]
        for client in clients:
            await connectProtocol(
                TCP4ClientEndpoint(reactor, "127.0.0.1", port), client
            )
        results = await defer.gatherResults([client.done for client in clients])
        expected = [(len(p), hashlib.sha256(p).hexdigest()) for p in payloads]
        self.assertEqual(results, expected)
        self.assertEqual(len(self.factory.sessions), 1)
        self.assertEqual(self.factory.sessions[0].counters()["channelsAccepted"], 16)
        out, err, code = await self.stop(process)
        self.assertEqual(code, 0)
        self.assertEqual(
            err.decode().splitlines(),
            [
                f"memux forward: listening on 127.0.0.1:{port},"
                f" forwarding to service 'echo' at {where}"
            ],
        )

    async def test_refused(self) -> None:
        """
        A service the server does not have: each local connection is closed
        with nothing received (aborted: nothing reached anyone, see
        `LocalForwardingFactory`), and the reason is said once on standard
        error.  (The refusal can come back before the client's connect has
        completed: then the abort meets the connect, as a reset.)
        """
        where = await self.serve(self)
        process, port = await self.startForward(where, "nope")
        reactor = cast(IReactorTCP, globalReactor())
        for _ in range(3):
            client = Client(b"hello")
            try:
                await connectProtocol(
                    TCP4ClientEndpoint(reactor, "127.0.0.1", port), client
                )
            except ConnectError as e:
                self.assertEqual(e.osError, errno.ECONNRESET)
                self.assertFalse(client.done.called)
                continue
            self.assertEqual(await client.done, (0, hashlib.sha256().hexdigest()))
        await process.waitForStderr(rb"channel refused")
        out, err, code = await self.stop(process)
        self.assertEqual(code, 0)
        self.assertEqual(err.count(b"channel refused: no service 'nope'\n"), 1)

    async def test_reconnects(self) -> None:
        """
        After the session is lost, the next local connection makes a new
        one.
        """
        where = await self.serve(self)
        process, port = await self.startForward(where)
        reactor = cast(IReactorTCP, globalReactor())
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port)
        client = Client(b"one")
        await connectProtocol(endpoint, client)
        await client.done
        await self.factory.closeAll()
        await process.waitForStderr(rb"ended: .*; the next connection reconnects")
        client = Client(b"two")
        await connectProtocol(endpoint, client)
        self.assertEqual(await client.done, (3, hashlib.sha256(b"two").hexdigest()))
        self.assertEqual(len(self.factory.sessions), 2)
        out, err, code = await self.stop(process)
        self.assertEqual(code, 0)

    async def test_cannotConnect(self) -> None:
        """
        No server at start: exit 3 without listening.
        """
        out, err, code = await runCLI(
            self, "forward", "tcp:0:interface=127.0.0.1", f"127.0.0.1:{freePort()}", "x"
        )
        self.assertEqual(code, ExitStatus.CONNECT)
        self.assertIn(b"cannot connect to", err)
        self.assertNotIn(b"listening", err)

    async def test_firstSessionFails(self) -> None:
        """
        A server that accepts the connection but is not memux (here
        Python's C{http.server}): C{forward} cannot make its first session,
        says why once, does not listen, and exits 3 instead of retrying.
        """
        where = f"tcp:127.0.0.1:{serveHTTP(self)}"
        out, err, code = await runCLI(
            self, "forward", "tcp:0:interface=127.0.0.1", where, "echo", timeout=20
        )
        self.assertEqual((out, code), (b"", ExitStatus.CONNECT), err)
        [line] = err.decode().splitlines()
        self.assertTrue(
            line.startswith(
                f"memux forward: cannot connect to {where}: not a memux peer: "
            ),
            line,
        )

    async def test_laterSessionFails(self) -> None:
        """
        A later session that cannot be made (the server was replaced by one
        that is not memux): each connection waiting for it is aborted, and
        why is said once, as for the first session, while C{forward} goes
        on.
        """
        where = await self.serve(self)
        process, port = await self.startForward(where)
        reactor = cast(IReactorTCP, globalReactor())
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port)
        client = Client(b"one")
        await connectProtocol(endpoint, client)
        await client.done
        # The memux server goes; an HTTP server takes its port.
        serverPort = int(where.rsplit(":", 1)[1])
        await self.stopServing()
        await process.waitForStderr(rb"; the next connection reconnects")
        serveHTTP(self, serverPort)
        for _ in range(3):
            client = Client(b"two")
            try:
                await connectProtocol(endpoint, client)
            except ConnectError as e:
                # Aborted so soon that the reset came before our side saw
                # the connection made: the same end, earlier.
                self.assertEqual(e.osError, errno.ECONNRESET)
                continue
            self.assertEqual(await client.done, (0, hashlib.sha256().hexdigest()))
        out, err, code = await self.stop(process)
        self.assertEqual(code, 0, err)
        lines = err.decode().splitlines()
        self.assertEqual(
            [line for line in lines if "cannot connect" in line],
            [
                f"memux forward: cannot connect to {where}: not a memux peer:"
                " the stream starts with bytes b'<!DOCTYP'"
            ],
        )
        self.assertEqual(len(lines), 3, lines)

    async def test_burst(self) -> None:
        """
        250 connections made at once are all accepted and forwarded: the
        listening backlog holds them until C{forward} accepts them (with
        Twisted's default of 50, many were reset).
        """
        where = await self.serve(self)
        process, port = await self.startForward(where)
        reactor = cast(IReactorTCP, globalReactor())
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port)
        clients = [Client(b"burst %d" % (n,)) for n in range(250)]
        # All connect in the same turn of the reactor: one burst of SYNs.
        connecting = [connectProtocol(endpoint, client) for client in clients]
        await defer.gatherResults(connecting)
        results = await defer.gatherResults([client.done for client in clients])
        expected = [
            (len(c.payload), hashlib.sha256(c.payload).hexdigest()) for c in clients
        ]
        failed = [
            n for n, (r, e) in enumerate(zip(results, expected, strict=True)) if r != e
        ]
        self.assertEqual(failed, [])
        out, err, code = await self.stop(process)
        self.assertEqual(code, 0, err)

    async def test_cannotListen(self) -> None:
        """
        LOCAL_ENDPOINT in use: exit 6, saying why.
        """
        where = await self.serve(self)
        busy = where.rsplit(":", 1)[1]
        out, err, code = await runCLI(
            self, "forward", f"tcp:{busy}:interface=127.0.0.1", where, "echo"
        )
        self.assertEqual(code, ExitStatus.LISTEN)
        self.assertIn(b"memux forward: cannot listen: ", err)
        self.assertIn(b"in use", err)


# ------------------------------------------------------------ acceptance


class TLSServerTestCase(ServerTestCase):
    """
    Serves the ``twistd memux`` service with TLS (``--tls-cert``, and
    ``--tls-ca`` for mutual TLS) in the test's reactor, with certificates
    from a trustme CA, and records what each handshake negotiated.
    """

    def setUp(self) -> None:
        """
        Make a CA with trustme, a server certificate for C{memux.test} and
        127.0.0.1, and a client certificate.
        """
        super().setUp()
        # Absolute: the commands run from the root of the checkout.
        self.certs = Certificates(os.path.abspath(self.mktemp()))
        self.watchHandshakes()

    def serveTLS(self, *extra: str) -> str:
        """
        Serve the built-in services over TLS on a loopback port; return
        the REMOTE for it.
        """
        server = self.serve(
            "--listen", LOCAL, "--tls-cert", self.certs.serverFile, *extra
        )
        return f"tls:127.0.0.1:{self.tcpPort(server)}"

    def watchHandshakes(self) -> None:
        """
        Keep what each server session's TLS negotiated: the ALPN protocol
        and the name the client asked for (SNI), read as the session ends
        (Twisted forgets them once the connection is gone).
        """
        self.handshakes: dict[MemuxProtocol, tuple[bytes | None, bytes | None]] = {}
        build = RecordingMultiplexingFactory.buildProtocol

        def buildAndWatch(factory: Any, addr: Any) -> MemuxProtocol:
            session = build(factory, addr)
            session.whenClosed().addCallback(lambda _: self.record(session))
            return session

        self.patch(RecordingMultiplexingFactory, "buildProtocol", buildAndWatch)

    def record(self, session: MemuxProtocol) -> None:
        """
        Keep the ALPN protocol and SNI name of C{session}'s TLS, if it has
        not been forgotten yet.
        """
        transport = session.transport
        if (
            isinstance(transport, TLSMemoryBIOProtocol)
            and session not in self.handshakes
        ):
            handle = cast(SSL.Connection | None, transport.getHandle())
            name = handle.get_servername() if handle is not None else None
            self.handshakes[session] = (transport.negotiatedProtocol, name)

    def negotiated(self) -> list[bytes | None]:
        """
        The ALPN protocol each server session negotiated.
        """
        for session in self.serverSessions:
            self.record(session)
        return [self.handshakes[s][0] for s in self.serverSessions]

    def serverNames(self) -> list[bytes | None]:
        """
        The name (SNI) each client asked the server for.
        """
        for session in self.serverSessions:
            self.record(session)
        return [self.handshakes[s][1] for s in self.serverSessions]


class TLSCommandTests(TLSServerTestCase):
    """
    The commands over TLS: ALPN ``memux/1`` is offered, and ``--ca``,
    ``--cert``, ``--key`` and ``--servername`` do what they say.
    """

    async def test_pingOffersALPN(self) -> None:
        """
        ``memux ping`` to a ``tls:`` REMOTE (here with Twisted's own
        ``trustRoots=``) offers ALPN ``memux/1``, which the server
        selects; the path line says TLS.
        """
        remote = self.serveTLS()
        roots = quoteStringArgument(self.certs.caDirectory)
        out, err, code = await runCLI(
            self, "ping", "-c", "1", f"{remote}:trustRoots={roots}"
        )
        self.assertEqual((code, err), (0, b""))
        self.assertIn(b"path: TLS over TCP", out)
        self.assertEqual(self.negotiated(), [ALPN])

    async def test_connectWithCA(self) -> None:
        """
        ``memux connect --ca FILE`` trusts that CA (not in the system's
        store), offers ``memux/1``, and carries the data.
        """
        remote = self.serveTLS()
        out, err, code = await runCLI(
            self, "connect", "--ca", self.certs.caFile, remote, "echo", stdin=b"hello"
        )
        self.assertEqual((out, err, code), (b"hello", b"", 0))
        self.assertEqual(self.negotiated(), [ALPN])

    async def test_forwardWithCA(self) -> None:
        """
        ``memux forward --ca FILE`` makes its session over TLS with that
        CA, offering ``memux/1``, and forwards connections over it.
        """
        remote = self.serveTLS()
        process = spawnCLI(
            self,
            "forward",
            "--ca",
            self.certs.caFile,
            "tcp:0:interface=127.0.0.1",
            remote,
            "echo",
        )
        listening = await process.waitForStderr(rb"listening on 127\.0\.0\.1:(\d+)")
        endpoint = TCP4ClientEndpoint(
            self.reactor, "127.0.0.1", int(listening.group(1))
        )
        client = Client(b"hello")
        await connectProtocol(endpoint, client)
        self.assertEqual(await client.done, (5, hashlib.sha256(b"hello").hexdigest()))
        self.assertEqual(self.negotiated(), [ALPN])
        cast(IProcessTransport, process.transport).signalProcess("INT")
        out, err, code = await process.ended
        self.assertEqual(code, 0, err)

    async def test_servername(self) -> None:
        """
        ``--servername NAME`` is sent as SNI and checked against the
        server's certificate instead of REMOTE's host (another name fails:
        L{ConnectionFailureTests.test_wrongName}).
        """
        remote = self.serveTLS()
        out, err, code = await runCLI(
            self,
            "ping",
            "-c",
            "1",
            "--ca",
            self.certs.caFile,
            "--servername",
            HOSTNAME,
            remote,
        )
        self.assertEqual((code, err), (0, b""))
        self.assertEqual(self.serverNames(), [HOSTNAME.encode()])

    async def test_clientCertificate(self) -> None:
        """
        A server that requires client certificates (``--tls-ca``) accepts
        ``--cert FILE`` holding the certificate and key, and ``--cert``
        with ``--key``.
        """
        remote = self.serveTLS("--tls-ca", self.certs.caFile)
        ca = ("--ca", self.certs.caFile)
        for certificate in [
            ("--cert", self.certs.clientFile),
            ("--cert", self.certs.clientCertFile, "--key", self.certs.clientKeyFile),
        ]:
            out, err, code = await runCLI(
                self, "connect", *ca, *certificate, remote, "echo", stdin=b"mutual"
            )
            self.assertEqual((out, err, code), (b"mutual", b"", 0))
        self.assertEqual(self.negotiated(), [ALPN, ALPN])

    async def test_everyCommandOffersALPN(self) -> None:
        """
        The REMOTE endpoint each command is made with (through
        L{makeCommand}) takes the TLS options and offers ``memux/1``.
        """
        remote = self.serveTLS("--tls-ca", self.certs.caFile)
        tls = ["--ca", self.certs.caFile, "--cert", self.certs.clientFile]
        for argv in [
            ["forward", *tls, "0", remote, "echo"],
            ["connect", *tls, remote, "echo"],
            ["ping", *tls, remote],
        ]:
            args = buildParser().parse_args(argv)
            command = makeCommand(args, self.reactor, Reporter(io.StringIO(), ""))
            assert isinstance(command, RemoteCommand)
            session = await self.connect(command.remote)
            await session.ping()
            assert isinstance(session.transport, TLSMemoryBIOProtocol)
            self.assertEqual(session.transport.negotiatedProtocol, ALPN)
        self.assertEqual(self.negotiated(), [ALPN] * 3)


class ConnectionFailureTests(TLSServerTestCase):
    """
    Issue 12: when the session cannot be made, every command says why,
    once, on standard error (C{cannot connect to REMOTE: WHY}), prints
    nothing on standard output, and exits 3; C{forward} does not listen.
    Against real loopback servers: Python's C{http.server}, and the
    C{twistd memux} service over TLS.
    """

    timeout = 60

    async def runEach(
        self, remote: str, *options: str
    ) -> dict[str, tuple[bytes, bytes, int]]:
        """
        Run C{forward}, C{connect} and C{ping -c 1} to C{remote} with
        C{options}, all at once; return each one's (stdout, stderr, exit
        status) by command name.
        """
        runs = {
            "forward": runCLI(
                self, "forward", *options, LOCAL, remote, "echo", timeout=20
            ),
            "connect": runCLI(
                self, "connect", *options, remote, "echo", stdin=b"hi", timeout=20
            ),
            "ping": runCLI(self, "ping", "-c", "1", *options, remote, timeout=20),
        }
        results = await defer.gatherResults(list(runs.values()))
        return dict(zip(runs, results, strict=True))

    def assertCannotConnect(
        self, results: dict[str, tuple[bytes, bytes, int]], remote: str
    ) -> list[str]:
        """
        Each command exited 3, printed nothing on standard output and one
        line on standard error, C{memux COMMAND: cannot connect to REMOTE:
        WHY}, with no OpenSSL error tuple or exception repr in it; return
        each WHY.
        """
        reasons = []
        for name, (out, err, code) in results.items():
            self.assertEqual((code, out), (ExitStatus.CONNECT, b""), (name, err))
            [line] = err.decode().splitlines()
            prefix = f"memux {name}: cannot connect to {remote}: "
            self.assertTrue(line.startswith(prefix), line)
            for raw in ("SSL routines", "Error(", "[(", "closed cleanly"):
                self.assertNotIn(raw, line)
            reasons.append(line[len(prefix) :])
        return reasons

    async def test_notMemux(self) -> None:
        """
        A server that is not memux (here Python's C{http.server}): each
        command says the server is not a memux peer and what it sent.
        """
        remote = f"tcp:127.0.0.1:{serveHTTP(self)}"
        results = await self.runEach(remote)
        for why in self.assertCannotConnect(results, remote):
            self.assertTrue(
                why.startswith("not a memux peer: the stream starts with "), why
            )

    async def test_tlsServerOverTCP(self) -> None:
        """
        A TLS server reached with C{tcp:}: each command says the server
        seems to speak TLS, and shows the C{tls:} REMOTE to use.
        """
        port = self.serveTLS().rsplit(":", 1)[1]
        remote = f"tcp:127.0.0.1:{port}"
        results = await self.runEach(remote)
        for why in self.assertCannotConnect(results, remote):
            self.assertIn("the server seems to speak TLS", why)
            self.assertIn(f"tls:127.0.0.1:{port}", why)

    async def test_plainServerOverTLS(self) -> None:
        """
        A memux server without TLS reached with C{tls:}: the server does
        not seem to speak TLS, and the C{tcp:} REMOTE is shown.
        """
        server = self.serve("--listen", LOCAL)
        port = self.tcpPort(server)
        remote = f"tls:127.0.0.1:{port}"
        out, err, code = await runCLI(
            self, "connect", "--ca", self.certs.caFile, remote, "echo", timeout=20
        )
        why = self.assertCannotConnect({"connect": (out, err, code)}, remote)[0]
        self.assertIn("the server does not seem to speak TLS", why)
        self.assertIn(f"tcp:127.0.0.1:{port}", why)

    async def test_untrustedCertificate(self) -> None:
        """
        A server whose certificate is from a CA not given with C{--ca}:
        each command says the certificate for the host is not trusted, and
        names the C{--ca} file.  With no C{--ca}, the system's CAs do not
        trust it either, and the message says to give the CA with C{--ca}.
        """
        remote = self.serveTLS()
        results = await self.runEach(remote, "--ca", self.certs.otherCAFile)
        for why in self.assertCannotConnect(results, remote):
            self.assertTrue(
                why.startswith("certificate for 127.0.0.1 is not trusted: "), why
            )
            self.assertIn(self.certs.otherCAFile, why)
        out, err, code = await runCLI(self, "ping", "-c", "1", remote, timeout=20)
        [why] = self.assertCannotConnect({"ping": (out, err, code)}, remote)
        self.assertTrue(why.startswith("certificate for 127.0.0.1 is not trusted: "))
        self.assertIn("--ca", why)

    async def test_wrongName(self) -> None:
        """
        A certificate for other names than the one checked (here
        C{--servername}): the names it is for, and the one expected.
        """
        remote = self.serveTLS()
        results = await self.runEach(
            remote, "--ca", self.certs.caFile, "--servername", "elsewhere.test"
        )
        for why in self.assertCannotConnect(results, remote):
            self.assertEqual(
                why, f"certificate is for {HOSTNAME}, 127.0.0.1, not elsewhere.test"
            )

    async def test_clientCertificateRequired(self) -> None:
        """
        Without C{--cert}, a server that requires client certificates
        refuses the handshake: each command says a client certificate is
        required; with one from a CA the server does not trust, that the
        server does not trust it.
        """
        remote = self.serveTLS("--tls-ca", self.certs.caFile)
        results = await self.runEach(remote, "--ca", self.certs.caFile)
        for why in self.assertCannotConnect(results, remote):
            self.assertEqual(
                why, "the server requires a client certificate: give one with --cert"
            )
        out, err, code = await runCLI(
            self,
            "connect",
            "--ca",
            self.certs.caFile,
            "--cert",
            self.certs.strangerFile,
            remote,
            "echo",
            timeout=20,
        )
        [why] = self.assertCannotConnect({"connect": (out, err, code)}, remote)
        self.assertIn("the server does not trust the client certificate", why)
        self.assertIn(self.certs.strangerFile, why)


class GoAwayTests(ServerTestCase):
    """
    Issue 12: a server's GOAWAY is reported with its code and reason,
    never as a clean close, and a lost session exits 3.
    """

    def serveMemux(self, *options: str) -> str:
        """
        Serve the C{twistd memux} service with C{options} on a loopback
        port; return the REMOTE for it.
        """
        server = self.serve("--listen", LOCAL, *options)
        return f"tcp:127.0.0.1:{self.tcpPort(server)}"

    async def test_pingIdleTimeout(self) -> None:
        """
        ``twistd memux --idle-timeout`` ends a session that opens no
        channel with GOAWAY IDLE_TIMEOUT: ``ping`` says so (code and
        reason) and exits 3, after the summary of what it saw.
        """
        remote = self.serveMemux("--idle-timeout", "0.5")
        out, err, code = await runCLI(self, "ping", "-i", "0.05", remote, timeout=20)
        self.assertEqual(code, ExitStatus.CONNECT, err)
        self.assertEqual(
            err.decode().splitlines(),
            [
                "memux ping: pinging until interrupted (Ctrl-C);"
                " -c COUNT stops after COUNT pings",
                f"memux ping: session to {remote} ended:"
                " the peer went away (GOAWAY IDLE_TIMEOUT: idle for 0.5 s)",
            ],
        )
        # A ping sent as the GOAWAY was on its way goes unanswered (the
        # server closes after it): at most one, and the summary counts it.
        summary = re.search(r"\n(\d+) sent, (\d+) answered, (\d+)% lost", out.decode())
        assert summary is not None, out
        sent, answered, lost = map(int, summary.groups())
        self.assertGreater(answered, 0)
        self.assertIn(sent - answered, (0, 1))
        self.assertEqual(lost, round(100 * (sent - answered) / sent))

    async def test_pingGoAway(self) -> None:
        """
        A server that goes away (GOAWAY NO_ERROR, with its reason) while
        ``ping`` runs: ``ping`` says the peer went away, with the code and
        reason, and exits 3.
        """
        remote = self.serveMemux()
        process = spawnCLI(self, "ping", "-c", "100", "-i", "0.05", remote)
        await process.waitForStdout(rb"seq=2 ")
        [session] = self.serverSessions
        session.goAway(ErrorCode.NO_ERROR, "maintenance")
        out, err, code = await process.ended
        self.assertEqual(code, ExitStatus.CONNECT, err)
        self.assertEqual(
            err.decode().splitlines(),
            [
                f"memux ping: session to {remote} ended:"
                " the peer went away (GOAWAY NO_ERROR: maintenance)"
            ],
        )

    async def test_connectGoAway(self) -> None:
        """
        A server that goes away (GOAWAY NO_ERROR), then closes the
        connection while ``connect``'s channel is open: ``connect`` says
        the session was lost because the peer went away, and exits 3.
        """
        remote = self.serveMemux()
        process = spawnCLI(self, "connect", remote, "discard", stdin=None)
        await waitUntil(
            lambda: any(s.counters()["channelsOpen"] for s in self.serverSessions)
        )
        [session] = self.serverSessions
        session.goAway(ErrorCode.NO_ERROR, "maintenance")
        session.loseConnection()
        out, err, code = await process.ended
        self.assertEqual((out, code), (b"", ExitStatus.CONNECT))
        self.assertEqual(
            err,
            b"memux connect: service 'discard': memux session lost:"
            b" the peer went away (GOAWAY NO_ERROR: maintenance)\n",
        )

    async def test_forwardIdleTimeout(self) -> None:
        """
        ``forward``'s session, idle, ended by the server's GOAWAY
        IDLE_TIMEOUT: ``forward`` says so with the code and reason, and the
        next connection makes a new session.
        """
        remote = self.serveMemux("--idle-timeout", "0.5")
        process = spawnCLI(self, "forward", LOCAL, remote, "echo")
        listening = await process.waitForStderr(rb"listening on 127\.0\.0\.1:(\d+)")
        await process.waitForStderr(
            rb"session to .* ended: the peer went away \(GOAWAY IDLE_TIMEOUT: idle for"
            rb" 0\.5 s\);"
            rb" the next connection reconnects"
        )
        client = Client(b"again")
        await connectProtocol(
            TCP4ClientEndpoint(self.reactor, "127.0.0.1", int(listening.group(1))),
            client,
        )
        self.assertEqual(await client.done, (5, hashlib.sha256(b"again").hexdigest()))
        cast(IProcessTransport, process.transport).signalProcess("INT")
        out, err, code = await process.ended
        self.assertEqual(code, ExitStatus.OK, err)
        self.assertNotIn(b"closed cleanly", err)


class TLSUsageTests(SynchronousTestCase):
    """
    TLS options that cannot apply, and files that cannot be used, are
    reported before anything connects, with status 2.
    """

    def setUp(self) -> None:
        """
        Make a CA and certificates.
        """
        # Absolute: the commands run from the root of the checkout.
        self.certs = Certificates(os.path.abspath(self.mktemp()))

    def run_(self, *argv: str) -> tuple[int, str, str]:
        """
        Run C{main} with C{argv}; return the status, standard output and
        standard error.
        """
        out, err = io.StringIO(), io.StringIO()
        self.patch(sys, "stdout", out)
        self.patch(sys, "stderr", err)
        try:
            code: object = main(list(argv))
        except SystemExit as e:
            code = e.code
        return (code if isinstance(code, int) else 1), out.getvalue(), err.getvalue()

    def test_onlyForTLS(self) -> None:
        """
        Each command takes the TLS options, but only for a ``tls:`` REMOTE:
        with another, it is a usage error saying so.
        """
        for command in (["forward", "8080"], ["connect"], ["ping"]):
            for remote in ("h:1", "tcp:h:1", "[::1]:1", "unix:/tmp/s"):
                service = ["echo"] if command[0] != "ping" else []
                code, out, err = self.run_(
                    *command, "--ca", self.certs.caFile, remote, *service
                )
                self.assertEqual(code, ExitStatus.USAGE, err)
                self.assertIn(f"usage: memux {command[0]}", err)
                self.assertIn("--ca applies only to a tls: REMOTE", err)
        code, out, err = self.run_(
            "ping", "--servername", "x", "--ca", self.certs.caFile, "h:1"
        )
        self.assertIn("--ca, --servername apply only to a tls: REMOTE", err)

    def test_keyNeedsCert(self) -> None:
        """
        ``--key`` without ``--cert`` is a usage error.
        """
        code, out, err = self.run_("ping", "--key", self.certs.clientKeyFile, "tls:h:1")
        self.assertEqual(code, ExitStatus.USAGE)
        self.assertIn("--key needs --cert", err)

    def test_emptyValue(self) -> None:
        """
        An empty file or name is a usage error, not a silent default.
        """
        for option in ("--ca", "--cert", "--key", "--servername"):
            code, out, err = self.run_("ping", option, "", "tls:h:1")
            self.assertEqual(code, ExitStatus.USAGE)
            self.assertIn(f"argument {option}: must not be empty", err)

    def test_givenTwice(self) -> None:
        """
        ``--ca`` with REMOTE's ``trustRoots=``, or ``--cert`` with its
        ``certificate=``, is a usage error naming both.
        """
        q = quoteStringArgument
        for option, keyword in [
            ("--ca", f"trustRoots={q(self.certs.caDirectory)}"),
            ("--cert", f"certificate={q(self.certs.clientFile)}"),
        ]:
            code, out, err = self.run_(
                "ping", option, self.certs.caFile, f"tls:h:1:{keyword}"
            )
            self.assertEqual(code, ExitStatus.USAGE)
            name = keyword.split("=")[0]
            self.assertIn(f"{option} and REMOTE's {name}= say the same thing", err)

    def test_fileErrors(self) -> None:
        """
        A ``--ca``, ``--cert`` or ``--key`` file that is missing or holds
        no certificate or key is one line naming the file, status 2,
        without the usage.
        """
        missing = os.path.join(self.certs.directory, "missing.pem")
        for tls, named in [
            (["--ca", missing], missing),
            (["--cert", missing], missing),
            (["--cert", self.certs.clientCertFile, "--key", missing], missing),
            (["--ca", self.certs.clientKeyFile], self.certs.clientKeyFile),
            (["--cert", self.certs.clientCertFile], self.certs.clientCertFile),
        ]:
            for command in (["forward", "8080", "tls:h:1", "e"], ["ping", "tls:h:1"]):
                code, out, err = self.run_(command[0], *tls, *command[1:])
                self.assertEqual((code, out), (ExitStatus.USAGE, ""), err)
                [line] = err.splitlines()
                self.assertTrue(line.startswith(f"memux {command[0]}: "), line)
                self.assertIn(repr(named), line)


def _twistdHasService() -> bool:
    done = subprocess.run(
        [sys.executable, "-c", "from twisted.scripts.twistd import run; run()"]
        + ["memux", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        env=cliEnvironment(),
        cwd=str(ROOT),
    )
    return "--service" in done.stdout


def _waitForPort(port: int, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(
                    f"{process.args!r} did not start: {log.read_text()!r}"
                ) from None
            time.sleep(0.05)


def _sha256File(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


class AcceptanceTests(SynchronousTestCase):
    """
    Issue 3's "done when": a web server behind ``twistd memux --service``,
    ``memux forward`` in front, and an HTTP client fetching through them.
    """

    def setUp(self) -> None:
        if not _twistdHasService():
            raise SkipTest("twistd memux --service not available yet")
        self.processes: list[subprocess.Popen[bytes]] = []
        self.addCleanup(self._stopAll)

    def _stopAll(self) -> None:
        for process in reversed(self.processes):
            process.terminate()
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def start(self, name: str, argv: list[str], port: int) -> None:
        log = Path(self.mktemp() + f"-{name}.log")
        with log.open("wb") as f:
            process = subprocess.Popen(
                argv,
                stdout=f,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=cliEnvironment(),
                cwd=str(ROOT),
            )
        self.processes.append(process)
        _waitForPort(port, process, log)

    def fetch(self, url: str, to: Path) -> None:
        curl = shutil.which("curl")
        if curl is not None:
            subprocess.run(
                [curl, "--silent", "--show-error", "--fail", "--noproxy", "*"]
                + ["--max-time", "120", "--output", str(to), url],
                check=True,
                timeout=150,
            )
        else:
            opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
            with opener.open(url, timeout=120) as response, to.open("wb") as f:
                shutil.copyfileobj(response, f, 1 << 20)

    def test_webThroughForward(self) -> None:
        """
        Pages, a directory listing and a 100 MB file come through the
        tunnel intact, several at once.
        """
        site = Path(self.mktemp()).resolve()
        site.mkdir()
        (site / "page.html").write_text("<h1>memux</h1>\n")
        big = site / "big.bin"
        with big.open("wb") as f:
            for _ in range(100):
                f.write(os.urandom(1 << 20))
        self.addCleanup(big.unlink)
        web, memuxPort, front = freePort(), freePort(), freePort()
        self.start(
            "web",
            [sys.executable, "-m", "http.server", str(web)]
            + ["--bind", "127.0.0.1", "--directory", str(site)],
            web,
        )
        self.start(
            "twistd",
            [sys.executable, "-c", "from twisted.scripts.twistd import run; run()"]
            + ["-n", "--pidfile=", "memux"]
            + ["--listen", f"tcp:{memuxPort}:interface=127.0.0.1"]
            + ["--service", f"web=tcp:127.0.0.1:{web}"],
            memuxPort,
        )
        self.start(
            "forward",
            [sys.executable, "-m", "memux", "forward"]
            + [f"tcp:{front}:interface=127.0.0.1", f"tcp:127.0.0.1:{memuxPort}", "web"],
            front,
        )
        base = f"http://127.0.0.1:{front}"
        copy, page, listing = (Path(self.mktemp()) for _ in range(3))
        started = time.monotonic()
        with ThreadPoolExecutor(4) as pool:
            fetches = [
                pool.submit(self.fetch, f"{base}/big.bin", copy),
                pool.submit(self.fetch, f"{base}/page.html", page),
                pool.submit(self.fetch, f"{base}/", listing),
            ]
            for fetch in fetches:
                fetch.result()
        elapsed = time.monotonic() - started
        self.addCleanup(copy.unlink)
        self.assertEqual(page.read_text(), "<h1>memux</h1>\n")
        self.assertIn("big.bin", listing.read_text())
        self.assertEqual(copy.stat().st_size, 100 << 20)
        self.assertEqual(_sha256File(copy), _sha256File(big))
        # Generous: it takes a second or two, but CI machines vary.
        self.assertLess(elapsed, 60)
        for process in self.processes:
            self.assertIsNone(process.poll())


class TwistdTLSCommandTests(SynchronousTestCase):
    """
    The ``memux`` command against a real ``twistd -n memux`` serving mutual
    TLS (``--tls-cert``, ``--tls-ca``) on a UNIX socket, reached through a
    ``tls:`` REMOTE with ``endpoint=``.
    """

    def setUp(self) -> None:
        """
        Make certificates and start ``twistd``; it is stopped at cleanup.
        """
        # Not under _trial_temp: a UNIX socket's path must be short.
        self.certs = Certificates(tempfile.mkdtemp(prefix="memux-"))
        self.addCleanup(shutil.rmtree, self.certs.directory, True)
        sock = os.path.join(self.certs.directory, "memux.sock")
        log = Path(self.certs.directory, "twistd.log")
        with log.open("wb") as f:
            server = subprocess.Popen(
                [sys.executable, "-c", "from twisted.scripts.twistd import run; run()"]
                + ["-n", "--pidfile=", "memux", "--listen", f"unix:{sock}"]
                + ["--tls-cert", self.certs.serverFile, "--tls-ca", self.certs.caFile],
                stdout=f,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=cliEnvironment(),
                cwd=str(ROOT),
            )
        self.addCleanup(server.wait, 30)
        self.addCleanup(server.terminate)
        deadline = time.monotonic() + 30
        while not os.path.exists(sock):
            if server.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"twistd did not start: {log.read_text()!r}")
            time.sleep(0.05)
        # HOST is the name the certificate is checked for; endpoint= says
        # where to connect.
        self.remote = (
            f"tls:{HOSTNAME}:7400:endpoint={quoteStringArgument(f'unix:{sock}')}"
        )

    def memux(
        self, *argv: str, stdin: bytes = b""
    ) -> subprocess.CompletedProcess[bytes]:
        """
        Run ``python -m memux ARGV`` to the end.
        """
        return subprocess.run(
            [sys.executable, "-m", "memux", *argv],
            input=stdin,
            capture_output=True,
            timeout=60,
            env=cliEnvironment(),
            cwd=str(ROOT),
        )

    def test_withClientCertificate(self) -> None:
        """
        With ``--ca``, ``--cert`` and ``--key``, ``ping`` and ``connect``
        get through, over TLS.
        """
        tls = ["--ca", self.certs.caFile, "--cert", self.certs.clientCertFile]
        tls += ["--key", self.certs.clientKeyFile]
        done = self.memux("ping", "-c", "1", *tls, self.remote)
        self.assertEqual((done.returncode, done.stderr), (0, b""))
        self.assertIn(b"path: TLS over UNIX", done.stdout)
        self.assertIn(b"1 sent, 1 answered", done.stdout)
        done = self.memux("connect", *tls, self.remote, "echo", stdin=b"hello")
        self.assertEqual(
            (done.returncode, done.stdout, done.stderr), (0, b"hello", b"")
        )

    def test_withoutClientCertificate(self) -> None:
        """
        Without ``--cert``, the server refuses the handshake: ``connect``
        exits 3 with one line saying it cannot connect because the server
        requires a client certificate.
        """
        done = self.memux("connect", "--ca", self.certs.caFile, self.remote, "echo")
        self.assertEqual((done.returncode, done.stdout), (ExitStatus.CONNECT, b""))
        self.assertEqual(
            done.stderr.decode(),
            f"memux connect: cannot connect to {self.remote}: the server requires"
            " a client certificate: give one with --cert\n",
        )


class ExampleTests(SynchronousTestCase):
    """
    The command-line example runs.
    """

    def test_cliTunnel(self) -> None:
        """
        examples/cli_tunnel.py serves a page through twistd memux --service
        and memux forward, and prints it.
        """
        script = EXAMPLES / "cli_tunnel.py"
        if not script.exists():
            raise SkipTest("examples/ is not here")
        if not _twistdHasService():
            raise SkipTest("twistd memux --service not available yet")
        done = subprocess.run(
            [sys.executable, str(script)],
            capture_output=True,
            text=True,
            timeout=120,
            env=cliEnvironment(),
            cwd=str(ROOT),
        )
        self.assertEqual(done.returncode, 0, done.stderr)
        self.assertIn("$ python -m memux forward tcp:", done.stdout)
        self.assertRegex(
            done.stdout,
            r"GET http://127\.0\.0\.1:\d+/hello\.txt through memux:"
            r" Hello through memux!\n",
        )
