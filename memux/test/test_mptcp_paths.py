"""
Tests for L{memux.mptcp} over two real network paths: two network
namespaces joined by two veth pairs, the server announcing its second
address (the topology of ``doc/multipath.rst``).  A memux session opens a
second subflow, and its channels survive the loss of the first path.

These need root, ``ip`` (iproute2) with ``netns`` and ``mptcp``, and a
kernel with MPTCP; they are skipped, with the reason, otherwise.
"""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from twisted.internet import defer, task
from twisted.internet.protocol import Factory, Protocol
from twisted.trial.unittest import SkipTest, TestCase
from zope.interface import implementer

from memux import MultiplexingFactory, connectSession
from memux.interfaces import IMessageReceiver
from memux.mptcp import (
    MPTCPClientEndpoint,
    MPTCPServerEndpoint,
    mptcpAvailable,
    mptcpInfo,
)
from memux.services import builtinServices

CLONE_NEWNET = 0x40000000


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


class TwoPathTests(TestCase):
    """
    A memux session over MPTCP between two namespaces with two paths.
    """

    timeout = 30

    def setUp(self) -> None:
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
        self.addCleanup(self._delete, self.srv)
        _ip("netns", "add", self.cli)
        self.addCleanup(self._delete, self.cli)
        try:
            self._build()
        except subprocess.CalledProcessError as e:
            raise SkipTest(
                f"cannot build the two-path topology ({' '.join(e.cmd)}):"
                f" {e.stderr.strip()}"
            ) from e

    def _delete(self, name: str) -> None:
        subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=10)

    def _build(self) -> None:
        srv, cli = self.srv, self.cli
        for n in ("1", "2"):
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
        _ip("-n", srv, "mptcp", "endpoint", "add", "10.77.2.1", "dev", "mmx-s2",
            "signal")  # fmt: skip

    @defer.inlineCallbacks
    def _until(self, predicate: Any, what: str, seconds: float = 10) -> Any:
        reactor = _reactor()
        deadline = time.monotonic() + seconds
        while not predicate():
            if time.monotonic() > deadline:
                self.fail(f"timed out waiting for {what}")
            yield task.deferLater(reactor, 0.05, lambda: None)

    @defer.inlineCallbacks
    def test_secondSubflowAndFailover(self) -> Any:
        """
        The client learns the server's second address and opens a second
        subflow (C{mptcpInfo(...).subflows} becomes 1); with the first path
        down, an echo channel opened before carries on over the second.
        """
        reactor = _reactor()
        mux = MultiplexingFactory(builtinServices(reactor))
        with _inNamespace(self.srv):
            port = yield MPTCPServerEndpoint(reactor, 0, fallback=False).listen(mux)
        self.addCleanup(port.stopListening)
        number = port.getHost().port
        with _inNamespace(self.cli):
            connecting = connectSession(
                MPTCPClientEndpoint(
                    reactor, "10.77.1.1", number, timeout=5, fallback=False
                )  # fmt: skip
            )
        session = yield connecting
        self.addCleanup(
            lambda: session.transport.abortConnection() if session.connected else None
        )
        client = yield session.openChannel(b"echo", Factory.forProtocol(_Replies))
        client.transport.writeMessage(b"one")
        self.assertEqual((yield client.queue.get()), b"one")

        def twoPaths() -> bool:
            info = mptcpInfo(session.transport)
            return info is not None and info.subflows >= 1

        yield self._until(twoPaths, "a second subflow")
        info = mptcpInfo(session.transport)
        assert info is not None
        self.assertEqual(info.addAddrAccepted, 1)

        _ip("-n", self.cli, "link", "set", "mmx-c1", "down")
        before = self._txBytes("mmx-c2")
        payload = b"x" * 100000
        for i in range(3):
            client.transport.writeMessage(b"%d" % i + payload)
            reply = yield client.queue.get()
            self.assertEqual(reply, b"%d" % i + payload)
        self.assertTrue(session.connected)
        # Everything went over the second path.
        self.assertGreater(self._txBytes("mmx-c2") - before, 3 * len(payload))

    def _txBytes(self, device: str) -> int:
        out = subprocess.run(
            ["ip", "-n", self.cli, "-s", "-j", "link", "show", device],
            check=True,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout
        return int(json.loads(out)[0]["stats64"]["tx"]["bytes"])
