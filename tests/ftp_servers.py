"""Real FTP servers on loopback for the tests: vsftpd (FTPS, stock TLS defaults) and proftpd.

Each runs in the foreground with its own config file on a free port, logs the
FTP commands it receives, and is stopped by the fixture that started it.
vsftpd and proftpd-basic conflict as Debian packages (both provide
ftp-server), so .ci/run installs proftpd-basic and unpacks vsftpd's package
under /opt/vsftpd; either place is found here.
"""

from __future__ import annotations

import grp
import os
import pwd
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.servers import free_port, wait_for_port

VSFTPD = shutil.which("vsftpd") or next(
    (p for p in ("/usr/sbin/vsftpd", "/opt/vsftpd/usr/sbin/vsftpd") if Path(p).exists()), None
)
PROFTPD = shutil.which("proftpd") or ("/usr/sbin/proftpd" if Path("/usr/sbin/proftpd").exists() else None)


def require(server: str | None, name: str, package: str) -> str:
    """The server's path; fails in CI, skips elsewhere, when it is not installed."""
    if server:
        return server
    message = f"{name} is not installed: .ci/run installs {package}"
    (pytest.fail if os.environ.get("CI") else pytest.skip)(message)
    raise AssertionError("unreachable")


class _Daemon:
    """A server process in the foreground, its log, and its port.

    Each FTP session is a child process of the server: :meth:`kill_sessions`
    kills them, as a provider's crash or an operator would.
    """

    log_path: Path
    port: int
    proc: subprocess.Popen[bytes]

    def _start(self, command: list[str], name: str) -> None:
        self.out_path = self.log_path.parent / f"{name}.out"
        self._out = self.out_path.open("wb")
        self.proc = subprocess.Popen(command, stdout=self._out, stderr=subprocess.STDOUT)
        try:
            wait_for_port(self.port)
        except TimeoutError:
            self.stop()
            raise RuntimeError(f"{name} did not start:\n{self.log()}") from None

    def log(self) -> str:
        """The server's command log and what it printed."""
        paths = (self.log_path, self.log_path.parent / "system.log", getattr(self, "out_path", self.log_path))
        return "\n".join(p.read_text(errors="replace") for p in dict.fromkeys(paths) if p.exists())

    def commands(self, verb: str) -> int:
        """How many times the server logged receiving the FTP command ``verb``."""
        return sum(1 for line in self.log().splitlines() if f'"{verb} ' in line or f'"{verb}"' in line)

    def session_pids(self) -> list[int]:
        """The session processes (children of the server) alive now."""
        pids = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == self.proc.pid:
                pids.append(int(stat.parent.name))
        return pids

    def kill_sessions(self) -> int:
        """SIGKILL every session process; returns how many there were."""
        pids = self.session_pids()
        for pid in pids:
            os.kill(pid, 9)
        return len(pids)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._out.close()


class Vsftpd(_Daemon):
    """vsftpd over FTPS (explicit TLS) with ``cert_pem`` (key and chain in one file).

    Its TLS settings are the package's defaults, ``require_ssl_reuse=YES``
    among them: only what a loopback test needs is set (port, anonymous
    login, no sandboxing a container cannot do). Logins are anonymous, so
    files are named by their absolute path (``run_as_launching_user`` does
    not chroot).
    """

    def __init__(self, workdir: Path, cert_pem: Path, extra: str = "") -> None:
        binary = require(VSFTPD, "vsftpd", "vsftpd")
        workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.log_path = workdir / "vsftpd.log"
        low = free_port()
        config = workdir / "vsftpd.conf"
        config.write_text(
            f"""listen=YES
listen_address=127.0.0.1
listen_port={self.port}
background=NO
run_as_launching_user=YES
anonymous_enable=YES
anon_root={workdir}
local_enable=NO
write_enable=NO
pasv_enable=YES
pasv_address=127.0.0.1
pasv_min_port={low}
pasv_max_port={low + 50}
seccomp_sandbox=NO
isolate=NO
isolate_network=NO
secure_chroot_dir={workdir}
vsftpd_log_file={self.log_path}
xferlog_enable=YES
log_ftp_protocol=YES
syslog_enable=NO
ssl_enable=YES
allow_anon_ssl=YES
force_anon_logins_ssl=YES
force_anon_data_ssl=YES
rsa_cert_file={cert_pem}
rsa_private_key_file={cert_pem}
{extra}"""
        )
        self._start([binary, str(config)], "vsftpd")


class Proftpd(_Daemon):
    """proftpd serving ``root`` to ``provider``/``secret``, with ``<Limit SIZE> DenyAll`` if asked."""

    user = "provider"
    password = "secret"

    def __init__(self, workdir: Path, root: Path, deny_size: bool = False) -> None:
        binary = require(PROFTPD, "proftpd", "proftpd-basic")
        workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.log_path = workdir / "commands.log"
        users = workdir / "passwd"
        uid, gid = os.getuid(), os.getgid()
        hashed = subprocess.run(
            ["openssl", "passwd", "-6", self.password], check=True, capture_output=True, text=True
        ).stdout.strip()
        users.write_text(f"{self.user}:{hashed}:{uid}:{gid}::{root}:/bin/sh\n")
        users.chmod(0o600)
        low = free_port()
        limit = "<Limit SIZE>\n  DenyAll\n</Limit>\n" if deny_size else ""
        config = workdir / "proftpd.conf"
        config.write_text(
            f"""ServerType standalone
ServerName "provider-gateway test proftpd"
DefaultAddress 127.0.0.1
Port {self.port}
UseIPv6 off
User {pwd.getpwuid(uid).pw_name}
Group {grp.getgrgid(gid).gr_name}
PidFile {workdir}/proftpd.pid
ScoreboardFile {workdir}/proftpd.scoreboard
DelayTable none
WtmpLog off
UseReverseDNS off
RequireValidShell off
AuthOrder mod_auth_file.c
AuthUserFile {users}
RootLogin on
DefaultRoot ~
PassivePorts {low} {low + 50}
MaxInstances 64
SystemLog {workdir}/system.log
LogFormat commands "%m %r"
ExtendedLog {self.log_path} ALL commands
<IfModule mod_cap.c>
  CapabilitiesEngine off
</IfModule>
{limit}"""
        )
        self._start([binary, "--nodaemon", "--config", str(config)], "proftpd")

    def commands(self, verb: str) -> int:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return sum(1 for line in text.splitlines() if line.split(" ", 1)[0] == verb)
