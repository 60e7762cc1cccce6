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

Each command has its module (`_forward`, `_connect`, `_ping`: the command
and its argument parser); `_common`, `_options`, `_endpoints` and
`_session` hold what they share.
"""

from __future__ import annotations

import argparse
import os
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
from memux._cli._connect import ConnectCommand, addConnectParser
from memux._cli._endpoints import TLSFileError, parseLocal, parseRemote
from memux._cli._forward import ForwardCommand, addForwardParser
from memux._cli._options import _EXIT_HELP, _checkOpen, _Formatter, clientTLS
from memux._cli._ping import PingCommand, addPingParser
from memux._cli._session import SessionCache

__all__ = [
    "ExitStatus",
    "Reporter",
    "SessionCache",
    "UsageError",
    "buildParser",
    "main",
    "makeCommand",
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
    addForwardParser(commands)
    addConnectParser(commands)
    addPingParser(commands)
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
    # os.fsencode: the bytes given on the command line, even where they are
    # not UTF-8 (Python decoded them with surrogateescape).
    meta = os.fsencode(metadata) if metadata is not None else None
    remote, remoteText = parseRemote(reactor, args.remote, clientTLS(args))
    if args.command == "forward":
        local, _ = parseLocal(reactor, args.local)
        service = _checkOpen(args.service, meta)
        return ForwardCommand(
            local, remote, remoteText, service, meta, reporter, args.grace
        )
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
    except TLSFileError as e:
        # One line naming the file: the usage would not help.
        reporter.error(str(e))
        return ExitStatus.USAGE
    except UsageError as e:
        # With the subcommand's usage line, the helpful one.
        subparser: argparse.ArgumentParser = args.subparser
        subparser.error(str(e))
    _startLogging(args.verbose, reporter)
    return runCommand(made, reactor)
