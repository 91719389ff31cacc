"""OpenSSH's known_hosts format, read as OpenSSH reads it.

One line: ``[@revoked|@cert-authority] PATTERNS KEYTYPE BASE64 [comment]``.
PATTERNS is a comma-separated list of host names with ``*`` and ``?``
wildcards and ``!`` negations, or one hashed name (``|1|SALT|HMAC``); a host
on a port other than 22 is named ``[host]:port``. Lines that cannot be read
are skipped, as OpenSSH skips them. paramiko's own ``HostKeys`` handles
neither markers nor wildcards, hence this module.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache

import paramiko
from paramiko.pkey import UnknownKeyType

REVOKED = "revoked"
CERT_AUTHORITY = "cert-authority"
_MARKERS = {"@revoked": REVOKED, "@cert-authority": CERT_AUTHORITY}


class HostKeyError(ValueError):
    """A host key that cannot be read (a ``host_key`` setting)."""


@dataclass(frozen=True)
class Entry:
    """One readable line of a known_hosts file."""

    line: int
    marker: str | None
    hosts: str
    key: paramiko.PKey

    def matches(self, name: str) -> bool:
        """Whether this line names ``name`` (``host`` or ``[host]:port``), as OpenSSH decides it."""
        if self.hosts.startswith("|1|"):
            return _hashed_match(self.hosts, name)
        return _pattern_list_match(self.hosts, name)


@dataclass(frozen=True)
class HostKeys:
    """What a known_hosts file says about one host."""

    trusted: tuple[paramiko.PKey, ...]
    revoked: tuple[paramiko.PKey, ...]
    authority_lines: tuple[int, ...]

    def is_revoked(self, key: paramiko.PKey) -> bool:
        return any(same_key(key, r) for r in self.revoked)

    def with_key(self, key: paramiko.PKey) -> HostKeys:
        """These keys and ``key`` (a ``host_key`` setting), unless it is revoked."""
        if self.is_revoked(key):
            return self
        return HostKeys((*self.trusted, key), self.revoked, self.authority_lines)


def lookup_name(host: str, port: int) -> str:
    """The name OpenSSH looks a host up by: ``host`` on port 22, else ``[host]:port``."""
    host = host.lower()
    return host if port == 22 else f"[{host}]:{port}"


def parse(text: str) -> list[Entry]:
    """Every readable entry of a known_hosts file, in order; unreadable lines are skipped."""
    entries = []
    for number, raw in enumerate(text.splitlines(), start=1):
        entry = parse_line(raw, number)
        if entry is not None:
            entries.append(entry)
    return entries


def parse_line(raw: str, number: int = 1) -> Entry | None:
    """One line as an Entry, or None for a blank, comment or unreadable line."""
    fields = raw.split()
    if not fields or fields[0].startswith("#"):
        return None
    marker = None
    if fields[0].startswith("@"):
        if fields[0] not in _MARKERS:
            return None
        marker = _MARKERS[fields.pop(0)]
    if len(fields) < 3:
        return None
    try:
        key = decode_key(fields[1], fields[2])
    except HostKeyError:
        return None
    return Entry(line=number, marker=marker, hosts=fields[0], key=key)


def host_keys(entries: Iterable[Entry], host: str, port: int) -> HostKeys:
    """The keys ``entries`` pin and revoke for ``host:port``.

    As in OpenSSH, an ``@revoked`` line applies to the hosts it names
    (``@revoked *`` to all), and a revoked key is never trusted for them,
    even where another line lists it.
    """
    name = lookup_name(host, port)
    trusted: list[paramiko.PKey] = []
    revoked: list[paramiko.PKey] = []
    authorities: list[int] = []
    for entry in entries:
        if not entry.matches(name):
            continue
        if entry.marker == REVOKED:
            revoked.append(entry.key)
        elif entry.marker == CERT_AUTHORITY:
            authorities.append(entry.line)
        else:
            trusted.append(entry.key)
    kept = tuple(k for k in trusted if not any(same_key(k, r) for r in revoked))
    return HostKeys(trusted=kept, revoked=tuple(revoked), authority_lines=tuple(authorities))


def unsupported_authority(keys: HostKeys, host: str, port: int) -> str | None:
    """Why ``keys`` cannot be used when the host is trusted only through ``@cert-authority``.

    Host certificates are not checked (paramiko neither negotiates nor
    verifies them), so a host pinned only by a CA line could never connect.
    A CA line beside pinned keys of the host is harmless and ignored.
    """
    if keys.trusted or not keys.authority_lines:
        return None
    lines = ", ".join(str(n) for n in keys.authority_lines)
    return (
        f"line {lines}: @cert-authority is not supported (host certificates are not checked); "
        f"pin the host's own keys for {lookup_name(host, port)} instead, "
        f"as `ssh-keyscan -p {port} {host}` prints them"
    )


def decode_key(kind: str, body: str) -> paramiko.PKey:
    """The public key ``KEYTYPE BASE64``; HostKeyError if unreadable or of another type."""
    try:
        blob = base64.b64decode(body, validate=True)
        key: paramiko.PKey = paramiko.PKey.from_type_string(kind, blob)
    except (binascii.Error, paramiko.SSHException, UnknownKeyType, ValueError, TypeError, IndexError) as exc:
        raise HostKeyError(f"not a valid {kind[:40]} key: {exc}") from None
    if key.get_name() != kind:
        raise HostKeyError(f"the key is {key.get_name()}, not {kind[:40]}")
    return key


def decode_setting(text: str) -> paramiko.PKey:
    """A ``host_key`` setting, ``TYPE BASE64`` as on a known_hosts line without the host."""
    parts = text.split()
    if len(parts) < 2:
        raise HostKeyError("must be 'TYPE BASE64', as on a known_hosts line without the host")
    return decode_key(parts[0], parts[1])


def same_key(a: paramiko.PKey, b: paramiko.PKey) -> bool:
    return a.get_name() == b.get_name() and a.asbytes() == b.asbytes()


def fingerprint(key: paramiko.PKey) -> str:
    """OpenSSH's fingerprint of a key: ``SHA256:`` and unpadded base64."""
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def algorithms_for(keys: Iterable[paramiko.PKey], offered: Iterable[str]) -> tuple[str, ...]:
    """The host key algorithms of ``offered`` (in its order) that verify one of ``keys``' types."""
    kinds = {k.get_name() for k in keys}
    return tuple(a for a in offered if _key_type(a) in kinds)


def _key_type(algorithm: str) -> str:
    return "ssh-rsa" if algorithm in ("rsa-sha2-256", "rsa-sha2-512") else algorithm


def _hashed_match(hosts: str, name: str) -> bool:
    parts = hosts.split("|")
    if len(parts) != 4:
        return False
    try:
        salt = base64.b64decode(parts[2], validate=True)
        expected = base64.b64decode(parts[3], validate=True)
    except binascii.Error:
        return False
    actual = hmac.new(salt, name.encode(), hashlib.sha1).digest()
    return hmac.compare_digest(actual, expected)


def _pattern_list_match(patterns: str, name: str) -> bool:
    found = False
    for pattern in patterns.split(","):
        negated = pattern.startswith("!")
        if _pattern(pattern[1:] if negated else pattern).fullmatch(name):
            if negated:
                return False
            found = True
    return found


@cache
def _pattern(pattern: str) -> re.Pattern[str]:
    pieces = (".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern.lower())
    return re.compile("".join(pieces), re.DOTALL)


def settings_problem(
    known_hosts_file: str | None, host_key: str | None, host: str, port: int
) -> tuple[str, str] | None:
    """The first problem of an sftp provider's host key settings, as (setting, message), or None.

    A known_hosts file that does not exist yet is left to the connection, which
    refuses it then; one that exists must trust the host through a key.
    """
    key = None
    if host_key:
        try:
            key = decode_setting(host_key)
        except HostKeyError as exc:
            return "host_key", str(exc)
    if not known_hosts_file:
        return None
    try:
        with open(known_hosts_file, encoding="utf-8", errors="replace") as file:
            text = file.read()
    except FileNotFoundError:
        return None
    except OSError as exc:
        return "known_hosts_file", f"cannot read {known_hosts_file}: {exc.strerror}"
    pinned = host_keys(parse(text), host, port)
    if key is not None:
        pinned = pinned.with_key(key)
    problem = unsupported_authority(pinned, host, port)
    if problem:
        return "known_hosts_file", problem
    if not pinned.trusted:
        return "known_hosts_file", f"no usable (unrevoked) key for {lookup_name(host, port)} in {known_hosts_file}"
    return None
