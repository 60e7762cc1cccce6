# -*- test-case-name: memux.test.test_cli -*-
"""
``memux connect``: standard input and output to a channel, like ``nc``.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any, cast

from twisted.internet import defer
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import (
    IReactorCore,
    IStreamClientEndpoint,
)
from twisted.internet.protocol import Factory, connectionDone
from twisted.python.failure import Failure

from memux._cli._common import (
    ChannelCommand,
    ExitStatus,
    Reporter,
    Subcommand,
    _clock,
    _RateMeter,
    _reasonText,
)
from memux._cli._diagnose import TLSTarget, watch
from memux._cli._options import (
    addChannelArguments,
    channelArguments,
    remoteEndpoint,
)
from memux._cli._session import _closeSession
from memux.error import ChannelRefused, ChannelReset, SessionLost
from memux.protocol import connectSession
from memux.tunnel import SpliceProtocol, splice


class _ChannelEnd(SpliceProtocol):
    """
    The channel end of ``connect``.  Its peer is standard I/O, whose
    transport has no ``producer`` attribute for the splice to see, so the
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


class _StdioEnd(SpliceProtocol):
    """
    The standard I/O end of ``connect``: stdin to the channel, the channel
    to stdout.  `finished` fires once standard output is done with (closed
    by us after the channel ended, or by the reader going away).
    """

    side = "standard input and output"

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


class ConnectCommand(ChannelCommand):
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
        tls: TLSTarget | None = None,
    ) -> None:
        super().__init__(remote, remoteText, service, metadata, reporter, tls)
        self.stdio = stdio or _standardIO
        self._stdioEnd = _StdioEnd()
        self._channelEnd: _ChannelEnd | None = None
        self._meter: _RateMeter | None = None

    async def _run(self, reactor: IReactorCore) -> int:
        try:
            session = await connectSession(self.remote, reactor=_clock(reactor))
        except Exception as e:
            self._cannotConnect(e)
            return ExitStatus.CONNECT
        watch(session)
        try:
            channelEnd = await session.openChannel(
                self.service,
                Factory.forProtocol(_ChannelEnd),
                metadata=self.metadata,
                priority=self.priority,
                weight=self.weight,
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
        reason = channelEnd.reason
        status, why = _channelOutcome(reason)
        self.reporter.stopProgress(meter.summary())
        if reason is not None and isinstance(reason.value, SessionLost):
            ending = await self._explain(session, _clock(reactor), reason.value)
            if ending.connecting:
                self._cannotConnect(ending.text)
                return ExitStatus.CONNECT
            why = f"memux session lost: {ending.text}"
        if status != ExitStatus.OK:
            self.reporter.error(f"{self._serviceText()}: {why}")
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


def _standardIO(protocol: SpliceProtocol, reactor: IReactorCore) -> object:
    from twisted.internet.stdio import StandardIO

    return StandardIO(protocol, reactor=cast(Any, reactor))


def _channelOutcome(reason: Failure | None) -> tuple[ExitStatus, str]:
    """
    The exit status and message for a channel that ended with ``reason``.
    """
    if reason is None or reason.check(ConnectionDone):
        return ExitStatus.OK, "closed"
    value = reason.value
    if isinstance(value, ChannelRefused):
        return ExitStatus.REFUSED, str(value)
    if isinstance(value, ChannelReset):
        return ExitStatus.RESET, str(value)
    return ExitStatus.CONNECT, _reasonText(reason)


def _addArguments(parser: argparse.ArgumentParser) -> None:
    addChannelArguments(parser, "the service name to open a channel for")


def _make(
    args: argparse.Namespace, reactor: IReactorCore, reporter: Reporter
) -> ConnectCommand:
    remote, remoteText, tls = remoteEndpoint(args, reactor)
    service, metadata = channelArguments(args)
    command = ConnectCommand(remote, remoteText, service, metadata, reporter, tls=tls)
    command.priority, command.weight = args.priority, args.weight
    return command


COMMAND = Subcommand(
    name="connect",
    help="connect stdin and stdout to a service (like nc)",
    quietHelp="no progress line",
    description=(
        "Open a channel for SERVICE on a session to REMOTE; copy standard input\n"
        "to it and what it sends to standard output.  The end of standard\n"
        "input half-closes the channel (the server sees end of input and can\n"
        "still answer); memux connect exits when the channel ends."
    ),
    examples=(
        "examples:\n"
        "  echo hello | memux connect server.example:7400 echo\n"
        "  memux connect tcp:server.example:7400 chargen | head -c 1000\n"
        "  memux connect unix:/run/memux.sock db < query.sql > result\n\n"
        "When standard error is a terminal and standard input and output are\n"
        "not, a progress line shows the bytes each way and the rate.\n\n"
    ),
    addArguments=_addArguments,
    make=_make,
    interactive=True,
)
