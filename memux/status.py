# -*- test-case-name: memux.test.test_status -*-
"""
A status web site for operators, with twisted.web: ``/metrics`` (the
Prometheus text of `memux.metrics.MemuxCollector`) and ``/sessions`` (the
JSON of `MultiplexingFactory.snapshot`).  ``twistd memux --status
ENDPOINT`` serves it; ``memux stat ENDPOINT`` reads it.

It holds no secrets (no keys, no payload), but names every peer address
and service: serve it on a loopback address or a UNIX socket only, never
on a public interface.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Iterator
from typing import Any

from twisted.internet.task import Cooperator, TaskStopped, cooperate
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request, Site

from memux.protocol import MultiplexingFactory

__all__ = ["SessionsResource", "MetricsPage", "statusSite"]

#: How ``/metrics`` answers when prometheus_client is not installed.
_log = Logger()

NO_METRICS = b"memux metrics need prometheus_client: pip install 'memux[metrics]'\n"


class SessionsResource(Resource):
    """
    ``/sessions``: the snapshot of every factory's sessions, as JSON: a
    list with one `memux.introspect.FactorySnapshot` per factory
    (``?channels=0``: without their channels, cheaper on a busy server).

    It is written a session at a time, in turns of ``cooperator`` (the
    global one by default), so that a server with many channels keeps
    serving them meanwhile (a snapshot and its JSON cost about 9 us per
    channel): each session's snapshot is of one moment, the whole of a
    few moments in a row.
    """

    isLeaf = True

    def __init__(
        self,
        factories: Iterable[MultiplexingFactory],
        cooperator: Cooperator | None = None,
    ) -> None:
        # Not super(): mypy's untyped_calls_exclude does not see through it.
        Resource.__init__(self)
        self.factories = list(factories)
        self._cooperator = cooperator

    def render_GET(self, request: Request) -> int:
        channels = request.args.get(b"channels", [b"1"])[-1] not in (b"0", b"no")
        request.setHeader(b"content-type", b"application/json")
        request.setHeader(b"cache-control", b"no-store")
        work = self._write(request, channels)
        if self._cooperator is None:
            task = cooperate(work)
        else:
            task = self._cooperator.cooperate(work)
        gone: list[bool] = []

        def finished(result: object) -> None:
            if not gone:
                request.finish()

        def clientGone(reason: Failure) -> None:
            gone.append(True)
            task.stop()

        def failed(reason: Failure) -> None:
            if reason.check(TaskStopped) is None:
                _log.failure("Error writing /sessions", reason)
                if not gone:
                    request.loseConnection()

        request.notifyFinish().addErrback(clientGone)
        task.whenDone().addCallbacks(finished, failed)
        return NOT_DONE_YET

    def _write(self, request: Request, channels: bool) -> Iterator[None]:
        dumps = json.JSONEncoder(separators=(",", ":")).encode
        request.write(b"[")
        for i, factory in enumerate(self.factories):
            head = {
                "time": time.time(),
                "draining": factory.draining,
                "peakSessions": factory.peakSessions,
                "totals": factory.totals().toJSON(),
            }
            text = dumps(head)[:-1] + ',"sessions":['
            request.write(("," if i else "").encode() + text.encode())
            first = True
            for session in factory.connectedSessions():
                if not session.connected:
                    continue  # (it ended since this began)
                text = dumps(session.snapshot(channels).toJSON())
                request.write(("" if first else ",").encode() + text.encode())
                first = False
                yield None
            request.write(b"]}")
        request.write(b"]\n")


class MetricsPage(Resource):
    """
    ``/metrics``: the Prometheus exposition of ``registry`` (OpenMetrics if
    the scraper asks for it), made in the reactor's thread.

    (prometheus_client's own ``MetricsResource`` runs the collectors in the
    reactor's thread pool, while the reactor changes the sessions they
    read; this page needs no thread.)
    """

    isLeaf = True

    def __init__(self, registry: Any) -> None:
        Resource.__init__(self)
        self.registry = registry

    def render_GET(self, request: Request) -> bytes:
        if self.registry is None:
            request.setResponseCode(501)
            request.setHeader(b"content-type", b"text/plain; charset=utf-8")
            return NO_METRICS
        from prometheus_client.exposition import choose_encoder

        accept = request.getHeader(b"accept") or b""
        encode, contentType = choose_encoder(accept.decode("latin-1"))
        request.setHeader(b"content-type", contentType.encode("ascii"))
        return encode(self.registry)


def statusSite(factories: Iterable[MultiplexingFactory]) -> Site:
    """
    The status site of ``factories``' sessions: ``/metrics`` and
    ``/sessions`` (and a plain index at ``/``).  ``/metrics`` answers 501
    when prometheus_client is not installed.
    """
    factories = list(factories)
    registry: Any = None
    try:
        from prometheus_client import CollectorRegistry

        from memux.metrics import MemuxCollector
    except ImportError:
        pass
    else:
        # A registry of our own: the process's global one may hold
        # collectors of the application, which it serves itself.
        registry = CollectorRegistry()
        registry.register(MemuxCollector(factories))
    root = Resource()
    root.putChild(b"", _Index())
    root.putChild(b"metrics", MetricsPage(registry))
    root.putChild(b"sessions", SessionsResource(factories))
    site = Site(root)
    site.displayTracebacks = False
    return site


class _Index(Resource):
    isLeaf = True

    def __init__(self) -> None:
        Resource.__init__(self)

    def render_GET(self, request: Request) -> bytes:
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        return (
            b"memux status\n"
            b"/metrics   Prometheus metrics\n"
            b"/sessions  sessions and channels, as JSON (?channels=0: without)\n"
        )
