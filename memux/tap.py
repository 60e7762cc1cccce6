# -*- test-case-name: memux.test.test_tap,memux.test.test_server -*-
"""
Support for ``twistd memux``: a memux server listening on one or more
endpoints, serving the built-in services, forwarding services, Python
factories and (only where allowed) channels that name their own
destination, optionally over TLS.

Importing this module installs no reactor; `Options` checks everything it
can while parsing, so mistakes are reported before anything starts.
"""

from __future__ import annotations

import errno
import ipaddress
import math
import platform
import re
import socket
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import IO, Any, Literal, TypeVar, cast

from twisted.application import strports
from twisted.application.internet import TimerService
from twisted.application.service import MultiService
from twisted.internet.defer import Deferred, fail, gatherResults
from twisted.internet.endpoints import (
    HostnameEndpoint,
    clientFromString,
    serverFromString,
)
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import (
    IListeningPort,
    IOpenSSLServerConnectionCreator,
    IProtocol,
    IProtocolFactory,
    IReactorCore,
    IReactorTime,
    IStreamServerEndpoint,
)
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import (
    FileLogObserver,
    ILogObserver,
    LogEvent,
    Logger,
    eventAsJSON,
)
from twisted.python import usage
from twisted.python.failure import Failure
from twisted.python.reflect import namedAny
from zope.interface import implementer

from memux import __version__
from memux.error import ChannelRefused
from memux.memory import trimHeap
from memux.protocol import ChannelRequest, MultiplexingFactory, _addressText
from memux.services import builtinServices
from memux.settings import MAX_NAME_LENGTH, SessionSettings, Settings
from memux.tunnel import forwardTo

__all__ = [
    "DEFAULT_DRAIN_TIMEOUT",
    "DEFAULT_LISTEN",
    "DestinationPattern",
    "MemuxServer",
    "Options",
    "ServerServices",
    "StartupError",
    "classifyHost",
    "jsonLogger",
    "makeService",
]

_log = Logger()

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
        "Unconsumed bytes held per channel: each channel's window, which caps"
        " its throughput at this much per round trip.",
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
}


def _settingOption(option: str) -> Any:
    """
    An ``opt_`` method for a session setting, with the default in its help.
    """
    attribute, help = _SETTINGS[option]

    def opt(self: Options, value: str) -> None:
        size = _checkRange(option, value)
        try:
            SessionSettings(**{attribute: size})
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
        #: made by postOptions: the SessionSettings (None: the defaults) and
        #: the TLS options (None: no TLS)
        self["settings"] = None
        self["tls"] = None

    def opt_version(self) -> None:
        """
        Display memux's version (and Twisted's and Python's) and exit.
        """
        from twisted import __version__ as twistedVersion

        print(
            f"memux {__version__} (Twisted {twistedVersion},"
            f" Python {platform.python_version()})"
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


# ---------------------------------------------------------------- destinations

_LABEL = r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?"
_HOSTNAME = re.compile(rf"{_LABEL}(?:\.{_LABEL})*")
_WILDCARDS = set("*?[]!")
_IPV4_PATTERN = set("0123456789.-") | _WILDCARDS
_NAME_PATTERN = set("abcdefghijklmnopqrstuvwxyz0123456789._-") | _WILDCARDS

HostKind = Literal["name", "ipv4", "ipv6"]


def classifyHost(host: str) -> tuple[HostKind, str]:
    """
    What a requested destination host is, in the form patterns match: an IP
    address in its canonical text, or a DNS name in lower case without a
    final dot.  Nothing is resolved.

    :raises ValueError: if ``host`` is neither a host name nor an IP address
        in standard notation (so that no pattern can be sidestepped by an
        address spelt as a name, such as ``0x7f000001`` or ``127.1``).
    """
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        pass
    else:
        return ("ipv4" if address.version == 4 else "ipv6"), str(address)
    name = host.lower()
    if name.endswith("."):
        name = name[:-1]
    if len(name) > 253 or not _HOSTNAME.fullmatch(name):
        raise ValueError("not a host name or IP address")
    if name.rsplit(".", 1)[-1].isdigit() or _isNumeric(name):
        raise ValueError("an IP address must be in standard dotted-decimal form")
    return "name", name


def _isNumeric(name: str) -> bool:
    # inet_aton also takes hex, octal and short forms: 0x7f000001, 0177.1
    try:
        socket.inet_aton(name)
    except (OSError, ValueError):
        return False
    return True


def _showDestination(host: str, port: int) -> str:
    shown = host if host.isprintable() else repr(host)
    return f"[{shown}]:{port}" if ":" in host else f"{shown}:{port}"


@dataclass(frozen=True)
class DestinationPattern:
    """
    One ``--allow-connect`` pattern, ``HOST:PORT``.

    ``HOST`` is ``*`` (any host), a DNS name pattern (``*.internal``), an IPv4
    pattern made of digits, dots and wildcards (``10.1.*``), an IPv6
    pattern in brackets (``[fd00::*]``) or an IP network (``10.0.0.0/8``,
    ``[fd00::/8]``).  Wildcards are fnmatch's (``*``, ``?``, ``[seq]``);
    matching is case-insensitive, on the host as requested, with no DNS.
    A name pattern matches only names and an IP pattern only addresses, so
    ``10.*`` does not match ``10.example.com``.  ``PORT`` is ``*``, a port or a
    range ``LOW-HIGH``.
    """

    text: str
    kind: Literal["any", "name", "ipv4", "ipv6", "network"]
    host: str
    ports: tuple[int, int]
    network: ipaddress.IPv4Network | ipaddress.IPv6Network | None = None

    @classmethod
    def parse(cls, text: str) -> DestinationPattern:
        """
        Parse ``HOST:PORT``.

        :raises ValueError: if ``text`` is not a valid pattern.
        """
        host, sep, port = text.strip().rpartition(":")
        if not sep or not host or not port:
            raise ValueError("expected HOST:PORT, e.g. '*.internal:5432'")
        ports = _parsePorts(port)
        host = host.lower()
        bracketed = host.startswith("[") and host.endswith("]") and ":" in host
        if bracketed:
            host = host[1:-1]
        elif ":" in host:
            raise ValueError("write IPv6 addresses in brackets, e.g. '[::1]:22'")
        if "/" in host:
            try:
                network = ipaddress.ip_network(host, strict=False)
            except ValueError as e:
                raise ValueError(f"bad network {host!r}: {e}") from None
            return cls(text, "network", str(network), ports, network)
        if set(host) == {"*"}:
            return cls(text, "any", "*", ports)
        wild = bool(_WILDCARDS & set(host))
        if bracketed:
            if not wild:
                host = _canonicalAddress(host, 6)
            return cls(text, "ipv6", host, ports)
        if set(host) <= _IPV4_PATTERN and any(c.isdigit() for c in host):
            if not wild:
                host = _canonicalAddress(host, 4)
            return cls(text, "ipv4", host, ports)
        if not set(host) <= _NAME_PATTERN:
            raise ValueError(f"{host!r} is not a host name pattern")
        return cls(text, "name", host.rstrip("."), ports)

    def matches(self, kind: HostKind, host: str, port: int) -> bool:
        """
        Whether this pattern allows port ``port`` of ``host``, of ``kind``, as
        `classifyHost` returns them.
        """
        low, high = self.ports
        if not low <= port <= high:
            return False
        if self.kind == "any":
            return True
        if self.kind == "network":
            assert self.network is not None
            return kind != "name" and ipaddress.ip_address(host) in self.network
        return kind == self.kind and fnmatchcase(host, self.host)


def _parsePorts(text: str) -> tuple[int, int]:
    if text == "*":
        return (1, 65535)
    low, dash, high = text.partition("-")
    try:
        ports = (int(low), int(high) if dash else int(low))
    except ValueError:
        raise ValueError(
            f"the port must be '*', a number or a range LOW-HIGH, not {text!r}"
        ) from None
    if not 1 <= ports[0] <= ports[1] <= 65535:
        raise ValueError(f"bad port range {text!r} (ports are 1 to 65535)")
    return ports


def _canonicalAddress(text: str, version: int) -> str:
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        address = None
    if address is None or address.version != version:
        raise ValueError(f"{text!r} is not an IPv{version} address")
    return str(address)


class ServerServices:
    """
    The services of a ``twistd memux`` server, as a services callable for
    `MultiplexingFactory`.

    A channel that names a destination is forwarded to it if an
    ``allowConnect`` pattern allows it and refused (`ChannelRefused`, the
    reason naming the destination) otherwise; it is never given to a named
    service, whatever its service name.  Any other channel gets the factory
    mounted under its service name, or is refused.

    :ivar services: service name to factory.
    :ivar allowConnect: the patterns of destinations allowed.
    """

    def __init__(
        self,
        services: Mapping[bytes, IProtocolFactory],
        allowConnect: Sequence[DestinationPattern] = (),
        reactor: Any = None,
    ) -> None:
        self.services = dict(services)
        self.allowConnect = list(allowConnect)
        self._reactor = reactor

    def __call__(self, request: ChannelRequest) -> IProtocolFactory | None:
        """
        The factory for the channel ``request`` asks for, or ``None``.

        :raises ChannelRefused: if it names a destination not allowed.
        """
        if request.destination is None:
            return self.services.get(request.service)
        host, port = request.destination
        shown = _showDestination(host, port)
        try:
            kind, normalised = classifyHost(host)
        except ValueError as e:
            raise ChannelRefused(f"destination {shown} refused: {e}") from None
        if not self.allowConnect:
            raise ChannelRefused(
                f"destination {shown} not allowed: this server forwards to no"
                f" destination"
            )
        if not any(p.matches(kind, normalised, port) for p in self.allowConnect):
            raise ChannelRefused(f"destination {shown} not allowed")
        _log.info(
            "Forwarding channel {channel} from {peer} to {destination}",
            channel=request.channel,
            peer=_peerOf(request),
            destination=shown,
        )
        return forwardTo(HostnameEndpoint(self._reactorFor(), host, port), shown)

    def _reactorFor(self) -> Any:
        return self._reactor if self._reactor is not None else _globalReactor()


def _peerOf(request: ChannelRequest) -> str:
    transport = request.session.transport
    return _addressText(transport.getPeer() if transport is not None else None)


# ---------------------------------------------------------------- the service


class MemuxServer(MultiService):
    """
    The ``twistd memux`` service: one child per ``--listen`` endpoint, all
    serving the same sessions.  It logs what it serves when it starts.

    :ivar factory: the `MultiplexingFactory` of the sessions.
    :ivar resolver: its services callable.
    :ivar mounts: each service name, with what serves it, for the log.
    :ivar tls: the TLS options when serving TLS, else ``None``.
    :ivar drainTimeout: seconds sessions may take to finish their channels
        when the service stops, before they are aborted.
    """

    def __init__(
        self,
        factory: MultiplexingFactory,
        resolver: ServerServices,
        mounts: Mapping[bytes, str],
        tls: IOpenSSLServerConnectionCreator | None = None,
        tlsDescription: str = "",
        drainTimeout: float = DEFAULT_DRAIN_TIMEOUT,
    ) -> None:
        MultiService.__init__(self)
        self.factory = factory
        self.resolver = resolver
        self.mounts = dict(mounts)
        self.tls = tls
        self.drainTimeout = drainTimeout
        self._tlsDescription = tlsDescription
        self._announced = False
        # Gives memory back once load has dropped (see TRIM_INTERVAL);
        # started and stopped with this service, but not a child of it (its
        # children are the listening endpoints).
        self.trimmer = TimerService(TRIM_INTERVAL, self.trimIfLoadDropped)

    def trimIfLoadDropped(self) -> bool:
        """
        If the sessions connected have fallen to half their peak since the
        last look (or to none), give the memory the burst freed back to the
        system (`memux.memory.trimHeap`); return whether it did.
        """
        factory = self.factory
        now = len(factory.connectedSessions())
        peak, factory.peakSessions = factory.peakSessions, now
        if peak == 0 or now > peak // 2:
            factory.peakSessions = max(peak, now)
            return False
        return trimHeap()

    def privilegedStartService(self) -> None:
        """
        Log what is served, then listen.
        """
        self._announce()
        MultiService.privilegedStartService(self)

    def startService(self) -> None:
        """
        Log what is served (unless done already), then start listening.
        """
        self._announce()
        MultiService.startService(self)
        self.trimmer.startService()

    def stopService(self) -> Deferred[None]:
        """
        Stop listening and drain the sessions: each is sent GOAWAY, so its
        peer opens no more channels (and may retry elsewhere those it
        opened meanwhile); open channels may finish; sessions still open
        after ``drainTimeout`` are aborted.  Fires once listening has
        stopped and every session has closed.
        """
        listening = MultiService.stopService(self)
        if self.trimmer.running:
            self.trimmer.stopService()
        sessions = len(self.factory.connectedSessions())
        if sessions:
            _log.info(
                "memux stopping: GOAWAY to {count} session(s); any still open in"
                " {timeout:g} s will be aborted",
                count=sessions,
                timeout=self.drainTimeout,
            )
        drained = self.factory.drain(self.drainTimeout)
        return gatherResults([listening, drained]).addCallback(lambda _: None)

    def _announce(self) -> None:
        if self._announced:
            return
        self._announced = True
        _log.info(
            "memux {version} serving on {endpoints}",
            version=__version__,
            endpoints=", ".join(
                child.endpoint.description
                for child in self
                if isinstance(getattr(child, "endpoint", None), _AnnouncingEndpoint)
            )
            or "nothing",
        )
        if not self.mounts:
            _log.info("memux serves no named service")
        for name, what in self.mounts.items():
            _log.info(
                "memux service {name}: {what}",
                name=name.decode("utf-8", "replace") or "(default)",
                what=what,
            )
        if self.resolver.allowConnect:
            _log.info(
                "memux forwards channels to destinations matching {patterns}",
                patterns=", ".join(p.text for p in self.resolver.allowConnect),
            )
        else:
            _log.info(
                "memux refuses every channel that names a destination"
                " (no --allow-connect)"
            )
        _log.info("memux TLS: {tls}", tls=self._tlsDescription or "off")


class StartupError(SystemExit, Exception):
    """
    ``twistd memux`` cannot start: it cannot listen where it was told to.

    The reason was logged, in one line.  A `SystemExit`, so that ``twistd``
    exits with status 1 and no traceback; an `Exception` too, so that
    ``twistd`` still removes its PID file and passes the reason to the
    shell that started a daemon (``An error has occurred: ...``).
    """

    def __init__(self, message: str) -> None:
        Exception.__init__(self, message)
        self.code = 1


@implementer(IStreamServerEndpoint)
class _AnnouncingEndpoint:
    """
    A server endpoint that logs where it listens once it does, or, in one
    line, why it cannot.

    :ivar port: the listening port, once listening.
    """

    def __init__(self, endpoint: IStreamServerEndpoint, description: str, tls: bool):
        self.endpoint = endpoint
        self.description = description
        self.tls = tls
        self.port: IListeningPort | None = None

    def listen(self, protocolFactory: IProtocolFactory) -> Deferred[IListeningPort]:
        """
        Listen with the wrapped endpoint, and log the address.  A failure
        to listen at once fails with `StartupError` (the listening service
        raises it, and ``twistd`` exits); a later one is only logged.
        """
        starting = True

        def failed(reason: Failure) -> Failure | None:
            why, hint = _whyNotListening(reason.value)
            _log.critical(
                "memux cannot listen on {description}: {why}",
                description=self.description,
                why=why + hint,
            )
            if starting:
                # (Short: a daemon's parent shows the first 100 bytes.)
                return Failure(
                    StartupError(f"cannot listen on {self.description}: {why}")
                )
            return None

        try:
            d = self.endpoint.listen(protocolFactory)
        except Exception:
            d = fail()
        d.addCallbacks(self._listening, failed)
        starting = False
        return d

    def _listening(self, port: IListeningPort) -> IListeningPort:
        self.port = port
        _log.info(
            "memux listening on {address} ({description}{tls})",
            address=_addressText(port.getHost()),
            description=self.description,
            tls=", TLS" if self.tls else "",
        )
        return port


def _whyNotListening(error: object) -> tuple[str, str]:
    """
    Why listening failed, in a few words, and a hint for the usual causes
    (or ``""``).
    """
    socketError = getattr(error, "socketError", None)
    if not (isinstance(error, CannotListenError) and isinstance(socketError, OSError)):
        if isinstance(error, OSError) and error.strerror:
            # (Such as a UNIX socket's lock file, in a missing directory.)
            path = error.filename2 or error.filename
            if isinstance(path, bytes):
                path = path.decode("utf-8", "replace")
            return f"{error.strerror}: {path}" if path else error.strerror, ""
        return str(error) or type(error).__name__, ""
    why = socketError.strerror or str(socketError)
    tcp = isinstance(error.port, int)
    if socketError.errno == errno.EADDRINUSE:
        if tcp:
            return why, " (another program listens on that port)"
        return why, " (another server uses that socket, or left it behind)"
    if socketError.errno == errno.EACCES and tcp and 0 < error.port < 1024:
        return why, " (ports below 1024 need root)"
    return why, ""


def jsonLogger(outFile: IO[str] | None = None) -> ILogObserver:
    """
    A log observer writing each event as JSON, for ``twistd -n
    --logger=memux.tap.jsonLogger memux``: records as
    `twisted.logger.jsonFileLogObserver` writes them (read them back with
    `twisted.logger.eventsFromJSONLogFile`), to ``outFile`` (standard
    output by default), without the objects Twisted adds to every event
    (``log_logger``, ``log_source``, and ``log_legacy`` when old-style
    observers are about), which JSON would only mark ``"unpersistable"``.
    """
    out = sys.stdout if outFile is None else outFile

    def record(event: LogEvent) -> str:
        kept = {
            key: value
            for key, value in event.items()
            if key not in ("log_logger", "log_source", "log_legacy")
        }
        if kept.get("format") == "%(log_legacy)s":
            del kept["format"]  # (it would name what was left out)
        return f"\x1e{eventAsJSON(kept)}\n"

    return FileLogObserver(out, record)


#: Seconds between looks at the load of a ``twistd memux`` server: after a
#: burst (sessions fallen to half their peak, or to none), the C library is
#: asked to give the freed memory back (glibc keeps it otherwise: a soak
#: left a server at 1 GiB resident with a Python heap back at 50 MiB).
TRIM_INTERVAL = 10.0


def makeService(options: Options, reactor: IReactorCore | None = None) -> MemuxServer:
    """
    Make the ``twistd memux`` service: one listening service per
    ``--listen`` endpoint, all serving the same memux sessions.

    :param options: parsed `Options`.
    :param reactor: the reactor to listen, connect and run sessions with;
        the global one if ``None``.
    """
    # The sessions and services keep to the reactor they are given; None
    # lets each use the global one when it needs it.
    clock = cast(IReactorTime, reactor) if reactor is not None else None
    if reactor is None:
        reactor = _globalReactor()
    services: dict[bytes, IProtocolFactory] = {}
    mounts: dict[bytes, str] = {}
    if not options["no-builtins"]:
        for name, factory in builtinServices(clock).items():
            services[name] = factory
            mounts[name] = f"built-in {name.decode()}"
    for name, description in options["service"]:
        services[name] = forwardTo(clientFromString(reactor, description), description)
        mounts[name] = f"forwarded to {description}"
    for name, dotted, factory in options["factory"]:
        services[name] = factory
        mounts[name] = f"Python factory {dotted}"
    resolver = ServerServices(services, options["allow-connect"], reactor)
    sessions = MultiplexingFactory(
        resolver, settings=options["settings"], reactor=clock
    )
    tls: IOpenSSLServerConnectionCreator | None = options["tls"]
    listening: IProtocolFactory = sessions
    if tls is not None:
        from memux.tls import tlsServerFactory

        listening = tlsServerFactory(sessions, tls)
    server = MemuxServer(
        sessions,
        resolver,
        mounts,
        tls,
        _describeTLS(options),
        options["drain-timeout"],
    )
    server.trimmer.clock = reactor
    for description in options["listen"]:
        # strports.service raises a failure to listen at startup, which
        # stops twistd (see StartupError).
        child = strports.service(description, listening, reactor=reactor)
        child.endpoint = _AnnouncingEndpoint(
            child.endpoint, description, tls is not None
        )
        child.setServiceParent(server)
    return server


def _describeTLS(options: Options) -> str:
    if options["tls"] is None:
        return ""
    text = f"certificate {options['tls-cert']}, ALPN memux/1"
    if options["tls-ca"] is not None:
        text += f", client certificates required (CA {options['tls-ca']})"
    return text


def _globalReactor() -> IReactorCore:
    # Imported late: importing this module must not install a reactor.
    from twisted.internet import reactor

    return cast(IReactorCore, reactor)
