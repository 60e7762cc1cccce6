# -*- test-case-name: memux.test.test_cli,memux.test.test_abnormal -*-
"""
``memux forward``: local connections over channels, like ``ssh -L``.
"""

from __future__ import annotations

import argparse
import signal
import time
from collections.abc import Callable
from types import FrameType
from typing import Any, cast

from twisted.internet import defer
from twisted.internet.interfaces import (
    IAddress,
    IDelayedCall,
    IListeningPort,
    IReactorCore,
    IReactorFromThreads,
    IReactorTime,
    IStreamClientEndpoint,
    IStreamServerEndpoint,
)
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure

from memux._cli._common import (
    ChannelCommand,
    ExitStatus,
    Reporter,
    Subcommand,
    _clock,
    _describeAddress,
    _formatBytes,
    _RateMeter,
    _reasonText,
)
from memux._cli._diagnose import Ending, TLSTarget
from memux._cli._endpoints import parseLocal
from memux._cli._options import (
    _positiveInt,
    _seconds,
    addChannelArguments,
    channelArguments,
    remoteEndpoint,
)
from memux._cli._session import SessionCache
from memux.codes import ErrorCode
from memux.error import ChannelRefused, ChannelReset, SessionLost
from memux.protocol import MemuxProtocol
from memux.tunnel import LocalForwardingFactory, SpliceProtocol

#: seconds ``forward`` lets open connections finish once told to stop
DEFAULT_GRACE = 5.0

#: seconds to wait, once stopping, for aborts and closes to complete
_CLOSE_TIMEOUT = 5.0

#: seconds the first session has to answer a PING: longer than a session's
#: own handshake timeout (20 s by default), which says why better
_FIRST_ANSWER_TIMEOUT = 30.0

#: the default listen backlog of LOCAL_ENDPOINT: how many connections the
#: system holds until ``forward`` accepts them.  Twisted's default of 50 is
#: not enough for a burst (a browser, a load test, a pool of clients
#: starting at once: 250 at once saw 15-30% reset); the system caps it at
#: net.core.somaxconn on Linux (4096 since Linux 5.4, 128 before) and
#: kern.ipc.somaxconn on macOS and the BSDs (128), and a queued connection
#: costs only while it waits.
DEFAULT_BACKLOG = 1024


def _catchSignals(reactor: IReactorCore, callback: Callable[[], None]) -> None:
    """
    From now on SIGINT and SIGTERM call ``callback`` in the reactor's thread
    instead of stopping the reactor, which is stopping already (a second
    stop would only log an error).  A signal that is ignored (SIGINT in a
    background job) stays ignored.
    """
    threads = cast(IReactorFromThreads, reactor)

    def handler(number: int, frame: FrameType | None) -> None:
        threads.callFromThread(callback)

    for number in (signal.SIGINT, signal.SIGTERM):
        if signal.getsignal(number) is not signal.SIG_IGN:
            signal.signal(number, handler)


class ForwardCommand(ChannelCommand):
    """
    ``memux forward``: listen on LOCAL_ENDPOINT and carry each accepted
    connection over a new channel for SERVICE on one session to REMOTE.

    When told to stop (SIGINT, SIGTERM), it stops listening, lets the
    connections still open finish for ``grace`` seconds, then cuts (aborts)
    the rest; ``cut`` is how many it cut.
    """

    def __init__(
        self,
        local: IStreamServerEndpoint,
        remote: IStreamClientEndpoint,
        remoteText: str,
        service: bytes,
        metadata: bytes | None,
        reporter: Reporter,
        grace: float = DEFAULT_GRACE,
        catchSignals: Callable[
            [IReactorCore, Callable[[], None]], None
        ] = _catchSignals,
        tls: TLSTarget | None = None,
    ) -> None:
        super().__init__(remote, remoteText, service, metadata, reporter, tls)
        self.local = local
        self.grace = grace
        self.catchSignals = catchSignals
        self.accepted = 0
        self.cut = 0
        self.sessions = SessionCache(remote)
        self.sessions.onConnectionFailed = self._cannotConnectNow
        self.sessions.onSessionEnded = self._sessionEnded
        self._reactor: IReactorCore | None = None
        self._port: IListeningPort | None = None
        # Each open local connection, and who made it (for messages).
        self._connections: dict[SpliceProtocol, str] = {}
        self._recent: dict[str, float] = {}
        self._connectFailure: Failure | None = None
        # While stopping: fires when it is time to cut what is still open.
        self._stopWait: defer.Deferred[str] | None = None
        self._cutting = False

    @property
    def open(self) -> int:
        """
        How many local connections are open.
        """
        return len(self._connections)

    def describe(self) -> str:
        """
        Where the connections go, for messages.
        """
        return f"{self._serviceText()} at {self.remoteText}"

    async def _run(self, reactor: IReactorCore) -> int:
        self._reactor = reactor
        reactor.addSystemEventTrigger("before", "shutdown", self._stopping)
        try:
            session = await self.sessions.get()
        except Exception:
            return ExitStatus.CONNECT  # reported by _cannotConnectNow
        ending = await self._tryFirst(session, _clock(reactor))
        if ending is not None:
            self._cannotConnect(ending.text)
            return ExitStatus.CONNECT
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

    async def _tryFirst(
        self, session: MemuxProtocol, clock: IReactorTime
    ) -> Ending | None:
        """
        Check that the first session works, before listening: a PING
        answered proves the TLS handshake (if any) and the memux one done.
        Return why it ended if it did instead.
        """
        if not session.connected:
            return await self._explain(session, clock)
        answered = session.ping()
        answered.addTimeout(_FIRST_ANSWER_TIMEOUT, clock)
        try:
            await answered
        except SessionLost as e:
            return await self._explain(session, clock, e)
        except defer.TimeoutError:
            session.abortConnection("no answer to PING")
            return Ending(True, f"no answer to PING in {_FIRST_ANSWER_TIMEOUT:g} s")
        return None

    def run(self, reactor: IReactorCore) -> defer.Deferred[int]:
        """
        Connect, then listen; run until stopped.
        """
        return defer.Deferred.fromCoroutine(self._run(reactor))

    def interrupted(self) -> int:
        """
        Stopping is how ``forward`` ends: a success, unless connections
        still open had to be cut.
        """
        self.reporter.stopProgress()
        return ExitStatus.INTERRUPTED if self.cut else ExitStatus.OK

    def track(self, protocol: SpliceProtocol, address: IAddress | None) -> None:
        """
        A local connection from ``address`` was accepted: count it until it
        ends.
        """
        self.accepted += 1
        self._connections[protocol] = _describeAddress(address)
        protocol.done.addCallback(lambda _: self._connectionEnded(protocol))

    def _connectionEnded(self, protocol: SpliceProtocol) -> None:
        where = self._connections.pop(protocol, "?")
        if protocol.failure is not None and not self._cutting:
            self._reportFailure(protocol, protocol.failure, where)
        if not self._connections:
            self._timeToCut("idle")

    def _reportFailure(
        self, protocol: SpliceProtocol, failure: Failure, where: str
    ) -> None:
        """
        Say that the connection from ``where`` ended abnormally, and why: a
        transfer cut short must never pass unnoticed.
        """
        channel = protocol.peer
        value = failure.value
        if channel is None:
            # It never had a channel, so nothing was forwarded.  A session
            # that could not be made was reported already.
            if failure is not self._connectFailure:
                self._sayOnce(f"cannot forward a connection: {_reasonText(failure)}")
            return
        session = getattr(channel.transport, "session", None)
        if isinstance(value, SessionLost) and isinstance(session, MemuxProtocol):
            ending = self._ending(session, value)
            if ending.connecting:
                # A session that never worked (a TLS handshake refused, not
                # a memux server): nothing reached the server, and the
                # reason is the same for all its connections.
                self._sayOnce(f"cannot connect to {self.remoteText}: {ending.text}")
                return
        if isinstance(value, ChannelRefused) or (
            isinstance(value, ChannelReset) and value.code == ErrorCode.CONNECT_ERROR
        ):
            # The channel could not be set up, for a reason that is likely
            # the same for every connection (a wrong service, a backend
            # down): said once in a while, not once per connection.
            self._sayOnce(str(value))
            return
        carried = (
            f"after {_formatBytes(protocol.received)} sent"
            f" and {_formatBytes(channel.received)} received"
        )
        if failure is protocol.reason:
            self.reporter.error(
                f"connection from {where} reset or lost by its client {carried};"
                " its channel was reset"
            )
        else:
            self.reporter.error(
                f"connection from {where} cut {carried}: {_reasonText(failure)}"
            )

    def _sayOnce(self, text: str) -> None:
        """
        Report ``text``, but not the same text more than once in 5 seconds.
        """
        now = time.monotonic()
        if now - self._recent.get(text, -10.0) >= 5.0:
            self._recent[text] = now
            self.reporter.error(text)

    def _stopping(self) -> defer.Deferred[None] | None:
        """
        The reactor is stopping (SIGINT, SIGTERM): stop listening; if
        connections are open, hold the shutdown until they end, for
        ``grace`` seconds at most, then cut the rest.
        """
        # Sessions closing from here on are no news.
        port, self._port = self._port, None
        self.reporter.stopProgress()
        if port is None:
            return None
        stopped = port.stopListening() or defer.succeed(None)
        if not self._connections:
            return stopped
        self._stopWait = defer.Deferred()
        return defer.Deferred.fromCoroutine(self._drain(stopped))

    async def _drain(self, stopped: defer.Deferred[None]) -> None:
        assert self._reactor is not None and self._stopWait is not None
        clock = _clock(self._reactor)
        # Once the port is closed, a new connection is refused, not left
        # waiting in the backlog: say "waiting" only then.
        await stopped
        if not self._stopWait.called:
            count = _connectionCount(self.open)
            self.reporter.info(
                f"stopping: waiting up to {self.grace:g} s for {count} to end"
                " (interrupt again to cut now)"
            )
        self.catchSignals(self._reactor, lambda: self._timeToCut("interrupted"))
        timer: IDelayedCall = clock.callLater(self.grace, self._timeToCut, "late")
        why = await self._stopWait
        if timer.active():
            timer.cancel()
        if why != "idle":
            await self._cutAll(why, clock)
        await self._closeSessions(clock)

    def _timeToCut(self, why: str) -> None:
        wait = self._stopWait
        if wait is not None and not wait.called:
            wait.callback(why)

    async def _cutAll(self, why: str, clock: IReactorTime) -> None:
        """
        Abort every connection still open, and say how many.
        """
        cut = list(self._connections)
        if not cut:
            return
        self._cutting = True
        self.cut = len(cut)
        for protocol in cut:
            protocol.abort("memux forward was stopped")
        when = f"after {self.grace:g} s" if why == "late" else "when interrupted again"
        self.reporter.error(
            f"stopped: cut {_connectionCount(self.cut)} still open {when}"
        )
        # An abort completes on the next turn of the reactor; let it, or the
        # reactor's own shutdown would close those connections in order.
        await _within(defer.gatherResults([p.done for p in cut]), clock)

    async def _closeSessions(self, clock: IReactorTime) -> None:
        """
        Close the sessions, after what they have to send (the cut
        channels' resets), waiting a little for that.
        """
        await _within(self.sessions.close(), clock)

    def _wireBytes(self) -> tuple[int, int]:
        totals = self.sessions.totals()
        return totals["bytesSent"], totals["bytesReceived"]

    def _cannotConnectNow(self, reason: Failure) -> None:
        self._connectFailure = reason
        self._cannotConnect(reason)

    def _sessionEnded(self, session: MemuxProtocol, why: str) -> None:
        if self._port is None:
            return
        ending = self._ending(session)
        if ending.connecting:
            self._sayOnce(f"cannot connect to {self.remoteText}: {ending.text}")
        else:
            self.reporter.info(
                f"session to {self.remoteText} ended: {ending.text};"
                " the next connection reconnects"
            )


async def _within(d: defer.Deferred[Any], clock: IReactorTime) -> None:
    """
    Wait for ``d``, but not more than a few seconds: stopping must not hang.
    """
    d.addTimeout(_CLOSE_TIMEOUT, clock)
    try:
        await d
    except defer.TimeoutError:
        pass


def _connectionCount(count: int) -> str:
    return f"{count} connection" if count == 1 else f"{count} connections"


class _CountingForwardingFactory(LocalForwardingFactory):
    """
    `LocalForwardingFactory` that tells the command of each connection, to
    count it and report how it ends.
    """

    def __init__(self, command: ForwardCommand) -> None:
        super().__init__(
            command.sessions.get,
            command.service,
            command.metadata,
            priority=command.priority,
            weight=command.weight,
        )
        self.command = command

    def buildProtocol(self, addr: IAddress | None) -> Protocol:
        """
        Build the local end of a forwarded connection, and count it.
        """
        protocol = super().buildProtocol(addr)
        self.command.track(cast(SpliceProtocol, protocol), addr)
        return protocol


def _addArguments(parser: argparse.ArgumentParser) -> None:
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
    parser.add_argument(
        "--backlog",
        metavar="N",
        type=_positiveInt,
        default=None,
        help=(
            "let up to N connections wait to be accepted on LOCAL_ENDPOINT"
            f" (default {DEFAULT_BACKLOG}; the system may allow fewer)"
        ),
    )
    parser.add_argument(
        "--grace",
        metavar="SECONDS",
        type=_seconds(0),
        default=DEFAULT_GRACE,
        help=(
            "when interrupted, let open connections finish for SECONDS"
            f" (default {DEFAULT_GRACE:g}) before cutting them; 0 cuts at once"
        ),
    )


def _make(
    args: argparse.Namespace, reactor: IReactorCore, reporter: Reporter
) -> ForwardCommand:
    remote, remoteText, tls = remoteEndpoint(args, reactor)
    backlog: int | None = args.backlog
    local, _ = parseLocal(
        reactor,
        args.local,
        DEFAULT_BACKLOG if backlog is None else backlog,
        explicit=backlog is not None,
    )
    service, metadata = channelArguments(args)
    command = ForwardCommand(
        local, remote, remoteText, service, metadata, reporter, args.grace, tls=tls
    )
    command.priority, command.weight = args.priority, args.weight
    return command


COMMAND = Subcommand(
    name="forward",
    help="forward local connections to a service (like ssh -L)",
    quietHelp="no progress line, no routine messages",
    description=(
        "Listen on LOCAL_ENDPOINT; carry every accepted connection over a new\n"
        "channel for SERVICE on one memux session to REMOTE, like ssh -L.\n"
        "The session is made at start (exit 3 if it cannot be); if it is lost\n"
        "later, the next accepted connection makes a new one.  Runs until\n"
        "interrupted; then stops listening, lets open connections finish for\n"
        "--grace seconds, and cuts the rest (exit 130 if it cut any).  A\n"
        "connection cut short (reset, session lost) is reset on the other\n"
        "side too, never closed as if complete, and reported even with -q."
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
    addArguments=_addArguments,
    make=_make,
)
