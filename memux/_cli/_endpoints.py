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
from memux.tls import (
    TLSConfigurationError,
    _parseTLSDescription,
    clientEndpointFromString,
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
    The TLS options given for REMOTE (L{None}: not given).

    @ivar ca: ``--ca``: a PEM file of the CA certificates to trust instead
        of the system's.
    @ivar cert: ``--cert``: a PEM file of the client certificate (and its
        key, unless C{key} is given).
    @ivar key: ``--key``: a PEM file of the client certificate's key.
    @ivar servername: ``--servername``: the name to ask for (SNI) and to
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
    Quote C{text} for use as one field of an endpoint string.
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
    C{tls}.

    @raise UsageError: if it is neither, or C{tls} does not fit it.
    @raise TLSFileError: if a file C{tls} or a ``tls:`` REMOTE names
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
    Check that the TLS options C{tls} can apply to REMOTE C{text}.

    @raise UsageError: if they cannot.
    """
    try:
        parsed = _parseTLSDescription(text)
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


def parseLocal(reactor: IReactorCore, text: str) -> tuple[IStreamServerEndpoint, str]:
    """
    Make the server endpoint that LOCAL_ENDPOINT names, and return it with
    the endpoint string it was made from.

    LOCAL_ENDPOINT is a Twisted server endpoint string (``tcp:8080``,
    ``tcp:8080:interface=127.0.0.1``, ``unix:/tmp/s``, ...), or for
    convenience, as with ``ssh -L``, a bare ``PORT`` (TCP on 127.0.0.1 only)
    or ``ADDRESS:PORT`` (TCP on that interface: an IP address, ``[IPV6]``
    or ``localhost``).

    @raise UsageError: if it is neither.
    """
    bare = re.match(r"^(?:(?P<host>[^:\s]+|\[[^\]]+\]):)?(?P<port>\d+)$", text)
    if bare is not None and _isInterface(bare["host"]):
        host = (bare["host"] or "127.0.0.1").strip("[]")
        port = _checkPort(bare["port"], f"LOCAL_ENDPOINT {text!r}")
        description = f"tcp:{port}:interface={_escape(host)}"
    else:
        description = text
    try:
        return serverFromString(reactor, description), description
    except Exception as e:
        raise UsageError(
            f"LOCAL_ENDPOINT {text!r} is not a server endpoint"
            f" (such as tcp:8080:interface=127.0.0.1, or 8080): {_describeError(e)}"
        ) from e


def _isInterface(host: str | None) -> bool:
    """
    Whether C{host}, from a bare LOCAL_ENDPOINT, names an interface to
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
