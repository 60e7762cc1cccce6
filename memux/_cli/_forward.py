# -*- test-case-name: memux.test.test_cli -*-
"""
``memux forward``: local connections over channels, like ``ssh -L``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import cast

from twisted.internet import defer
from twisted.internet.interfaces import (
    IAddress,
    IListeningPort,
    IReactorCore,
    IStreamClientEndpoint,
    IStreamServerEndpoint,
)
from twisted.internet.protocol import Protocol
from twisted.logger import LogEvent
from twisted.python.failure import Failure

from memux._cli._common import (
    ExitStatus,
    Reporter,
    _clock,
    _describeAddress,
    _RateMeter,
    _reasonText,
)
from memux._cli._session import SessionCache
from memux.error import ChannelReset
from memux.protocol import MemuxProtocol
from memux.tunnel import LocalForwardingFactory, SpliceProtocol


class ForwardCommand:
    """
    ``memux forward``: listen on LOCAL_ENDPOINT and carry each accepted
    connection over a new channel for SERVICE on one session to REMOTE.
    """

    def __init__(
        self,
        local: IStreamServerEndpoint,
        remote: IStreamClientEndpoint,
        remoteText: str,
        service: bytes,
        metadata: bytes | None,
        reporter: Reporter,
    ) -> None:
        self.local = local
        self.remote = remote
        self.remoteText = remoteText
        self.service = service
        self.metadata = metadata
        self.reporter = reporter
        self.open = 0
        self.accepted = 0
        self.sessions = SessionCache(remote)
        self.sessions.onConnectionFailed = self._connectionFailed
        self.sessions.onSessionEnded = self._sessionEnded
        self._port: IListeningPort | None = None
        self._recent: dict[str, float] = {}

    def describe(self) -> str:
        """
        Where the connections go, for messages.
        """
        return (
            f"service {self.service.decode('utf-8', 'replace')!r} at {self.remoteText}"
        )

    async def _run(self, reactor: IReactorCore) -> int:
        reactor.addSystemEventTrigger("before", "shutdown", self._stopping)
        try:
            await self.sessions.get()
        except Exception:
            return ExitStatus.CONNECT  # reported by _connectionFailed
        factory = _CountingForwardingFactory(self)
        try:
            self._port = await self.local.listen(factory)
        except Exception as e:
            self.reporter.error(f"cannot listen: {_reasonText(e)}")
            self.sessions.close()
            return ExitStatus.LISTEN
        where = _describeAddress(self._port.getHost())
        self.reporter.info(f"listening on {where}, forwarding to {self.describe()}")
        meter = _RateMeter(self._wireBytes)
        self.reporter.startProgress(
            _clock(reactor),
            lambda: f"{self.open} open/{self.accepted} in all  " + meter.describe(),
        )
        # Runs until a signal stops the reactor.
        await defer.Deferred()
        raise AssertionError("unreachable")

    def run(self, reactor: IReactorCore) -> defer.Deferred[int]:
        """
        Connect, then listen; run until stopped.
        """
        return defer.Deferred.fromCoroutine(self._run(reactor))

    def interrupted(self) -> int:
        """
        Stopping is how ``forward`` ends: a success.
        """
        self.reporter.stopProgress()
        return ExitStatus.OK

    def _stopping(self) -> None:
        # Sessions closing from here on are no news.
        self._port = None
        self.reporter.stopProgress()

    def _wireBytes(self) -> tuple[int, int]:
        totals = self.sessions.totals()
        return totals["bytesSent"], totals["bytesReceived"]

    def _connectionFailed(self, reason: Failure) -> None:
        self.reporter.error(
            f"cannot connect to {self.remoteText}: {_reasonText(reason)}"
        )

    def _sessionEnded(self, session: MemuxProtocol, why: str) -> None:
        if self._port is not None:
            self.reporter.info(
                f"session to {self.remoteText} ended ({why});"
                " the next connection reconnects"
            )

    def channelEnded(self, reason: ChannelReset) -> None:
        """
        A forwarded channel was refused or reset by the peer: say so, but
        not the same thing more than once in 5 seconds.
        """
        text = str(reason)
        now = time.monotonic()
        if now - self._recent.get(text, -10.0) >= 5.0:
            self._recent[text] = now
            self.reporter.error(text)


class _CountingForwardingFactory(LocalForwardingFactory):
    """
    `LocalForwardingFactory` that keeps count of connections for the
    progress line.
    """

    def __init__(self, command: ForwardCommand) -> None:
        super().__init__(command.sessions.get, command.service, command.metadata)
        self.command = command

    def buildProtocol(self, addr: IAddress | None) -> Protocol:
        """
        Build the local end of a forwarded connection, and count it.
        """
        protocol = super().buildProtocol(addr)
        command = self.command
        command.accepted += 1
        command.open += 1

        def gone(_: object) -> None:
            command.open -= 1

        cast(SpliceProtocol, protocol).done.addCallback(gone)
        return protocol


def _channelWatcher(command: ForwardCommand) -> Callable[[LogEvent], None]:
    """
    Report refused and reset channels, which memux logs with the typed
    reason, as one-line messages: otherwise a wrong service name would
    only show as local connections closing at once.
    """

    def watch(event: LogEvent) -> None:
        reason = event.get("reason")
        if (
            isinstance(reason, ChannelReset)
            and reason.remote
            and str(event.get("log_namespace", "")).startswith("memux.")
        ):
            command.channelEnded(reason)

    return watch
