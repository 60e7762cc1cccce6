# -*- test-case-name: memux.test.test_cli -*-
"""
``memux ping``: round trips to a server.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import IO

from twisted.internet import defer
from twisted.internet.interfaces import (
    IDelayedCall,
    IReactorCore,
    IReactorTime,
    IStreamClientEndpoint,
)
from twisted.python.failure import Failure

from memux._cli._common import (
    ExitStatus,
    RemoteCommand,
    Reporter,
    Subcommand,
    _clock,
    _describeAddress,
)
from memux._cli._diagnose import Ending, TLSTarget, watch
from memux._cli._options import (
    _positiveInt,
    _seconds,
    addRemote,
    remoteEndpoint,
)
from memux.error import SessionLost
from memux.mptcp import pathInfo
from memux.protocol import MemuxProtocol, connectSession


class PingCommand(RemoteCommand):
    """
    ``memux ping``: PING the peer every INTERVAL seconds, print each round
    trip and a summary.

    The header (``MEMUX PING`` and the path) is printed once the session
    proves to be memux (its first answer) or a ping times out; a session
    that ends before is reported as "cannot connect", with nothing on
    standard output.
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
        tls: TLSTarget | None = None,
    ) -> None:
        super().__init__(remote, remoteText, reporter, tls)
        self.count = count
        self.interval = interval
        self.timeout = timeout
        self.out = out
        self.sent = 0
        self.rtts: list[float] = []
        self._outstanding = 0
        self._sending = True
        self._next: IDelayedCall | None = None
        self._started = 0.0
        self._done: defer.Deferred[int] = defer.Deferred()
        self._headed = False
        self._summarised = False
        self._stopped = False
        self._ended = False
        self._session: MemuxProtocol | None = None
        self._peer = remoteText
        self._clock: IReactorTime | None = None

    def run(self, reactor: IReactorCore) -> defer.Deferred[int]:
        """
        Connect and start pinging.
        """
        self._clock = clock = _clock(reactor)
        reactor.addSystemEventTrigger("before", "shutdown", self._stopping)
        if self.count is None:
            self.reporter.info(
                "pinging until interrupted (Ctrl-C); -c COUNT stops after COUNT pings"
            )
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
        self._cannotConnect(reason)
        self._done.callback(ExitStatus.CONNECT)

    def _connected(self, session: MemuxProtocol) -> None:
        self._session = session
        watch(session)
        transport = session.transport
        self._peer = _describeAddress(transport.getPeer() if transport else None)
        self._started = time.monotonic()
        session.whenClosed().addCallback(lambda _: self._sessionEnded())
        self._send()

    def _header(self) -> None:
        """
        Print the header, once: the session is known to work (or a ping
        went unanswered).
        """
        session = self._session
        if self._headed or session is None:
            return
        self._headed = True
        self._print(f"MEMUX PING {self.remoteText}")
        self._print(f"path: {pathInfo(session).describe()}")

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
        self._header()
        self._print(f"reply from {self._peer}: seq={seq} time={rtt * 1000:.3f} ms")
        self._maybeDone()

    def _unanswered(self, reason: Failure, seq: int) -> None:
        self._outstanding -= 1
        if reason.check(SessionLost):
            # Cut off by the end of the session, which says why.
            self._sessionEnded(reason.value)
            return
        if reason.check(defer.TimeoutError):
            self._header()
            self._print(f"no reply for seq={seq} within {self.timeout:g} s")
        self._maybeDone()

    def _stopping(self) -> None:
        # Stopped by a signal: the session closing now is no news.
        self._stopped = True

    def _sessionEnded(self, lost: BaseException | None = None) -> None:
        """
        The session ended (``lost``: what a ping cut off by it got): unless
        pinging was over, say why and finish, with status 3.
        """
        session, clock = self._session, self._clock
        if self._ended or self._stopped or self._done.called:
            return
        if not (self._sending or self._outstanding or isinstance(lost, SessionLost)):
            return
        assert session is not None and clock is not None
        self._ended = True
        self._sending = False
        self._cancelNext()
        lostError = lost if isinstance(lost, SessionLost) else None
        explained = defer.Deferred.fromCoroutine(
            self._explain(session, clock, lostError)
        )
        explained.addCallbacks(self._reportEnding, self._explainFailed)

    def _explainFailed(self, reason: Failure) -> None:
        # A fault in memux: main reports it, and the status is 1.
        if not self._done.called:
            self._done.errback(reason)

    def _reportEnding(self, ending: Ending) -> None:
        if self._done.called or self._stopped:
            return
        if ending.connecting:
            self._cannotConnect(ending.text)
            if not self._headed:
                # Nothing to summarise: the session never worked.
                self._summarised = True
                self._done.callback(ExitStatus.CONNECT)
                return
        else:
            self.reporter.error(f"session to {self.remoteText} ended: {ending.text}")
        self._summary()
        self._done.callback(ExitStatus.CONNECT)

    def _maybeDone(self) -> None:
        if self._done.called or self._sending or self._outstanding or self._ended:
            return
        status = self._summary()
        session = self._session
        if session is not None and session.connected:
            session.loseConnection()
        self._done.callback(status)

    def _cancelNext(self) -> None:
        if self._next is not None and self._next.active():
            self._next.cancel()
        self._next = None

    def _summary(self) -> int:
        self._cancelNext()
        if self._session is None:
            return ExitStatus.CONNECT
        answered = len(self.rtts)
        if not self._summarised:
            self._summarised = True
            self._header()
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


def _addArguments(parser: argparse.ArgumentParser) -> None:
    addRemote(parser)
    parser.add_argument(
        "-c",
        "--count",
        type=_positiveInt,
        default=None,
        help="stop after COUNT pings (default: until interrupted)",
    )
    parser.add_argument(
        "-i",
        "--interval",
        type=_seconds(0.001),
        default=1.0,
        metavar="SECONDS",
        help="wait SECONDS between pings (default: 1)",
    )
    parser.add_argument(
        "-W",
        "--timeout",
        type=_seconds(0.001),
        default=10.0,
        metavar="SECONDS",
        help="count a ping lost after SECONDS without a reply (default: 10)",
    )


def _make(
    args: argparse.Namespace, reactor: IReactorCore, reporter: Reporter
) -> PingCommand:
    remote, remoteText, tls = remoteEndpoint(args, reactor)
    return PingCommand(
        remote,
        remoteText,
        args.count,
        args.interval,
        args.timeout,
        reporter,
        sys.stdout,
        tls=tls,
    )


COMMAND = Subcommand(
    name="ping",
    help="measure round trips to a server",
    quietHelp="print only the summary",
    description=(
        "Connect to REMOTE and send a memux PING every INTERVAL seconds;\n"
        "print each round-trip time, and a summary at the end (after COUNT\n"
        "pings, or when interrupted).  A path: line says what carries the\n"
        "session (TCP, TLS over TCP, MPTCP with its subflows and counters),\n"
        "at the start and in the summary."
    ),
    examples=(
        "examples:\n"
        "  memux ping -c 3 server.example:7400\n"
        "  memux ping -i 0.2 tls:server.example:7400\n"
        "  memux ping mptcp:host=server.example:port=7400\n\n"
    ),
    addArguments=_addArguments,
    make=_make,
    # Its output is the results, on standard output.
    progress=False,
)
