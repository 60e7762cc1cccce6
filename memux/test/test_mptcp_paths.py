"""
Tests for L{memux.mptcp} over real network paths: two network namespaces
joined by veth pairs (the topology of ``doc/multipath.rst``).

With two paths, the server announcing its second address, a memux session
opens a second subflow; 64 MiB sent over one channel while the first path
goes down arrive intact, the session's other channels carry on, and once
the path is back it carries traffic again.  With one path only, the same
failure ends the session (keepalive, GOAWAY IDLE_TIMEOUT): the tests see
the difference.

These need root, ``ip`` (iproute2) with ``netns`` and ``mptcp``, and a
kernel with MPTCP; they are skipped, with the reason, otherwise.  Figures
(transfer time, stall, detection time) go to the test log.
"""

from __future__ import annotations

import ctypes
import hashlib
import io
import json
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from twisted.internet import defer, task
from twisted.internet.interfaces import IHalfCloseableProtocol, IProtocol
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.logger import Logger
from twisted.protocols.basic import FileSender
from twisted.python.failure import Failure
from twisted.trial.unittest import SkipTest, TestCase
from zope.interface import implementer

from memux import ErrorCode, MultiplexingFactory, SessionSettings, connectSession
from memux.error import SessionLost
from memux.interfaces import IMessageReceiver
from memux.mptcp import (
    MPTCPClientEndpoint,
    MPTCPServerEndpoint,
    mptcpAvailable,
    mptcpInfo,
    pathInfo,
)
from memux.protocol import MemuxProtocol
from memux.services import builtinServices

CLONE_NEWNET = 0x40000000

#: what the big transfers move
SIZE = 64 * 1024 * 1024

_log = Logger()


def _reactor() -> Any:
    from twisted.internet import reactor

    return reactor


def _ip(*args: str) -> None:
    subprocess.run(
        ["ip", *args], check=True, capture_output=True, text=True, timeout=10
    )


def _setns(fd: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


@contextmanager
def _inNamespace(name: str) -> Iterator[None]:
    """
    Run the body with this thread in network namespace ``name``: sockets
    made there stay in it.
    """
    with open("/proc/thread-self/ns/net") as home:
        with open(f"/var/run/netns/{name}") as target:
            _setns(target.fileno())
        try:
            yield
        finally:
            _setns(home.fileno())


@implementer(IMessageReceiver)
class _Replies(Protocol):
    """
    Queues the messages of a channel.
    """

    def __init__(self) -> None:
        self.queue: defer.DeferredQueue[bytes] = defer.DeferredQueue()

    def messageReceived(self, message: bytes) -> None:
        self.queue.put(message)


# ------------------------------------------------------------ the transfer


class _RandomFile(io.RawIOBase):
    """
    A file of C{size} random bytes, made as they are read: the upload
    never holds more than one chunk of it.
    """

    def __init__(self, size: int) -> None:
        self.left = size

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        n = min(len(buffer), self.left)
        buffer[:n] = os.urandom(n)
        self.left -= n
        return n


@implementer(IHalfCloseableProtocol)
class _HashingReceiver(Protocol):
    """
    The server end of the test's ``sha256`` service: hashes what it
    receives and, at the end of the input, replies ``COUNT HEXDIGEST`` and
    closes.  C{factory.progress} hears every arrival.
    """

    factory: _HashingService

    def __init__(self) -> None:
        self.count = 0
        self.hash = hashlib.sha256()

    def dataReceived(self, data: bytes) -> None:
        self.hash.update(data)
        self.count += len(data)
        self.factory.arrived(self.count)

    def readConnectionLost(self) -> None:
        assert self.transport is not None
        self.transport.write(b"%d %s" % (self.count, self.hash.hexdigest().encode()))
        self.transport.loseConnection()

    def writeConnectionLost(self) -> None:
        pass


class _HashingService(Factory):
    """
    Builds L{_HashingReceiver}s, and keeps when bytes arrived: the
    longest gap between two arrivals is the stall a failover causes.
    """

    protocol = _HashingReceiver  # type: ignore[assignment]

    def __init__(self, onProgress: Callable[[int], None] | None = None) -> None:
        self.onProgress = onProgress
        self.lastArrival: float | None = None
        self.longestGap = 0.0
        self.received = 0

    def arrived(self, count: int) -> None:
        self.received = max(self.received, count)
        now = time.monotonic()
        if self.lastArrival is not None:
            self.longestGap = max(self.longestGap, now - self.lastArrival)
        self.lastArrival = now
        if self.onProgress is not None:
            self.onProgress(count)


class _Upload(Protocol):
    """
    The client end: sends C{size} random bytes with a L{FileSender} (a
    pull producer: the channel asks for each chunk when it can take it),
    hashing them on the way, half-closes, and fires C{done} with the
    server's reply, or fails with why the channel ended.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self.hash = hashlib.sha256()
        self.reply = b""
        self.done: defer.Deferred[bytes] = defer.Deferred()

    def _hashed(self, chunk: bytes) -> bytes:
        self.hash.update(chunk)
        return chunk

    def connectionMade(self) -> None:
        sender = FileSender()
        sender.CHUNK_SIZE = 64 * 1024
        sent = sender.beginFileTransfer(
            _RandomFile(self.size), self.transport, self._hashed
        )
        sent.addCallbacks(
            lambda _: self.transport.loseWriteConnection(),  # type: ignore[union-attr]
            # Stopped: the channel ended early, which connectionLost tells.
            lambda _: None,
        )

    def dataReceived(self, data: bytes) -> None:
        self.reply += data

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if reason.check(SessionLost):
            self.done.errback(reason)
        else:
            self.done.callback(self.reply)

    def expected(self) -> bytes:
        """
        The reply due for what was sent.
        """
        return b"%d %s" % (self.size, self.hash.hexdigest().encode())


@implementer(IMessageReceiver)
class _Chatter(Protocol):
    """
    Sends a numbered message on an echo channel every C{interval}
    seconds, and keeps when each reply came back (checking it).
    """

    def __init__(self, interval: float = 0.02) -> None:
        self.interval = interval
        self.sent = 0
        self.replies: list[tuple[float, int]] = []
        self.wrong: list[bytes] = []
        self._loop = task.LoopingCall(self._send)

    def connectionMade(self) -> None:
        self._loop.start(self.interval)

    def _send(self) -> None:
        assert self.transport is not None
        self.sent += 1
        self.transport.writeMessage(b"chat %d" % self.sent)  # type: ignore[attr-defined]

    def messageReceived(self, message: bytes) -> None:
        expected = b"chat %d" % (len(self.replies) + 1)
        if message != expected:
            self.wrong.append(message)
        self.replies.append((time.monotonic(), len(self.replies) + 1))

    def stop(self) -> None:
        """
        Send no more.
        """
        if self._loop.running:
            self._loop.stop()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.stop()

    def repliesBetween(self, start: float, end: float) -> int:
        """
        How many replies came back in [start, end).
        """
        return sum(1 for when, _ in self.replies if start <= when < end)


# ------------------------------------------------------------ topology


class _Topology:
    """
    Two network namespaces, a server's and a client's, joined by
    C{paths} veth pairs: path N is 10.77.N.1 (server, ``mmx-sN``) to
    10.77.N.2 (client, ``mmx-cN``).  With C{signal}, the server announces
    10.77.2.1 to MPTCP clients.
    """

    paths = 2
    signal = True

    srv: str
    cli: str

    def setUpTopology(self, case: TestCase) -> None:
        """
        Build it, or skip C{case} saying why it cannot be built here.
        """
        if os.geteuid() != 0:
            raise SkipTest("needs root, to make network namespaces")
        if shutil.which("ip") is None:
            raise SkipTest("needs ip (iproute2)")
        if not os.path.exists("/proc/thread-self/ns/net"):
            raise SkipTest("no network namespaces here (/proc/thread-self/ns/net)")
        if not hasattr(socket, "SO_PROTOCOL") or not mptcpAvailable():
            raise SkipTest("the kernel refuses MPTCP sockets here")
        tag = f"{os.getpid() % 100000}"
        self.srv, self.cli = f"mmxsrv{tag}", f"mmxcli{tag}"
        try:
            _ip("netns", "add", self.srv)
        except (subprocess.CalledProcessError, OSError) as e:
            raise SkipTest(f"cannot make network namespaces: {e}") from e
        case.addCleanup(self._delete, self.srv)
        _ip("netns", "add", self.cli)
        case.addCleanup(self._delete, self.cli)
        try:
            self._build()
        except subprocess.CalledProcessError as e:
            raise SkipTest(
                f"cannot build the topology ({' '.join(e.cmd)}): {e.stderr.strip()}"
            ) from e

    def _delete(self, name: str) -> None:
        subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=10)

    def _build(self) -> None:
        srv, cli = self.srv, self.cli
        for n in map(str, range(1, self.paths + 1)):
            _ip(
                "link", "add", f"mmx-s{n}", "netns", srv, "type", "veth",
                "peer", "name", f"mmx-c{n}", "netns", cli,
            )  # fmt: skip
            _ip("-n", srv, "addr", "add", f"10.77.{n}.1/24", "dev", f"mmx-s{n}")
            _ip("-n", cli, "addr", "add", f"10.77.{n}.2/24", "dev", f"mmx-c{n}")
            _ip("-n", srv, "link", "set", f"mmx-s{n}", "up")
            _ip("-n", cli, "link", "set", f"mmx-c{n}", "up")
        for ns in (srv, cli):
            _ip("-n", ns, "link", "set", "lo", "up")
            subprocess.run(
                ["ip", "netns", "exec", ns, "sysctl", "-qw", "net.mptcp.enabled=1"],
                check=True,
                capture_output=True,
                text=True,
                timeout=10,
            )
            _ip("-n", ns, "mptcp", "limits", "set", "subflows", "2",
                "add_addr_accepted", "2")  # fmt: skip
        if self.signal:
            _ip("-n", srv, "mptcp", "endpoint", "add", "10.77.2.1", "dev", "mmx-s2",
                "signal")  # fmt: skip

    def setLink(self, path: int, state: str) -> None:
        """
        Take path C{path} ``down`` or bring it ``up`` (the client's end).
        """
        _ip("-n", self.cli, "link", "set", f"mmx-c{path}", state)

    def txBytes(self, path: int) -> int:
        """
        Bytes the client sent on path C{path}.
        """
        out = subprocess.run(
            ["ip", "-n", self.cli, "-s", "-j", "link", "show", f"mmx-c{path}"],
            check=True,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout
        return int(json.loads(out)[0]["stats64"]["tx"]["bytes"])

    @defer.inlineCallbacks
    def serve(self, case: TestCase, services: dict[bytes, Any]) -> Any:
        """
        Serve memux with C{services} over MPTCP on every address of the
        server's namespace; fire with the port number.  Sessions are
        aborted at the end of C{case}.
        """
        reactor = _reactor()
        mux = MultiplexingFactory(services)
        sessions: list[MemuxProtocol] = []
        build = mux.buildProtocol

        def recording(addr: Any) -> MemuxProtocol:
            proto = build(addr)
            sessions.append(proto)
            return proto

        mux.buildProtocol = recording  # type: ignore[method-assign]
        with _inNamespace(self.srv):
            port = yield MPTCPServerEndpoint(reactor, 0, fallback=False).listen(mux)
        case.addCleanup(port.stopListening)

        def abortAll() -> None:
            for s in sessions:
                transport: Any = s.transport
                if s.connected:
                    transport.abortConnection()

        case.addCleanup(abortAll)
        return port.getHost().port

    @defer.inlineCallbacks
    def connect(
        self, case: TestCase, port: int, settings: SessionSettings | None = None
    ) -> Any:
        """
        Connect a memux session from the client's namespace to the
        server's first address.
        """
        reactor = _reactor()
        with _inNamespace(self.cli):
            connecting = connectSession(
                MPTCPClientEndpoint(reactor, "10.77.1.1", port, timeout=5,
                                    fallback=False),
                settings=settings,
            )  # fmt: skip
        session: MemuxProtocol = yield connecting
        transport: Any = session.transport
        case.addCleanup(
            lambda: transport.abortConnection() if session.connected else None
        )
        return session


@defer.inlineCallbacks
def _until(case: TestCase, predicate: Any, what: str, seconds: float = 10) -> Any:
    """
    Poll C{predicate} every 50 ms until it is true; fail C{case} after
    C{seconds}.
    """
    reactor = _reactor()
    deadline = time.monotonic() + seconds
    while not predicate():
        if time.monotonic() > deadline:
            case.fail(f"timed out waiting for {what}")
        yield task.deferLater(reactor, 0.05, lambda: None)


class _UploadFactory(Factory):
    """
    Builds an L{_Upload} of C{size} bytes.
    """

    def __init__(self, size: int) -> None:
        self.size = size

    def buildProtocol(self, addr: object) -> _Upload:
        return _Upload(self.size)


def _openUpload(session: MemuxProtocol, size: int) -> defer.Deferred[IProtocol]:
    return session.openChannel(b"sha256", _UploadFactory(size))


# ------------------------------------------------------------ tests


class TwoPathTests(_Topology, TestCase):
    """
    A memux session over MPTCP between two namespaces with two paths.
    """

    timeout = 60

    def setUp(self) -> None:
        self.setUpTopology(self)

    @defer.inlineCallbacks
    def test_secondSubflowAndFailover(self) -> Any:
        """
        The client learns the server's second address and opens a second
        subflow (C{mptcpInfo(...).subflows} becomes 1); with the first path
        down, an echo channel opened before carries on over the second.
        """
        number = yield self.serve(self, builtinServices(_reactor()))
        session = yield self.connect(self, number)
        client = yield session.openChannel(b"echo", Factory.forProtocol(_Replies))
        client.transport.writeMessage(b"one")
        self.assertEqual((yield client.queue.get()), b"one")

        def twoPaths() -> bool:
            info = mptcpInfo(session.transport)
            return info is not None and info.subflows >= 1

        yield _until(self, twoPaths, "a second subflow")
        info = mptcpInfo(session.transport)
        assert info is not None
        self.assertEqual(info.addAddrAccepted, 1)

        self.setLink(1, "down")
        before = self.txBytes(2)
        payload = b"x" * 100000
        for i in range(3):
            client.transport.writeMessage(b"%d" % i + payload)
            reply = yield client.queue.get()
            self.assertEqual(reply, b"%d" % i + payload)
        self.assertTrue(session.connected)
        # Everything went over the second path.
        self.assertGreater(self.txBytes(2) - before, 3 * len(payload))

    @defer.inlineCallbacks
    def test_64MiBThroughFailoverAndBack(self) -> Any:
        """
        64 MiB sent over one channel, the first path taken down once a
        third has arrived, reach the server intact (its sha256 is the
        sender's); an echo channel opened before answers throughout; the
        session stays one MPTCP connection with two subflows.  With the
        path back, the session still works (more verified uploads) and the
        restored path carries traffic again.
        """
        reactor = _reactor()
        failedAt: list[float] = []

        def progress(count: int) -> None:
            if count >= SIZE // 3 and not failedAt:
                # Synchronously (a few ms): the path is down before the
                # server reads another byte.
                self.setLink(1, "down")
                failedAt.append(time.monotonic())

        hashing = _HashingService(progress)
        services = builtinServices(reactor)
        services[b"sha256"] = hashing
        number = yield self.serve(self, services)
        session = yield self.connect(self, number)
        chatter = yield session.openChannel(b"echo", Factory.forProtocol(_Chatter))
        self.addCleanup(chatter.stop)
        yield _until(
            self,
            lambda: (pathInfo(session).subflows or 0) >= 2,
            "a second subflow",
        )
        self.assertEqual(pathInfo(session).kind, "MPTCP")

        started = time.monotonic()
        upload = yield _openUpload(session, SIZE)
        reply = yield upload.done
        finished = time.monotonic()
        self.assertEqual(reply, upload.expected())
        self.assertTrue(failedAt, "the path never went down")
        (downAt,) = failedAt
        self.assertTrue(session.connected)
        # The other channel carried on: answered after the failure, in
        # order and intact.
        self.assertGreater(chatter.repliesBetween(downAt, finished), 0)
        answered = len(chatter.replies)
        yield _until(self, lambda: len(chatter.replies) > answered, "a chat reply")
        self.assertEqual(chatter.wrong, [])
        # The kernel keeps the failed subflow (it is stale, retransmitting
        # with backoff), so there are still two.
        self.assertEqual(pathInfo(session).subflows, 2)
        _log.info(
            "64 MiB with failover: {seconds:.2f} s; longest stall {stall:.3f} s;"
            " failed {failed:.2f} s in; {chats} chat replies after the failure",
            seconds=finished - started,
            stall=hashing.longestGap,
            failed=downAt - started,
            chats=chatter.repliesBetween(downAt, finished),
        )

        self.setLink(1, "up")
        upAt = time.monotonic()
        before = self.txBytes(1)
        uploads = 0
        # Keep traffic going until the restored path carries it: the stale
        # subflow recovers at its next retransmission timeout.
        while self.txBytes(1) - before < 1024 * 1024:
            if time.monotonic() - upAt > 20:
                self.fail("the restored path carried no traffic within 20 s")
            upload = yield _openUpload(session, 8 * 1024 * 1024)
            self.assertEqual((yield upload.done), upload.expected())
            uploads += 1
        _log.info(
            "path 1 back in use {seconds:.2f} s after the link came up"
            " ({uploads} uploads of 8 MiB); {path}",
            seconds=time.monotonic() - upAt,
            uploads=uploads,
            path=pathInfo(session).describe(),
        )
        self.assertTrue(session.connected)
        self.assertEqual(pathInfo(session).subflows, 2)


class OnePathTests(_Topology, TestCase):
    """
    The same session with one path only (no address announced): losing
    it ends the session.
    """

    paths = 1
    signal = False
    timeout = 30

    def setUp(self) -> None:
        self.setUpTopology(self)

    @defer.inlineCallbacks
    def test_sessionFailsWithoutSecondPath(self) -> Any:
        """
        With the only path taken down a third of the way through 64 MiB,
        the transfer never completes: the client's keepalive (0.5 s here)
        finds the peer unreachable and ends the session with GOAWAY
        IDLE_TIMEOUT within a few seconds, and the upload channel fails
        with L{SessionLost}.
        """
        reactor = _reactor()
        failedAt: list[float] = []

        def progress(count: int) -> None:
            if count >= SIZE // 3 and not failedAt:
                self.setLink(1, "down")
                failedAt.append(time.monotonic())

        hashing = _HashingService(progress)
        services = builtinServices(reactor)
        services[b"sha256"] = hashing
        number = yield self.serve(self, services)
        session = yield self.connect(
            self, number, SessionSettings(keepAliveInterval=0.5)
        )
        self.assertEqual(pathInfo(session).subflows, 1)
        upload = yield _openUpload(session, SIZE)
        failure = yield self.assertFailure(upload.done, SessionLost)
        endedAt = time.monotonic()
        self.assertTrue(failedAt, "the path never went down")
        self.assertEqual(failure.code, ErrorCode.IDLE_TIMEOUT)
        self.assertFalse(session.connected)
        self.assertLess(endedAt - failedAt[0], 5)
        self.assertLess(hashing.received, SIZE)
        _log.info(
            "one path: session ended {seconds:.2f} s after the path went down",
            seconds=endedAt - failedAt[0],
        )
