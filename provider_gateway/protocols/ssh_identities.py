"""The keys ``ssh`` logs in with when none is given: ssh-agent's, then ~/.ssh/id_*."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import paramiko

log = logging.getLogger(__name__)

# OpenSSH's default IdentityFile list, in its order, less the kinds paramiko cannot use (FIDO, DSA).
DEFAULT_IDENTITIES = ("id_rsa", "id_ecdsa", "id_ed25519")


def authenticate(transport: paramiko.Transport, username: str) -> None:
    """Offer the agent's keys, then the default identity files; AuthenticationException if none is taken."""
    agent = paramiko.Agent()
    tried: list[str] = []
    try:
        for name, key in _candidates(agent):
            tried.append(name)
            try:
                transport.auth_publickey(username, key)
                return
            except paramiko.BadAuthenticationType:
                raise
            except paramiko.AuthenticationException:
                continue
    finally:
        agent.close()
    offered = ", ".join(tried) if tried else "none found"
    raise paramiko.AuthenticationException(
        f"no key was accepted (ssh-agent and ~/.ssh/{{{','.join(DEFAULT_IDENTITIES)}}}: {offered})"
    )


def _candidates(agent: paramiko.Agent) -> Iterator[tuple[str, paramiko.PKey]]:
    for index, key in enumerate(agent.get_keys()):
        yield f"agent key {index + 1} ({key.get_name()})", key
    home = Path.home() / ".ssh"
    for name in DEFAULT_IDENTITIES:
        path = home / name
        if not path.is_file():
            continue
        try:
            yield f"~/.ssh/{name}", paramiko.PKey.from_path(path)
        except paramiko.PasswordRequiredException:
            log.info("~/.ssh/%s needs a passphrase: skipped (load it into ssh-agent)", name)
        except (OSError, ValueError, paramiko.SSHException) as exc:
            log.info("~/.ssh/%s cannot be read: %s", name, exc)
