# -*- test-case-name: memux.test.test_status -*-
"""
``memux stat``: what a ``twistd memux --status`` server is doing, like
``ss``: its sessions, then each one's channels with their state, credit,
bytes and round trip.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from typing import IO, Any

from twisted.internet import defer
from twisted.internet.endpoints import clientFromString
from twisted.internet.interfaces import (
    IDelayedCall,
    IReactorCore,
    IStreamClientEndpoint,
)
from twisted.python.failure import Failure
from twisted.web.client import Agent, readBody
from twisted.web.iweb import IAgentEndpointFactory
from zope.interface import implementer

from memux._cli._common import (
    ExitStatus,
    Reporter,
    Subcommand,
    UsageError,
    _clock,
    _formatBytes,
    _reasonText,
)
from memux._cli._options import _seconds
from memux.introspect import ChannelSnapshot, FactorySnapshot, SessionSnapshot

#: A bare ``HOST:PORT`` or ``[IPV6]:PORT`` (TCP).
_BARE = re.compile(r"^(?:\[(?P<v6>[^\]]+)\]|(?P<host>[^:\[\]]+)):(?P<port>\d+)$")


def statusEndpoint(reactor: IReactorCore, text: str) -> IStreamClientEndpoint:
    """
    The client endpoint of a status site: a Twisted client endpoint string
    (``tcp:127.0.0.1:9400``, ``unix:/run/memux/status.sock``), a bare
    ``HOST:PORT`` (TCP), or a path (a UNIX socket).

    :raises UsageError: if it is none of these.
    """
    bare = _BARE.match(text)
    if bare is not None:
        host = bare["v6"] or bare["host"]
        text = "tcp:{}:{}".format(host.replace(":", "\\:"), bare["port"])
    elif text.startswith(("/", "./")):
        text = "unix:" + text.replace(":", "\\:")
    try:
        endpoint: IStreamClientEndpoint = clientFromString(reactor, text)
    except Exception as e:
        raise UsageError(
            f"ENDPOINT {text!r} is not a client endpoint (such as"
            f" 127.0.0.1:9400 or unix:/run/memux/status.sock): {e}"
        ) from e
    return endpoint


@implementer(IAgentEndpointFactory)
class _Always:
    """
    Every URI's endpoint is the status site's.
    """

    def __init__(self, endpoint: IStreamClientEndpoint) -> None:
        self.endpoint = endpoint

    def endpointForURI(self, uri: object) -> IStreamClientEndpoint:
        return self.endpoint


class StatCommand:
    """
    ``memux stat``: fetch ``/sessions`` from a status site and print it,
    once or every ``watch`` seconds.
    """

    def __init__(
        self,
        endpoint: IStreamClientEndpoint,
        endpointText: str,
        asJSON: bool,
        watch: float | None,
        channels: bool,
        reporter: Reporter,
        out: IO[str],
    ) -> None:
        self.endpoint = endpoint
        self.endpointText = endpointText
        self.asJSON = asJSON
        self.watch = watch
        self.channels = channels
        self.reporter = reporter
        self.out = out
        self._done: defer.Deferred[int] = defer.Deferred()
        self._next: IDelayedCall | None = None

    def run(self, reactor: IReactorCore) -> defer.Deferred[int]:
        """
        Fetch and print, then again every ``watch`` seconds if given.
        """
        self._reactor = reactor
        self._agent = Agent.usingEndpointFactory(reactor, _Always(self.endpoint))
        self._fetch()
        return self._done

    def interrupted(self) -> int:
        """
        Stopped (``--watch`` runs until then): success.
        """
        if self._next is not None and self._next.active():
            self._next.cancel()
        return ExitStatus.OK

    def _fetch(self) -> None:
        self._next = None
        query = b"" if self.channels else b"?channels=0"
        d = self._agent.request(b"GET", b"http://memux-status/sessions" + query)
        d.addCallback(self._answered)
        d.addCallbacks(self._show, self._failed)

    def _answered(self, response: Any) -> defer.Deferred[bytes]:
        if response.code != 200:
            raise UsageError(
                f"{self.endpointText} answered {response.code}"
                f" {response.phrase.decode('latin-1')}: is it a memux status site?"
            )
        d: defer.Deferred[bytes] = readBody(response)
        return d

    def _show(self, body: bytes) -> None:
        try:
            data = json.loads(body)
            snapshots = [FactorySnapshot.fromJSON(item) for item in data]
        except (ValueError, TypeError, KeyError) as e:
            self._finish(ExitStatus.FAILURE, f"not a memux status answer: {e}")
            return
        if self.asJSON:
            self.out.write(json.dumps(data) + "\n")
        else:
            if self.watch is not None and _isatty(self.out):
                self.out.write("\x1b[H\x1b[2J")  # (clear the screen, as watch(1))
            self.out.write(formatStatus(snapshots, self.endpointText))
        self.out.flush()
        if self.watch is None:
            self._finish(ExitStatus.OK)
        else:
            self._next = _clock(self._reactor).callLater(self.watch, self._fetch)

    def _failed(self, reason: Failure) -> None:
        if reason.check(UsageError):
            status, error = ExitStatus.FAILURE, str(reason.value)
        else:
            status = ExitStatus.CONNECT
            error = f"cannot read {self.endpointText}: {_reasonText(reason)}"
        if self.watch is None:
            self._finish(status, error)
        else:
            # Watching goes on (the server may be restarting), as watch(1).
            self.reporter.error(error)
            self._next = _clock(self._reactor).callLater(self.watch, self._fetch)

    def _finish(self, status: int, error: str = "") -> None:
        if error:
            self.reporter.error(error)
        if not self._done.called:
            self._done.callback(status)


def _isatty(stream: IO[str]) -> bool:
    try:
        return stream.isatty()
    except (ValueError, OSError):
        return False


def _count(n: int, what: str) -> str:
    return f"{n} {what}" if n == 1 else f"{n} {what}s"


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.2f}ms"


def _age(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def _size(n: int) -> str:
    return _formatBytes(n).replace(" ", "")


def _path(s: SessionSnapshot) -> str:
    text = s.transport
    if s.subflows is not None:
        text += f"/{s.subflows}"
    if s.tls:
        text += "+TLS"
    return text


def _sessionState(s: SessionSnapshot) -> str:
    if s.goAwayReceived is not None:
        return f"peer-goaway:{s.goAwayReceived}"
    if s.goAwaySent is not None:
        return f"goaway:{s.goAwaySent}"
    if not s.prefaceReceived:
        return "handshake"
    return "usable" if s.usable else "closing"


def _paused(c: ChannelSnapshot) -> str:
    flags = ("r" if c.readingPaused else "") + ("w" if c.writingPaused else "")
    return flags or "-"


def _table(rows: list[list[str]], indent: str = "") -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=True)]
        lines.append((indent + "  ".join(cells)).rstrip())
    return "\n".join(lines) + "\n"


def formatStatus(snapshots: list[FactorySnapshot], where: str = "") -> str:
    """
    ``snapshots`` (the ``/sessions`` of a status site) as ``memux stat``
    prints them: a summary line, then one line per session, each followed
    by its channels.
    """
    out = []
    for snap in snapshots:
        t = snap.totals
        taken = time.strftime("%H:%M:%S", time.localtime(snap.time))
        out.append(
            f"memux {where} at {taken}: {_count(t.sessionsOpen, 'session')}"
            f" (peak {snap.peakSessions}, {t.sessionsStarted} so far),"
            f" {_count(t.channelsOpen, 'channel')} open"
            + (", draining" if snap.draining else "")
            + "\n"
        )
        header = ["Peer", "Age", "Path", "ALPN", "RTT", "Sent", "Recv"]
        header += ["Chans", "State"]
        for s in sorted(snap.sessions, key=lambda s: -s.age):
            c = s.counters
            row = [
                s.peer,
                _age(s.age),
                _path(s),
                s.alpn or "-",
                _ms(s.rtt),
                _size(c.bytesSent),
                _size(c.bytesReceived),
                str(len(s.channels)) if s.channels else "-",
                _sessionState(s),
            ]
            out.append(_table([header, row]))
            if s.channels:
                rows = [
                    [
                        "Chan",
                        "Service",
                        "State",
                        "Sent",
                        "Recv",
                        "Queued",
                        "Held",
                        "SendCredit",
                        "RecvCredit",
                        "Paused",
                    ]
                ]
                for ch in sorted(s.channels, key=lambda ch: ch.channel):
                    rows.append(
                        [
                            str(ch.channel),
                            ch.service or "(default)",
                            ch.state,
                            _size(ch.bytesSent),
                            _size(ch.bytesReceived),
                            _size(ch.queuedBytes),
                            _size(ch.heldBytes),
                            _size(ch.sendCredit),
                            f"{_size(ch.receiveCredit)}/{_size(ch.receiveWindow)}",
                            _paused(ch),
                        ]
                    )
                out.append(_table(rows, "    "))
    return "".join(out)


def _addArguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "endpoint",
        metavar="ENDPOINT",
        help="the status site of twistd memux --status: a client endpoint"
        " (tcp:127.0.0.1:9400, unix:/run/memux/status.sock), HOST:PORT or a path",
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help="print the snapshot as JSON (one line per fetch)",
    )
    parser.add_argument(
        "-w",
        "--watch",
        action="store_true",
        help="print again every INTERVAL seconds until interrupted",
    )
    parser.add_argument(
        "-i",
        "--interval",
        type=_seconds(0.1),
        default=2.0,
        metavar="SECONDS",
        help="with --watch, the seconds between prints (default 2)",
    )
    parser.add_argument(
        "--no-channels",
        dest="channels",
        action="store_false",
        help="sessions only (cheaper on a busy server)",
    )


def _make(args: argparse.Namespace, reactor: IReactorCore, reporter: Reporter) -> Any:
    endpoint = statusEndpoint(reactor, args.endpoint)
    return StatCommand(
        endpoint,
        args.endpoint,
        args.json,
        args.interval if args.watch else None,
        args.channels,
        reporter,
        sys.stdout,
    )


COMMAND = Subcommand(
    name="stat",
    help="show a server's sessions and channels (twistd memux --status)",
    quietHelp="print errors only",
    description=(
        "Read the status site of a twistd memux started with --status\n"
        "ENDPOINT, and print its sessions (peer, age, path, round trip,\n"
        "bytes, state), each followed by its channels (service, state,\n"
        "bytes, queued and held bytes, credit, paused), like ss."
    ),
    examples=(
        "examples:\n"
        "  memux stat 127.0.0.1:9400\n"
        "  memux stat --watch -i 1 unix:/run/memux/status.sock\n"
        "  memux stat --json 127.0.0.1:9400 | jq '.[0].totals'\n\n"
    ),
    addArguments=_addArguments,
    make=_make,
    progress=False,
)
