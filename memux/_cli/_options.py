# -*- test-case-name: memux.test.test_cli -*-
"""
Shared pieces of the argument parser, and checks of parsed arguments.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from typing import TypeAlias

from twisted.internet.interfaces import IReactorCore, IStreamClientEndpoint

from memux._cli._common import Subcommand, UsageError
from memux._cli._diagnose import TLSTarget
from memux._cli._endpoints import DEFAULT_PORT, ClientTLS, parseRemote, tlsTarget
from memux.settings import (
    DEFAULT_URGENCY,
    DEFAULT_WEIGHT,
    MAX_NAME_LENGTH,
    MAX_OPEN_PAYLOAD,
    MAX_URGENCY,
    MAX_WEIGHT,
    openFrameSize,
)

_EXIT_HELP = """\
exit status:
  0    success (the channel ended cleanly; every ping answered; forward
       stopped, with nothing to cut)
  1    ping: a ping went unanswered
  2    usage error
  3    cannot connect to REMOTE, or the session was lost
  4    the server refused the channel (e.g. unknown service)
  5    the channel was reset
  6    forward: cannot listen on LOCAL_ENDPOINT
  130  interrupted (SIGINT or SIGTERM): connect before the channel ended;
       forward with connections open after --grace, which it cut
"""

_EXIT_POINTER = "'memux --help' lists the exit statuses.\n"

_REMOTE_HELP = (
    "the memux server: a Twisted client endpoint string such as"
    " tcp:HOST:PORT, tls:HOST:PORT or unix:PATH; a bare HOST:PORT or"
    f" [IPV6]:PORT means TCP, and a bare HOST means TCP port {DEFAULT_PORT}"
)


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """
    Keep the examples' layout; a little more room for option names.
    """

    def __init__(self, prog: str) -> None:
        super().__init__(prog, max_help_position=30)


def _positiveInt(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def _inRange(low: int, high: int) -> Callable[[str], int]:
    """
    An argparse type: a whole number from ``low`` to ``high``.
    """

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(
                f"must be from {low} to {high}, not {value}"
            )
        return value

    return parse


def _nonEmpty(text: str) -> str:
    if not text:
        raise argparse.ArgumentTypeError("must not be empty")
    return text


def _seconds(minimum: float) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"not a number of seconds: {text!r}"
            ) from None
        if not value >= minimum or value == float("inf"):
            raise argparse.ArgumentTypeError(f"must be at least {minimum:g} s")
        return value

    parse.__name__ = "seconds"
    return parse


#: what ``add_subparsers`` returns, to add each command's parser to
Commands: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


def addCommand(commands: Commands, command: Subcommand) -> argparse.ArgumentParser:
    """
    Add the parser of ``command``: the output options every command has
    (its ``quietHelp`` says what its ``--quiet`` does), then its own
    arguments, and its ``examples`` as its epilog (the exit statuses are in
    ``memux --help`` only: they are the same for every command).

    The parsed arguments' ``subcommand`` is ``command``, to make the command
    with, and ``subparser`` this parser, for usage errors found after
    parsing.
    """
    output = argparse.ArgumentParser(add_help=False)
    group = output.add_argument_group("output")
    # SUPPRESS: an option given before the command (memux -q ping) stands
    # unless given again after it.
    group.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        default=argparse.SUPPRESS,
        help=command.quietHelp,
    )
    group.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        default=argparse.SUPPRESS,
        help="log Twisted and memux events (sessions, channels, errors) to stderr",
    )
    parser = commands.add_parser(
        command.name,
        parents=[output],
        formatter_class=_Formatter,
        help=command.help,
        description=command.description,
        epilog=command.examples + _EXIT_POINTER,
    )
    command.addArguments(parser)
    parser.set_defaults(subcommand=command, subparser=parser)
    return parser


def addRemote(parser: argparse.ArgumentParser) -> None:
    """
    Add the REMOTE argument, and the TLS options for a ``tls:`` REMOTE.
    """
    parser.add_argument("remote", metavar="REMOTE", help=_REMOTE_HELP)
    group = parser.add_argument_group(
        "TLS",
        "for a tls:HOST:PORT REMOTE, which offers ALPN memux/1 and checks the\n"
        "server's certificate against the system's CAs unless --ca is given",
    )
    group.add_argument(
        "--ca",
        type=_nonEmpty,
        metavar="FILE",
        help="trust the CA certificates in FILE (PEM) instead of the system's",
    )
    group.add_argument(
        "--cert",
        type=_nonEmpty,
        metavar="FILE",
        help=(
            "present the client certificate in FILE (PEM, with its key unless"
            " --key is given), for servers that require one (mutual TLS)"
        ),
    )
    group.add_argument(
        "--key",
        type=_nonEmpty,
        metavar="FILE",
        help="the private key of --cert, in PEM (default: the --cert file)",
    )
    group.add_argument(
        "--servername",
        type=_nonEmpty,
        metavar="NAME",
        help=(
            "check the server's certificate for NAME, and ask for NAME (SNI)"
            " (default: REMOTE's host)"
        ),
    )


def clientTLS(args: argparse.Namespace) -> ClientTLS:
    """
    The TLS options in the parsed ``args``.
    """
    return ClientTLS(
        ca=getattr(args, "ca", None),
        cert=getattr(args, "cert", None),
        key=getattr(args, "key", None),
        servername=getattr(args, "servername", None),
    )


def addChannelArguments(parser: argparse.ArgumentParser, serviceHelp: str) -> None:
    """
    Add what a command that opens channels takes: REMOTE, SERVICE and
    ``--metadata``.
    """
    addRemote(parser)
    parser.add_argument("service", metavar="SERVICE", help=serviceHelp)
    parser.add_argument(
        "-m",
        "--metadata",
        metavar="TEXT",
        default=None,
        help="send TEXT (UTF-8) as each channel's metadata, e.g. a token",
    )
    parser.add_argument(
        "--priority",
        metavar="URGENCY",
        type=_inRange(0, MAX_URGENCY),
        default=None,
        help=(
            f"send each channel's data at URGENCY, 0 (most urgent) to"
            f" {MAX_URGENCY} (default {DEFAULT_URGENCY}): a more urgent channel"
            " goes first on the session; the server is asked to answer so too"
        ),
    )
    parser.add_argument(
        "--weight",
        metavar="WEIGHT",
        type=_inRange(1, MAX_WEIGHT),
        default=None,
        help=(
            f"each channel's share among channels of its urgency, 1 to"
            f" {MAX_WEIGHT} (default {DEFAULT_WEIGHT})"
        ),
    )


def remoteEndpoint(
    args: argparse.Namespace, reactor: IReactorCore
) -> tuple[IStreamClientEndpoint, str, TLSTarget | None]:
    """
    The endpoint of the parsed REMOTE with its TLS options, a name for it
    in messages (see `parseRemote`), and for a ``tls:`` REMOTE what its
    TLS checks (see `tlsTarget`).

    :raises UsageError: if they are wrong.
    """
    tls = clientTLS(args)
    endpoint, text = parseRemote(reactor, args.remote, tls)
    return endpoint, text, tlsTarget(args.remote, tls)


def channelArguments(args: argparse.Namespace) -> tuple[bytes, bytes | None]:
    """
    The parsed SERVICE and ``--metadata``, as the bytes given.

    :raises UsageError: if they do not fit in a channel's opening.
    """
    metadata: str | None = args.metadata
    # os.fsencode: the bytes given on the command line, even where they are
    # not UTF-8 (Python decoded them with surrogateescape).
    meta = os.fsencode(metadata) if metadata is not None else None
    return _checkOpen(args.service, meta), meta


def _checkOpen(service: str, metadata: bytes | None) -> bytes:
    """
    The service name as bytes, if it and the metadata fit in an OPEN frame.

    :raises UsageError: if they do not.
    """
    name = os.fsencode(service)  # the bytes given, UTF-8 or not
    if len(name) > MAX_NAME_LENGTH:
        raise UsageError(
            f"SERVICE is {len(name)} bytes long; the most is {MAX_NAME_LENGTH}"
        )
    size = openFrameSize(name, metadata)
    if size > MAX_OPEN_PAYLOAD:
        raise UsageError(
            f"--metadata is too long: the channel's opening would take {size}"
            f" bytes, and the most is {MAX_OPEN_PAYLOAD}"
        )
    return name
