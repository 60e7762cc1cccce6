# -*- test-case-name: memux.test.test_attackbench -*-
"""
Raw frames, for the tools that write them by hand: the attackers
(`memux.bench.attackers`), and the wire-overhead scenarios, which count the
bytes of a session's setup (`memux.bench.clients`).

This is the one module of `memux.bench` that imports ``memux._wire``: memux
has no public frame encoder.  Everything else the tools use comes from the
public modules (`memux.codes`, `memux.settings`, `memux.protocol`, ...).
"""

from __future__ import annotations

from memux._wire import (
    MAGIC,
    VERSION,
    ChannelCreditFrame,
    CreditFrame,
    DataFrame,
    DropFrame,
    FrameDecoder,
    GoAwayFrame,
    OpenFrame,
    PingFrame,
    Preface,
    ResetFrame,
    encodeDataHeader,
    encodePreface,
    encodeVarint,
)

__all__ = [
    "MAGIC",
    "VERSION",
    "ChannelCreditFrame",
    "CreditFrame",
    "DataFrame",
    "DropFrame",
    "FrameDecoder",
    "GoAwayFrame",
    "OpenFrame",
    "PingFrame",
    "Preface",
    "ResetFrame",
    "encodeDataHeader",
    "encodePreface",
    "encodeVarint",
]
