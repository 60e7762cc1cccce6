"""
memux: many reliable, ordered, bidirectional message channels over one
byte stream (TCP, TLS, UNIX, Multipath TCP), for Twisted.
"""

from memux._engine import SessionSettings
from memux._wire import ErrorCode, ProtocolError, Settings
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

__version__ = "0.1.0"

__all__ = [
    "ChannelAddress",
    "ChannelEndpoint",
    "ChannelRefused",
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
