"""
memux: many reliable, ordered, bidirectional message channels over one
byte stream (TCP, TLS, UNIX, Multipath TCP), for Twisted.

The Twisted names (``MultiplexingFactory``, ``connectSession``, ...) are
imported when first used, so that the protocol's pure modules
(`memux.codes`, `memux.settings`, the sans-IO core) import without Twisted,
as a front end for another event loop needs.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from memux import _variant

if _variant.pureRequested():  # before any compiled module is imported
    _variant.preferSources()

from memux import _wire  # noqa: E402
from memux.codes import ChannelState, ErrorCode, ProtocolError  # noqa: E402
from memux.settings import SessionSettings, Settings  # noqa: E402

if TYPE_CHECKING:
    from memux.error import (
        ChannelRefused,
        ChannelReset,
        MessageTooLarge,
        SessionLost,
    )
    from memux.interfaces import (
        IChannelTransport,
        IChunkReceiver,
        IDropReceiver,
        IMessageReceiver,
    )
    from memux.protocol import (
        ChannelEndpoint,
        ChannelRequest,
        MemuxProtocol,
        MultiplexingFactory,
        connectSession,
    )
    from memux.transport import ChannelAddress, ChannelTransport

__version__ = "0.1.0"

#: Whether memux's sans-IO core runs compiled (mypyc, built at install
#: time where a C compiler was found) rather than as pure Python; see
#: doc/performance.rst.  ``MEMUX_PURE_PYTHON=1`` makes it False.
compiled: bool = _variant.isCompiled(_wire)

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

#: Where each Twisted name lives (imported on first use, see above).
_LAZY = {
    "ChannelRefused": "memux.error",
    "ChannelReset": "memux.error",
    "MessageTooLarge": "memux.error",
    "SessionLost": "memux.error",
    "IChannelTransport": "memux.interfaces",
    "IChunkReceiver": "memux.interfaces",
    "IDropReceiver": "memux.interfaces",
    "IMessageReceiver": "memux.interfaces",
    "ChannelEndpoint": "memux.protocol",
    "ChannelRequest": "memux.protocol",
    "MemuxProtocol": "memux.protocol",
    "MultiplexingFactory": "memux.protocol",
    "connectSession": "memux.protocol",
    "ChannelAddress": "memux.transport",
    "ChannelTransport": "memux.transport",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'memux' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value  # once
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
