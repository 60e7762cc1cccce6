# -*- test-case-name: memux.test.test_protocol -*-
"""
Interfaces a channel protocol may provide to receive messages rather than
a byte stream, and the interface of a channel transport.
"""

from __future__ import annotations

from twisted.internet.interfaces import ITransport
from zope.interface import Attribute, Interface

__all__ = ["IChannelTransport", "IChunkReceiver", "IDropReceiver", "IMessageReceiver"]


class IMessageReceiver(Interface):
    """
    A protocol that receives whole messages (reassembled from chunks, up to
    the session's maximum message size) instead of ``dataReceived``.
    """

    def messageReceived(message: bytes) -> None:
        """
        One whole message arrived.
        """


class IChunkReceiver(Interface):
    """
    A protocol that receives the chunks of messages as they arrive, for
    messages of unbounded size, instead of ``dataReceived``.
    """

    def chunkReceived(data: bytes, endOfMessage: bool) -> None:
        """
        A chunk arrived; ``endOfMessage`` says it ends its message.
        """


class IDropReceiver(Interface):
    """
    A protocol on a lossy channel that wants to know when whole messages
    were discarded instead of delivered.
    """

    def messagesDropped(count: int) -> None:
        """
        ``count`` whole messages were discarded at this point in the stream.
        """


class IChannelTransport(ITransport):
    """
    The transport of one memux channel: an ``ITransport`` with message
    boundaries.
    """

    channel = Attribute("The channel id (int).")
    service = Attribute("The service name the channel was opened for (bytes).")
    session = Attribute("The MemuxProtocol carrying the channel.")
    state = Attribute(
        "The channel's state (memux.codes.ChannelState, read-only): IDLE,"
        " OPEN, HALF_CLOSED_LOCAL, HALF_CLOSED_REMOTE or CLOSED."
    )

    priority = Attribute(
        "The priority the channel's data is sent at"
        " (memux.settings.Priority: urgency, weight; read-only)."
    )

    def writeMessage(data: bytes) -> None:
        """
        Send ``data`` as one whole message (ending any message in progress
        with it).
        """

    def setPriority(urgency: int, weight: int = 16) -> None:
        """
        Send this channel's data at ``urgency`` (0, the most urgent, to 7;
        3 by default) and ``weight`` (1 to 256, 16 by default) from now on,
        and ask the peer to send its data on the channel so too.
        """

    def endMessage() -> None:
        """
        End the message that ``write`` calls have been building.
        """
