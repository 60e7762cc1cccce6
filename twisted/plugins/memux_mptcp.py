"""
The ``mptcp:`` (Multipath TCP) endpoint string parsers, for
`clientFromString` and `serverFromString` (and so ``twistd memux --listen
mptcp:7400``).

Kept tiny and import-safe: Twisted imports every plugin module to list
plugins, so this imports neither memux nor the reactor;
`memux.mptcp` is imported only when a description is parsed.
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

    from memux.mptcp import MPTCPClientEndpoint, MPTCPServerEndpoint


@implementer(IPlugin, IStreamClientEndpointStringParserWithReactor)
class MPTCPClientParser:
    """
    Parses ``mptcp:host=H:port=P[:timeout=T][:bindAddress=A]
    [:fallback=yes|no]`` client descriptions.
    """

    prefix = "mptcp"

    def parseStreamClient(
        self, reactor: IReactorCore, *args: object, **kwargs: object
    ) -> MPTCPClientEndpoint:
        """
        See `memux.mptcp.parseStreamClient`.
        """
        from memux.mptcp import parseStreamClient

        return parseStreamClient(reactor, *args, **kwargs)


@implementer(IPlugin, IStreamServerEndpointStringParser)
class MPTCPServerParser:
    """
    Parses ``mptcp:PORT[:interface=A][:backlog=N][:fallback=yes|no]``
    server descriptions.
    """

    prefix = "mptcp"

    def parseStreamServer(
        self, reactor: IReactorCore, *args: object, **kwargs: object
    ) -> MPTCPServerEndpoint:
        """
        See `memux.mptcp.parseStreamServer`.
        """
        from memux.mptcp import parseStreamServer

        return parseStreamServer(reactor, *args, **kwargs)


mptcpClientEndpointParser = MPTCPClientParser()
mptcpServerEndpointParser = MPTCPServerParser()
