# -*- test-case-name: memux.test.test_bench -*-
"""
What the benchmark workers (and the attack bench's and the soak test's
clients) are made of: a factory of given protocols (`OneFactory`), a writer
that respects backpressure (`Sender`), a reader of one JSON line and the
writer of one, a run's memux settings, the tuning of the baselines' TCP
connections (`tune`, `TunedPort`), and connecting sessions, channels and
plain TCP connections over loopback, over TLS when the run's ``tls``
parameter holds a certificate (``python -m memux.bench --tls``).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any, cast

from twisted.internet import defer, tcp
from twisted.internet.endpoints import (
    TCP4ClientEndpoint,
    connectProtocol,
    wrapClientTLS,
)
from twisted.internet.interfaces import (
    IAddress,
    IConsumer,
    IOpenSSLClientConnectionCreator,
    IOpenSSLServerConnectionCreator,
    IProtocolFactory,
    IPushProducer,
    IStreamClientEndpoint,
)
from twisted.internet.protocol import ClientFactory, Factory, Protocol, connectionDone
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python.failure import Failure
from zope.interface import implementer

from memux.bench.certificate import HOSTNAME
from memux.bench.processes import LOOPBACK, Reactor
from memux.protocol import MemuxProtocol, connectSession
from memux.settings import SessionSettings
from memux.tls import clientTLSOptions, serverTLSOptions, tlsServerFactory
from memux.tuning import tuneLikeSession

__all__ = [
    "LineReader",
    "OneFactory",
    "Params",
    "Result",
    "Sender",
    "TunedPort",
    "channel",
    "clientEndpoint",
    "clientFactory",
    "connectTcp",
    "replyLine",
    "serverFactory",
    "session",
    "tlsVersions",
    "tune",
]

Params = dict[str, Any]
Result = dict[str, Any]


class OneFactory(Factory):
    """
    A factory that builds its protocols by calling ``make``.
    """

    def __init__(self, make: Callable[[], Protocol]) -> None:
        self.make = make

    def buildProtocol(self, addr: IAddress | None) -> Protocol:
        """
        Build one protocol.
        """
        protocol = self.make()
        protocol.factory = self
        return protocol


@implementer(IPushProducer)
class Sender:
    """
    Write ``count`` chunks through ``write`` (for ever, with ``count``
    None) while ``consumer`` lets us: a streaming producer that stops
    writing as soon as it is paused.  The chunks are ``chunk`` over and
    over, or each of a list of chunks in turn.
    """

    def __init__(
        self,
        consumer: Any,
        write: Callable[[bytes], object],
        chunk: bytes | list[bytes],
        count: int | None,
    ) -> None:
        self.consumer = cast(IConsumer, consumer)
        self.write = write
        self.chunks = [chunk] if isinstance(chunk, bytes) else chunk
        self.next = 0
        self.remaining = count
        self.sent = 0
        self.paused = False
        self.stopped = False
        self._writing = False

    def start(self) -> None:
        """
        Register with the consumer and start writing.
        """
        self.consumer.registerProducer(self, True)
        self.resumeProducing()

    def pauseProducing(self) -> None:
        """
        Stop writing until resumed.
        """
        self.paused = True

    def resumeProducing(self) -> None:
        """
        Write until paused or done.
        """
        self.paused = False
        if self._writing or self.stopped:
            return
        self._writing = True
        chunks, write, size = self.chunks, self.write, len(self.chunks[0])
        sources = len(chunks)
        try:
            while self.remaining != 0 and not self.paused and not self.stopped:
                if self.remaining is not None:
                    self.remaining -= 1
                write(chunks[self.next])
                self.next = (self.next + 1) % sources
                self.sent += size
        finally:
            self._writing = False
        if self.remaining == 0 and not self.stopped:
            self.stopped = True
            self.consumer.unregisterProducer()

    def stopProducing(self) -> None:
        """
        Write no more.
        """
        self.stopped = True


class LineReader(Protocol):
    """
    Collect bytes until a newline; fire ``line`` with the JSON object on
    that line and the time it arrived.
    """

    def __init__(self) -> None:
        self.buffer = b""
        self.line: defer.Deferred[tuple[float, Result]] = defer.Deferred()

    def dataReceived(self, data: bytes) -> None:
        """
        Look for the end of the line.
        """
        if self.line.called:
            return
        self.buffer += data
        if b"\n" in self.buffer:
            now = time.perf_counter()
            text, _, self.buffer = self.buffer.partition(b"\n")
            self.line.callback((now, json.loads(text)))

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        """
        A connection that ends before its line is an error.
        """
        if not self.line.called:
            self.line.errback(reason)


def replyLine(transport: Any, report: Result) -> None:
    """
    Write ``report`` as one JSON line.
    """
    transport.write(json.dumps(report).encode() + b"\n")


# ---------------------------------------------------------------- connections


def clientSettings(params: Params) -> SessionSettings:
    """
    The client's memux settings for this run.
    """
    return SessionSettings(**params.get("clientSettings", {}))


def serverSettings(params: Params) -> SessionSettings:
    """
    The server's memux settings for this run.
    """
    return SessionSettings(**params.get("serverSettings", {}))


def tune(transport: object, params: Params, tuning: str | None = None) -> None:
    """
    Tune a baseline's TCP connection (before it has sent anything: Twisted
    writes on the next reactor turn) as the run's ``tuning`` parameter
    says, or as ``tuning`` says if given: ``"session"``, the settings a
    memux session gives its connection; ``"bulk"``, those it switches to
    under bulk traffic (see `memux.tuning.tuneLikeSession`); ``None``,
    Twisted's defaults.  The same helper memux uses, so a baseline cannot
    fall behind memux's own tuning.
    """
    if tuning is None:
        tuning = params.get("tuning")
    if tuning is not None:
        tuneLikeSession(transport, bulk=tuning == "bulk")


class TunedServer(tcp.Server):
    """
    An accepted TCP connection, tuned by its port's ``tuning`` (see `tune`)
    before its protocol sees it.
    """

    tuning: str | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        tune(self, {}, self.tuning)


class TunedPort(tcp.Port):
    """
    A listening port whose connections are tuned as ``tuning`` says (see
    `tune`).
    """

    def __init__(self, tuning: str | None, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.transport = cast(
            "type[tcp.Server]",
            type("TunedServer", (TunedServer,), {"tuning": tuning}),
        )


# The TLS options of this process, made once (a context each), and the TLS
# connections made by `session` and `connectTcp` (see `tlsVersions`).
_serverOptions: dict[str, IOpenSSLServerConnectionCreator] = {}
_clientOptions: dict[str, IOpenSSLClientConnectionCreator] = {}
_tlsConnections: list[Any] = []


def serverFactory(params: Params, factory: IProtocolFactory) -> IProtocolFactory:
    """
    ``factory``, behind TLS with the run's certificate if it has one.
    """
    pem = params.get("tls")
    if not pem:
        return factory
    if pem not in _serverOptions:
        _serverOptions[pem] = serverTLSOptions(pem.encode("ascii"))
    return tlsServerFactory(factory, _serverOptions[pem])


def _clientCreator(params: Params) -> IOpenSSLClientConnectionCreator | None:
    pem = params.get("tls")
    if not pem:
        return None
    if pem not in _clientOptions:
        # The certificate is its own CA: the client checks it as it would
        # any server's (name and chain).
        _clientOptions[pem] = clientTLSOptions(HOSTNAME, pem.encode("ascii"))
    return _clientOptions[pem]


def clientEndpoint(
    reactor: Reactor, params: Params, port: int
) -> IStreamClientEndpoint:
    """
    An endpoint for the server at ``port`` of `LOOPBACK`: TCP, or TLS over
    TCP if the run has a certificate.
    """
    endpoint: IStreamClientEndpoint = TCP4ClientEndpoint(reactor, LOOPBACK, port)
    options = _clientCreator(params)
    return endpoint if options is None else wrapClientTLS(options, endpoint)


def clientFactory(params: Params, factory: ClientFactory) -> ClientFactory:
    """
    ``factory`` (for ``connectTCP``), behind TLS if the run has a
    certificate.
    """
    options = _clientCreator(params)
    if options is None:
        return factory
    return cast(ClientFactory, TLSMemoryBIOFactory(options, True, factory))


def tlsVersions() -> list[str]:
    """
    The TLS versions of the connections `session` and `connectTcp` made
    over TLS in this process (none over plain TCP).
    """
    versions = set()
    for connection in _tlsConnections:
        name = connection.getHandle().get_protocol_version_name()
        versions.add(str(name))
    return sorted(versions)


def _remember(transport: Any) -> None:
    if getattr(transport, "negotiatedProtocol", None) is not None or hasattr(
        transport, "getPeerCertificate"
    ):
        _tlsConnections.append(transport)


async def session(reactor: Reactor, params: Params, port: int) -> MemuxProtocol:
    """
    Connect a memux session to the server (over TLS if the run has a
    certificate).
    """
    endpoint = clientEndpoint(reactor, params, port)
    s = await connectSession(endpoint, settings=clientSettings(params))
    _remember(s.transport)
    return s


async def connectTcp(
    reactor: Reactor,
    params: Params,
    port: int,
    protocol: Protocol,
    tuning: str | None = None,
) -> None:
    """
    Connect ``protocol`` to the server over plain TCP (or Twisted's TLS
    over it, if the run has a certificate), tuned as the run's ``tuning``
    parameter (or ``tuning``) says: see `tune`.
    """
    await connectProtocol(clientEndpoint(reactor, params, port), protocol)
    _remember(protocol.transport)
    tune(protocol.transport, params, tuning)


async def channel(session: MemuxProtocol, service: bytes, protocol: Protocol) -> None:
    """
    Open a channel for ``service`` on ``session`` and connect ``protocol``.
    """
    await session.openChannel(service, OneFactory(lambda: protocol))
