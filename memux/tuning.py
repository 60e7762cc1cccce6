# -*- test-case-name: memux.test.test_tuning -*-
"""
The socket and Twisted settings a memux session gives its own TCP
connection, for anyone who wants a plain connection (TCP, or TLS over TCP)
tuned the same way: above all a benchmark baseline, which is only fair
with them (see doc/performance.rst).  memux applies them through the same
functions, so the two cannot drift apart; and how to find the TCP
transport and socket beneath wrappers such as TLS.
"""

from __future__ import annotations

from typing import Any

from memux._tuning import (
    BULK_NOTSENT_LOWAT,
    BULK_READ_SIZE,
    NOTSENT_LOWAT,
    connectionLayers,
    limitUnsent,
    overTLS,
    socketLayer,
    tcpTransport,
    tuneConnection,
)

__all__ = [
    "BULK_NOTSENT_LOWAT",
    "BULK_READ_SIZE",
    "NOTSENT_LOWAT",
    "connectionLayers",
    "overTLS",
    "socketLayer",
    "tcpTransport",
    "tuneLikeSession",
]


def tuneLikeSession(transport: Any, bulk: bool = False) -> None:
    """
    Give ``transport`` (a Twisted TCP transport, before it has sent
    anything) the settings a memux session gives its connection:
    TCP_NODELAY, a send limit that takes a whole flush in one ``send()``,
    and the kernel's unsent bytes limited to `NOTSENT_LOWAT`.  With
    ``bulk``, also what a session switches to once it sees bulk traffic:
    reads of `BULK_READ_SIZE` and `BULK_NOTSENT_LOWAT` unsent bytes.

    Over TLS (or another wrapper), the settings go to the TCP transport
    beneath it (see `tcpTransport`), as memux's own do.  Transports that
    are not TCP (UNIX sockets, pipes) take what applies to them, and are
    otherwise left as they are.
    """
    readSize = tuneConnection(transport)
    if bulk:
        if readSize is not None:
            tcpTransport(transport).bufferSize = BULK_READ_SIZE
        limitUnsent(transport, BULK_NOTSENT_LOWAT)
