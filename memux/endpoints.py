# -*- test-case-name: memux.test.test_endpoints -*-
"""
``memux:`` endpoints: a channel of a memux session as a Twisted client or
server endpoint, so any code that takes an endpoint (an ``Agent``,
``twistd web --listen``, ``connectProtocol``) runs over memux unchanged.

Client::

    clientFromString(reactor, r"memux:tcp\\:example.com\\:7400:service=echo")

connects by opening a channel for ``echo`` on a session to the *inner*
endpoint ``tcp:example.com:7400`` (an inner ``tls:`` endpoint offers ALPN
``memux/1``).  Sessions come from a `SessionPool`:
every endpoint and every connect with the same inner description shares
one session, made on first use and made again after it is lost.  With
``multiplex=no`` each connect rides a session and connection of its own
instead (MEMUX--: no multiplexing), closed once its channel has ended.

Server::

    serverFromString(reactor, r"memux:tcp\\:7400:service=web").listen(site)

listens on the inner endpoint with a `MultiplexingFactory` that hands
every channel for ``web`` to ``site`` and refuses the others.

The inner description is one argument: escape its backslashes and colons
with a backslash (`twisted.internet.endpoints.quoteStringArgument`, or
`memuxDescription` for the whole string).  Its ``=`` signs may be left as
they are.  The string parsers are registered by
``twisted/plugins/memux_endpoints.py``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from twisted.internet import defer
from twisted.internet.endpoints import quoteStringArgument, serverFromString
from twisted.internet.interfaces import (
    IAddress,
    IListeningPort,
    IProtocol,
    IProtocolFactory,
    IReactorCore,
    IStreamClientEndpoint,
    IStreamServerEndpoint,
)
from twisted.python.failure import Failure
from zope.interface import implementer

from memux.codes import ErrorCode
from memux.error import ChannelRefused, describeService
from memux.introspect import SessionSnapshot
from memux.protocol import (
    ChannelRequest,
    MemuxProtocol,
    MultiplexingFactory,
    ServiceMap,
    ServiceResolver,
    connectSession,
)
from memux.settings import (
    DEFAULT_URGENCY,
    DEFAULT_WEIGHT,
    SessionSettings,
    checkPriority,
)
from memux.tls import clientEndpointFromString

__all__ = [
    "EndpointDescriptionError",
    "MemuxClientEndpoint",
    "MemuxListeningPort",
    "MemuxServerEndpoint",
    "SessionPool",
    "defaultPool",
    "memuxDescription",
    "parseStreamClient",
    "parseStreamServer",
]

#: The endpoint type prefix of memux endpoint descriptions.
PREFIX = "memux"


class EndpointDescriptionError(ValueError):
    """
    A ``memux:`` endpoint description is malformed: no inner endpoint, no
    ``service=``, or an argument memux does not know.
    """


# ---------------------------------------------------------------- sessions


@dataclass(eq=False)
class _Slot:
    """
    One pooled session: the endpoint it connects through, the session once
    made, the connection attempt under way and the connects waiting on it.
    """

    endpoint: IStreamClientEndpoint
    session: MemuxProtocol | None = None
    attempt: defer.Deferred[MemuxProtocol] | None = None
    waiters: list[defer.Deferred[MemuxProtocol]] = field(default_factory=list)

    def idle(self) -> bool:
        return self.session is None and self.attempt is None and not self.waiters


class SessionPool:
    """
    Shares memux sessions between client endpoints: one session per inner
    endpoint, made when first asked for and made again once it is lost.

    Sessions are keyed by the inner endpoint: the same description string
    (exactly) or the same endpoint object.  While a connection attempt is
    under way, every caller waits for that attempt; if it fails, they all
    get its error and the next call tries again.  A session is replaced once
    it closes or either side has sent GOAWAY (the old one drains on its own).

    :param reactor: the reactor sessions run on and description strings
        are parsed with (so it provides
        `~twisted.internet.interfaces.IReactorTime` and whatever the
        endpoints need, as the global reactor does); the global reactor if
        ``None``.
    :param services: serves channels the peers open back to us (none by
        default: they are refused).
    :param settings: settings for the sessions this pool makes.
    :param multiplex: if false, `openChannel` shares no session: each
        channel gets a session over a connection of its own, which closes
        once the channel has ended (see `openChannel`).
    """

    def __init__(
        self,
        reactor: Any = None,
        *,
        services: ServiceMap | ServiceResolver | None = None,
        settings: SessionSettings | None = None,
        multiplex: bool = True,
    ) -> None:
        if not isinstance(multiplex, bool):
            raise TypeError(f"multiplex must be a bool, not {type(multiplex).__name__}")
        self._reactor = reactor
        self.services = services
        self.settings = settings
        self.multiplex = multiplex
        self._slots: dict[tuple[str, object], _Slot] = {}
        # Every session made and not closed yet, including those replaced
        # after a GOAWAY that are still draining.
        self._open: set[MemuxProtocol] = set()
        # Sessions of one channel each (not multiplexed) and their
        # connection attempts under way (a subset of _open once made).
        self._single: set[MemuxProtocol] = set()
        self._attempts: set[defer.Deferred[MemuxProtocol]] = set()

    def __repr__(self) -> str:
        mode = "" if self.multiplex else " multiplex=False"
        return (
            f"<SessionPool sessions={len(self.sessions())}{mode}"
            f" reactor={self.reactor!r}>"
        )

    @property
    def reactor(self) -> Any:
        """
        The reactor this pool's sessions run on.
        """
        if self._reactor is None:
            self._reactor = _globalReactor()
        return self._reactor

    def session(
        self, endpoint: IStreamClientEndpoint | str
    ) -> defer.Deferred[MemuxProtocol]:
        """
        A session to ``endpoint``: the pooled one if it is usable, else the
        one being connected, else a new one.

        :param endpoint: an endpoint object, or a client endpoint
            description string (parsed with this pool's reactor by
            `memux.tls.clientEndpointFromString`, so ``tls:`` offers ALPN
            ``memux/1``).
        :returns: fires with a connected session, or fails with the error of
            the connection attempt.  Cancelling it stops waiting, and stops
            the attempt once nobody else waits for it.
        """
        if isinstance(endpoint, str):
            key: tuple[str, object] = ("description", endpoint)
        else:
            key = ("endpoint", id(endpoint))
        slot = self._slots.get(key)
        if slot is None:
            if isinstance(endpoint, str):
                try:
                    # tls: offers ALPN memux/1 (Twisted's parser cannot).
                    inner = clientEndpointFromString(self.reactor, endpoint)
                except Exception:
                    return defer.fail()
            else:
                inner = endpoint
            slot = self._slots[key] = _Slot(inner)
        if slot.session is not None:
            if slot.session.isUsable():
                return defer.succeed(slot.session)
            slot.session = None

        def cancel(waiter: defer.Deferred[MemuxProtocol]) -> None:
            if waiter in slot.waiters:
                slot.waiters.remove(waiter)
            if not slot.waiters and slot.attempt is not None:
                slot.attempt.cancel()

        waiter: defer.Deferred[MemuxProtocol] = defer.Deferred(cancel)
        slot.waiters.append(waiter)
        if slot.attempt is None:
            self._connect(key, slot)
        return waiter

    def openChannel(
        self,
        endpoint: IStreamClientEndpoint | str,
        service: bytes,
        factory: IProtocolFactory,
        *,
        metadata: bytes | None = None,
        destination: tuple[str, int] | None = None,
        priority: int | None = None,
        weight: int | None = None,
        multiplex: bool = True,
    ) -> defer.Deferred[IProtocol]:
        """
        Open a channel for ``service`` to ``endpoint`` and connect a
        protocol from ``factory`` to it, as `MemuxProtocol.openChannel`
        does (same arguments, same errors).

        Multiplexed (the default), the channel rides the pooled session
        (see `session`).  If ``multiplex`` or this pool's ``multiplex`` is
        false, it rides a session of its own over a new connection: the
        session is connected, the channel opened on it, and the session
        sends GOAWAY at once, so that it accepts no channel from the peer
        and closes its connection as soon as the channel has ended
        (cleanly, reset or refused).  The protocol sees the same callbacks
        and errors either way.

        :returns: fires with the protocol, or fails with the connection's
            error if the session cannot be made.  Cancelling it stops the
            connection attempt.
        """
        if self.multiplex and multiplex:
            d = self.session(endpoint)
        else:
            d = self._singleSession(endpoint)

        def opened(session: MemuxProtocol) -> defer.Deferred[IProtocol]:
            channel = session.openChannel(
                service,
                factory,
                metadata=metadata,
                destination=destination,
                priority=priority,
                weight=weight,
            )
            if session in self._single:
                # The session's one channel is open (or failed to open):
                # GOAWAY now, so the connection closes once no channel is
                # left.  It goes out with the channel's opening.
                session.goAway(ErrorCode.NO_ERROR, "one channel per session")
            return channel

        return d.addCallback(opened)

    def _singleSession(
        self, endpoint: IStreamClientEndpoint | str
    ) -> defer.Deferred[MemuxProtocol]:
        """
        Connect a session of its own to ``endpoint`` (for one channel).
        """
        if isinstance(endpoint, str):
            try:
                endpoint = clientEndpointFromString(self.reactor, endpoint)
            except Exception:
                return defer.fail()
        try:
            attempt = connectSession(
                endpoint, self.services, settings=self.settings, reactor=self.reactor
            )
        except Exception:
            return defer.fail()
        self._attempts.add(attempt)
        # Cancelled, the caller gets CancelledError, as a caller waiting
        # for a shared session does (not the endpoint's own error).
        cancelled = False

        def cancel(_: object) -> None:
            nonlocal cancelled
            cancelled = True
            attempt.cancel()

        waiter: defer.Deferred[MemuxProtocol] = defer.Deferred(cancel)

        def connected(session: MemuxProtocol) -> None:
            self._attempts.discard(attempt)
            self._single.add(session)
            self._open.add(session)

            def closed(_: object) -> None:
                self._single.discard(session)
                self._open.discard(session)

            session.whenClosed().addCallback(closed)
            waiter.callback(session)

        def failed(reason: Failure) -> None:
            self._attempts.discard(attempt)
            if not cancelled:
                waiter.errback(reason)

        attempt.addCallbacks(connected, failed)
        return waiter

    def sessions(self) -> list[MemuxProtocol]:
        """
        The usable sessions this pool holds now (those it shares: a
        channel opened without multiplexing has a session of its own,
        never usable for another, listed by `singleSessions`).
        """
        return [
            slot.session
            for slot in self._slots.values()
            if slot.session is not None and slot.session.isUsable()
        ]

    def singleSessions(self) -> list[MemuxProtocol]:
        """
        The sessions of one channel each (made by `openChannel` without
        multiplexing) whose connections are open now.
        """
        return list(self._single)

    def snapshot(self, channels: bool = True) -> list[SessionSnapshot]:
        """
        Each session of this pool now, as plain data (see
        `MemuxProtocol.snapshot`): the shared ones, then those of one
        channel each.
        """
        shared = [
            slot.session
            for slot in self._slots.values()
            if slot.session is not None and slot.session.connected
        ]
        single = [s for s in self._single if s.connected]
        return [session.snapshot(channels) for session in shared + single]

    def closeAll(self, *, graceful: bool = False) -> defer.Deferred[None]:
        """
        Close every session of this pool and stop every connection attempt
        (those waiting for one get its cancellation error).  The pool stays
        usable: later calls make new sessions.

        :param graceful: if false, close at once: channels still open end
            with `~memux.error.SessionLost`.  If true, send GOAWAY and let the open
            channels finish first.
        :returns: fires once every session's connection has closed.
        """
        for key, slot in list(self._slots.items()):
            if slot.attempt is not None:
                slot.attempt.cancel()
            slot.session = None
            self._forgetIfIdle(key, slot)
        for attempt in list(self._attempts):
            attempt.cancel()
        closing: list[defer.Deferred[None]] = []
        for session in list(self._open):
            closing.append(session.whenClosed())
            if graceful:
                session.goAway()
            else:
                _closeNow(session)
        done = defer.gatherResults(closing, consumeErrors=True)
        return done.addCallback(lambda _: None)

    def _connect(self, key: tuple[str, object], slot: _Slot) -> None:
        try:
            attempt = connectSession(
                slot.endpoint,
                self.services,
                settings=self.settings,
                reactor=self.reactor,
            )
        except Exception:
            # An endpoint that raises instead of failing its Deferred.
            attempt = defer.fail()
        slot.attempt = attempt

        def connected(session: MemuxProtocol) -> None:
            slot.attempt = None
            slot.session = session
            self._open.add(session)
            session.whenClosed().addCallback(lambda _: self._lost(key, slot, session))
            waiters, slot.waiters = slot.waiters, []
            for waiter in waiters:
                waiter.callback(session)

        def failed(reason: Failure) -> None:
            slot.attempt = None
            waiters, slot.waiters = slot.waiters, []
            self._forgetIfIdle(key, slot)
            for waiter in waiters:
                waiter.errback(reason)

        attempt.addCallbacks(connected, failed)

    def _lost(
        self, key: tuple[str, object], slot: _Slot, session: MemuxProtocol
    ) -> None:
        self._open.discard(session)
        if slot.session is session:
            slot.session = None
        self._forgetIfIdle(key, slot)

    def _forgetIfIdle(self, key: tuple[str, object], slot: _Slot) -> None:
        if slot.idle() and self._slots.get(key) is slot:
            del self._slots[key]


def _closeNow(session: MemuxProtocol) -> None:
    """
    Send GOAWAY and close ``session``'s connection now (the session writes
    the GOAWAY even if its connection is paused, then closes).
    """
    session.goAway(ErrorCode.CANCEL, "closed by its session pool")


_defaultPools: dict[object, SessionPool] = {}


def defaultPool(reactor: Any = None) -> SessionPool:
    """
    The shared pool of ``reactor`` (the global reactor if ``None``): the one
    every ``memux:`` endpoint parsed from a string with that reactor uses.
    Close its sessions with ``defaultPool(reactor).closeAll()``.
    """
    if reactor is None:
        reactor = _globalReactor()
    pool = _defaultPools.get(reactor)
    if pool is None:
        # Forget the pools of other reactors that hold nothing, so test
        # reactors are not kept alive by this registry.
        for other, idle in list(_defaultPools.items()):
            if not idle._slots and not idle._open and not idle._attempts:
                del _defaultPools[other]
        pool = _defaultPools[reactor] = SessionPool(reactor)
    return pool


# ---------------------------------------------------------------- endpoints


@implementer(IStreamClientEndpoint)
class MemuxClientEndpoint:
    """
    A client endpoint whose connections are channels for ``service`` on a
    pooled session to the inner ``endpoint``.

    :param poolOrReactor: the `SessionPool` to take sessions from, or a
        reactor, to use that reactor's `defaultPool`.
    :param endpoint: the inner endpoint, or its description string.
    :param service: the service to open channels for.
    :param metadata: sent with each channel opening, for the peer's
        service resolver.
    :param destination: ``(host, port)`` sent with each channel opening,
        for forwarding services.
    :param priority: each channel's urgency (0, the most urgent, to 7;
        None: the default), and
    :param weight: its weight within its urgency (1 to 256; None: the
        default), as `MemuxProtocol.openChannel` takes them.
    :param multiplex: if false (or if the pool's ``multiplex`` is), each
        connect opens a session over a new connection for its channel
        alone, closed once the channel has ended, instead of sharing the
        pooled session (see `SessionPool.openChannel`).
    """

    def __init__(
        self,
        poolOrReactor: Any,
        endpoint: IStreamClientEndpoint | str,
        service: bytes,
        *,
        metadata: bytes | None = None,
        destination: tuple[str, int] | None = None,
        priority: int | None = None,
        weight: int | None = None,
        multiplex: bool = True,
    ) -> None:
        if not isinstance(service, bytes):
            raise TypeError(f"service must be bytes, not {type(service).__name__}")
        if not isinstance(multiplex, bool):
            raise TypeError(f"multiplex must be a bool, not {type(multiplex).__name__}")
        if metadata is not None and not isinstance(metadata, bytes):
            raise TypeError(f"metadata must be bytes, not {type(metadata).__name__}")
        if priority is not None or weight is not None:
            checkPriority(
                DEFAULT_URGENCY if priority is None else priority,
                DEFAULT_WEIGHT if weight is None else weight,
            )
        if isinstance(poolOrReactor, SessionPool):
            self.pool = poolOrReactor
        else:
            self.pool = defaultPool(poolOrReactor)
        # Parsed now so a bad description fails here, not at connect; the
        # pool shares sessions by the description, but a connection of
        # one's own needs the parsed endpoint each time.
        self._inner = (
            clientEndpointFromString(self.pool.reactor, endpoint)
            if isinstance(endpoint, str)
            else endpoint
        )
        self.endpoint = endpoint
        self.service = service
        self.metadata = metadata
        self.destination = destination
        self.priority = priority
        self.weight = weight
        self.multiplex = multiplex

    def __repr__(self) -> str:
        mode = "" if self.multiplex else " multiplex=False"
        return f"<MemuxClientEndpoint {self.service!r} over {self.endpoint!r}{mode}>"

    def connect(self, protocolFactory: IProtocolFactory) -> defer.Deferred[IProtocol]:
        """
        Open a channel on the pooled session (connecting it first if need
        be), or without multiplexing on a session of its own, and connect a
        protocol from ``protocolFactory`` to it.  Fails with the
        connection's error if the session cannot be made.
        """
        multiplex = self.multiplex and self.pool.multiplex
        return self.pool.openChannel(
            self.endpoint if multiplex else self._inner,
            self.service,
            protocolFactory,
            metadata=self.metadata,
            destination=self.destination,
            priority=self.priority,
            weight=self.weight,
            multiplex=multiplex,
        )


@implementer(IListeningPort)
class MemuxListeningPort:
    """
    What `MemuxServerEndpoint.listen` returns: the inner listening port,
    whose address and life it has, serving one service's channels.

    :ivar wrappedPort: the inner endpoint's listening port.
    :ivar factory: the application factory channels are handed to.
    :ivar multiplexingFactory: the factory of the sessions.
    """

    def __init__(
        self,
        wrappedPort: IListeningPort,
        factory: IProtocolFactory,
        multiplexingFactory: MultiplexingFactory,
    ) -> None:
        self.wrappedPort = wrappedPort
        self.factory = factory
        self.multiplexingFactory = multiplexingFactory
        self._factoryStarted = False

    def __repr__(self) -> str:
        return f"<MemuxListeningPort {self.wrappedPort!r}>"

    def __getattr__(self, name: str) -> Any:
        # Anything else a port of the inner kind has (a TCP port's
        # ``socket``, ``port``...) is the inner port's.
        if name == "wrappedPort":
            raise AttributeError(name)
        return getattr(self.wrappedPort, name)

    def startListening(self) -> None:
        """
        Start listening on the inner port (again).
        """
        self.wrappedPort.startListening()
        self._startFactory()

    def stopListening(self) -> defer.Deferred[None]:
        """
        Stop listening on the inner port, then stop the factory.  Sessions
        already accepted carry on, as TCP connections outlive their port.
        """
        d = defer.maybeDeferred(self.wrappedPort.stopListening)

        def stopped(result: object) -> object:
            self._stopFactory()
            return result

        return d.addBoth(stopped).addCallback(lambda _: None)

    def getHost(self) -> IAddress:
        """
        The inner port's address.
        """
        return self.wrappedPort.getHost()

    def _startFactory(self) -> None:
        # As a TCP port does: the factory learns it is in use (a Site
        # opens its log) and when it no longer is.
        if not self._factoryStarted:
            self._factoryStarted = True
            self.factory.doStart()

    def _stopFactory(self) -> None:
        if self._factoryStarted:
            self._factoryStarted = False
            self.factory.doStop()


@implementer(IStreamServerEndpoint)
class MemuxServerEndpoint:
    """
    A server endpoint that listens on the inner ``endpoint`` with memux
    sessions, and hands every channel opened for ``service`` to the factory
    given to `listen`; channels for other services are refused with a
    reason.

    :param reactor: the reactor the sessions run on (and to parse
        ``endpoint`` with, if it is a string); the global one if ``None``.
    :param endpoint: the inner server endpoint, or its description.
    :param service: the service to serve.
    :param settings: the sessions' settings.
    """

    def __init__(
        self,
        reactor: Any,
        endpoint: IStreamServerEndpoint | str,
        service: bytes,
        *,
        settings: SessionSettings | None = None,
    ) -> None:
        if not isinstance(service, bytes):
            raise TypeError(f"service must be bytes, not {type(service).__name__}")
        if isinstance(endpoint, str):
            endpoint = cast(
                IStreamServerEndpoint,
                serverFromString(reactor or _globalReactor(), endpoint),
            )
        self.reactor = reactor
        self.endpoint = endpoint
        self.service = service
        self.settings = settings

    def __repr__(self) -> str:
        return f"<MemuxServerEndpoint {self.service!r} over {self.endpoint!r}>"

    def listen(
        self, protocolFactory: IProtocolFactory
    ) -> defer.Deferred[IListeningPort]:
        """
        Listen on the inner endpoint; fire with a `MemuxListeningPort`.
        """
        service = self.service

        def choose(request: ChannelRequest) -> IProtocolFactory:
            if request.service != service:
                raise ChannelRefused(
                    f"no service {describeService(request.service)} here"
                    f" (only {describeService(service)})"
                )
            return protocolFactory

        mux = MultiplexingFactory(choose, settings=self.settings, reactor=self.reactor)

        def listening(port: IListeningPort) -> IListeningPort:
            wrapped = MemuxListeningPort(port, protocolFactory, mux)
            wrapped._startFactory()
            return wrapped

        return self.endpoint.listen(mux).addCallback(listening)


# ---------------------------------------------------------------- strings


def memuxDescription(
    inner: str,
    service: str,
    *,
    metadata: str | None = None,
    destination: str | None = None,
    priority: int | None = None,
    weight: int | None = None,
    multiplex: bool = True,
) -> str:
    """
    The ``memux:`` description of a channel for ``service`` over the inner
    endpoint description ``inner``, quoted as the parsers expect
    (``multiplex=False`` adds ``multiplex=no``).

    >>> memuxDescription("tcp:example.com:7400", "echo")
    'memux:tcp\\\\:example.com\\\\:7400:service=echo'
    """
    parts = [
        PREFIX,
        quoteStringArgument(inner),
        "service=" + quoteStringArgument(service),
    ]
    if metadata is not None:
        parts.append("metadata=" + quoteStringArgument(metadata))
    if destination is not None:
        parts.append("destination=" + quoteStringArgument(destination))
    if priority is not None:
        parts.append(f"priority={priority}")
    if weight is not None:
        parts.append(f"weight={weight}")
    if not multiplex:
        parts.append("multiplex=no")
    return ":".join(parts)


def _text(value: object) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _split(
    args: Sequence[object], kwargs: dict[str, object], known: Sequence[str]
) -> tuple[str, dict[str, str]]:
    """
    Find the inner description among the parsed arguments of a ``memux:``
    description and check the rest.

    The inner description is the one positional argument, or the
    ``endpoint=`` keyword, or else the keyword whose name holds a colon:
    the tokenizer splits an inner ``tcp\\:0\\:interface=127.0.0.1`` at its
    first ``=``, which is joined back here.

    :returns: the inner description, and the other keywords.
    """
    found = [_text(a) for a in args]
    options: dict[str, str] = {}
    for name, value in kwargs.items():
        if name == "endpoint":
            found.append(_text(value))
        elif ":" in name:
            found.append(f"{name}={_text(value)}")
        elif name in known:
            options[name] = _text(value)
        else:
            raise EndpointDescriptionError(
                f"memux: endpoint has no argument {name!r}"
                f" (it takes {', '.join(known)})"
            )
    example = r"memux:tcp\:example.com\:7400:service=echo"
    if not found:
        raise EndpointDescriptionError(
            f"memux: endpoint needs an inner endpoint description, e.g. {example}"
        )
    if len(found) > 1:
        raise EndpointDescriptionError(
            f"memux: endpoint takes one inner endpoint description, got"
            f" {found!r}: escape its colons with backslashes, e.g. {example}"
        )
    if "service" not in options:
        raise EndpointDescriptionError(
            f"memux: endpoint needs service=NAME, the service to open channels"
            f" for (service= alone is the default service), e.g. {example}"
        )
    return found[0], options


def _destination(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise EndpointDescriptionError(
            f"memux: destination must be HOST\\:PORT, not {text!r}"
        )
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, int(port)


def parseStreamClient(
    reactor: IReactorCore, *args: object, **kwargs: object
) -> MemuxClientEndpoint:
    """
    Build the client endpoint of a ``memux:`` description (the arguments
    after the prefix, as `~twisted.internet.endpoints.clientFromString`
    parsed them).  It takes its sessions from ``defaultPool(reactor)``.

    Arguments: the inner client endpoint description (escaped), then
    ``service=`` (required), ``metadata=``, ``destination=HOST\\:PORT``,
    ``priority=URGENCY`` (0 to 7), ``weight=WEIGHT`` (1 to 256) and
    ``multiplex=no`` (a session and connection per channel; ``yes``, the
    default, shares the pooled session) (optional).

    :raises EndpointDescriptionError: if the description is malformed.
    """
    inner, options = _split(
        args,
        kwargs,
        ("service", "metadata", "destination", "priority", "weight", "multiplex"),
    )
    metadata = options.get("metadata")
    destination = options.get("destination")
    priority = _integer(options, "priority")
    weight = _integer(options, "weight")
    if priority is not None or weight is not None:
        try:
            checkPriority(
                DEFAULT_URGENCY if priority is None else priority,
                DEFAULT_WEIGHT if weight is None else weight,
            )
        except ValueError as e:
            raise EndpointDescriptionError(f"memux: {e}") from e
    return MemuxClientEndpoint(
        reactor,
        inner,
        options["service"].encode("utf-8"),
        metadata=metadata.encode("utf-8") if metadata is not None else None,
        destination=_destination(destination) if destination is not None else None,
        priority=priority,
        weight=weight,
        multiplex=_yesNo(options, "multiplex", True),
    )


#: The words a yes-or-no argument of a description takes.
_YES_NO = {"yes": True, "true": True, "no": False, "false": False}


def _yesNo(options: dict[str, str], name: str, default: bool) -> bool:
    """
    The yes-or-no argument ``name`` of a description, or ``default``.
    """
    text = options.get(name)
    if text is None:
        return default
    try:
        return _YES_NO[text.lower()]
    except KeyError:
        raise EndpointDescriptionError(
            f"memux: {name} must be yes or no (or true or false), not {text!r}"
        ) from None


def _integer(options: dict[str, str], name: str) -> int | None:
    """
    The integer argument ``name`` of a description, if given.
    """
    text = options.get(name)
    if text is None:
        return None
    if not text.isdigit():
        raise EndpointDescriptionError(
            f"memux: {name} must be a whole number, not {text!r}"
        )
    return int(text)


def parseStreamServer(
    reactor: IReactorCore, *args: object, **kwargs: object
) -> MemuxServerEndpoint:
    """
    Build the server endpoint of a ``memux:`` description (the arguments
    after the prefix, as `serverFromString` parsed them).

    Arguments: the inner server endpoint description (escaped), then
    ``service=`` (required).

    :raises EndpointDescriptionError: if the description is malformed.
    """
    inner, options = _split(args, kwargs, ("service",))
    return MemuxServerEndpoint(reactor, inner, options["service"].encode("utf-8"))


def _globalReactor() -> Any:
    # Imported late: importing this module must not install a reactor.
    from twisted.internet import reactor

    return reactor
