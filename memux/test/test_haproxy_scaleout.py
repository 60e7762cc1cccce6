# -*- test-case-name: memux.test.test_haproxy_scaleout -*-
"""
The scale-out recipe of ``doc/operations.rst``, with real processes on
loopback: HAProxy (Debian package ``haproxy``) in TCP mode, configured by
``contrib/haproxy/memux.cfg`` (its ports and directory replaced by the
test's), in front of two ``twistd memux`` workers listening on
``haproxy:`` endpoints.  Clients connect to HAProxy from distinct loopback
addresses; each worker must see the client's own address, a killed worker
must get no new sessions, and a worker stopped with SIGTERM must drain
(GOAWAY, its open channels carrying on) while HAProxy's health check takes
it out.  The tests skip, saying why, when haproxy is not installed.
"""

from __future__ import annotations

import csv
import io
import os
import re
import shutil
import signal
import socket
import sys
import tempfile
from pathlib import Path
from typing import Any, cast

from twisted.internet import defer
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.interfaces import IProcessTransport, IReactorProcess, IReactorTCP
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import deferLater
from twisted.trial.unittest import SkipTest, TestCase

from memux import IChannelTransport, MemuxProtocol, connectSession
from memux.test._fakes import Collector
from memux.test._helpers import (
    ROOT,
    CLIProcess,
    cliEnvironment,
    freePort,
    globalReactor,
)

#: The recipe's HAProxy configuration, in the checkout.
CONFIG = ROOT / "contrib" / "haproxy" / "memux.cfg"

#: How long a condition may take to come true (HAProxy checks every 100
#: ms here): generous, for a loaded machine; the tests take far less.
PATIENCE = 20.0


def haproxy() -> str:
    """
    The path of haproxy (often in /usr/sbin, off a user's PATH); skip the
    calling test, saying why, if it or the recipe's configuration is
    missing.
    """
    path = shutil.which("haproxy") or shutil.which("haproxy", path="/usr/sbin:/sbin")
    if path is None:
        raise SkipTest(
            "haproxy is not installed (Debian: apt-get install haproxy):"
            " the scale-out recipe is not tested"
        )
    if not CONFIG.is_file():
        raise SkipTest(f"{CONFIG} not found (an installed memux has no contrib/)")
    return path


class AddressTeller(Protocol):
    """
    A service for the workers (mounted with C{--factory}): it answers with
    the worker's process id and the client address its channel transport
    gives, C{b"PID HOST PORT"}, and closes.
    """

    def connectionMade(self) -> None:
        """
        Say who answers, and whom the worker believes it answers.
        """
        transport = IChannelTransport(self.transport)
        peer: Any = transport.getPeer()  # a ChannelAddress
        transport.write(f"{os.getpid()} {peer.host} {peer.port}".encode())
        transport.loseConnection()


def configure(directory: Path, front: int, workers: tuple[int, int]) -> Path:
    """
    Write the recipe's configuration with the test's ports and stats socket
    in C{directory}, and health checks every 100 ms (rather than every
    second) so that the tests are quick; return its path.
    """
    text = CONFIG.read_text()
    replacements = [
        ("127.0.0.1:7400", f"127.0.0.1:{front}"),
        ("127.0.0.1:7401", f"127.0.0.1:{workers[0]}"),
        ("127.0.0.1:7402", f"127.0.0.1:{workers[1]}"),
        ("/run/haproxy-memux.sock", str(directory / "admin.sock")),
        ("inter 1s fall 2 rise 2", "inter 100ms fall 2 rise 1"),
    ]
    for old, new in replacements:
        if old not in text:
            raise AssertionError(f"{CONFIG} no longer says {old!r}")
        text = text.replace(old, new)
    path = directory / "haproxy.cfg"
    path.write_text(text)
    return path


class Worker:
    """
    A C{twistd memux} worker process listening on C{haproxy:tcp:PORT}.
    """

    def __init__(self, name: str, port: int, process: CLIProcess, pid: int) -> None:
        self.name = name
        self.port = port
        self.process = process
        self.pid = pid

    def signal(self, name: str) -> None:
        """
        Send the worker the signal C{name} (C{"TERM"}, C{"KILL"}).
        """
        cast(IProcessTransport, self.process.transport).signalProcess(name)

    def log(self) -> str:
        """
        What the worker has logged so far.
        """
        return b"".join(self.process.out).decode(errors="replace")


class ScaleOutTests(TestCase):
    """
    HAProxy with C{send-proxy-v2} in front of two C{twistd memux}
    workers, as the recipe sets it up.
    """

    timeout = 60

    def spawn(self, argv: list[str], path: str) -> tuple[CLIProcess, int]:
        """
        Start C{argv}; kill it at the end of the test if it still runs;
        return it and its process id.
        """
        process = CLIProcess(stdin=None)
        transport = cast(IReactorProcess, globalReactor()).spawnProcess(
            process, argv[0], argv, env=cliEnvironment(), path=path
        )

        def kill() -> defer.Deferred[Any] | None:
            if process.ended.called:
                return None
            transport.signalProcess("KILL")
            return process.ended

        self.addCleanup(kill)
        pid = transport.pid
        assert pid is not None
        return process, pid

    async def startWorker(self, name: str) -> Worker:
        """
        Start a worker on a free loopback port, with the C{whoami} service
        (L{AddressTeller}) and the built-in echo; return it once it listens.
        """
        # Port 0, and the port it says it took: a port found free first
        # may be taken by a test running in parallel before twistd binds it.
        process, pid = self.spawn(
            [sys.executable, "-c", "from twisted.scripts.twistd import run; run()"]
            + ["-n", "--pidfile=", "memux"]
            + ["--listen", "haproxy:tcp:0:interface=127.0.0.1"]
            + ["--factory", f"whoami={__name__}.AddressTeller"]
            + ["--drain-timeout", "30"],
            str(ROOT),
        )
        listening = await process.waitForStdout(
            rb"memux listening on 127\.0\.0\.1:(\d+)"
        )
        return Worker(name, int(listening.group(1)), process, pid)

    async def startCluster(self) -> tuple[int, dict[str, Worker]]:
        """
        Start two workers and HAProxy in front of them; return HAProxy's
        port and the workers by their names in its configuration (w1, w2)
        once HAProxy's health checks have passed for both.
        """
        program = haproxy()
        # in /tmp: a UNIX socket's path must be short (HAProxy: 97 bytes)
        directory = Path(tempfile.mkdtemp(prefix="memux-haproxy-"))
        self.addCleanup(shutil.rmtree, directory, True)
        w1, w2 = await defer.gatherResults(
            [
                defer.Deferred.fromCoroutine(self.startWorker("w1")),
                defer.Deferred.fromCoroutine(self.startWorker("w2")),
            ]
        )
        front = freePort()
        self.adminSocket = directory / "admin.sock"
        config = configure(directory, front, (w1.port, w2.port))
        self.balancer, _ = self.spawn(
            [program, "-f", str(config), "-db"], str(directory)
        )

        def ready() -> bool:
            if self.balancer.ended.called:
                raise AssertionError(f"haproxy exited: {b''.join(self.balancer.err)!r}")
            return self.checks() == {"w1": ("UP", "L7OK"), "w2": ("UP", "L7OK")}

        await self.until(ready, "both workers UP with their memux health check passed")
        return front, {"w1": w1, "w2": w2}

    def admin(self, command: str) -> str:
        """
        Send C{command} to HAProxy's admin socket; return its answer.
        """
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(str(self.adminSocket))
            s.sendall(command.encode() + b"\n")
            chunks = []
            while chunk := s.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks).decode()

    def checks(self) -> dict[str, tuple[str, str]]:
        """
        Each worker's state and last health check result, from HAProxy's
        admin socket ("show stat").
        """
        try:
            text = self.admin("show stat").lstrip("# ")
        except OSError:
            return {}  # not listening yet
        # (A check under way shows as "* " before the last one's result.)
        return {
            row["svname"]: (row["status"], row["check_status"].removeprefix("* "))
            for row in csv.DictReader(io.StringIO(text))
            if row["pxname"] == "memux_workers" and row["svname"] in ("w1", "w2")
        }

    async def until(self, condition: Any, what: str) -> None:
        """
        Wait until C{condition()} is true (polling every 50 ms), failing
        after L{PATIENCE} seconds with C{what} it was waiting for.
        """
        reactor = globalReactor()
        deadline = reactor.seconds() + PATIENCE
        while not condition():
            if reactor.seconds() > deadline:
                raise AssertionError(f"waited {PATIENCE} s for {what}")
            await deferLater(reactor, 0.05)

    async def session(self, front: int, source: str) -> MemuxProtocol:
        """
        A client session through HAProxy from the loopback address
        C{source}; closed at the end of the test.
        """
        endpoint = TCP4ClientEndpoint(
            cast(IReactorTCP, globalReactor()),
            "127.0.0.1",
            front,
            bindAddress=(source, 0),
        )
        session = await connectSession(endpoint)
        self.addCleanup(self.close, session)
        return session

    async def close(self, session: MemuxProtocol) -> None:
        """
        Close C{session} if it is still open, and wait until it is.
        """
        if session.transport is not None and session.isUsable():
            session.loseConnection()
        await session.whenClosed()

    async def whoami(self, session: MemuxProtocol) -> tuple[int, str, int]:
        """
        Ask the C{whoami} service over C{session}: the worker's process id,
        and the client host and port it sees.
        """
        proto = await session.openChannel(b"whoami", Factory.forProtocol(Collector))
        assert isinstance(proto, Collector)
        await proto.lost
        pid, host, port = proto.received.decode().split()
        return int(pid), host, int(port)

    def localPort(self, session: MemuxProtocol) -> int:
        """
        The client's own port of C{session}'s connection to HAProxy.
        """
        assert session.transport is not None
        host: Any = session.transport.getHost()
        return int(host.port)

    async def test_clientAddress(self) -> None:
        """
        Each worker sees the client's own address and port, not HAProxy's:
        its channel transports report it, and its log names it; sessions
        are spread over both workers.
        """
        front, workers = await self.startCluster()
        byPid = {w.pid: w for w in workers.values()}
        seen = []
        for source in ("127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5"):
            session = await self.session(front, source)
            pid, host, port = await self.whoami(session)
            self.assertEqual((host, port), (source, self.localPort(session)))
            worker = byPid[pid]
            await worker.process.waitForStdout(
                rb"memux session from %s:%d" % (re.escape(source.encode()), port)
            )
            seen.append(worker.name)
        self.assertEqual(sorted(set(seen)), ["w1", "w2"])

    async def test_killedWorker(self) -> None:
        """
        Once a worker is killed (SIGKILL: no goodbye), every new session
        goes to the other one, even while HAProxy still counts the dead one
        UP (its health checks paused here): a refused connection is retried
        on another worker (C{retries}, C{option redispatch}).  With checks
        back on, HAProxy marks it DOWN.
        """
        front, workers = await self.startCluster()
        self.admin("disable health memux_workers/w1")
        workers["w1"].signal("KILL")
        await workers["w1"].process.ended
        for source in ("127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5"):
            session = await self.session(front, source)
            pid, host, _ = await self.whoami(session)
            self.assertEqual((pid, host), (workers["w2"].pid, source))
        # not checked: HAProxy still counts it in, and sends to it
        self.assertEqual(self.checks()["w1"][0], "no check")
        self.admin("enable health memux_workers/w1")
        await self.until(
            lambda: self.checks().get("w1", ("",))[0] == "DOWN",
            "HAProxy to mark the killed worker DOWN",
        )
        self.assertEqual(self.checks()["w2"], ("UP", "L7OK"))

    async def test_drain(self) -> None:
        """
        SIGTERM on the worker serving a client with a channel open: the
        client gets GOAWAY (no new channels on that session) while its open
        channel carries on; HAProxy's health check marks the worker DOWN
        and new sessions go to the other; once the client closes its
        channel the session ends cleanly and the worker exits, well before
        its drain timeout.
        """
        front, workers = await self.startCluster()
        byPid = {w.pid: w for w in workers.values()}
        session = await self.session(front, "127.0.0.2")
        pid, _, _ = await self.whoami(session)
        draining = byPid[pid]
        [other] = [w for w in workers.values() if w is not draining]
        echo = await session.openChannel(b"echo", Factory.forProtocol(Collector))
        assert isinstance(echo, Collector)
        channel = IChannelTransport(echo.transport)
        channel.write(b"before ")
        await echo.receivedAtLeast(7)

        draining.signal("TERM")
        await self.until(lambda: not session.isUsable(), "the client to get GOAWAY")
        channel.write(b"after")
        self.assertEqual(await echo.receivedAtLeast(12), b"before after")
        await self.until(
            lambda: self.checks().get(draining.name, ("",))[0] == "DOWN",
            "HAProxy to mark the draining worker DOWN",
        )
        for source in ("127.0.0.3", "127.0.0.4", "127.0.0.5"):
            newcomer = await self.session(front, source)
            self.assertEqual((await self.whoami(newcomer))[0], other.pid)
        self.assertEqual(draining.process.ended.called, False)

        channel.loseConnection()
        await echo.lost
        await session.whenClosed()
        _, _, status = await draining.process.ended
        # Once shut down, twistd re-raises the signal that stopped it, so
        # that its supervisor sees why it ended.
        self.assertEqual(status, -signal.SIGTERM)
        log = draining.log()
        self.assertRegex(log, r"memux stopping: GOAWAY to \d+ session")
        self.assertRegex(
            log, r"memux session with 127\.0\.0\.2:\d+ ended: closed cleanly"
        )
        self.assertIn("Server Shut Down.", log)
