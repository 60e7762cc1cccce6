# -*- test-case-name: memux.test.test_cli -*-
"""
REMOTE and LOCAL_ENDPOINT: Twisted endpoint strings, or the bare
``HOST:PORT`` and ``PORT`` forms for convenience; and the TLS options of a
``tls:`` REMOTE.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, fields

from twisted.internet.endpoints import clientFromString, serverFromString
from twisted.internet.interfaces import (
    IReactorCore,
    IStreamClientEndpoint,
    IStreamServerEndpoint,
)

from memux._cli._common import UsageError
from memux._cli._diagnose import TLSTarget
from memux.tls import (
    TLSConfigurationError,
    clientEndpointFromString,
    parseTLSDescription,
)

#: the TCP port a bare REMOTE host (no port) means: ``twistd memux``'s default
DEFAULT_PORT = 7400


#: ``[v6address]:port``
_BRACKETED = re.compile(r"^\[(?P<host>[^\]]+)\](?::(?P<port>\d+))?$")
#: ``host:port``, ``host``
_BARE = re.compile(r"^(?P<host>[^:\[\]\s]+)(?::(?P<port>\d+))?$")
#: endpoint types whose name must never be read as a host name
_ENDPOINT_WORDS = frozenset({"tcp", "tcp6", "tls", "ssl", "unix", "memux", "mptcp"})


@dataclass(frozen=True)
class ClientTLS:
    """
    The TLS options given for REMOTE (``None``: not given).

    :ivar ca: ``--ca``: a PEM file of the CA certificates to trust instead
        of the system's.
    :ivar cert: ``--cert``: a PEM file of the client certificate (and its
        key, unless ``key`` is given).
    :ivar key: ``--key``: a PEM file of the client certificate's key.
    :ivar servername: ``--servername``: the name to ask for (SNI) and to
        check the server's certificate against, instead of REMOTE's host.
    """

    ca: str | None = None
    cert: str | None = None
    key: str | None = None
    servername: str | None = None

    def given(self) -> list[str]:
        """
        The options given, as written on the command line.
        """
        return [
            f"--{f.name}" for f in fields(self) if getattr(self, f.name) is not None
        ]


class TLSFileError(UsageError):
    """
    A certificate, key or CA file cannot be used; the message names it.
    The arguments are well formed, so the usage is not shown with it.
    """


def _escape(text: str) -> str:
    """
    Quote ``text`` for use as one field of an endpoint string.
    """
    return text.replace("\\", "\\\\").replace(":", "\\:").replace("=", "\\=")


def _checkPort(port: str, what: str) -> int:
    number = int(port)
    if not 0 <= number <= 65535:
        raise UsageError(f"{what}: port {number} is out of range (0-65535)")
    return number


def parseRemote(
    reactor: IReactorCore, text: str, tls: ClientTLS | None = None
) -> tuple[IStreamClientEndpoint, str]:
    """
    Make the client endpoint that REMOTE names, and return it with a name
    for it in messages (the endpoint string, or ``tcp:`` and the bare form).

    REMOTE is a Twisted client endpoint string (``tcp:HOST:PORT``,
    ``tls:HOST:PORT``, ``unix:PATH``, ...), or for convenience a bare
    ``HOST:PORT``, ``[IPV6]:PORT`` or ``HOST`` (TCP, port 7400).  A
    ``tls:`` REMOTE offers ALPN ``memux/1``, and takes the options in
    ``tls``.

    :raises UsageError: if it is neither, or ``tls`` does not fit it.
    :raises TLSFileError: if a file ``tls`` or a ``tls:`` REMOTE names
        cannot be loaded.
    """
    tls = tls or ClientTLS()
    if tls.given():
        _checkTLS(text, tls)
    bracketed = _BRACKETED.match(text)
    if bracketed is not None:
        host, port = bracketed["host"], bracketed["port"]
        shown = f"[{host}]"
    else:
        host, port = None, None
        try:
            endpoint = clientEndpointFromString(
                reactor,
                text,
                trustRoot=tls.ca,
                clientCertificate=tls.cert,
                clientKey=tls.key,
                hostname=tls.servername,
            )
            return endpoint, text
        except TLSConfigurationError as e:
            raise TLSFileError(str(e)) from e
        except Exception as e:
            bare = _BARE.match(text)
            if bare is None or bare["host"].lower() in _ENDPOINT_WORDS:
                raise UsageError(
                    f"REMOTE {text!r} is not a client endpoint"
                    f" (such as tcp:HOST:PORT, or HOST:PORT): {_describeError(e)}"
                ) from e
            host, port = bare["host"], bare["port"]
            shown = host
    assert host is not None
    number = DEFAULT_PORT if port is None else _checkPort(port, f"REMOTE {text!r}")
    endpoint = clientFromString(reactor, f"tcp:{_escape(host)}:{number}")
    return endpoint, f"tcp:{shown}:{number}"


def _checkTLS(text: str, tls: ClientTLS) -> None:
    """
    Check that the TLS options ``tls`` can apply to REMOTE ``text``.

    :raises UsageError: if they cannot.
    """
    try:
        parsed = parseTLSDescription(text)
        malformed = False
    except Exception:
        # A tls: REMOTE, malformed: parseRemote says how.
        parsed, malformed = None, True
    if parsed is None and not malformed:
        options = ", ".join(tls.given())
        verb = "applies" if len(tls.given()) == 1 else "apply"
        raise UsageError(
            f"{options} {verb} only to a tls: REMOTE, and {text!r} is not one"
            " (for TLS to HOST:PORT, write tls:HOST:PORT)"
        )
    if tls.key is not None and tls.cert is None:
        raise UsageError("--key needs --cert (the certificate it is the key of)")
    if parsed is None:
        return
    for option, keyword, value in (
        ("--ca", "trustRoots", parsed.trustRoots),
        ("--cert", "certificate", parsed.certificate),
        ("--cert", "privateKey", parsed.privateKey),
    ):
        if value is not None and getattr(tls, option[2:]) is not None:
            raise UsageError(
                f"{option} and REMOTE's {keyword}= say the same thing: give one"
            )


def parseLocal(
    reactor: IReactorCore,
    text: str,
    backlog: int | None = None,
    *,
    explicit: bool = False,
) -> tuple[IStreamServerEndpoint, str]:
    """
    Make the server endpoint that LOCAL_ENDPOINT names, and return it with
    the endpoint string it was made from.

    LOCAL_ENDPOINT is a Twisted server endpoint string (``tcp:8080``,
    ``tcp:8080:interface=127.0.0.1``, ``unix:/tmp/s``, ...), or for
    convenience, as with ``ssh -L``, a bare ``PORT`` (TCP on 127.0.0.1 only)
    or ``ADDRESS:PORT`` (TCP on that interface: an IP address, ``[IPV6]``
    or ``localhost``).

    ``backlog``, if given, is the listen backlog, for the endpoint types
    that take one, unless LOCAL_ENDPOINT gives its own ``backlog=``.

    :param explicit: ``backlog`` was asked for (``--backlog``): an endpoint
        that cannot take it, or gives its own, is an error.

    :raises UsageError: if LOCAL_ENDPOINT is neither, or (``explicit``) it
        cannot take ``backlog``.
    """
    bare = re.match(r"^(?:(?P<host>[^:\s]+|\[[^\]]+\]):)?(?P<port>\d+)$", text)
    if bare is not None and _isInterface(bare["host"]):
        host = (bare["host"] or "127.0.0.1").strip("[]")
        port = _checkPort(bare["port"], f"LOCAL_ENDPOINT {text!r}")
        description = f"tcp:{port}:interface={_escape(host)}"
    else:
        description = text
    try:
        endpoint = serverFromString(reactor, description)
    except Exception as e:
        raise UsageError(
            f"LOCAL_ENDPOINT {text!r} is not a server endpoint"
            f" (such as tcp:8080:interface=127.0.0.1, or 8080): {_describeError(e)}"
        ) from e
    if backlog is None:
        return endpoint, description
    withBacklog = _withBacklog(description, backlog, explicit)
    if withBacklog == description:
        return endpoint, description
    return serverFromString(reactor, withBacklog), withBacklog


#: the types of server endpoint strings that take ``backlog=``
_BACKLOG_TYPES = ("tcp", "tcp6", "ssl", "unix", "mptcp")
#: a ``backlog=`` field (fields are separated by colons not escaped)
_BACKLOG_FIELD = re.compile(r"(?:^|(?<!\\):)backlog=")


def _withBacklog(description: str, backlog: int, explicit: bool) -> str:
    """
    Server endpoint string ``description`` with the listen backlog
    ``backlog``, where it can take one and gives none itself.

    :raises UsageError: if ``explicit`` and it cannot take one, or gives one.
    """
    if _BACKLOG_FIELD.search(description):
        if explicit:
            raise UsageError(
                "--backlog and LOCAL_ENDPOINT's backlog= say the same thing: give one"
            )
        return description
    kind = description.split(":", 1)[0].lower()
    if kind not in _BACKLOG_TYPES:
        if explicit:
            kinds = ", ".join(f"{k}:" for k in _BACKLOG_TYPES)
            raise UsageError(
                f"--backlog applies only to a LOCAL_ENDPOINT of type {kinds},"
                f" not {kind}:"
            )
        return description
    return f"{description}:backlog={backlog}"


def tlsTarget(text: str, tls: ClientTLS | None = None) -> TLSTarget | None:
    """
    What REMOTE ``text``, with the TLS options ``tls``, checks and presents,
    if it is a ``tls:`` one (for messages).
    """
    try:
        parsed = parseTLSDescription(text)
    except Exception:
        return None
    if parsed is None:
        return None
    tls = tls or ClientTLS()
    if parsed.endpoint is not None:
        plain = None
    elif ":" in parsed.host:
        plain = f"[{parsed.host}]:{parsed.port}"
    else:
        plain = f"tcp:{parsed.host}:{parsed.port}"
    return TLSTarget(
        hostname=tls.servername or parsed.host,
        ca=tls.ca or parsed.trustRoots,
        cert=tls.cert or parsed.certificate,
        plain=plain,
    )


def _isInterface(host: str | None) -> bool:
    """
    Whether ``host``, from a bare LOCAL_ENDPOINT, names an interface to
    listen on (absent means the default).
    """
    if host is None or host.lower() == "localhost":
        return True
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


def _describeError(e: BaseException) -> str:
    text = str(e)
    if isinstance(e, TypeError) and "argument" in text:
        return "missing or unexpected fields"
    return text or type(e).__name__
