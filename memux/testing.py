# -*- test-case-name: memux.test.test_protocol -*-
"""
Test helpers for code that runs over memux: a pair of connected sessions in
memory, with no sockets and a deterministic clock.
"""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.test.iosim import IOPump, connectedServerAndClient

from memux._engine import SessionSettings
from memux.protocol import MemuxProtocol, ServiceMap, ServiceResolver

__all__ = ["connectedSessions"]


def connectedSessions(
    serverServices: ServiceMap | ServiceResolver | None = None,
    clientServices: ServiceMap | ServiceResolver | None = None,
    *,
    serverSettings: SessionSettings | None = None,
    clientSettings: SessionSettings | None = None,
    clock: Clock | None = None,
    greet: bool = True,
) -> tuple[MemuxProtocol, MemuxProtocol, IOPump]:
    """
    Connect a client session to a server session in memory.

    @return: C{(client, server, pump)}; C{pump.flush()} moves bytes both
        ways and runs the clock's pending zero-delay calls until both sides
        are idle.
    """
    clock = clock if clock is not None else Clock()

    def server() -> MemuxProtocol:
        return MemuxProtocol(serverServices, settings=serverSettings, reactor=clock)

    def client() -> MemuxProtocol:
        return MemuxProtocol(
            clientServices, client=True, settings=clientSettings, reactor=clock
        )

    return connectedServerAndClient(server, client, greet=greet, clock=clock)
