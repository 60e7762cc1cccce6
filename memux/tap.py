# -*- test-case-name: memux.test.test_tap,memux.test.test_server -*-
"""
Support for ``twistd memux``: a memux server listening on one or more
endpoints, serving the built-in services, forwarding services, Python
factories and (only where allowed) channels that name their own
destination, optionally over TLS.

Importing this module installs no reactor; `Options` checks everything it
can while parsing, so mistakes are reported before anything starts.
"""

from __future__ import annotations

import errno
import sys
from collections.abc import Mapping
from typing import IO, cast

from twisted.application import strports
from twisted.application.internet import TimerService
from twisted.application.service import MultiService
from twisted.internet.defer import Deferred, fail, gatherResults
from twisted.internet.endpoints import clientFromString
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import (
    IListeningPort,
    IOpenSSLServerConnectionCreator,
    IProtocolFactory,
    IReactorCore,
    IReactorTime,
    IStreamServerEndpoint,
)
from twisted.logger import (
    FileLogObserver,
    ILogObserver,
    LogEvent,
    Logger,
    eventAsJSON,
)
from twisted.python.failure import Failure
from zope.interface import implementer

from memux import __version__
from memux._destinations import (
    DestinationPattern,
    ServerServices,
    _globalReactor,
    classifyHost,
)
from memux._tapoptions import (
    DEFAULT_DRAIN_TIMEOUT,
    DEFAULT_IDLE_TIMEOUT,
    DEFAULT_LISTEN,
    Options,
)
from memux.memory import trimHeap
from memux.protocol import MultiplexingFactory
from memux.services import builtinServices
from memux.transport import describeAddress
from memux.tunnel import forwardTo

__all__ = [
    "DEFAULT_DRAIN_TIMEOUT",
    "DEFAULT_IDLE_TIMEOUT",
    "DEFAULT_LISTEN",
    "DestinationPattern",
    "MemuxServer",
    "Options",
    "ServerServices",
    "StartupError",
    "classifyHost",
    "jsonLogger",
    "makeService",
]

_log = Logger()


class MemuxServer(MultiService):
    """
    The ``twistd memux`` service: one child per ``--listen`` endpoint, all
    serving the same sessions.  It logs what it serves when it starts.

    :ivar factory: the `MultiplexingFactory` of the sessions.
    :ivar resolver: its services callable.
    :ivar mounts: each service name, with what serves it, for the log.
    :ivar tls: the TLS options when serving TLS, else ``None``.
    :ivar drainTimeout: seconds sessions may take to finish their channels
        when the service stops, before they are aborted.
    """

    def __init__(
        self,
        factory: MultiplexingFactory,
        resolver: ServerServices,
        mounts: Mapping[bytes, str],
        tls: IOpenSSLServerConnectionCreator | None = None,
        tlsDescription: str = "",
        drainTimeout: float = DEFAULT_DRAIN_TIMEOUT,
    ) -> None:
        MultiService.__init__(self)
        self.factory = factory
        self.resolver = resolver
        self.mounts = dict(mounts)
        self.tls = tls
        self.drainTimeout = drainTimeout
        self._tlsDescription = tlsDescription
        self._announced = False
        # Gives memory back once load has dropped (see TRIM_INTERVAL);
        # started and stopped with this service, but not a child of it (its
        # children are the listening endpoints).
        self.trimmer = TimerService(TRIM_INTERVAL, self.trimIfLoadDropped)

    def trimIfLoadDropped(self) -> bool:
        """
        If the sessions connected have fallen to half their peak since the
        last look (or to none), give the memory the burst freed back to the
        system (`memux.memory.trimHeap`); return whether it did.
        """
        factory = self.factory
        now = len(factory.connectedSessions())
        peak, factory.peakSessions = factory.peakSessions, now
        if peak == 0 or now > peak // 2:
            factory.peakSessions = max(peak, now)
            return False
        return trimHeap()

    def privilegedStartService(self) -> None:
        """
        Log what is served, then listen.
        """
        self._announce()
        MultiService.privilegedStartService(self)

    def startService(self) -> None:
        """
        Log what is served (unless done already), then start listening.
        """
        self._announce()
        MultiService.startService(self)
        self.trimmer.startService()

    def stopService(self) -> Deferred[None]:
        """
        Stop listening and drain the sessions: each is sent GOAWAY, so its
        peer opens no more channels (and may retry elsewhere those it
        opened meanwhile); open channels may finish; sessions still open
        after ``drainTimeout`` are aborted.  Fires once listening has
        stopped and every session has closed.
        """
        listening = MultiService.stopService(self)
        if self.trimmer.running:
            self.trimmer.stopService()
        sessions = len(self.factory.connectedSessions())
        if sessions:
            _log.info(
                "memux stopping: GOAWAY to {count} session(s); any still open in"
                " {timeout:g} s will be aborted",
                count=sessions,
                timeout=self.drainTimeout,
            )
        drained = self.factory.drain(self.drainTimeout)
        return gatherResults([listening, drained]).addCallback(lambda _: None)

    def _announce(self) -> None:
        if self._announced:
            return
        self._announced = True
        _log.info(
            "memux {version} serving on {endpoints}",
            version=__version__,
            endpoints=", ".join(
                child.endpoint.description
                for child in self
                if isinstance(getattr(child, "endpoint", None), _AnnouncingEndpoint)
                and not isinstance(child.endpoint, _StatusEndpoint)
            )
            or "nothing",
        )
        if not self.mounts:
            _log.info("memux serves no named service")
        for name, what in self.mounts.items():
            _log.info(
                "memux service {name}: {what}",
                name=name.decode("utf-8", "replace") or "(default)",
                what=what,
            )
        if self.resolver.allowConnect:
            _log.info(
                "memux forwards channels to destinations matching {patterns}",
                patterns=", ".join(p.text for p in self.resolver.allowConnect),
            )
        else:
            _log.info(
                "memux refuses every channel that names a destination"
                " (no --allow-connect)"
            )
        _log.info("memux TLS: {tls}", tls=self._tlsDescription or "off")


class StartupError(SystemExit, Exception):
    """
    ``twistd memux`` cannot start: it cannot listen where it was told to.

    The reason was logged, in one line.  A `SystemExit`, so that ``twistd``
    exits with status 1 and no traceback; an `Exception` too, so that
    ``twistd`` still removes its PID file and passes the reason to the
    shell that started a daemon (``An error has occurred: ...``).
    """

    def __init__(self, message: str) -> None:
        Exception.__init__(self, message)
        self.code = 1


@implementer(IStreamServerEndpoint)
class _AnnouncingEndpoint:
    """
    A server endpoint that logs where it listens once it does, or, in one
    line, why it cannot.

    :ivar port: the listening port, once listening.
    """

    def __init__(self, endpoint: IStreamServerEndpoint, description: str, tls: bool):
        self.endpoint = endpoint
        self.description = description
        self.tls = tls
        self.port: IListeningPort | None = None

    def listen(self, protocolFactory: IProtocolFactory) -> Deferred[IListeningPort]:
        """
        Listen with the wrapped endpoint, and log the address.  A failure
        to listen at once fails with `StartupError` (the listening service
        raises it, and ``twistd`` exits); a later one is only logged.
        """
        starting = True

        def failed(reason: Failure) -> Failure | None:
            why, hint = _whyNotListening(reason.value)
            _log.critical(
                "memux cannot listen on {description}: {why}",
                description=self.description,
                why=why + hint,
            )
            if starting:
                # (Short: a daemon's parent shows the first 100 bytes.)
                return Failure(
                    StartupError(f"cannot listen on {self.description}: {why}")
                )
            return None

        try:
            d = self.endpoint.listen(protocolFactory)
        except Exception:
            d = fail()
        d.addCallbacks(self._listening, failed)
        starting = False
        return d

    def _listening(self, port: IListeningPort) -> IListeningPort:
        self.port = port
        _log.info(
            "memux listening on {address} ({description}{tls})",
            address=describeAddress(port.getHost()),
            description=self.description,
            tls=", TLS" if self.tls else "",
        )
        return port


def _whyNotListening(error: object) -> tuple[str, str]:
    """
    Why listening failed, in a few words, and a hint for the usual causes
    (or ``""``).
    """
    socketError = getattr(error, "socketError", None)
    if not (isinstance(error, CannotListenError) and isinstance(socketError, OSError)):
        if isinstance(error, OSError) and error.strerror:
            # (Such as a UNIX socket's lock file, in a missing directory.)
            path = error.filename2 or error.filename
            if isinstance(path, bytes):
                path = path.decode("utf-8", "replace")
            return f"{error.strerror}: {path}" if path else error.strerror, ""
        return str(error) or type(error).__name__, ""
    why = socketError.strerror or str(socketError)
    tcp = isinstance(error.port, int)
    if socketError.errno == errno.EADDRINUSE:
        if tcp:
            return why, " (another program listens on that port)"
        return why, " (another server uses that socket, or left it behind)"
    if socketError.errno == errno.EACCES and tcp and 0 < error.port < 1024:
        return why, " (ports below 1024 need root)"
    return why, ""


def jsonLogger(outFile: IO[str] | None = None) -> ILogObserver:
    """
    A log observer writing each event as JSON, for ``twistd -n
    --logger=memux.tap.jsonLogger memux``: records as
    `twisted.logger.jsonFileLogObserver` writes them (read them back with
    `twisted.logger.eventsFromJSONLogFile`), to ``outFile`` (standard
    output by default), without the objects Twisted adds to every event
    (``log_logger``, ``log_source``, and ``log_legacy`` when old-style
    observers are about), which JSON would only mark ``"unpersistable"``.
    """
    out = sys.stdout if outFile is None else outFile

    def record(event: LogEvent) -> str:
        kept = {
            key: value
            for key, value in event.items()
            if key not in ("log_logger", "log_source", "log_legacy")
        }
        if kept.get("format") == "%(log_legacy)s":
            del kept["format"]  # (it would name what was left out)
        return f"\x1e{eventAsJSON(kept)}\n"

    return FileLogObserver(out, record)


#: Seconds between looks at the load of a ``twistd memux`` server: after a
#: burst (sessions fallen to half their peak, or to none), the C library is
#: asked to give the freed memory back (glibc keeps it otherwise: a soak
#: left a server at 1 GiB resident with a Python heap back at 50 MiB).
TRIM_INTERVAL = 10.0


def makeService(options: Options, reactor: IReactorCore | None = None) -> MemuxServer:
    """
    Make the ``twistd memux`` service: one listening service per
    ``--listen`` endpoint, all serving the same memux sessions.

    :param options: parsed `Options`.
    :param reactor: the reactor to listen, connect and run sessions with;
        the global one if ``None``.
    """
    # The sessions and services keep to the reactor they are given; None
    # lets each use the global one when it needs it.
    clock = cast(IReactorTime, reactor) if reactor is not None else None
    if reactor is None:
        reactor = _globalReactor()
    services: dict[bytes, IProtocolFactory] = {}
    mounts: dict[bytes, str] = {}
    if not options["no-builtins"]:
        for name, factory in builtinServices(clock).items():
            services[name] = factory
            mounts[name] = f"built-in {name.decode()}"
    for name, description in options["service"]:
        services[name] = forwardTo(clientFromString(reactor, description), description)
        mounts[name] = f"forwarded to {description}"
    for name, dotted, factory in options["factory"]:
        services[name] = factory
        mounts[name] = f"Python factory {dotted}"
    resolver = ServerServices(services, options["allow-connect"], reactor)
    sessions = MultiplexingFactory(
        resolver, settings=options["settings"], reactor=clock
    )
    tls: IOpenSSLServerConnectionCreator | None = options["tls"]
    listening: IProtocolFactory = sessions
    if tls is not None:
        from memux.tls import tlsServerFactory

        listening = tlsServerFactory(sessions, tls)
    server = MemuxServer(
        sessions,
        resolver,
        mounts,
        tls,
        _describeTLS(options),
        options["drain-timeout"],
    )
    server.trimmer.clock = reactor
    for description in options["listen"]:
        # strports.service raises a failure to listen at startup, which
        # stops twistd (see StartupError).
        child = strports.service(description, listening, reactor=reactor)
        child.endpoint = _AnnouncingEndpoint(
            child.endpoint, description, tls is not None
        )
        child.setServiceParent(server)
    status = options["status"]
    if status is not None:
        from memux.status import statusSite

        child = strports.service(status, statusSite([sessions]), reactor=reactor)
        child.endpoint = _StatusEndpoint(child.endpoint, status)
        child.setServiceParent(server)
    return server


@implementer(IStreamServerEndpoint)
class _StatusEndpoint(_AnnouncingEndpoint):
    """
    Where the status site listens: logged as such, with a warning when it
    is reachable from other hosts (it names every peer and service).
    """

    def __init__(self, endpoint: IStreamServerEndpoint, description: str):
        super().__init__(endpoint, description, False)

    def _listening(self, port: IListeningPort) -> IListeningPort:
        self.port = port
        address = port.getHost()
        _log.info(
            "memux status (/metrics, /sessions) on {address} ({description})",
            address=describeAddress(address),
            description=self.description,
        )
        host = getattr(address, "host", None)
        if isinstance(host, str) and not _isLoopback(host):
            _log.warn(
                "memux status listens on {host}, reachable from other hosts:"
                " listen on 127.0.0.1, ::1 or a UNIX socket instead",
                host=host,
            )
        return port


def _isLoopback(host: str) -> bool:
    import ipaddress

    try:
        return ipaddress.ip_address(host.split("%", 1)[0]).is_loopback
    except ValueError:
        return False


def _describeTLS(options: Options) -> str:
    if options["tls"] is None:
        return ""
    text = f"certificate {options['tls-cert']}, ALPN memux/1"
    if options["tls-ca"] is not None:
        text += f", client certificates required (CA {options['tls-ca']})"
    return text
