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

from memux._cli._common import (
    ChannelCommand,
    ExitStatus,
    Reporter,
    _clock,
    _describeAddress,
    _RateMeter,
    _reasonText,
)
from memux._cli._options import Commands, addChannelArguments, addCommand
from memux._cli._session import SessionCache
from memux.error import ChannelReset
from memux.protocol import MemuxProtocol
from memux.tunnel import LocalForwardingFactory, SpliceProtocol


class ForwardCommand(ChannelCommand):
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
        super().__init__(remote, remoteText, service, metadata, reporter)
        self.local = local
        self.open = 0
        self.accepted = 0
        self.sessions = SessionCache(remote)
        self.sessions.onConnectionFailed = self._cannotConnect
        self.sessions.onSessionEnded = self._sessionEnded
        self._port: IListeningPort | None = None
        self._recent: dict[str, float] = {}

    def describe(self) -> str:
        """
        Where the connections go, for messages.
        """
        return f"{self._serviceText()} at {self.remoteText}"

    async def _run(self, reactor: IReactorCore) -> int:
        reactor.addSystemEventTrigger("before", "shutdown", self._stopping)
        try:
            await self.sessions.get()
        except Exception:
            return ExitStatus.CONNECT  # reported by _cannotConnect
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


def addForwardParser(commands: Commands) -> None:
    """
    Add the parser of ``memux forward``.
    """
    parser = addCommand(
        commands,
        "forward",
        help="forward local connections to a service (like ssh -L)",
        quietHelp="no progress line, no routine messages",
        description=(
            "Listen on LOCAL_ENDPOINT; carry every accepted connection over a new\n"
            "channel for SERVICE on one memux session to REMOTE, like ssh -L.\n"
            "The session is made at start (exit 3 if it cannot be); if it is lost\n"
            "later, the next accepted connection makes a new one.  Runs until\n"
            "interrupted."
        ),
        examples=(
            "examples:\n"
            "  memux forward 8080 tcp:server.example:7400 web\n"
            "      127.0.0.1:8080 reaches the server's 'web' service\n"
            "  memux forward tcp:8080:interface=0.0.0.0 server.example:7400 web\n"
            "      the same on every interface\n"
            "  memux forward unix:/tmp/db.sock tls:server.example:7400 db\n"
            "      a UNIX socket, over TLS\n\n"
            "On a terminal a progress line shows open connections and bytes on\n"
            "the memux connection each way (framing included).\n\n"
        ),
    )
    parser.add_argument(
        "local",
        metavar="LOCAL_ENDPOINT",
        help=(
            "where to listen: a Twisted server endpoint string such as"
            " tcp:8080:interface=127.0.0.1 or unix:/tmp/s (tcp:8080 alone"
            " listens on every interface); a bare PORT means 127.0.0.1:PORT"
            " and ADDRESS:PORT that interface, as with ssh -L"
        ),
    )
    addChannelArguments(parser, "the service name to open channels for")
