"""
memux: many reliable, ordered, bidirectional message channels over one
byte stream (TCP, TLS, UNIX, Multipath TCP), for Twisted.
"""

from memux.codes import ChannelState, ErrorCode, ProtocolError
from memux.error import ChannelRefused, ChannelReset, MessageTooLarge, SessionLost
from memux.interfaces import (
    IChannelTransport,
    IChunkReceiver,
    IDropReceiver,
    IMessageReceiver,
)
from memux.protocol import (
    ChannelAddress,
    ChannelEndpoint,
    ChannelRequest,
    ChannelTransport,
    MemuxProtocol,
    MultiplexingFactory,
    connectSession,
)
from memux.settings import SessionSettings, Settings

__version__ = "0.1.0"

__all__ = [
    "ChannelAddress",
    "ChannelEndpoint",
    "ChannelRefused",
    "ChannelState",
    "ChannelRequest",
    "ChannelReset",
    "ChannelTransport",
    "ErrorCode",
    "IChannelTransport",
    "IChunkReceiver",
    "IDropReceiver",
    "IMessageReceiver",
    "MemuxProtocol",
    "MessageTooLarge",
    "MultiplexingFactory",
    "ProtocolError",
    "SessionLost",
    "SessionSettings",
    "Settings",
    "connectSession",
]
