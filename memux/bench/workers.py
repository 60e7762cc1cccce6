# -*- test-case-name: memux.test.test_bench -*-
"""
The child-process side of ``python -m memux.bench``: one server or one
client of one benchmark run, over loopback TCP.

    python -m memux.bench.workers server ROLE PARAMS
    python -m memux.bench.workers client ROLE PARAMS PORT

``ROLE`` names a scenario and what runs it (``bulk/memux``, ``bulk/tcp``,
...; see `ROLES`), ``PARAMS`` is a JSON object of the scenario's sizes and
the memux settings (``clientSettings``, ``serverSettings``).

With a certificate in ``PARAMS`` (``"tls"``, see `memux.bench.certificate`),
every connection runs over Twisted's TLS, memux's and the baselines' alike.

The server listens on a free port of 127.0.0.1, prints ``{"port": N}`` on
a line of its own, and serves until SIGTERM (or until its parent goes
away).  The client connects, runs the workload, prints one JSON object of
results and exits.  Every timing is taken in the client, from its first
write to the receiver's acknowledgement of the last byte (or the last
reply), so no clock is compared across processes.

Writers respect backpressure in memux and in the baselines alike: they
register a streaming producer and stop writing while it is paused.  The
servers are in `memux.bench.servers`, the workloads in
`memux.bench.clients`.
"""

from __future__ import annotations

import json
import os
import resource
import sys
from collections.abc import Awaitable, Callable
from typing import cast

from twisted.internet import defer, task
from twisted.internet.address import IPv4Address
from twisted.internet.interfaces import IListeningPort
from twisted.internet.protocol import Factory
from twisted.logger import (
    FilteringLogObserver,
    LogLevel,
    LogLevelFilterPredicate,
    globalLogBeginner,
    textFileLogObserver,
)

from memux.bench.clients import (
    runBulk,
    runBulkTcp,
    runChurn,
    runChurnRequestReply,
    runChurnSingle,
    runChurnTcp,
    runFanout,
    runFanoutTcp,
    runIdle,
    runOverheadBulk,
    runOverheadSmall,
    runSmall,
    runSmallTcp,
)
from memux.bench.latency import (
    runLatencyIdle,
    runLatencyLoaded,
    runLatencySingle,
    runLatencyTcpIdle,
    runLatencyTcpLoaded,
)
from memux.bench.peers import Params, Result, TunedPort, serverFactory, tlsVersions
from memux.bench.priorities import (
    runPriorityPhases,
    runWeightedProducers,
    runWeightedShares,
)
from memux.bench.processes import LOOPBACK, Reactor, emit
from memux.bench.servers import (
    serveBulk,
    serveBulkTcp,
    serveChurn,
    serveChurnRequestReply,
    serveChurnTcp,
    serveFanout,
    serveFanoutTcp,
    serveIdle,
    serveLatency,
    serveLatencyTcp,
    serveOverheadBulk,
    serveOverheadSmall,
    serveSmall,
    serveSmallTcp,
)

__all__ = ["ROLES", "main"]

Runner = Callable[[Reactor, Params, int], Awaitable[Result]]

#: role -> (server factory, client workload)
ROLES: dict[str, tuple[Callable[[Params], Factory], Runner]] = {
    "bulk/memux": (serveBulk, runBulk),
    "bulk/tcp": (serveBulkTcp, runBulkTcp),
    "bulk/tcp-defaults": (serveBulkTcp, runBulkTcp),
    "fanout/memux": (serveFanout, runFanout),
    "fanout/tcp": (serveFanoutTcp, runFanoutTcp),
    "fanout/tcp-defaults": (serveFanoutTcp, runFanoutTcp),
    "small/memux": (serveSmall, runSmall),
    "small/tcp": (serveSmallTcp, runSmallTcp),
    "small/tcp-defaults": (serveSmallTcp, runSmallTcp),
    "churn/memux": (serveChurn, runChurn),
    "churn/rr": (serveChurnRequestReply, runChurnRequestReply),
    "churn/tcp": (serveChurnTcp, runChurnTcp),
    "churn/single": (serveChurn, runChurnSingle),
    "latency/loaded": (serveLatency, runLatencyLoaded),
    "latency/idle": (serveLatency, runLatencyIdle),
    "latency/tcp-idle": (serveLatencyTcp, runLatencyTcpIdle),
    "latency/tcp-loaded": (serveLatencyTcp, runLatencyTcpLoaded),
    "latency/single": (serveLatency, runLatencySingle),
    "idle/memux": (serveIdle, runIdle),
    "overhead-small/memux": (serveOverheadSmall, runOverheadSmall),
    "overhead-bulk/memux": (serveOverheadBulk, runOverheadBulk),
    "priority-latency/phases": (serveLatency, runPriorityPhases),
    "weighted-shares/memux": (serveLatency, runWeightedShares),
    "weighted-producers/memux": (serveLatency, runWeightedProducers),
}

#: How each baseline role tunes its TCP connections (see
#: `memux.bench.peers.tune`): as memux tunes a session's connection
#: (``"session"``), or as it does under bulk traffic (``"bulk"``), so the
#: baseline is fair; roles not listed (memux itself, which tunes its own,
#: and the ``-defaults`` references) keep Twisted's defaults.
TUNING: dict[str, str] = {
    "bulk/tcp": "bulk",
    "fanout/tcp": "bulk",
    "small/tcp": "session",
    "churn/rr": "session",
    "churn/tcp": "session",
    "latency/tcp-idle": "session",
    "latency/tcp-loaded": "session",
}


# ---------------------------------------------------------------- processes


async def server(reactor: Reactor, role: str, params: Params) -> None:
    """
    Listen, say where, and serve until stopped (SIGTERM) or orphaned.
    """
    params = {**params, "tuning": TUNING.get(role)}
    factory = serverFactory(params, ROLES[role][0](params))
    # A deep backlog, so the churn baseline's connections are not dropped.
    listening: IListeningPort = TunedPort(
        params["tuning"], 0, factory, 1024, LOOPBACK, reactor
    )
    listening.startListening()
    parent = os.getppid()
    emit({"port": cast(IPv4Address, listening.getHost()).port})

    def orphaned() -> None:
        if os.getppid() != parent:
            reactor.stop()

    task.LoopingCall(orphaned).start(1.0, now=False)
    await defer.Deferred()  # until the reactor stops


async def client(reactor: Reactor, role: str, params: Params, port: int) -> None:
    """
    Run the workload and print its result.
    """
    params = {**params, "tuning": TUNING.get(role)}
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    result = await ROLES[role][1](reactor, params, port)
    # Minor page faults in the run: each is a page of memory the kernel
    # handed the process afresh (large buffers mmap'd and freed over again).
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults
    result["minorFaults"] = faults
    if result.get("bytes"):
        result["faultsPerMB"] = faults / (result["bytes"] / 1e6)
    result["reactor"] = type(reactor).__name__
    if params.get("tls"):
        result["tls"] = tlsVersions()
    emit(result)


def main(argv: list[str]) -> None:
    """
    ``server ROLE PARAMS`` or ``client ROLE PARAMS PORT``.
    """
    observer = FilteringLogObserver(
        textFileLogObserver(sys.stderr),
        [LogLevelFilterPredicate(defaultLogLevel=LogLevel.warn)],
    )
    globalLogBeginner.beginLoggingTo([observer], redirectStandardIO=False)
    kind, role, params = argv[0], argv[1], json.loads(argv[2])
    if role not in ROLES:
        raise SystemExit(f"unknown role {role!r}; one of {', '.join(ROLES)}")
    if kind == "server":
        task.react(server, (role, params))
    elif kind == "client":
        task.react(client, (role, params, int(argv[3])))
    raise SystemExit(f"unknown kind {kind!r}: server or client")


if __name__ == "__main__":
    main(sys.argv[1:])
