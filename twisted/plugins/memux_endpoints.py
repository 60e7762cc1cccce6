"""
The ``memux:`` endpoint string parsers, for `clientFromString` and
`serverFromString` (and so ``twistd web --listen memux:...``).

Kept tiny and import-safe: Twisted imports every plugin module to list
plugins, so this imports neither memux's Twisted layer nor the reactor;
`memux.endpoints` is imported only when a description is parsed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from twisted.internet.interfaces import (
    IStreamClientEndpointStringParserWithReactor,
    IStreamServerEndpointStringParser,
)
from twisted.plugin import IPlugin
from zope.interface import implementer

if TYPE_CHECKING:
    from twisted.internet.interfaces import IReactorCore

    from memux.endpoints import MemuxClientEndpoint, MemuxServerEndpoint


@implementer(IPlugin, IStreamClientEndpointStringParserWithReactor)
class MemuxClientParser:
    """
    Parses ``memux:INNER:service=NAME[:metadata=...][:multiplex=no]`` client
    descriptions.
    """

    prefix = "memux"

    def parseStreamClient(
        self, reactor: IReactorCore, *args: object, **kwargs: object
    ) -> MemuxClientEndpoint:
        """
        See `memux.endpoints.parseStreamClient`.
        """
        from memux.endpoints import parseStreamClient

        return parseStreamClient(reactor, *args, **kwargs)


@implementer(IPlugin, IStreamServerEndpointStringParser)
class MemuxServerParser:
    """
    Parses ``memux:INNER:service=NAME`` server descriptions.
    """

    prefix = "memux"

    def parseStreamServer(
        self, reactor: IReactorCore, *args: object, **kwargs: object
    ) -> MemuxServerEndpoint:
        """
        See `memux.endpoints.parseStreamServer`.
        """
        from memux.endpoints import parseStreamServer

        return parseStreamServer(reactor, *args, **kwargs)


memuxClientEndpointParser = MemuxClientParser()
memuxServerEndpointParser = MemuxServerParser()
