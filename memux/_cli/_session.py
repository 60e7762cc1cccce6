# -*- test-case-name: memux.test.test_cli -*-
"""
Client sessions for the commands: one cached session remade on demand,
and closing one.
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet import defer
from twisted.internet.interfaces import (
    IReactorCore,
    IReactorTime,
    IStreamClientEndpoint,
)
from twisted.python.failure import Failure

from memux._cli._common import _clock
from memux._cli._diagnose import describeEnding, watch
from memux.protocol import MemuxProtocol, connectSession


class SessionCache:
    """
    One session to a remote, connected on demand and remade after it ends
    (or after the peer announces it is going away): the next `get` after a
    loss reconnects.

    :ivar onConnectionFailed: called with the reason when a connection
        attempt fails.
    :ivar onSessionEnded: called with the session and why it ended when a
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
        if session is not None and session.isUsable():
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

    def close(self) -> defer.Deferred[None]:
        """
        Close every session, after what it has to send; fire once they
        are all closed.
        """
        self._current = None
        closed = []
        for session in list(self._live):
            # The session's own loseConnection: it writes out what it still
            # holds (resets of channels just cut, say) before closing.
            session.loseConnection()
            closed.append(session.whenClosed())
        done = defer.gatherResults(closed)
        return done.addCallback(lambda _: None)

    def _connected(self, session: MemuxProtocol) -> None:
        watch(session)
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
            self.onSessionEnded(session, _endReason(session))


def _endReason(session: MemuxProtocol) -> str:
    """
    Why ``session`` ended, for messages: never a "clean" close (a GOAWAY
    says why the server went away).
    """
    return describeEnding(session, "").text


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
