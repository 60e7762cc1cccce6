# -*- test-case-name: memux.test.test_cli -*-
"""
The ``memux`` command line: ``memux forward`` (like ``ssh -L``), ``memux
connect`` (like ``nc``) and ``memux ping``.

Each subcommand is a small object with ``run(reactor) -> Deferred[int]``
(the exit status) and ``interrupted() -> int`` (the status when SIGINT or
SIGTERM stops the reactor first); `main` parses the arguments, starts
logging to standard error and runs the reactor until one of the two.

Standard output belongs to the data (``connect``) or the results
(``ping``); everything else goes to standard error: routine messages,
errors as one line each, the progress line when standard error is a
terminal, and with ``--verbose`` the twisted.logger output.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import cast

from twisted.internet import defer
from twisted.internet.error import ReactorNotRunning
from twisted.internet.interfaces import IReactorCore
from twisted.logger import Logger
from twisted.python.failure import Failure

import memux
from memux._cli._common import (
    Command,
    ExitStatus,
    Reporter,
    UsageError,
    _showProgress,
    _startLogging,
)
from memux._cli._connect import ConnectCommand
from memux._cli._endpoints import parseLocal, parseRemote
from memux._cli._forward import ForwardCommand, _channelWatcher
from memux._cli._options import (
    _EXIT_HELP,
    _REMOTE_HELP,
    _checkOpen,
    _common,
    _Formatter,
    _metadataOption,
    _positiveInt,
    _seconds,
)
from memux._cli._ping import PingCommand
from memux._cli._session import SessionCache

__all__ = [
    "ExitStatus",
    "Reporter",
    "SessionCache",
    "UsageError",
    "main",
    "parseLocal",
    "parseRemote",
]


def buildParser() -> argparse.ArgumentParser:
    """
    The argument parser for ``memux`` and its subcommands.
    """
    parser = argparse.ArgumentParser(
        prog="memux",
        formatter_class=_Formatter,
        description=(
            "memux: many reliable, ordered message channels over one connection.\n"
            "Forward local connections over a memux session, talk to a service,\n"
            "or ping a server."
        ),
        epilog=(
            "examples:\n"
            "  memux forward 8080 tcp:server.example:7400 web\n"
            "  echo hello | memux connect server.example:7400 echo\n"
            "  memux ping -c 3 tcp:server.example:7400\n\n"
            "Run 'memux COMMAND --help' for each command's options.\n\n" + _EXIT_HELP
        ),
    )
    parser.add_argument(
        "--version",
        action="version",
        version=_versionText(),
    )
    parser.add_argument(
        "-q", "--quiet", action="store_true", help="as each command's --quiet"
    )
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="as each command's --verbose"
    )
    commands = parser.add_subparsers(
        title="commands", dest="command", metavar="COMMAND", required=True
    )

    suppress = argparse.SUPPRESS
    forward = commands.add_parser(
        "forward",
        parents=[_common("no progress line, no routine messages", suppress)],
        formatter_class=_Formatter,
        help="forward local connections to a service (like ssh -L)",
        description=(
            "Listen on LOCAL_ENDPOINT; carry every accepted connection over a new\n"
            "channel for SERVICE on one memux session to REMOTE, like ssh -L.\n"
            "The session is made at start (exit 3 if it cannot be); if it is lost\n"
            "later, the next accepted connection makes a new one.  Runs until\n"
            "interrupted."
        ),
        epilog=(
            "examples:\n"
            "  memux forward 8080 tcp:server.example:7400 web\n"
            "      127.0.0.1:8080 reaches the server's 'web' service\n"
            "  memux forward tcp:8080:interface=0.0.0.0 server.example:7400 web\n"
            "      the same on every interface\n"
            "  memux forward unix:/tmp/db.sock tls:server.example:7400 db\n"
            "      a UNIX socket, over TLS\n\n"
            "On a terminal a progress line shows open connections and bytes on\n"
            "the memux connection each way (framing included).\n\n" + _EXIT_HELP
        ),
    )
    forward.add_argument(
        "local",
        metavar="LOCAL_ENDPOINT",
        help=(
            "where to listen: a Twisted server endpoint string such as"
            " tcp:8080:interface=127.0.0.1 or unix:/tmp/s (tcp:8080 alone"
            " listens on every interface); a bare PORT means 127.0.0.1:PORT"
            " and ADDRESS:PORT that interface, as with ssh -L"
        ),
    )
    forward.add_argument("remote", metavar="REMOTE", help=_REMOTE_HELP)
    forward.add_argument(
        "service", metavar="SERVICE", help="the service name to open channels for"
    )
    _metadataOption(forward)
    forward.set_defaults(subparser=forward)

    connect = commands.add_parser(
        "connect",
        parents=[_common("no progress line", suppress)],
        formatter_class=_Formatter,
        help="connect stdin and stdout to a service (like nc)",
        description=(
            "Open a channel for SERVICE on a session to REMOTE; copy standard input\n"
            "to it and what it sends to standard output.  The end of standard\n"
            "input half-closes the channel (the server sees end of input and can\n"
            "still answer); memux connect exits when the channel ends."
        ),
        epilog=(
            "examples:\n"
            "  echo hello | memux connect server.example:7400 echo\n"
            "  memux connect tcp:server.example:7400 chargen | head -c 1000\n"
            "  memux connect unix:/run/memux.sock db < query.sql > result\n\n"
            "When standard error is a terminal and standard input and output are\n"
            "not, a progress line shows the bytes each way and the rate.\n\n"
            + _EXIT_HELP
        ),
    )
    connect.add_argument("remote", metavar="REMOTE", help=_REMOTE_HELP)
    connect.add_argument(
        "service", metavar="SERVICE", help="the service name to open a channel for"
    )
    _metadataOption(connect)
    connect.set_defaults(subparser=connect)

    ping = commands.add_parser(
        "ping",
        parents=[_common("print only the summary", suppress)],
        formatter_class=_Formatter,
        help="measure round trips to a server",
        description=(
            "Connect to REMOTE and send a memux PING every INTERVAL seconds;\n"
            "print each round-trip time, and a summary at the end (after COUNT\n"
            "pings, or when interrupted).  A path: line says what carries the\n"
            "session (TCP, TLS over TCP, MPTCP with its subflows and counters),\n"
            "at the start and in the summary."
        ),
        epilog=(
            "examples:\n"
            "  memux ping -c 3 server.example:7400\n"
            "  memux ping -i 0.2 tls:server.example:7400\n"
            "  memux ping mptcp:host=server.example:port=7400\n\n" + _EXIT_HELP
        ),
    )
    ping.add_argument("remote", metavar="REMOTE", help=_REMOTE_HELP)
    ping.add_argument(
        "-c",
        "--count",
        type=_positiveInt,
        default=None,
        help="stop after COUNT pings (default: until interrupted)",
    )
    ping.add_argument(
        "-i",
        "--interval",
        type=_seconds(0.001),
        default=1.0,
        metavar="SECONDS",
        help="wait SECONDS between pings (default: 1)",
    )
    ping.add_argument(
        "-W",
        "--timeout",
        type=_seconds(0.001),
        default=10.0,
        metavar="SECONDS",
        help="count a ping lost after SECONDS without a reply (default: 10)",
    )
    ping.set_defaults(subparser=ping)
    return parser


def _versionText() -> str:
    import platform

    import twisted

    return (
        f"memux {memux.__version__} (Twisted {twisted.__version__},"
        f" Python {platform.python_version()})"
    )


def makeCommand(
    args: argparse.Namespace, reactor: IReactorCore, reporter: Reporter
) -> Command:
    """
    The command the parsed C{args} ask for.

    @raise UsageError: if an argument is wrong.
    """
    metadata = getattr(args, "metadata", None)
    meta = metadata.encode("utf-8") if metadata is not None else None
    remote, remoteText = parseRemote(reactor, args.remote)
    if args.command == "forward":
        local, _ = parseLocal(reactor, args.local)
        service = _checkOpen(args.service, meta)
        return ForwardCommand(local, remote, remoteText, service, meta, reporter)
    if args.command == "connect":
        service = _checkOpen(args.service, meta)
        return ConnectCommand(remote, remoteText, service, meta, reporter)
    return PingCommand(
        remote,
        remoteText,
        args.count,
        args.interval,
        args.timeout,
        reporter,
        sys.stdout,
    )


def runCommand(command: Command, reactor: IReactorCore) -> int:
    """
    Run the reactor until C{command} is done or a signal stops it; return
    the exit status.
    """
    outcome: list[int] = []
    stopping: list[bool] = []

    def finished(status: int) -> None:
        if not stopping:
            outcome.append(int(status))
        try:
            reactor.stop()
        except ReactorNotRunning:
            pass

    def failed(reason: Failure) -> None:
        # A fault in memux: one line, or the traceback with --verbose.
        Logger().failure("memux internal error", reason)
        finished(ExitStatus.FAILURE)

    def start() -> None:
        d = defer.maybeDeferred(command.run, reactor)
        d.addCallbacks(finished, failed)

    reactor.addSystemEventTrigger("before", "shutdown", lambda: stopping.append(True))
    reactor.callWhenRunning(start)
    reactor.run()
    if outcome:
        return outcome[0]
    return command.interrupted()


def main(argv: Sequence[str] | None = None) -> int:
    """
    The ``memux`` command: parse C{argv} (default: C{sys.argv[1:]}), run
    the subcommand, and return its exit status (see L{ExitStatus}).
    """
    parser = buildParser()
    args = parser.parse_args(argv)
    from twisted.internet import reactor as globalReactor

    reactor = cast(IReactorCore, globalReactor)
    command: str = args.command
    quiet: bool = args.quiet
    reporter = Reporter(
        sys.stderr,
        f"memux {command}: ",
        quiet=quiet,
        progress=command != "ping"
        and _showProgress(quiet, interactive=command == "connect"),
    )
    try:
        made = makeCommand(args, reactor, reporter)
    except UsageError as e:
        # With the subcommand's usage line, the helpful one.
        subparser: argparse.ArgumentParser = args.subparser
        subparser.error(str(e))
    brief = _startLogging(args.verbose, reporter)
    if brief is not None and isinstance(made, ForwardCommand):
        brief.onEvent = _channelWatcher(made)
    return runCommand(made, reactor)
