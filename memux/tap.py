# -*- test-case-name: memux.test.test_tap -*-
"""
Support for ``twistd memux``: a memux server listening on one or more
endpoints and serving the built-in services.

Kept cheap to import (``twistd --help`` loads it): the Twisted layer and the
engine are imported only when a service is actually made.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

from twisted.application import strports
from twisted.application.service import MultiService
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IProtocolFactory, IReactorCore, IReactorTime
from twisted.python import usage

if TYPE_CHECKING:
    from memux._engine import SessionSettings

__all__ = ["DEFAULT_LISTEN", "Options", "makeService"]

#: where ``twistd memux`` listens when no ``--listen`` is given
DEFAULT_LISTEN = "tcp:7400"


class Options(usage.Options):
    """
    Command-line options for ``twistd memux``.
    """

    synopsis = "[--listen STRPORT ...] [--no-builtins] [--max-message-size BYTES]"
    longdesc = (
        "Serve memux sessions: many message channels over each connection. "
        "Without --no-builtins, channels may open the services echo, discard "
        f"and chargen. Listens on {DEFAULT_LISTEN} unless --listen is given."
    )

    optFlags = [
        ["no-builtins", None, "Do not serve the built-in echo, discard and chargen."],
    ]

    def __init__(self) -> None:
        # Not super(): mypy's untyped_calls_exclude does not see through it.
        usage.Options.__init__(self)
        self["listen"] = []
        self["max-message-size"] = None

    def opt_listen(self, description: str) -> None:
        """Listen on endpoint STRPORT, e.g. tcp:7400 (repeatable)."""
        self["listen"].append(description)

    opt_l = opt_listen

    def opt_max_message_size(self, value: str) -> None:
        """Largest message in bytes delivered whole to a message service."""
        try:
            size = int(value)
        except ValueError:
            raise usage.UsageError(
                f"--max-message-size must be a whole number of bytes, not {value!r}"
            ) from None
        if size < 1:
            raise usage.UsageError(f"--max-message-size must be positive, not {size}")
        self["max-message-size"] = size

    def postOptions(self) -> None:
        """
        Apply the default endpoint and check every endpoint description and
        the settings, so mistakes are reported before anything starts.
        """
        if not self["listen"]:
            self["listen"] = [DEFAULT_LISTEN]
        reactor = _globalReactor()
        for description in self["listen"]:
            try:
                serverFromString(reactor, description)
            except Exception as e:
                raise usage.UsageError(
                    f"--listen {description!r} is not a valid endpoint: {e}"
                ) from e
        try:
            _sessionSettings(self)
        except ValueError as e:
            raise usage.UsageError(f"--max-message-size: {e}") from e


def makeService(options: Options, reactor: IReactorCore | None = None) -> MultiService:
    """
    Make the ``twistd memux`` service: one listening service per
    ``--listen`` endpoint, all serving the same memux sessions.

    @param options: parsed L{Options}.
    @param reactor: the reactor to listen and run sessions with; the global
        one if L{None}.
    """
    from memux.protocol import MultiplexingFactory

    # The sessions and services keep to the reactor they are given; None
    # lets each use the global one when it needs it.
    clock = cast(IReactorTime, reactor) if reactor is not None else None
    services: dict[bytes, IProtocolFactory] = {}
    if not options["no-builtins"]:
        from memux.services import builtinServices

        services.update(builtinServices(clock))
    factory = MultiplexingFactory(
        services, settings=_sessionSettings(options), reactor=clock
    )
    if reactor is None:
        reactor = _globalReactor()
    top = MultiService()
    for description in options["listen"]:
        # strports.service is StreamServerEndpointService(serverFromString())
        # which also makes a failure to listen stop twistd at startup.
        strports.service(description, factory, reactor=reactor).setServiceParent(top)
    return top


def _sessionSettings(options: Options) -> SessionSettings | None:
    """
    The session settings the options ask for, or L{None} for the defaults.

    @raise ValueError: if the engine rejects them.
    """
    maxMessageSize: int | None = options["max-message-size"]
    if maxMessageSize is None:
        return None
    from memux._engine import SessionSettings

    return SessionSettings(maxMessageSize=maxMessageSize)


def _globalReactor() -> IReactorCore:
    # Imported late: importing this module must not install a reactor.
    from twisted.internet import reactor

    return cast(IReactorCore, reactor)
