# -*- test-case-name: memux.test.test_cli -*-
"""
What every ``memux`` command shares: exit statuses, one-line error
texts, the reporter for standard error, logging, and the commands' base
classes.
"""

from __future__ import annotations

import argparse
import enum
import os
import sys
import time
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, cast

from twisted.internet import defer
from twisted.internet.interfaces import (
    IAddress,
    IReactorCore,
    IReactorTime,
    IStreamClientEndpoint,
)
from twisted.internet.task import LoopingCall
from twisted.logger import (
    FilteringLogObserver,
    ILogObserver,
    LogEvent,
    LogLevel,
    LogLevelFilterPredicate,
    formatEvent,
    globalLogBeginner,
    textFileLogObserver,
)
from twisted.python.failure import Failure
from zope.interface import implementer

from memux._cli._diagnose import Ending, TLSTarget, describeEnding, explainEnding
from memux.error import ChannelReset, SessionLost
from memux.protocol import MemuxProtocol


class ExitStatus(enum.IntEnum):
    """
    The exit statuses of ``memux``; each names one kind of outcome, so
    scripts can tell them apart.
    """

    #: success: the channel ended cleanly, every ping was answered, or
    #: ``forward`` was stopped by a signal and had nothing to cut
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
    #: stopped by SIGINT or SIGTERM: ``connect`` before the channel ended,
    #: ``forward`` with connections still open after its grace period
    INTERRUPTED = 130


class UsageError(Exception):
    """
    An argument is wrong; the message says which and why.
    """


def _describeAddress(address: IAddress | None) -> str:
    """
    ``host:port`` for an IP address, the path for a UNIX one.
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

    :ivar prefix: what each message starts with, e.g. ``"memux forward: "``.
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
        Redraw the line ``render()`` returns every second, if the progress
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
        Stop redrawing and erase the line; print ``final`` in its place (a
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
    each on standard error (no traceback).
    """

    def __init__(self, reporter: Reporter) -> None:
        self.reporter = reporter

    def __call__(self, event: LogEvent) -> None:
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


def _startLogging(verbose: bool, reporter: Reporter) -> None:
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
        return
    globalLogBeginner.beginLoggingTo(
        [_BriefObserver(reporter)], discardBuffer=True, redirectStandardIO=False
    )


def _showProgress(quiet: bool, interactive: bool = False) -> bool:
    """
    Whether to draw a progress line: standard error is a terminal, the user
    did not ask for quiet, and (for ``interactive`` commands) neither
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


class Command(typing.Protocol):
    """
    What `main` runs: what a `Subcommand` makes.
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


@dataclass(frozen=True)
class Subcommand:
    """
    One ``memux`` subcommand, as its module declares it (its ``COMMAND``)
    for the registry in `memux._cli`: what its help says, how its
    arguments are added and how the command is made from them.

    :ivar name: the command's name, as typed after ``memux``.
    :ivar help: one line, for the list in ``memux --help``.
    :ivar description: the paragraph that opens ``memux NAME --help``.
    :ivar examples: what ends ``memux NAME --help`` (examples, notes).
    :ivar quietHelp: what its ``--quiet`` does (every command has
        ``--quiet`` and ``--verbose``).
    :ivar addArguments: adds the command's own arguments to its parser.
    :ivar make: makes the `Command` from the parsed arguments; raises
        `UsageError` if one is wrong.
    :ivar progress: whether it may draw a progress line on standard error.
    :ivar interactive: whether it reads the terminal: then the progress
        line is drawn only when standard input and output are not one.
    """

    name: str
    help: str
    description: str
    examples: str
    quietHelp: str
    addArguments: Callable[[argparse.ArgumentParser], None]
    make: Callable[[argparse.Namespace, IReactorCore, Reporter], Command]
    progress: bool = True
    interactive: bool = False


def _clock(reactor: IReactorCore) -> IReactorTime:
    # The global reactor provides both; the interfaces are separate.
    return cast(IReactorTime, reactor)


class RemoteCommand:
    """
    What every command has: REMOTE, and a `Reporter` to say things with.

    :ivar remote: the endpoint REMOTE names.
    :ivar remoteText: REMOTE, for messages.
    :ivar tls: what a ``tls:`` REMOTE checks, for messages.
    """

    def __init__(
        self,
        remote: IStreamClientEndpoint,
        remoteText: str,
        reporter: Reporter,
        tls: TLSTarget | None = None,
    ) -> None:
        self.remote = remote
        self.remoteText = remoteText
        self.reporter = reporter
        self.tls = tls

    def _cannotConnect(self, reason: Failure | BaseException | str) -> None:
        """
        Say that REMOTE cannot be reached, and why.
        """
        text = reason if isinstance(reason, str) else _reasonText(reason)
        self.reporter.error(f"cannot connect to {self.remoteText}: {text}")

    def _ending(
        self, session: MemuxProtocol, lost: SessionLost | None = None
    ) -> Ending:
        """
        Why ``session`` ended (see `describeEnding`).
        """
        return describeEnding(session, self.remoteText, self.tls, lost)

    async def _explain(
        self,
        session: MemuxProtocol,
        clock: IReactorTime,
        lost: SessionLost | None = None,
    ) -> Ending:
        """
        Why ``session`` ended, finding out whether a server that said nothing
        speaks TLS (see `explainEnding`).
        """
        return await explainEnding(
            session, self.remote, self.remoteText, clock, self.tls, lost
        )


class ChannelCommand(RemoteCommand):
    """
    A command that opens channels for SERVICE, each with the same metadata
    (and priority: ``--priority`` and ``--weight``, None for the default).
    """

    priority: int | None = None
    weight: int | None = None

    def __init__(
        self,
        remote: IStreamClientEndpoint,
        remoteText: str,
        service: bytes,
        metadata: bytes | None,
        reporter: Reporter,
        tls: TLSTarget | None = None,
    ) -> None:
        super().__init__(remote, remoteText, reporter, tls)
        self.service = service
        self.metadata = metadata

    def _serviceText(self) -> str:
        """
        ``service 'NAME'``, for messages.
        """
        return f"service {self.service.decode('utf-8', 'replace')!r}"
