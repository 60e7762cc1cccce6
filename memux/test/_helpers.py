# -*- test-case-name: memux.test.test_helpers -*-
"""
Helpers shared by memux's test modules (one home, so test modules never
import each other): the checkout's paths, test certificates, subprocesses
and a server harness on the real reactor.  The in-memory fakes (peers,
transports, recording protocols) are in L{memux.test._fakes}.
"""

from __future__ import annotations

import asyncio
import math
import os
import re
import socket
import subprocess
import sys
import unittest
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar, cast

import trustme
from twisted.internet import defer
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint
from twisted.internet.error import ProcessDone, ProcessTerminated
from twisted.internet.interfaces import (
    IListeningPort,
    IProcessTransport,
    IProtocolFactory,
    IReactorProcess,
    IStreamClientEndpoint,
)
from twisted.internet.protocol import ProcessProtocol
from twisted.internet.task import deferLater
from twisted.logger import ILogObserver, globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import SkipTest, TestCase

from memux import MemuxProtocol, connectSession, tap
from memux.protocol import MultiplexingFactory

T = TypeVar("T")

#: The directory above the memux package: the checkout's root when the
#: tests run from a checkout, site-packages when memux is installed.
ROOT = Path(__file__).resolve().parents[2]


def isCheckout(root: Path = ROOT) -> bool:
    """
    Whether ``root`` is a memux checkout (rather than the site-packages
    directory of an installed memux).  An installed package has
    ``twisted/plugins/`` beside it too (Twisted's own, holding memux's
    plugin), so only the project's own files tell a checkout.
    """
    return (root / "setup.cfg").is_file() and (root / "memux").is_dir()


#: The runnable examples, in the checkout.
EXAMPLES = ROOT / "examples"


#: The protocol's specification, in the checkout.
SPEC = ROOT / "doc" / "spec.rst"


def readSpec() -> str:
    """
    Return the text of ``doc/spec.rst``, or skip the calling test when the
    document is not there (for example in an installed package).
    """
    if not SPEC.is_file():
        raise unittest.SkipTest(f"{SPEC} not found: the specification is not installed")
    return SPEC.read_text(encoding="utf-8")


#: the name the test server's certificate is for
HOSTNAME = "memux.test"


class Certificates:
    """
    A test CA (made with trustme) with a server certificate for
    L{HOSTNAME} and C{127.0.0.1}, a client certificate, and a stranger's
    certificate from another CA; each also written to a PEM file in
    C{directory}, as are the client certificate and its key apart, the CA
    certificate alone in the directory C{caDirectory}, and another CA's
    certificate in C{otherCAFile}.
    """

    def __init__(self, directory: str) -> None:
        os.makedirs(directory, exist_ok=True)
        self.directory = directory
        self.ca = trustme.CA()
        self.server = self.ca.issue_cert(HOSTNAME, "127.0.0.1")
        self.client = self.ca.issue_cert("client.memux.test")
        self.stranger = trustme.CA().issue_cert("stranger.memux.test")
        self.caPEM = self.ca.cert_pem.bytes()
        self.serverPEM = self.server.private_key_and_cert_chain_pem.bytes()
        self.clientPEM = self.client.private_key_and_cert_chain_pem.bytes()
        self.strangerPEM = self.stranger.private_key_and_cert_chain_pem.bytes()
        self.caFile = self.write("ca.pem", self.caPEM)
        self.serverFile = self.write("server.pem", self.serverPEM)
        self.serverCertFile = self.write(
            "server-cert.pem", self.server.cert_chain_pems[0].bytes()
        )
        self.serverKeyFile = self.write(
            "server-key.pem", self.server.private_key_pem.bytes()
        )
        self.clientFile = self.write("client.pem", self.clientPEM)
        self.clientCertFile = self.write(
            "client-cert.pem", self.client.cert_chain_pems[0].bytes()
        )
        self.clientKeyFile = self.write(
            "client-key.pem", self.client.private_key_pem.bytes()
        )
        self.strangerFile = self.write("stranger.pem", self.strangerPEM)
        self.otherCAFile = self.write("other-ca.pem", trustme.CA().cert_pem.bytes())
        self.caDirectory = os.path.join(directory, "cas")
        os.makedirs(self.caDirectory, exist_ok=True)
        with open(os.path.join(self.caDirectory, "ca.pem"), "wb") as f:
            f.write(self.caPEM)

    def write(self, name: str, data: bytes) -> str:
        """
        Write C{data} to file C{name}; return its path.
        """
        path = os.path.join(self.directory, name)
        with open(path, "wb") as f:
            f.write(data)
        return path


def listenStartingTLS(
    case: TestCase, reactor: Any, factory: Any, certificates: Certificates
) -> int:
    """
    Listen on 127.0.0.1 (until C{case} ends) with
    L{twisted.internet.ssl.Port}, whose connections start TLS on themselves
    before their protocol connects: the protocol's C{transport} is the TCP
    transport, with TLS started (C{TLS} true), and the TLS layer is that
    transport's C{protocol}.  (Twisted's C{listenSSL} and C{SSL4ServerEndpoint}
    wrap the protocol in a TLS layer instead.)  Return the port number.
    """
    from twisted.internet import ssl

    from memux.tls import serverTLSOptions

    options: Any = serverTLSOptions(certificates.serverPEM)
    port = ssl.Port(0, factory, options, interface="127.0.0.1", reactor=reactor)
    port.startListening()
    case.addCleanup(port.stopListening)
    return cast(int, port.getHost().port)


# ------------------------------------------------------------ subprocesses


def runModule(
    module: str, *args: str, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """
    Run ``python -m MODULE`` with ``args`` from the root of the checkout,
    this memux first on the path.
    """
    path = os.environ.get("PYTHONPATH")
    env = dict(os.environ, PYTHONPATH=str(ROOT) + (os.pathsep + path if path else ""))
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=str(ROOT),
    )


def isNumber(x: Any) -> bool:
    """
    Whether ``x`` is a finite number (not a bool).
    """
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)


def runExample(name: str, *args: str) -> str:
    """
    Run ``examples/name`` with this Python and memux importable; return its
    standard output.
    """
    script = EXAMPLES / name
    if not script.exists():
        raise SkipTest(f"{script} is not here (installed without the examples)")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    done = subprocess.run(
        [sys.executable, str(script), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=str(ROOT),
    )
    if done.returncode != 0:
        raise AssertionError(f"{name} exited {done.returncode}:\n{done.stderr}")
    return done.stdout


def globalReactor() -> Any:
    """
    The global reactor, imported when first needed rather than when this
    module is.
    """
    from twisted.internet import reactor

    return reactor


def cliEnvironment() -> dict[str, str]:
    """
    The environment for a subprocess that imports memux from this checkout.
    """
    return dict(os.environ, PYTHONPATH=str(ROOT))


class CLIProcess(ProcessProtocol):
    """
    A ``python -m memux`` child: feeds it C{stdin} (then closes its
    standard input, unless C{stdin} is L{None}), collects its output, and
    fires C{ended} with (stdout, stderr, exit status).
    """

    def __init__(self, stdin: bytes | None = b"") -> None:
        self.stdin = stdin
        self.out: list[bytes] = []
        self.err: list[bytes] = []
        self.ended: defer.Deferred[tuple[bytes, bytes, int]] = defer.Deferred()
        self._waiters: list[
            tuple[list[bytes], re.Pattern[bytes], defer.Deferred[re.Match[bytes]]]
        ] = []
        self.onStdout: Any = None

    def connectionMade(self) -> None:
        transport = cast(IProcessTransport, self.transport)
        if self.stdin is not None:
            transport.write(self.stdin)
            transport.closeStdin()

    def outReceived(self, data: bytes) -> None:
        self.out.append(data)
        if self.onStdout is not None:
            self.onStdout(data)
        self._check()

    def errReceived(self, data: bytes) -> None:
        self.err.append(data)
        self._check()

    def _check(self) -> None:
        for waiter in list(self._waiters):
            stream, pattern, d = waiter
            match = pattern.search(b"".join(stream))
            if match is not None:
                self._waiters.remove(waiter)
                d.callback(match)

    def waitForStderr(self, pattern: bytes) -> defer.Deferred[re.Match[bytes]]:
        """
        Fire with the match once standard error matches C{pattern}; fail
        if the process ends first.
        """
        return self._waitFor(self.err, pattern)

    def waitForStdout(self, pattern: bytes) -> defer.Deferred[re.Match[bytes]]:
        """
        Fire with the match once standard output matches C{pattern}; fail
        if the process ends first.
        """
        return self._waitFor(self.out, pattern)

    def _waitFor(
        self, stream: list[bytes], pattern: bytes
    ) -> defer.Deferred[re.Match[bytes]]:
        d: defer.Deferred[re.Match[bytes]] = defer.Deferred()
        self._waiters.append((stream, re.compile(pattern), d))
        self._check()
        return d

    def processEnded(self, reason: Failure) -> None:
        code = 0
        if reason.check(ProcessTerminated):
            value = cast(ProcessTerminated, reason.value)
            code = value.exitCode if value.exitCode is not None else -value.signal
        elif not reason.check(ProcessDone):
            code = -1
        out, err = b"".join(self.out), b"".join(self.err)
        for _, _, d in self._waiters:
            d.errback(
                AssertionError(
                    f"exited {code} first; stderr: {err!r};"
                    f" stdout ends: {out[-2000:]!r}"
                )
            )
        self._waiters = []
        self.ended.callback((out, err, code))


def spawnCLI(
    test: TestCase,
    *args: str,
    stdin: bytes | None = b"",
    childFDs: dict[int, Any] | None = None,
) -> CLIProcess:
    """
    Start ``python -m memux ARGS`` from the root of the checkout; kill it
    at the end of C{test} if it is still running.
    """
    process = CLIProcess(stdin)
    transport = cast(IReactorProcess, globalReactor()).spawnProcess(
        process,
        sys.executable,
        [sys.executable, "-m", "memux", *args],
        env=cliEnvironment(),
        path=str(ROOT),
        childFDs=childFDs,
    )

    def kill() -> defer.Deferred[Any] | None:
        if process.ended.called:
            return None
        transport.signalProcess("KILL")
        return process.ended

    test.addCleanup(kill)
    return process


def freePort() -> int:
    """
    A TCP port on 127.0.0.1 that nothing listens on just now.
    """
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


# ------------------------------------------------------------ a server


class RecordingMultiplexingFactory(MultiplexingFactory):
    """
    A L{MultiplexingFactory} that keeps the sessions it builds, so tests can
    wait for the server's side of each to close.
    """

    sessions: list[MemuxProtocol] = []

    def buildProtocol(self, addr: Any) -> MemuxProtocol:
        """
        Build and keep a session.
        """
        session = super().buildProtocol(addr)
        self.sessions.append(session)
        return session


class ServerTestCase(TestCase):
    """
    Runs L{tap.makeService} with the trial reactor and connects to it.
    Everything is closed, and waited for, at cleanup.
    """

    timeout = 30

    def setUp(self) -> None:
        """
        Record the server's sessions, to wait for them at cleanup.
        """
        from twisted.internet import reactor

        self.reactor: Any = reactor
        self.serverSessions: list[MemuxProtocol] = []
        self.patch(RecordingMultiplexingFactory, "sessions", self.serverSessions)
        self.patch(tap, "MultiplexingFactory", RecordingMultiplexingFactory)
        self.addCleanup(self.closeServerSessions)

    def closeServerSessions(self) -> Deferred[Any]:
        """
        Wait for the server's side of every session to close.
        """
        return defer.gatherResults([s.whenClosed() for s in self.serverSessions])

    async def serverSessionsClosed(self, count: int) -> None:
        """
        Wait until the server has made C{count} sessions, and every one of
        them has closed.
        """
        while len(self.serverSessions) < count:
            await deferLater(self.reactor, 0.01, lambda: None)
        await self.closeServerSessions()

    def serve(self, *argv: str) -> tap.MemuxServer:
        """
        Parse C{argv}, make the server with the trial reactor and start it;
        it is stopped at cleanup.
        """
        options = tap.Options()
        options.parseOptions(list(argv))
        server = tap.makeService(options, self.reactor)
        server.startService()
        self.addCleanup(server.stopService)
        return server

    def tcpPort(self, server: tap.MemuxServer, index: int = 0) -> int:
        """
        The TCP port the C{index}th C{--listen} endpoint listens on.
        """
        port = self.listeningPort(server, index)
        host = port.getHost()
        assert isinstance(host, IPv4Address)
        return host.port

    def listeningPort(self, server: tap.MemuxServer, index: int = 0) -> IListeningPort:
        """
        The listening port of the C{index}th C{--listen} endpoint.
        """
        child: Any = list(server)[index]
        port = child.endpoint.port
        self.assertIsNotNone(port, "not listening (yet)")
        assert port is not None
        return port  # type: ignore[no-any-return]

    async def connect(self, endpoint: IStreamClientEndpoint) -> MemuxProtocol:
        """
        Connect a client session; it is closed (and waited for) at cleanup.
        """
        session = await connectSession(endpoint, reactor=self.reactor)
        self.addCleanup(self.closeSession, session)
        return session

    def closeSession(self, session: MemuxProtocol) -> Deferred[None]:
        """
        Close C{session}'s connection and wait until it is closed.
        """
        transport: Any = session.transport
        if transport is not None and session.lostReason is None:
            # Over TLS, Twisted closes only once the session, which stays
            # registered as its connection's producer, unregisters.
            transport.unregisterProducer()
            transport.loseConnection()
        return session.whenClosed()

    async def listenTCP(self, factory: IProtocolFactory) -> int:
        """
        Listen with C{factory} on a loopback TCP port of the system's
        choosing, until cleanup; return the port number.
        """
        port = await TCP4ServerEndpoint(self.reactor, 0, interface="127.0.0.1").listen(
            factory
        )
        self.addCleanup(port.stopListening)
        host = port.getHost()
        assert isinstance(host, IPv4Address)
        return host.port

    def captureLog(self) -> list[dict[str, Any]]:
        """
        Keep every log event emitted until cleanup.
        """
        events: list[dict[str, Any]] = []
        observer = cast(ILogObserver, events.append)
        globalLogPublisher.addObserver(observer)
        self.addCleanup(globalLogPublisher.removeObserver, observer)
        return events

    def tcpEndpoint(self, port: int) -> TCP4ClientEndpoint:
        """
        A client endpoint for loopback port C{port}.
        """
        return TCP4ClientEndpoint(self.reactor, "127.0.0.1", port)


def logged(events: list[dict[str, Any]], fragment: str) -> list[dict[str, Any]]:
    """
    The events whose format contains C{fragment}.
    """
    return [e for e in events if fragment in (e.get("log_format") or "")]


#: A server endpoint on loopback TCP, on a port the system chooses.
LOCAL = "tcp:0:interface=127.0.0.1"


# ------------------------------------------------------------ asyncio


def runAsyncio(main: Callable[[], Awaitable[T]], timeout: float = 60) -> T:
    """
    Run ``main()`` in a fresh asyncio event loop (in this thread) and
    return its result; fail it after ``timeout`` seconds.  (Twisted's
    reactor need not run meanwhile; with it running, call this in a
    thread: ``threads.deferToThread(runAsyncio, main)``.)
    """

    async def bounded() -> T:
        return await asyncio.wait_for(main(), timeout)

    return asyncio.run(bounded())
