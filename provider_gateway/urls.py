"""The one URL parser, and how URLs are shown (redacted) in logs, errors and outputs.

Every check of a URL (which provider it belongs to, where credentials may go)
and every fetch use the :class:`Url` that :func:`parse_url` returns, so the
host, port and scheme checked are the ones connected to. A URL that two
parsers could read differently (Python's ``urllib.parse`` and urllib3's
``parse_url``, which requests uses) is refused rather than guessed at.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit, urlunsplit

import urllib3.util
from urllib3.exceptions import LocationParseError

from provider_gateway.errors import InvalidRequest

DEFAULT_PORTS = {"http": 80, "https": 443, "ftp": 21, "ftps": 21, "sftp": 22, "gsiftp": 2811}
_PATH_SCHEMES = ("ftp", "ftps", "sftp", "gsiftp")  # the decoded path is sent inside a command
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_LABEL = r"[a-z0-9_](?:[a-z0-9_-]*[a-z0-9_])?"
_NAME = re.compile(rf"^{_LABEL}(?:\.{_LABEL})*\.?$")
_PORT = re.compile(r"^[1-9][0-9]{0,4}$")
_NUMERIC_LABEL = re.compile(r"^(?:0x[0-9a-f]*|[0-9]+)$")

_SECRET_NAMES = frozenset(
    {"key", "sig", "code", "pwd", "pass", "jwt", "ticket", "policy", "key-pair-id", "state", "nonce", "otp"}
)
_SECRET_PARTS = (
    "token",
    "secret",
    "passw",
    "signature",
    "credential",
    "apikey",
    "api_key",
    "api-key",
    "auth",
    "session",
)
_SECRET_PREFIXES = ("x-amz-", "x-goog-")
_QUERY_PAIR = re.compile(r"""([?&;])([^=&;\s?#'"<>]+)=([^&;\s#'"<>]*)""")
_USERINFO = re.compile(r"""(?<=//)[^/\s@'"<>?#]+@""")
MASK = "***"


@dataclass(frozen=True)
class Url:
    """A parsed URL. ``host`` is lower-case (an IPv6 address without brackets); ``path`` stays encoded."""

    raw: str
    scheme: str
    host: str
    port: int | None
    path: str
    query: str
    username: str | None = None
    password: str | None = None

    @property
    def effective_port(self) -> int:
        """The port connected to: the URL's, else the scheme's default."""
        return self.port if self.port is not None else DEFAULT_PORTS.get(self.scheme, 0)

    @property
    def origin(self) -> tuple[str, str, int]:
        """(scheme, host, port): what credentials are scoped to."""
        return (self.scheme, self.host, self.effective_port)

    @property
    def host_port(self) -> str:
        """The authority without userinfo, as it is connected to."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port is None else f"{host}:{self.port}"

    @property
    def request_url(self) -> str:
        """The URL to fetch: no userinfo, no fragment, built from the checked parts only."""
        query = f"?{self.query}" if self.query else ""
        return f"{self.scheme}://{self.host_port}{self.path or '/'}{query}"

    @property
    def decoded_path(self) -> str:
        """The percent-decoded path: the file name a server knows."""
        return unquote(self.path)


def parse_url(url: str) -> Url:
    """The one parse of ``url``; InvalidRequest for anything two parsers could read differently."""
    if not isinstance(url, str) or not url:
        raise InvalidRequest("not a URL: an empty value")
    shown = redact_url(url)
    if _CONTROL.search(url) or url != url.strip():
        raise InvalidRequest(f"not a valid URL: {shown!r} (control characters or surrounding whitespace)")
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise InvalidRequest(f"not a valid URL: {shown!r} ({exc})") from None
    scheme = parts.scheme.lower()
    if not scheme or not url[len(parts.scheme) :].startswith("://"):
        raise InvalidRequest(f"not an absolute URL: {shown!r}")
    if "\\" in parts.netloc or not parts.netloc.isascii() or any(c.isspace() for c in parts.netloc):
        raise InvalidRequest(f"URL {shown!r}: a backslash, whitespace or non-ASCII character in the authority")
    userinfo, _, host_port = parts.netloc.rpartition("@")
    host, port = split_host_port(host_port, f"not a valid URL: {shown!r}")
    username, password = _userinfo(userinfo, parts.netloc, shown)
    parsed = Url(url, scheme, host, port, parts.path, parts.query, username, password)
    _agree_with_urllib3(parsed, shown)
    if scheme in _PATH_SCHEMES and _CONTROL.search(parsed.decoded_path):
        raise InvalidRequest(f"URL {shown!r}: its decoded path holds control characters (CR, LF, NUL, ...)")
    return parsed


def split_host_port(text: str, where: str) -> tuple[str, int | None]:
    """(host, port or None) of ``host[:port]``; InvalidRequest unless both are unambiguous."""
    if not text:
        raise InvalidRequest(f"{where} names no host")
    if "\\" in text or not text.isascii() or any(c.isspace() for c in text) or "%" in text:
        raise InvalidRequest(f"{where}: a backslash, whitespace, non-ASCII or encoded character in the host")
    if text.startswith("["):
        address, _, rest = text[1:].partition("]")
        host = _ipv6(address, where)
        port_text = rest[1:] if rest.startswith(":") else None
        if rest and port_text is None:
            raise InvalidRequest(f"{where}: characters after the IPv6 address")
    else:
        host, colon, port_text_ = text.partition(":")
        port_text = port_text_ if colon else None
        host = _name(host.lower(), where)
    port = None
    if port_text is not None:
        if not _PORT.match(port_text) or int(port_text) > 65535:
            raise InvalidRequest(
                f"{where}: the port {port_text!r} is not a number from 1 to 65535 without leading zeros"
            )
        port = int(port_text)
    return host, port


def _ipv6(address: str, where: str) -> str:
    try:
        ipaddress.IPv6Address(address)
    except ValueError:
        raise InvalidRequest(f"{where}: {address!r} is not an IPv6 address (zone ids are refused)") from None
    return address.lower()


def _name(host: str, where: str) -> str:
    if not _NAME.match(host):
        raise InvalidRequest(f"{where}: {host!r} is not a host name")
    if _NUMERIC_LABEL.match(host.rstrip(".").rsplit(".", 1)[-1]):
        # Resolvers read 0177.1, 0x7f.0.0.1 or 2130706433 as 127.0.0.1: only the dotted-quad form is taken.
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            raise InvalidRequest(f"{where}: {host!r} is not an IPv4 address in dotted-quad form") from None
    return host


def _userinfo(userinfo: str, netloc: str, shown: str) -> tuple[str | None, str | None]:
    if not netloc.count("@"):
        return None, None
    if "@" in userinfo or "\\" in userinfo or _CONTROL.search(userinfo) or " " in userinfo:
        raise InvalidRequest(f"URL {shown!r}: an '@', backslash or whitespace inside the userinfo")
    user, colon, password = userinfo.partition(":")
    return unquote(user), unquote(password) if colon else None


def _agree_with_urllib3(parsed: Url, shown: str) -> None:
    try:
        other = urllib3.util.parse_url(parsed.raw)
    except LocationParseError as exc:
        raise InvalidRequest(f"URL {shown!r} cannot be parsed: {exc}") from None
    other_host = (other.host or "").lower().strip("[]")
    if ((other.scheme or "").lower(), other_host, other.port) != (parsed.scheme, parsed.host, parsed.port):
        raise InvalidRequest(f"URL {shown!r}: its host or port reads differently to different parsers")


def url_path(url: str) -> str:
    """The decoded (percent-unescaped) path of a URL: the file name a server knows."""
    return parse_url(url).decoded_path


def redact_url(url: str) -> str:
    """The URL as logs, errors and outputs may show it: no userinfo, no credential query values."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return redact_text(url)
    netloc = parts.netloc
    if "@" in netloc:
        netloc = f"{MASK}@{netloc.rpartition('@')[2]}"
    query = _QUERY_PAIR.sub(_mask_pair, f"?{parts.query}")[1:] if parts.query else parts.query
    return urlunsplit(parts._replace(netloc=netloc, query=query))


def redact_text(text: str) -> str:
    """``text`` with every URL-looking userinfo and credential query value masked (for free text)."""
    return _QUERY_PAIR.sub(_mask_pair, _USERINFO.sub(f"{MASK}@", text))


def secret_parameter(name: str) -> bool:
    """Whether a query parameter's value is a credential (tokens, signatures, every ``X-Amz-*``)."""
    name = unquote(name).lower()
    return name in _SECRET_NAMES or name.startswith(_SECRET_PREFIXES) or any(part in name for part in _SECRET_PARTS)


def _mask_pair(match: re.Match[str]) -> str:
    separator, name, value = match.groups()
    return f"{separator}{name}={MASK if value and secret_parameter(name) else value}"


def parse_origin(entry: str, wildcard: bool = False) -> tuple[str | None, str, int | None]:
    """(scheme or None, host, port or None) of ``host``, ``host:port`` or ``scheme://host[:port]``.

    How ``login_hosts`` and ``redirect_hosts`` entries are written; with
    ``wildcard``, ``*.example.com`` stands for every name under example.com.
    """
    scheme: str | None
    scheme, separator, rest = entry.lower().partition("://")
    if not separator:
        scheme, rest = None, entry.lower()
    elif scheme not in ("http", "https"):
        raise InvalidRequest(f"{entry!r}: the scheme must be http or https")
    rest = rest.removesuffix("/")
    starred = wildcard and rest.startswith("*.")
    host, port = split_host_port(rest[2:] if starred else rest, repr(entry))
    return scheme, f"*.{host}" if starred else host, port
