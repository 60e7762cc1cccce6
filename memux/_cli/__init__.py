# -*- test-case-name: memux.test.test_cli -*-
"""
The ``memux`` command line: ``memux forward`` (like ``ssh -L``), ``memux
connect`` (like ``nc``), ``memux ping`` and ``memux stat`` (like ``ss``).

The subcommands are a registry: `COMMAND_MODULES` names a module for
each, whose ``COMMAND`` (a `Subcommand`) says its name, help, arguments
and how to make it; adding a command is a new module and a line there.
What a ``COMMAND`` makes is a small object with ``run(reactor) ->
Deferred[int]`` (the exit status) and ``interrupted() -> int`` (the status
when SIGINT or SIGTERM stops the reactor first); `main` parses the
arguments, starts logging to standard error and runs the reactor until one
of the two.

Standard output belongs to the data (``connect``) or the results
(``ping``); everything else goes to standard error: routine messages,
errors as one line each, the progress line when standard error is a
terminal, and with ``--verbose`` the twisted.logger output.

Each command has its module (`_forward`, `_connect`, `_ping`: the command,
its arguments and its ``COMMAND``); `_common`, `_options`, `_endpoints`
and `_session` hold what they share.
"""

from __future__ import annotations

import argparse
import importlib
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
    Subcommand,
    UsageError,
    _showProgress,
    _startLogging,
)
from memux._cli._endpoints import TLSFileError, parseLocal, parseRemote
from memux._cli._options import _EXIT_HELP, _Formatter, addCommand
from memux._cli._session import SessionCache

__all__ = [
    "COMMAND_MODULES",
    "ExitStatus",
    "Reporter",
    "SessionCache",
    "Subcommand",
    "UsageError",
    "buildParser",
    "main",
    "makeCommand",
    "parseLocal",
    "parseRemote",
    "subcommands",
]

#: The modules of the subcommands, in the order ``memux --help`` lists
#: them; each has a ``COMMAND``, a `Subcommand`.
COMMAND_MODULES = [
    "memux._cli._forward",
    "memux._cli._connect",
    "memux._cli._ping",
    "memux._cli._stat",
]


def subcommands() -> list[Subcommand]:
    """
    The subcommands of `COMMAND_MODULES`.
    """
    found = []
    for name in COMMAND_MODULES:
        command = importlib.import_module(name).COMMAND
        if not isinstance(command, Subcommand):
            raise TypeError(f"{name}.COMMAND is not a Subcommand: {command!r}")
        found.append(command)
    return found


def buildParser() -> argparse.ArgumentParser:
    """
    The argument parser for ``memux`` and its subcommands (see
    `COMMAND_MODULES`).
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
    for command in subcommands():
        addCommand(commands, command)
    return parser


def _versionText() -> str:
    import platform

    import twisted

    return (
        f"memux {memux.__version__} (Twisted {twisted.__version__},"
        f" Python {platform.python_version()},"
        f" {'compiled' if memux.compiled else 'pure-Python'} core)"
    )


def makeCommand(
    args: argparse.Namespace, reactor: IReactorCore, reporter: Reporter
) -> Command:
    """
    The command the parsed ``args`` ask for, made by its `Subcommand`.

    :raises UsageError: if an argument is wrong.
    """
    command: Subcommand = args.subcommand
    return command.make(args, reactor, reporter)


def runCommand(command: Command, reactor: IReactorCore) -> int:
    """
    Run the reactor until ``command`` is done or a signal stops it; return
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
    The ``memux`` command: parse ``argv`` (default: ``sys.argv[1:]``), run
    the subcommand, and return its exit status (see `ExitStatus`).
    """
    parser = buildParser()
    args = parser.parse_args(argv)
    from twisted.internet import reactor as globalReactor

    reactor = cast(IReactorCore, globalReactor)
    command: Subcommand = args.subcommand
    quiet: bool = args.quiet
    reporter = Reporter(
        sys.stderr,
        f"memux {command.name}: ",
        quiet=quiet,
        progress=command.progress
        and _showProgress(quiet, interactive=command.interactive),
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
