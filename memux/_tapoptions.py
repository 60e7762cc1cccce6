# -*- test-case-name: memux.test.test_tap -*-
"""
``twistd memux``'s command line: `Options`, which checks everything it can
while parsing (sizes in the units the user typed, ranges, endpoint
descriptions, factories, destinations), so mistakes are reported in one
line before anything starts.  Public through `memux.tap`.
"""

from __future__ import annotations

import math
import platform
import re
import sys
from collections.abc import Callable, Sequence
from typing import Any, TypeVar, cast

from twisted.internet.endpoints import (
    clientFromString,
    serverFromString,
)
from twisted.internet.interfaces import (
    IOpenSSLServerConnectionCreator,
    IProtocol,
    IProtocolFactory,
)
from twisted.internet.protocol import Factory, Protocol
from twisted.python import usage
from twisted.python.reflect import namedAny

from memux import __version__, compiled
from memux._destinations import DestinationPattern, _globalReactor
from memux.settings import MAX_NAME_LENGTH, SessionSettings, Settings

__all__ = [
    "DEFAULT_DRAIN_TIMEOUT",
    "DEFAULT_IDLE_TIMEOUT",
    "DEFAULT_LISTEN",
    "Options",
]

#: where ``twistd memux`` listens when no ``--listen`` is given
DEFAULT_LISTEN = "tcp:7400"

#: seconds a session may stay without channels before the server ends it
DEFAULT_IDLE_TIMEOUT = 600.0

#: seconds sessions may take to finish their channels once the server is
#: stopping (SIGTERM) before they are aborted: long enough for requests in
#: flight, short of the 90 s after which systemd sends SIGKILL
DEFAULT_DRAIN_TIMEOUT = 30.0

_DEFAULTS = SessionSettings()

#: The session settings options: option name, `SessionSettings` attribute,
#: help (the default is added from `SessionSettings`).
_SETTINGS = {
    "max-frame-size": (
        "maxFrameSize",
        "Largest frame payload, in bytes, a peer may send (16384 to 16777215).",
    ),
    "channel-credit": (
        "channelCredit",
        "Unconsumed bytes held per channel: each channel's initial window,"
        " which grows for a busy channel up to the maximum channel credit.",
    ),
    "session-credit": (
        "sessionCredit",
        "Unconsumed bytes held per session, all channels together: what bounds"
        " each session's memory.",
    ),
    "max-channels": ("maxChannels", "Channels a peer may have open at once."),
    "max-message-size": (
        "maxMessageSize",
        "Largest message, in bytes, delivered whole to a message service; a"
        " larger one resets its channel.",
    ),
    "chunk-size": (
        "chunkSize",
        "Largest chunk sent: smaller interleaves channels more finely, larger"
        " costs less CPU.",
    ),
}

_SIZE_SUFFIXES = {
    "": 1,
    "k": 1 << 10,
    "kib": 1 << 10,
    "m": 1 << 20,
    "mib": 1 << 20,
    "g": 1 << 30,
    "gib": 1 << 30,
}


_F = TypeVar("_F", bound=Callable[..., Any])


def _oneLine(method: _F) -> _F:
    """
    Join the lines of ``method``'s docstring, which is its ``--help`` text.
    """
    method.__doc__ = " ".join((method.__doc__ or "").split())
    return method


#: The largest value any setting may have on the wire (a varint).
_MAX_SETTING = (1 << 63) - 1

#: Each session setting option's allowed range, inclusive (None: no upper
#: bound).  The protocol's initial values (`Settings`' defaults) are its
#: minima; `SessionSettings` checks them again.
_RANGES: dict[str, tuple[int, int | None]] = {
    "max-frame-size": (Settings().maxFrameSize, (1 << 24) - 1),
    "channel-credit": (Settings().initialChannelCredit, _MAX_SETTING),
    "session-credit": (Settings().initialSessionCredit, _MAX_SETTING),
    "max-channels": (Settings().initialMaxChannels, _MAX_SETTING),
    "max-message-size": (1, _MAX_SETTING),
    "chunk-size": (1, None),
    "max-channel-credit": (Settings().initialChannelCredit, _MAX_SETTING),
}


def _settingOption(option: str) -> Any:
    """
    An ``opt_`` method for a session setting, with the default in its help.
    """
    attribute, help = _SETTINGS[option]

    def opt(self: Options, value: str) -> None:
        size = _checkRange(option, value)
        check: dict[str, Any] = {attribute: size}
        try:
            SessionSettings(**check)
        except ValueError as e:
            raise usage.UsageError(f"--{option} {value}: {e}") from None
        self[option] = size

    default = getattr(SessionSettings(), attribute)
    opt.__doc__ = f"{help} [default: {default}]"
    opt.__name__ = "opt_" + option.replace("-", "_")
    return opt


def _parseSize(option: str, value: str) -> tuple[int, str, int]:
    """
    The size ``value`` gives, the suffix it was written with, and the
    suffix's multiplier.
    """
    match = re.fullmatch(r"\s*([0-9]+)\s*([a-zA-Z]*)\s*", value)
    multiplier = _SIZE_SUFFIXES.get(match.group(2).lower()) if match else None
    if match is None or multiplier is None:
        raise usage.UsageError(
            f"--{option} must be a whole number, optionally with a suffix"
            f" K, M or G (binary: 1K = 1024), not {value!r}"
        )
    return int(match.group(1)) * multiplier, match.group(2), multiplier


def _checkRange(option: str, value: str) -> int:
    """
    The size ``value`` gives for ``option``, if in its range; else a usage
    error that gives the range in the unit ``value`` was written in.
    """
    size, suffix, multiplier = _parseSize(option, value)
    low, high = _RANGES[option]
    if low <= size and (high is None or size <= high):
        return size

    def shown(n: int) -> str:
        if multiplier > 1 and n % multiplier == 0:
            return f"{n // multiplier}{suffix}"
        for unit, unitSize in (("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10)):
            if multiplier > 1 and (n + 1) % unitSize == 0:
                return f"{n} ({(n + 1) // unitSize}{unit} - 1)"
        return str(n)

    if high is None or (size < low and high == _MAX_SETTING):
        allowed = f"at least {shown(low)}"
    elif high == _MAX_SETTING:
        allowed = f"at most {shown(high)}"
    else:
        allowed = f"between {shown(low)} and {shown(high)}"
    raise usage.UsageError(f"--{option} must be {allowed}, not {value.strip()}")


def _seconds(option: str, zero: str) -> Callable[[str], float]:
    """
    A coercer for a number of seconds, ``0`` meaning ``zero``: a usage error
    names ``option`` and what it takes.
    """

    def coerce(value: str) -> float:
        try:
            seconds = float(value)
        except ValueError:
            seconds = math.nan
        if not (math.isfinite(seconds) and seconds >= 0):
            raise usage.UsageError(
                f"--{option} must be a number of seconds, 0 ({zero}) or more,"
                f" not {value!r}"
            )
        return seconds

    return coerce


class Options(usage.Options):
    """
    Command-line options for ``twistd memux``.
    """

    synopsis = "[options]"
    longdesc = (
        "Serve memux sessions: many message channels over each connection. "
        "Channels may open the built-in services echo, discard and chargen "
        "(unless --no-builtins), services forwarded with --service, Python "
        "factories mounted with --factory, and, only if --allow-connect allows "
        "it, a destination host and port of their own. Listens on "
        f"{DEFAULT_LISTEN} unless --listen is given; with --tls-cert, every "
        "--listen endpoint speaks TLS (ALPN memux/1). Sizes take a suffix "
        "K, M or G (binary)."
    )

    optFlags = [
        ["no-builtins", None, "Do not serve the built-in echo, discard and chargen."],
        [
            "ignore-priority-hints",
            None,
            "Keep the priorities the server's own services set: ignore the"
            " PRIORITY hints by which clients ask for a channel's data at"
            " another urgency or weight (and tell them so, so they send none)"
            " [default: hints are honoured].",
        ],
    ]

    optParameters = [
        [
            "idle-timeout",
            None,
            DEFAULT_IDLE_TIMEOUT,
            "End a session (GOAWAY IDLE_TIMEOUT) after this many seconds with"
            " no channel open; 0: never.",
            _seconds("idle-timeout", "never"),
        ],
        [
            "keepalive",
            None,
            0.0,
            "Send a PING after this many seconds with nothing received, and end"
            " the session (GOAWAY IDLE_TIMEOUT) if nothing at all arrives in as"
            " long again: dead peers are detected even with channels open;"
            " 0: off (the default).",
            _seconds("keepalive", "off"),
        ],
        [
            "write-timeout",
            None,
            _DEFAULTS.writeTimeout,
            "Abort a connection that has taken none of the server's output for"
            " this many seconds (a peer that does not read); 0: never.",
            _seconds("write-timeout", "never"),
        ],
        [
            "handshake-timeout",
            None,
            _DEFAULTS.handshakeTimeout,
            "Abort a connection whose peer has not sent its whole preface (so,"
            " with TLS, finished its handshake) this many seconds after it"
            " connected; 0: never.",
            _seconds("handshake-timeout", "never"),
        ],
        [
            "drain-timeout",
            None,
            DEFAULT_DRAIN_TIMEOUT,
            "When stopped (SIGTERM), stop listening, send every session GOAWAY,"
            " let open channels finish for up to this many seconds, then abort"
            " the sessions left; 0: abort them at once.",
            _seconds("drain-timeout", "at once"),
        ],
        [
            "status",
            None,
            None,
            "Serve a status site on this server endpoint: /metrics (Prometheus;"
            " needs memux[metrics]) and /sessions (JSON), read by 'memux stat'."
            " Loopback or UNIX socket only, e.g. tcp:9400:interface=127.0.0.1"
            " or unix:/run/memux/status.sock [default: off].",
        ],
        [
            "tls-cert",
            None,
            None,
            "Serve TLS on every --listen endpoint with the certificate in this "
            "PEM file (then any intermediate certificates, and the key unless "
            "--tls-key is given).",
        ],
        [
            "tls-key",
            None,
            None,
            "PEM file holding the private key of --tls-cert "
            "[default: the --tls-cert file].",
        ],
        [
            "tls-ca",
            None,
            None,
            "Require client certificates signed by a CA certificate in this "
            "PEM file (mutual TLS).",
        ],
    ]

    compData = usage.Completions(
        optActions={
            "tls-cert": usage.CompleteFiles("*.pem"),
            "tls-key": usage.CompleteFiles("*.pem"),
            "tls-ca": usage.CompleteFiles("*.pem"),
        }
    )

    def __init__(self) -> None:
        # Not super(): mypy's untyped_calls_exclude does not see through it.
        usage.Options.__init__(self)
        self["listen"] = []
        #: (name, client endpoint description) for each --service
        self["service"] = []
        #: (name, dotted name, factory) for each --factory
        self["factory"] = []
        #: a DestinationPattern for each --allow-connect
        self["allow-connect"] = []
        for option in _SETTINGS:
            self[option] = None
        self["max-channel-credit"] = None
        #: made by postOptions: the SessionSettings (None: the defaults) and
        #: the TLS options (None: no TLS)
        self["settings"] = None
        self["tls"] = None

    def opt_version(self) -> None:
        """
        Display memux's version (and Twisted's, Python's and whether its core
        is compiled) and exit.
        """
        from twisted import __version__ as twistedVersion

        print(
            f"memux {__version__} (Twisted {twistedVersion},"
            f" Python {platform.python_version()},"
            f" {'compiled' if compiled else 'pure-Python'} core)"
        )
        sys.exit(0)

    @_oneLine
    def opt_listen(self, description: str) -> None:
        """
        Listen on this server endpoint, e.g. tcp:7400, unix:/run/memux.sock
        (repeatable) [default: tcp:7400].
        """
        self["listen"].append(description)

    opt_l = opt_listen

    @_oneLine
    def opt_service(self, value: str) -> None:
        """
        NAME=ENDPOINT: forward each channel for service NAME to a new
        connection to client endpoint ENDPOINT, e.g. db=tcp:db.internal:5432
        (repeatable).
        """
        name, description = _mount("--service", value)
        try:
            clientFromString(_globalReactor(), description)
        except Exception as e:
            raise usage.UsageError(
                f"--service {value}: {description!r} is not a client endpoint"
                f" (such as tcp:HOST:PORT): {_describeError(e)}"
            ) from e
        self["service"].append((name, description))

    @_oneLine
    def opt_factory(self, value: str) -> None:
        """
        NAME=MODULE.ATTRIBUTE: serve service NAME with a Python protocol
        factory: an IProtocolFactory, a protocol class, or a callable taking
        no arguments that returns an IProtocolFactory (repeatable).
        """
        name, dotted = _mount("--factory", value)
        self["factory"].append((name, dotted, _loadFactory(value, dotted)))

    @_oneLine
    def opt_allow_connect(self, pattern: str) -> None:
        """
        HOST:PORT: forward channels that name a destination matching this
        pattern, e.g. '*.internal:5432', '127.0.0.1:*', '127.0.0.0/8:443',
        '[::1]:8000-8099' (repeatable; matched on the host as requested, no
        DNS). Without it, every destination is refused.
        """
        try:
            self["allow-connect"].append(DestinationPattern.parse(pattern))
        except ValueError as e:
            raise usage.UsageError(f"--allow-connect {pattern!r}: {e}") from None

    opt_max_frame_size = _settingOption("max-frame-size")
    opt_channel_credit = _settingOption("channel-credit")
    opt_session_credit = _settingOption("session-credit")
    opt_max_channels = _settingOption("max-channels")
    opt_max_message_size = _settingOption("max-message-size")
    opt_chunk_size = _settingOption("chunk-size")

    @_oneLine
    def opt_max_channel_credit(self, value: str) -> None:
        """
        The largest a busy channel's window grows to (window auto-tuning),
        between --channel-credit (no auto-tuning) and --session-credit
        [default: half of --session-credit, at most 16M].
        """
        # Checked against --channel-credit and --session-credit once all
        # are known, in postOptions.
        self["max-channel-credit"] = _checkRange("max-channel-credit", value)

    def parseOptions(self, options: Sequence[str] | None = None) -> None:
        """
        Parse ``options``.  A mistake raises
        `~twisted.python.usage.UsageError`; but run as
        the subcommand of ``twistd`` (or ``twist``), it is one line on
        standard error, ``twistd memux: error: ...``, and exit status 2,
        rather than ``twistd``'s usage text, which buries it.
        """
        try:
            usage.Options.parseOptions(self, options)
        except usage.UsageError as e:
            parent = getattr(self, "parent", None)
            if parent is None:
                raise
            command = _commandName(parent)
            hint = f" ({command} --help lists them)" if "recognized" in str(e) else ""
            sys.stderr.write(f"{command}: error: {e}{hint}\n")
            sys.stderr.flush()
            raise SystemExit(2) from None

    def postOptions(self) -> None:
        """
        Apply the default endpoint, check every endpoint description and
        that service names are not mounted twice, and load the TLS
        certificates, so mistakes are reported before anything starts.
        """
        if not self["listen"]:
            self["listen"] = [DEFAULT_LISTEN]
        reactor = _globalReactor()
        for description in self["listen"]:
            try:
                serverFromString(reactor, description)
            except Exception as e:
                raise usage.UsageError(
                    f"--listen {description!r} is not a server endpoint (such as"
                    f" tcp:7400 or unix:/run/memux.sock): {_describeError(e)}"
                ) from e
        status = self["status"]
        if status is not None:
            try:
                serverFromString(reactor, status)
            except Exception as e:
                raise usage.UsageError(
                    f"--status {status!r} is not a server endpoint (such as"
                    f" tcp:9400:interface=127.0.0.1 or unix:/run/memux/status.sock):"
                    f" {_describeError(e)}"
                ) from e
        mounted: dict[bytes, str] = {}
        for option, entries in (("--service", "service"), ("--factory", "factory")):
            for name, target, *_ in self[entries]:
                here = f"{option} {name.decode()}={target}"
                if name in mounted:
                    raise usage.UsageError(
                        f"service {name.decode()!r} is mounted twice:"
                        f" {mounted[name]} and {here}"
                    )
                mounted[name] = here
        given: dict[str, Any] = {
            attribute: self[option]
            for option, (attribute, _) in _SETTINGS.items()
            if self[option] is not None
        }
        # (Each number of seconds was checked as it was parsed.)
        for option, attribute in (
            ("idle-timeout", "idleTimeout"),
            ("keepalive", "keepAliveInterval"),
            ("write-timeout", "writeTimeout"),
            ("handshake-timeout", "handshakeTimeout"),
        ):
            given[attribute] = self[option] or None
        if self["ignore-priority-hints"]:
            given["acceptPriorityHints"] = False
        limit = self["max-channel-credit"]
        if limit is not None:
            low = given.get("channelCredit", _DEFAULTS.channelCredit)
            high = given.get("sessionCredit", _DEFAULTS.sessionCredit)
            if not low <= limit <= high:
                raise usage.UsageError(
                    f"--max-channel-credit must be between --channel-credit"
                    f" ({low}) and --session-credit ({high}), not {limit}"
                )
            given["maxChannelCredit"] = limit
        try:
            self["settings"] = SessionSettings(**given)
        except ValueError as e:
            raise usage.UsageError(f"session settings: {e}") from e
        self["tls"] = self._tlsOptions()

    def _tlsOptions(self) -> IOpenSSLServerConnectionCreator | None:
        cert, key, ca = self["tls-cert"], self["tls-key"], self["tls-ca"]
        if cert is None:
            for option, value in (("--tls-key", key), ("--tls-ca", ca)):
                if value is not None:
                    raise usage.UsageError(f"{option} needs --tls-cert")
            return None
        for description in self["listen"]:
            if description.split(":", 1)[0].strip().lower() == "ssl":
                raise usage.UsageError(
                    f"--listen {description!r} already speaks TLS; with"
                    f" --tls-cert, listen with tcp: (or unix:) instead"
                )
        for option, path in (
            ("--tls-cert", cert),
            ("--tls-key", key),
            ("--tls-ca", ca),
        ):
            if path is not None:
                try:
                    with open(path, "rb"):
                        pass
                except OSError as e:
                    raise usage.UsageError(
                        f"{option} {path}: cannot read it: {e.strerror or e}"
                    ) from e
        from memux.tls import TLSConfigurationError, serverTLSOptions

        try:
            return serverTLSOptions(cert, key, ca)
        except TLSConfigurationError as e:
            raise usage.UsageError(f"TLS: {e}") from e


def _commandName(parent: object) -> str:
    """
    How the command running these options is called, for its messages.
    """
    from twisted.application.app import ServerOptions

    if isinstance(parent, ServerOptions):
        return "twistd memux"
    if type(parent).__name__ == "TwistOptions":
        return "twist memux"
    return "memux"


def _describeError(e: BaseException) -> str:
    """
    Why an endpoint description does not parse, in words: Twisted says a
    missing or extra field with a ``TypeError`` about arguments.
    """
    text = str(e)
    if isinstance(e, TypeError) and "argument" in text:
        return "missing or unexpected fields"
    return text or type(e).__name__


def _mount(option: str, value: str) -> tuple[bytes, str]:
    """
    Split ``NAME=TARGET``; the name, as bytes, may be empty (the default
    service).
    """
    name, sep, target = value.partition("=")
    if not sep or not target:
        raise usage.UsageError(f"{option} takes NAME=..., not {value!r}")
    encoded = name.encode("utf-8")
    if len(encoded) > MAX_NAME_LENGTH:
        raise usage.UsageError(
            f"{option} {value}: a service name is at most {MAX_NAME_LENGTH} bytes"
        )
    return encoded, target


def _loadFactory(value: str, dotted: str) -> IProtocolFactory:
    """
    The protocol factory ``dotted`` names: an
    `~twisted.internet.interfaces.IProtocolFactory` itself, a class of
    `~twisted.internet.interfaces.IProtocol` (served with
    `~twisted.internet.protocol.Factory.forProtocol`), or a callable taking
    no arguments that returns an
    `~twisted.internet.interfaces.IProtocolFactory`.
    """
    try:
        found = namedAny(dotted)
    except Exception as e:
        raise usage.UsageError(
            f"--factory {value}: cannot import {dotted!r}: {e}"
        ) from e
    if IProtocolFactory.providedBy(found):
        return found
    if isinstance(found, type) and IProtocol.implementedBy(found):
        return Factory.forProtocol(cast("type[Protocol]", found))
    if callable(found):
        try:
            made = found()
        except Exception as e:
            raise usage.UsageError(
                f"--factory {value}: calling {dotted}() failed: {e!r}"
            ) from e
        if IProtocolFactory.providedBy(made):
            return made
        raise usage.UsageError(
            f"--factory {value}: {dotted}() returned {made!r}, which is not"
            f" an IProtocolFactory"
        )
    raise usage.UsageError(
        f"--factory {value}: {dotted} is {found!r}: expected an"
        f" IProtocolFactory, a protocol class, or a callable returning a factory"
    )
