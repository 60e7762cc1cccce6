# -*- test-case-name: memux.test.test_cli -*-
"""
The ``memux`` command line: ``memux forward`` (like ``ssh -L``), ``memux
connect`` (like ``nc``) and ``memux ping``.

Each subcommand is a small object with ``run(reactor) -> Deferred[int]``
(the exit status) and ``interrupted() -> int`` (the status when SIGINT or
SIGTERM stops the reactor first); `main` parses the arguments, starts
logging to standard error and runs the reactor until one of the two.

Standard output belongs to the data (``connect``) or the results
(``ping``); everything else goes to standard error: routine messages,
errors as one line each, the progress line when standard error is a
terminal, and with ``--verbose`` the twisted.logger output.
"""

from __future__ import annotations

import argparse
import enum
import ipaddress
import os
import re
import sys
import time
import typing
from collections.abc import Callable, Sequence
from typing import IO, Any, cast

from twisted.internet import defer
from twisted.internet.endpoints import clientFromString, serverFromString
from twisted.internet.error import ConnectionDone, ReactorNotRunning
from twisted.internet.interfaces import (
    IAddress,
    IDelayedCall,
    IListeningPort,
    IReactorCore,
    IReactorTime,
    IStreamClientEndpoint,
    IStreamServerEndpoint,
)
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.internet.task import LoopingCall
from twisted.logger import (
    FilteringLogObserver,
    ILogObserver,
    LogEvent,
    Logger,
    LogLevel,
    LogLevelFilterPredicate,
    formatEvent,
    globalLogBeginner,
    textFileLogObserver,
)
from twisted.python.failure import Failure
from zope.interface import implementer

import memux
from memux._engine import MAX_OPEN_PAYLOAD
from memux._wire import MAX_NAME_LENGTH, OpenFrame
from memux.error import ChannelRefused, ChannelReset, SessionLost
from memux.mptcp import pathInfo
from memux.protocol import MemuxProtocol, connectSession
from memux.tunnel import LocalForwardingFactory, SpliceProtocol, splice

__all__ = ["ExitStatus", "SessionCache", "main", "parseLocal", "parseRemote"]

#: the TCP port a bare REMOTE host (no port) means: ``twistd memux``'s default
DEFAULT_PORT = 7400


class ExitStatus(enum.IntEnum):
    """
    The exit statuses of ``memux``; each names one kind of outcome, so
    scripts can tell them apart.
    """

    #: success: the channel ended cleanly, every ping was answered, or
    #: ``forward`` was stopped by a signal
    OK = 0
    #: ``ping``: some ping went unanswered; or an unexpected error
    FAILURE = 1
    #: bad arguments (argparse's convention)
    USAGE = 2
    #: cannot connect to REMOTE, or the session was lost
    CONNECT = 3
    #: the server refused the channel (unknown service, not allowed)
    REFUSED = 4
    #: the channel was reset
    RESET = 5
    #: ``forward``: cannot listen on LOCAL_ENDPOINT
    LISTEN = 6
    #: ``connect`` was stopped by SIGINT or SIGTERM
    INTERRUPTED = 130


class UsageError(Exception):
    """
    An argument is wrong; the message says which and why.
    """


# ------------------------------------------------------------ endpoints

#: ``[v6address]:port``
_BRACKETED = re.compile(r"^\[(?P<host>[^\]]+)\](?::(?P<port>\d+))?$")
#: ``host:port``, ``host``
_BARE = re.compile(r"^(?P<host>[^:\[\]\s]+)(?::(?P<port>\d+))?$")
#: endpoint types whose name must never be read as a host name
_ENDPOINT_WORDS = frozenset({"tcp", "tcp6", "tls", "ssl", "unix", "memux", "mptcp"})


def _escape(text: str) -> str:
    """
    Quote C{text} for use as one field of an endpoint string.
    """
    return text.replace("\\", "\\\\").replace(":", "\\:").replace("=", "\\=")


def _checkPort(port: str, what: str) -> int:
    number = int(port)
    if not 0 <= number <= 65535:
        raise UsageError(f"{what}: port {number} is out of range (0-65535)")
    return number


def parseRemote(reactor: IReactorCore, text: str) -> tuple[IStreamClientEndpoint, str]:
    """
    Make the client endpoint that REMOTE names, and return it with a name
    for it in messages (the endpoint string, or ``tcp:`` and the bare form).

    REMOTE is a Twisted client endpoint string (``tcp:HOST:PORT``,
    ``tls:HOST:PORT``, ``unix:PATH``, ...), or for convenience a bare
    ``HOST:PORT``, ``[IPV6]:PORT`` or ``HOST`` (TCP, port 7400).

    @raise UsageError: if it is neither.
    """
    bracketed = _BRACKETED.match(text)
    if bracketed is not None:
        host, port = bracketed["host"], bracketed["port"]
        shown = f"[{host}]"
    else:
        host, port = None, None
        try:
            return clientFromString(reactor, text), text
        except Exception as e:
            bare = _BARE.match(text)
            if bare is None or bare["host"].lower() in _ENDPOINT_WORDS:
                raise UsageError(
                    f"REMOTE {text!r} is not a client endpoint"
                    f" (such as tcp:HOST:PORT, or HOST:PORT): {_describeError(e)}"
                ) from e
            host, port = bare["host"], bare["port"]
            shown = host
    assert host is not None
    number = DEFAULT_PORT if port is None else _checkPort(port, f"REMOTE {text!r}")
    endpoint = clientFromString(reactor, f"tcp:{_escape(host)}:{number}")
    return endpoint, f"tcp:{shown}:{number}"


def parseLocal(reactor: IReactorCore, text: str) -> tuple[IStreamServerEndpoint, str]:
    """
    Make the server endpoint that LOCAL_ENDPOINT names, and return it with
    the endpoint string it was made from.

    LOCAL_ENDPOINT is a Twisted server endpoint string (``tcp:8080``,
    ``tcp:8080:interface=127.0.0.1``, ``unix:/tmp/s``, ...), or for
    convenience, as with ``ssh -L``, a bare ``PORT`` (TCP on 127.0.0.1 only)
    or ``ADDRESS:PORT`` (TCP on that interface: an IP address, ``[IPV6]``
    or ``localhost``).

    @raise UsageError: if it is neither.
    """
    bare = re.match(r"^(?:(?P<host>[^:\s]+|\[[^\]]+\]):)?(?P<port>\d+)$", text)
    if bare is not None and _isInterface(bare["host"]):
        host = (bare["host"] or "127.0.0.1").strip("[]")
        port = _checkPort(bare["port"], f"LOCAL_ENDPOINT {text!r}")
        description = f"tcp:{port}:interface={_escape(host)}"
    else:
        description = text
    try:
        return serverFromString(reactor, description), description
    except Exception as e:
        raise UsageError(
            f"LOCAL_ENDPOINT {text!r} is not a server endpoint"
            f" (such as tcp:8080:interface=127.0.0.1, or 8080): {_describeError(e)}"
        ) from e


def _isInterface(host: str | None) -> bool:
    """
    Whether C{host}, from a bare LOCAL_ENDPOINT, names an interface to
    listen on (absent means the default).
    """
    if host is None or host.lower() == "localhost":
        return True
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


def _describeError(e: BaseException) -> str:
    text = str(e)
    if isinstance(e, TypeError) and "argument" in text:
        return "missing or unexpected fields"
    return text or type(e).__name__


def _describeAddress(address: IAddress | None) -> str:
    """
    C{host:port} for an IP address, the path for a UNIX one.
    """
    host = getattr(address, "host", None)
    port = getattr(address, "port", None)
    if host is not None and port is not None:
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    name = getattr(address, "name", None)
    if name is not None:
        if isinstance(name, bytes):
            name = name.decode("utf-8", "replace")
        return f"unix:{name}"
    return str(address)


def _reasonText(reason: Failure | BaseException) -> str:
    """
    One line saying why something failed, without a traceback.
    """
    value = reason.value if isinstance(reason, Failure) else reason
    if isinstance(value, ChannelReset | SessionLost):
        return str(value)
    text = str(value).strip()
    text = text.splitlines()[-1] if text else type(value).__name__
    return text.rstrip(".")


# ------------------------------------------------------------ sessions


class SessionCache:
    """
    One session to a remote, connected on demand and remade after it ends
    (or after the peer announces it is going away): the next `get` after a
    loss reconnects.

    @ivar onConnectionFailed: called with the reason when a connection
        attempt fails.
    @ivar onSessionEnded: called with the session and a reason when a
        session that was in use ends.
    """

    def __init__(
        self,
        endpoint: IStreamClientEndpoint,
        reactor: IReactorTime | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.reactor = reactor
        self.onConnectionFailed: Callable[[Failure], None] = lambda reason: None
        self.onSessionEnded: Callable[[MemuxProtocol, str], None] = (
            lambda session, why: None
        )
        self._current: MemuxProtocol | None = None
        self._waiting: list[defer.Deferred[MemuxProtocol]] | None = None
        self._live: set[MemuxProtocol] = set()
        self._retired = {"bytesSent": 0, "bytesReceived": 0}

    def get(self) -> defer.Deferred[MemuxProtocol]:
        """
        Fire with a connected session: the current one if it can still open
        channels, else a new one (every caller waiting meanwhile gets the
        same).
        """
        session = self._current
        if session is not None and _usable(session):
            return defer.succeed(session)
        d: defer.Deferred[MemuxProtocol] = defer.Deferred()
        if self._waiting is not None:
            self._waiting.append(d)
            return d
        self._waiting = [d]
        connecting = connectSession(self.endpoint, reactor=self.reactor)
        connecting.addCallbacks(self._connected, self._failed)
        return d

    def totals(self) -> dict[str, int]:
        """
        Bytes sent and received on the memux connections (framing
        included), over every session so far.
        """
        totals = dict(self._retired)
        for session in self._live:
            counters = session.counters()
            for key in totals:
                totals[key] += counters[key]
        return totals

    def close(self) -> None:
        """
        Close every session.
        """
        self._current = None
        for session in list(self._live):
            if session.transport is not None:
                session.transport.loseConnection()

    def _connected(self, session: MemuxProtocol) -> None:
        self._current = session
        self._live.add(session)
        session.whenClosed().addCallback(lambda _: self._closed(session))
        waiting, self._waiting = self._waiting or [], None
        for d in waiting:
            d.callback(session)

    def _failed(self, reason: Failure) -> None:
        waiting, self._waiting = self._waiting or [], None
        self.onConnectionFailed(reason)
        for d in waiting:
            d.errback(reason)

    def _closed(self, session: MemuxProtocol) -> None:
        self._live.discard(session)
        counters = session.counters()
        for key in self._retired:
            self._retired[key] += counters[key]
        if session is self._current:
            self._current = None
            lost = session.lostReason
            why = _reasonText(lost) if lost is not None else "closed"
            self.onSessionEnded(session, why)


def _usable(session: MemuxProtocol) -> bool:
    engine = session.engine
    return bool(session.connected) and not (
        engine.terminated or engine.goAwayReceived is not None
    )


# ------------------------------------------------------------ reporting


def _formatBytes(count: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if count < 1024 or unit == "GiB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    raise AssertionError("unreachable")


class Reporter:
    """
    Everything a command says on standard error: routine messages (not
    with ``--quiet``), errors (always), and a progress line redrawn about
    once a second when ``progress`` is on.

    @ivar prefix: what each message starts with, e.g. C{"memux forward: "}.
    """

    def __init__(
        self,
        stream: IO[str],
        prefix: str,
        *,
        quiet: bool = False,
        progress: bool = False,
    ) -> None:
        self.stream = stream
        self.prefix = prefix
        self.quiet = quiet
        self.progress = progress
        self._line = ""
        self._loop: LoopingCall | None = None

    def info(self, text: str) -> None:
        """
        Say something routine (not with ``--quiet``).
        """
        if not self.quiet:
            self._say(text)

    def error(self, text: str) -> None:
        """
        Report an error, on one line.
        """
        self._say(text)

    def _say(self, text: str) -> None:
        self._clear()
        self.stream.write(f"{self.prefix}{text}\n")
        if self._line:
            self.stream.write(self._line)
        self.stream.flush()

    def startProgress(self, clock: IReactorTime, render: Callable[[], str]) -> None:
        """
        Redraw the line C{render()} returns every second, if the progress
        line is on.
        """
        if not self.progress:
            return

        def draw() -> None:
            self._clear()
            self._line = "\r" + self._fit(self.prefix + render())
            self.stream.write(self._line)
            self.stream.flush()

        self._loop = LoopingCall(draw)
        self._loop.clock = clock
        self._loop.start(1.0, now=False)

    def stopProgress(self, final: str | None = None) -> None:
        """
        Stop redrawing and erase the line; print C{final} in its place (a
        summary, shown only where the progress line was).
        """
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self._loop = None
        self._clear()
        self._line = ""
        if final is not None and self.progress:
            self.stream.write(f"{self.prefix}{final}\n")
        self.stream.flush()

    def _clear(self) -> None:
        if self._line:
            self.stream.write("\r\x1b[K")

    def _fit(self, text: str) -> str:
        # A line wider than the terminal wraps, and "\r" then redraws only
        # its last part: keep it to one row.
        try:
            width = os.get_terminal_size(self.stream.fileno()).columns
        except (OSError, ValueError, AttributeError):
            width = 0
        return text[: max(width or 80, 20) - 1]


class _RateMeter:
    """
    Bytes each way and the rate over the last interval, for progress lines.
    """

    def __init__(self, counts: Callable[[], tuple[int, int]]) -> None:
        self.counts = counts
        self.started = time.monotonic()
        self._last = (self.started, *counts())

    def describe(self) -> str:
        now = time.monotonic()
        sent, received = self.counts()
        then, sent0, received0 = self._last
        self._last = (now, sent, received)
        elapsed = max(now - then, 1e-6)
        return (
            f"tx {_formatBytes(sent)} ({_formatBytes((sent - sent0) / elapsed)}/s)"
            f"  rx {_formatBytes(received)}"
            f" ({_formatBytes((received - received0) / elapsed)}/s)"
        )

    def summary(self) -> str:
        sent, received = self.counts()
        elapsed = max(time.monotonic() - self.started, 1e-6)
        return (
            f"sent {_formatBytes(sent)}, received {_formatBytes(received)}"
            f" in {elapsed:.1f} s"
            f" ({_formatBytes((sent + received) / elapsed)}/s)"
        )


@implementer(ILogObserver)
class _BriefObserver:
    """
    Without ``--verbose``: errors logged by Twisted or memux become one line
    each on standard error (no traceback), and `onEvent` sees every event.
    """

    def __init__(self, reporter: Reporter) -> None:
        self.reporter = reporter
        self.onEvent: Callable[[LogEvent], None] = lambda event: None

    def __call__(self, event: LogEvent) -> None:
        self.onEvent(event)
        level = event.get("log_level")
        if level is not None and level >= LogLevel.error:
            text = formatEvent(event).strip().splitlines()
            failure = event.get("log_failure")
            if failure is not None:
                text.append(_reasonText(failure))
            self.reporter.error(
                "error: "
                + "; ".join(line for line in text if line)
                + " (run with --verbose for details)"
            )


def _startLogging(verbose: bool, reporter: Reporter) -> _BriefObserver | None:
    """
    Send twisted.logger's output to standard error: all of it from info up
    with ``--verbose``, else only errors, as one line each.
    """
    if verbose:
        observer: ILogObserver = FilteringLogObserver(
            textFileLogObserver(sys.stderr),
            [LogLevelFilterPredicate(LogLevel.info)],
        )
        globalLogBeginner.beginLoggingTo([observer], redirectStandardIO=False)
        return None
    brief = _BriefObserver(reporter)
    globalLogBeginner.beginLoggingTo(
        [brief], discardBuffer=True, redirectStandardIO=False
    )
    return brief


def _showProgress(quiet: bool, interactive: bool = False) -> bool:
    """
    Whether to draw a progress line: standard error is a terminal, the user
    did not ask for quiet, and (for C{interactive} commands) neither
    standard input nor output is a terminal the line would garble.
    """
    if quiet or not _isatty(sys.stderr):
        return False
    return not (interactive and (_isatty(sys.stdin) or _isatty(sys.stdout)))


def _isatty(stream: IO[str] | None) -> bool:
    try:
        return stream is not None and stream.isatty()
    except (ValueError, OSError):
        return False


# ------------------------------------------------------------ commands


class Command(typing.Protocol):
    """
    What `main` runs.
    """

    def run(self, reactor: IReactorCore) -> defer.Deferred[int]:
        """
        Do the work; fire with the exit status.
        """

    def interrupted(self) -> int:
        """
        The reactor was stopped (SIGINT, SIGTERM) first: clean up, say what
        is due, return the exit status.
        """


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


class _CountingSplice(SpliceProtocol):
    """
    A splice end that counts what it receives and keeps why it ended.
    """

    def __init__(self) -> None:
        super().__init__()
        self.received = 0
        self.reason: Failure | None = None

    def dataReceived(self, data: bytes) -> None:
        """
        Count C{data}, and pass it on.
        """
        self.received += len(data)
        super().dataReceived(data)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        """
        Keep C{reason}, and close the peer.
        """
        self.reason = reason
        super().connectionLost(reason)


class _ChannelEnd(_CountingSplice):
    """
    The channel end of ``connect``.  Its peer is standard I/O, whose
    transport has no C{producer} attribute for the splice to see, so the
    channel is unregistered as the producer of standard output here before
    it is closed (a writer with a paused producer would resume it instead
    of closing).
    """

    def readConnectionLost(self) -> None:
        """
        The peer sent FIN: close standard output after what is pending.
        """
        self._unregisterFromStdout()
        super().readConnectionLost()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        """
        The channel ended: close standard I/O after what is pending.
        """
        self._unregisterFromStdout()
        super().connectionLost(reason)

    def _unregisterFromStdout(self) -> None:
        peer = self.peer
        if peer is not None and peer.transport is not None:
            cast(Any, peer.transport).unregisterProducer()


class _StdioEnd(_CountingSplice):
    """
    The standard I/O end of ``connect``: stdin to the channel, the channel
    to stdout.  `finished` fires once standard output is done with (closed
    by us after the channel ended, or by the reader going away).
    """

    def __init__(self) -> None:
        super().__init__()
        self.finished: defer.Deferred[None] = defer.Deferred()

    def writeConnectionLost(self) -> None:
        """
        Standard output is closed: nobody will read what the channel
        sends, so close the channel and stop reading standard input.
        """
        peer = self.peer
        if peer is not None and peer.transport is not None:
            peer.transport.loseConnection()
        if self.transport is not None:
            self.transport.loseConnection()
        self._finish()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        """
        Standard I/O is closed.
        """
        super().connectionLost(reason)
        self._finish()

    def _finish(self) -> None:
        if not self.finished.called:
            self.finished.callback(None)


class ConnectCommand:
    """
    ``memux connect``: standard input to a channel for SERVICE, the channel
    to standard output, until the channel ends.
    """

    def __init__(
        self,
        remote: IStreamClientEndpoint,
        remoteText: str,
        service: bytes,
        metadata: bytes | None,
        reporter: Reporter,
        stdio: Callable[[SpliceProtocol, IReactorCore], object] | None = None,
    ) -> None:
        self.remote = remote
        self.remoteText = remoteText
        self.service = service
        self.metadata = metadata
        self.reporter = reporter
        self.stdio = stdio or _standardIO
        self._stdioEnd = _StdioEnd()
        self._channelEnd: _ChannelEnd | None = None
        self._meter: _RateMeter | None = None

    async def _run(self, reactor: IReactorCore) -> int:
        try:
            session = await connectSession(self.remote, reactor=_clock(reactor))
        except Exception as e:
            self.reporter.error(
                f"cannot connect to {self.remoteText}: {_reasonText(e)}"
            )
            return ExitStatus.CONNECT
        try:
            channelEnd = await session.openChannel(
                self.service, Factory.forProtocol(_ChannelEnd), metadata=self.metadata
            )
        except Exception as e:
            self.reporter.error(f"cannot open a channel: {_reasonText(e)}")
            return ExitStatus.CONNECT
        assert isinstance(channelEnd, _ChannelEnd)
        self._channelEnd = channelEnd
        self.stdio(self._stdioEnd, reactor)
        splice(self._stdioEnd, channelEnd)
        meter = self._meter = _RateMeter(self._payloadBytes)
        self.reporter.startProgress(_clock(reactor), meter.describe)
        await channelEnd.done
        await self._stdioEnd.finished
        status, why = _channelOutcome(channelEnd.reason)
        self.reporter.stopProgress(meter.summary())
        if status != ExitStatus.OK:
            self.reporter.error(
                f"service {self.service.decode('utf-8', 'replace')!r}: {why}"
            )
        await _closeSession(session, reactor)
        return status

    def run(self, reactor: IReactorCore) -> defer.Deferred[int]:
        """
        Connect, open the channel, splice it to standard I/O, and wait for
        the end.
        """
        return defer.Deferred.fromCoroutine(self._run(reactor))

    def interrupted(self) -> int:
        """
        Stopped before the channel ended.
        """
        self.reporter.stopProgress(self._meter.summary() if self._meter else None)
        self.reporter.error("interrupted")
        return ExitStatus.INTERRUPTED

    def _payloadBytes(self) -> tuple[int, int]:
        received = self._channelEnd.received if self._channelEnd is not None else 0
        return self._stdioEnd.received, received


def _clock(reactor: IReactorCore) -> IReactorTime:
    # The global reactor provides both; the interfaces are separate.
    return cast(IReactorTime, reactor)


def _standardIO(protocol: SpliceProtocol, reactor: IReactorCore) -> object:
    from twisted.internet.stdio import StandardIO

    return StandardIO(protocol, reactor=cast(Any, reactor))


def _channelOutcome(reason: Failure | None) -> tuple[ExitStatus, str]:
    """
    The exit status and message for a channel that ended with C{reason}.
    """
    if reason is None or reason.check(ConnectionDone):
        return ExitStatus.OK, "closed"
    value = reason.value
    if isinstance(value, ChannelRefused):
        return ExitStatus.REFUSED, str(value)
    if isinstance(value, ChannelReset):
        return ExitStatus.RESET, str(value)
    return ExitStatus.CONNECT, _reasonText(reason)


async def _closeSession(session: MemuxProtocol, reactor: IReactorCore) -> None:
    """
    Close the session and wait (a little) for the connection to go.
    """
    if session.transport is not None and session.connected:
        session.transport.loseConnection()
        closed = session.whenClosed()
        closed.addTimeout(5, _clock(reactor))
        try:
            await closed
        except defer.TimeoutError:
            pass


class PingCommand:
    """
    ``memux ping``: PING the peer every INTERVAL seconds, print each round
    trip and a summary.
    """

    def __init__(
        self,
        remote: IStreamClientEndpoint,
        remoteText: str,
        count: int | None,
        interval: float,
        timeout: float,
        reporter: Reporter,
        out: IO[str],
    ) -> None:
        self.remote = remote
        self.remoteText = remoteText
        self.count = count
        self.interval = interval
        self.timeout = timeout
        self.reporter = reporter
        self.out = out
        self.sent = 0
        self.rtts: list[float] = []
        self._outstanding = 0
        self._sending = True
        self._next: IDelayedCall | None = None
        self._started = 0.0
        self._done: defer.Deferred[int] = defer.Deferred()
        self._summarised = False
        self._stopped = False
        self._session: MemuxProtocol | None = None
        self._peer = remoteText
        self._clock: IReactorTime | None = None

    def run(self, reactor: IReactorCore) -> defer.Deferred[int]:
        """
        Connect and start pinging.
        """
        self._clock = clock = _clock(reactor)
        reactor.addSystemEventTrigger("before", "shutdown", self._stopping)
        d = connectSession(self.remote, reactor=clock)
        d.addCallbacks(self._connected, self._connectFailed)
        return self._done

    def interrupted(self) -> int:
        """
        Stopped: summarise what was seen.  Pings still within their
        timeout were not lost, only not waited for: they do not count.
        """
        if not self._summarised:
            self.sent -= self._outstanding
            self._outstanding = 0
        return self._summary()

    def _connectFailed(self, reason: Failure) -> None:
        self.reporter.error(
            f"cannot connect to {self.remoteText}: {_reasonText(reason)}"
        )
        self._done.callback(ExitStatus.CONNECT)

    def _connected(self, session: MemuxProtocol) -> None:
        self._session = session
        transport = session.transport
        self._peer = _describeAddress(transport.getPeer() if transport else None)
        self._print(f"MEMUX PING {self.remoteText}")
        self._print(f"path: {pathInfo(session).describe()}")
        self._started = time.monotonic()
        session.whenClosed().addCallback(self._sessionClosed)
        self._send()

    def _send(self) -> None:
        self._next = None
        session, clock = self._session, self._clock
        if not self._sending or session is None or clock is None:
            return
        self.sent += 1
        seq = self.sent
        self._outstanding += 1
        d = session.ping()
        d.addTimeout(self.timeout, clock)
        d.addCallbacks(
            self._answered,
            self._unanswered,
            callbackArgs=(seq,),
            errbackArgs=(seq,),
        )
        if self.count is not None and self.sent >= self.count:
            self._sending = False
        else:
            self._next = clock.callLater(self.interval, self._send)

    def _answered(self, rtt: float, seq: int) -> None:
        self._outstanding -= 1
        self.rtts.append(rtt)
        self._print(f"reply from {self._peer}: seq={seq} time={rtt * 1000:.3f} ms")
        self._maybeDone()

    def _unanswered(self, reason: Failure, seq: int) -> None:
        self._outstanding -= 1
        if reason.check(defer.TimeoutError):
            self._print(f"no reply for seq={seq} within {self.timeout:g} s")
        self._maybeDone()

    def _stopping(self) -> None:
        # Stopped by a signal: the session closing now is no news.
        self._stopped = True

    def _sessionClosed(self, _: object) -> None:
        if not self._stopped and (self._sending or self._outstanding):
            session = self._session
            lost = session.lostReason if session is not None else None
            why = _reasonText(lost) if lost is not None else "closed"
            self.reporter.error(f"session to {self.remoteText} ended: {why}")
            self._sending = False
            if self._next is not None and self._next.active():
                self._next.cancel()
            self._next = None
            self._maybeDone(force=True)

    def _maybeDone(self, force: bool = False) -> None:
        if self._done.called or self._sending:
            return
        if self._outstanding and not force:
            return
        status = self._summary()
        session = self._session
        if session is not None and session.transport is not None and session.connected:
            session.transport.loseConnection()
        self._done.callback(status)

    def _summary(self) -> int:
        if self._next is not None and self._next.active():
            self._next.cancel()
        if self._session is None:
            return ExitStatus.CONNECT
        answered = len(self.rtts)
        if not self._summarised:
            self._summarised = True
            lost = self.sent - answered
            percent = 100.0 * lost / self.sent if self.sent else 0.0
            elapsed = (time.monotonic() - self._started) * 1000
            self._print(f"--- {self.remoteText} memux ping statistics ---")
            self._print(
                f"{self.sent} sent, {answered} answered, {percent:.0f}% lost,"
                f" time {elapsed:.0f} ms",
                always=True,
            )
            if self.rtts:
                low, high = min(self.rtts), max(self.rtts)
                mean = sum(self.rtts) / answered
                self._print(
                    f"rtt min/avg/max = {low * 1000:.3f}/{mean * 1000:.3f}"
                    f"/{high * 1000:.3f} ms",
                    always=True,
                )
            if self._session.connected:
                # Again at the end: MPTCP subflows and counters change.
                self._print(f"path: {pathInfo(self._session).describe()}", always=True)
        ok = self.sent > 0 and answered == self.sent
        return ExitStatus.OK if ok else ExitStatus.FAILURE

    def _print(self, line: str, always: bool = False) -> None:
        if always or not self.reporter.quiet:
            self.out.write(line + "\n")
            self.out.flush()


# ------------------------------------------------------------ arguments

_EXIT_HELP = """\
exit status:
  0    success (the channel ended cleanly; every ping answered; forward stopped)
  1    ping: a ping went unanswered
  2    usage error
  3    cannot connect to REMOTE, or the session was lost
  4    the server refused the channel (e.g. unknown service)
  5    the channel was reset
  6    forward: cannot listen on LOCAL_ENDPOINT
  130  connect: interrupted (SIGINT or SIGTERM)
"""

_REMOTE_HELP = (
    "the memux server: a Twisted client endpoint string such as"
    " tcp:HOST:PORT, tls:HOST:PORT or unix:PATH; a bare HOST:PORT or"
    f" [IPV6]:PORT means TCP, and a bare HOST means TCP port {DEFAULT_PORT}"
)


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """
    Keep the examples' layout; a little more room for option names.
    """

    def __init__(self, prog: str) -> None:
        super().__init__(prog, max_help_position=30)


def _positiveInt(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def _seconds(minimum: float) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"not a number of seconds: {text!r}"
            ) from None
        if not value >= minimum or value == float("inf"):
            raise argparse.ArgumentTypeError(f"must be at least {minimum:g} s")
        return value

    parse.__name__ = "seconds"
    return parse


def _common(quietHelp: str, default: Any = False) -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    group = common.add_argument_group("output")
    group.add_argument(
        "-q", "--quiet", action="store_true", default=default, help=quietHelp
    )
    group.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        default=default,
        help="log Twisted and memux events (sessions, channels, errors) to stderr",
    )
    return common


def buildParser() -> argparse.ArgumentParser:
    """
    The argument parser for ``memux`` and its subcommands.
    """
    parser = argparse.ArgumentParser(
        prog="memux",
        formatter_class=_Formatter,
        description=(
            "memux: many reliable, ordered message channels over one connection.\n"
            "Forward local connections over a memux session, talk to a service,\n"
            "or ping a server."
        ),
        epilog=(
            "examples:\n"
            "  memux forward 8080 tcp:server.example:7400 web\n"
            "  echo hello | memux connect server.example:7400 echo\n"
            "  memux ping -c 3 tcp:server.example:7400\n\n"
            "Run 'memux COMMAND --help' for each command's options.\n\n" + _EXIT_HELP
        ),
    )
    parser.add_argument(
        "--version",
        action="version",
        version=_versionText(),
    )
    parser.add_argument(
        "-q", "--quiet", action="store_true", help="as each command's --quiet"
    )
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="as each command's --verbose"
    )
    commands = parser.add_subparsers(
        title="commands", dest="command", metavar="COMMAND", required=True
    )

    suppress = argparse.SUPPRESS
    forward = commands.add_parser(
        "forward",
        parents=[_common("no progress line, no routine messages", suppress)],
        formatter_class=_Formatter,
        help="forward local connections to a service (like ssh -L)",
        description=(
            "Listen on LOCAL_ENDPOINT; carry every accepted connection over a new\n"
            "channel for SERVICE on one memux session to REMOTE, like ssh -L.\n"
            "The session is made at start (exit 3 if it cannot be); if it is lost\n"
            "later, the next accepted connection makes a new one.  Runs until\n"
            "interrupted."
        ),
        epilog=(
            "examples:\n"
            "  memux forward 8080 tcp:server.example:7400 web\n"
            "      127.0.0.1:8080 reaches the server's 'web' service\n"
            "  memux forward tcp:8080:interface=0.0.0.0 server.example:7400 web\n"
            "      the same on every interface\n"
            "  memux forward unix:/tmp/db.sock tls:server.example:7400 db\n"
            "      a UNIX socket, over TLS\n\n"
            "On a terminal a progress line shows open connections and bytes on\n"
            "the memux connection each way (framing included).\n\n" + _EXIT_HELP
        ),
    )
    forward.add_argument(
        "local",
        metavar="LOCAL_ENDPOINT",
        help=(
            "where to listen: a Twisted server endpoint string such as"
            " tcp:8080:interface=127.0.0.1 or unix:/tmp/s (tcp:8080 alone"
            " listens on every interface); a bare PORT means 127.0.0.1:PORT"
            " and ADDRESS:PORT that interface, as with ssh -L"
        ),
    )
    forward.add_argument("remote", metavar="REMOTE", help=_REMOTE_HELP)
    forward.add_argument(
        "service", metavar="SERVICE", help="the service name to open channels for"
    )
    _metadataOption(forward)
    forward.set_defaults(subparser=forward)

    connect = commands.add_parser(
        "connect",
        parents=[_common("no progress line", suppress)],
        formatter_class=_Formatter,
        help="connect stdin and stdout to a service (like nc)",
        description=(
            "Open a channel for SERVICE on a session to REMOTE; copy standard input\n"
            "to it and what it sends to standard output.  The end of standard\n"
            "input half-closes the channel (the server sees end of input and can\n"
            "still answer); memux connect exits when the channel ends."
        ),
        epilog=(
            "examples:\n"
            "  echo hello | memux connect server.example:7400 echo\n"
            "  memux connect tcp:server.example:7400 chargen | head -c 1000\n"
            "  memux connect unix:/run/memux.sock db < query.sql > result\n\n"
            "When standard error is a terminal and standard input and output are\n"
            "not, a progress line shows the bytes each way and the rate.\n\n"
            + _EXIT_HELP
        ),
    )
    connect.add_argument("remote", metavar="REMOTE", help=_REMOTE_HELP)
    connect.add_argument(
        "service", metavar="SERVICE", help="the service name to open a channel for"
    )
    _metadataOption(connect)
    connect.set_defaults(subparser=connect)

    ping = commands.add_parser(
        "ping",
        parents=[_common("print only the summary", suppress)],
        formatter_class=_Formatter,
        help="measure round trips to a server",
        description=(
            "Connect to REMOTE and send a memux PING every INTERVAL seconds;\n"
            "print each round-trip time, and a summary at the end (after COUNT\n"
            "pings, or when interrupted).  A path: line says what carries the\n"
            "session (TCP, TLS over TCP, MPTCP with its subflows and counters),\n"
            "at the start and in the summary."
        ),
        epilog=(
            "examples:\n"
            "  memux ping -c 3 server.example:7400\n"
            "  memux ping -i 0.2 tls:server.example:7400\n"
            "  memux ping mptcp:host=server.example:port=7400\n\n" + _EXIT_HELP
        ),
    )
    ping.add_argument("remote", metavar="REMOTE", help=_REMOTE_HELP)
    ping.add_argument(
        "-c",
        "--count",
        type=_positiveInt,
        default=None,
        help="stop after COUNT pings (default: until interrupted)",
    )
    ping.add_argument(
        "-i",
        "--interval",
        type=_seconds(0.001),
        default=1.0,
        metavar="SECONDS",
        help="wait SECONDS between pings (default: 1)",
    )
    ping.add_argument(
        "-W",
        "--timeout",
        type=_seconds(0.001),
        default=10.0,
        metavar="SECONDS",
        help="count a ping lost after SECONDS without a reply (default: 10)",
    )
    ping.set_defaults(subparser=ping)
    return parser


def _metadataOption(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-m",
        "--metadata",
        metavar="TEXT",
        default=None,
        help="send TEXT (UTF-8) as each channel's metadata, e.g. a token",
    )


def _versionText() -> str:
    import platform

    import twisted

    return (
        f"memux {memux.__version__} (Twisted {twisted.__version__},"
        f" Python {platform.python_version()})"
    )


def makeCommand(
    args: argparse.Namespace, reactor: IReactorCore, reporter: Reporter
) -> Command:
    """
    The command the parsed C{args} ask for.

    @raise UsageError: if an argument is wrong.
    """
    metadata = getattr(args, "metadata", None)
    meta = metadata.encode("utf-8") if metadata is not None else None
    remote, remoteText = parseRemote(reactor, args.remote)
    if args.command == "forward":
        local, _ = parseLocal(reactor, args.local)
        service = _checkOpen(args.service, meta)
        return ForwardCommand(local, remote, remoteText, service, meta, reporter)
    if args.command == "connect":
        service = _checkOpen(args.service, meta)
        return ConnectCommand(remote, remoteText, service, meta, reporter)
    return PingCommand(
        remote,
        remoteText,
        args.count,
        args.interval,
        args.timeout,
        reporter,
        sys.stdout,
    )


def _checkOpen(service: str, metadata: bytes | None) -> bytes:
    """
    The service name as bytes, if it and the metadata fit in an OPEN frame.

    @raise UsageError: if they do not.
    """
    name = service.encode("utf-8")
    if len(name) > MAX_NAME_LENGTH:
        raise UsageError(
            f"SERVICE is {len(name)} bytes long; the most is {MAX_NAME_LENGTH}"
        )
    size = len(OpenFrame(1, name, metadata).encode())
    if size > MAX_OPEN_PAYLOAD:
        raise UsageError(
            f"--metadata is too long: the channel's opening would take {size}"
            f" bytes, and the most is {MAX_OPEN_PAYLOAD}"
        )
    return name


def runCommand(command: Command, reactor: IReactorCore) -> int:
    """
    Run the reactor until C{command} is done or a signal stops it; return
    the exit status.
    """
    outcome: list[int] = []
    stopping: list[bool] = []

    def finished(status: int) -> None:
        if not stopping:
            outcome.append(int(status))
        try:
            reactor.stop()
        except ReactorNotRunning:
            pass

    def failed(reason: Failure) -> None:
        # A fault in memux: one line, or the traceback with --verbose.
        Logger().failure("memux internal error", reason)
        finished(ExitStatus.FAILURE)

    def start() -> None:
        d = defer.maybeDeferred(command.run, reactor)
        d.addCallbacks(finished, failed)

    reactor.addSystemEventTrigger("before", "shutdown", lambda: stopping.append(True))
    reactor.callWhenRunning(start)
    reactor.run()
    if outcome:
        return outcome[0]
    return command.interrupted()


def main(argv: Sequence[str] | None = None) -> int:
    """
    The ``memux`` command: parse C{argv} (default: C{sys.argv[1:]}), run
    the subcommand, and return its exit status (see L{ExitStatus}).
    """
    parser = buildParser()
    args = parser.parse_args(argv)
    from twisted.internet import reactor as globalReactor

    reactor = cast(IReactorCore, globalReactor)
    command: str = args.command
    quiet: bool = args.quiet
    reporter = Reporter(
        sys.stderr,
        f"memux {command}: ",
        quiet=quiet,
        progress=command != "ping"
        and _showProgress(quiet, interactive=command == "connect"),
    )
    try:
        made = makeCommand(args, reactor, reporter)
    except UsageError as e:
        # With the subcommand's usage line, the helpful one.
        subparser: argparse.ArgumentParser = args.subparser
        subparser.error(str(e))
    brief = _startLogging(args.verbose, reporter)
    if brief is not None and isinstance(made, ForwardCommand):
        brief.onEvent = _channelWatcher(made)
    return runCommand(made, reactor)


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
