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
from collections.abc import Iterable
from typing import Any

from twisted.web.resource import Resource
from twisted.web.server import Request, Site

from memux.protocol import MultiplexingFactory

__all__ = ["SessionsResource", "MetricsPage", "statusSite"]

#: How ``/metrics`` answers when prometheus_client is not installed.
NO_METRICS = b"memux metrics need prometheus_client: pip install 'memux[metrics]'\n"


class SessionsResource(Resource):
    """
    ``/sessions``: the snapshot of every factory's sessions, as JSON: a
    list with one `memux.introspect.FactorySnapshot` per factory
    (``?channels=0``: without their channels, cheaper on a busy server).
    """

    isLeaf = True

    def __init__(self, factories: Iterable[MultiplexingFactory]) -> None:
        # Not super(): mypy's untyped_calls_exclude does not see through it.
        Resource.__init__(self)
        self.factories = list(factories)

    def render_GET(self, request: Request) -> bytes:
        channels = request.args.get(b"channels", [b"1"])[-1] not in (b"0", b"no")
        body = [f.snapshot(channels).toJSON() for f in self.factories]
        request.setHeader(b"content-type", b"application/json")
        request.setHeader(b"cache-control", b"no-store")
        return json.dumps(body, separators=(",", ":")).encode("utf-8") + b"\n"


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
