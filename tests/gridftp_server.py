"""The Grid Community Toolkit's globus-gridftp-server on loopback, with password and X.509 logins.

The server runs as root in CI (it must, to switch to the account a login maps
to): password users and certificate subjects map to ``nobody``, so the served
directory is world-readable and outside pytest's private temporary tree.
"""

from __future__ import annotations

import contextlib
import crypt
import datetime
import ipaddress
import os
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

GRIDFTP_SERVER = shutil.which("globus-gridftp-server")
GLOBUS_URL_COPY = shutil.which("globus-url-copy")
GRID_PROXY_INIT = shutil.which("grid-proxy-init")
MAPPED_USER = "nobody"


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _write_key(key: rsa.RSAPrivateKey, path: Path) -> Path:
    path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    path.chmod(0o600)  # Globus refuses a private key others can read
    return path


class GsiAuthority:
    """A test CA laid out as Globus expects (hashed name and signing policy), and certificates it issues."""

    def __init__(self) -> None:
        # World-readable: the server reads the CA directory after switching to `nobody`.
        self.dir = Path(tempfile.mkdtemp(prefix="gsi-"))
        self.dir.chmod(0o755)
        self.cert_dir = self.dir / "certificates"
        self.cert_dir.mkdir()
        self._key = _key()
        now = datetime.datetime.now(datetime.UTC)
        self._cert = (
            x509.CertificateBuilder()
            .subject_name(_name("Gateway Test CA"))
            .issuer_name(_name("Gateway Test CA"))
            .public_key(self._key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(_usage(ca=True), critical=True)
            .sign(self._key, hashes.SHA256())
        )
        name_hash = _openssl_subject_hash(self._cert)
        (self.cert_dir / f"{name_hash}.0").write_bytes(self._cert.public_bytes(serialization.Encoding.PEM))
        (self.cert_dir / f"{name_hash}.signing_policy").write_text(
            "access_id_CA X509 '/CN=Gateway Test CA'\npos_rights globus CA:sign\ncond_subjects globus '\"/*\"'\n"
        )

    def issue(self, common_name: str, host: bool = False) -> tuple[Path, Path]:
        """A certificate and key for ``common_name`` (a host's when ``host``), as (cert path, key path)."""
        key = _key()
        now = datetime.datetime.now(datetime.UTC)
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(common_name))
            .issuer_name(self._cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(_usage(ca=False), critical=True)
            .add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                critical=False,
            )
        )
        if host:
            # Clients check the server's certificate against the name in the URL: here 127.0.0.1.
            names = [x509.DNSName(common_name), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        cert = builder.sign(self._key, hashes.SHA256())
        stem = self.dir / common_name.replace(" ", "_").lower()
        cert_path = stem.with_suffix(".pem")
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return cert_path, _write_key(key, stem.with_suffix(".key"))

    def proxy(self, cert: Path, key: Path) -> Path:
        """A short-lived RFC 3820 proxy of ``cert``, made by grid-proxy-init."""
        if GRID_PROXY_INIT is None:
            raise RuntimeError("grid-proxy-init is not installed (Debian: globus-proxy-utils)")
        out = self.dir / f"proxy-{cert.stem}"
        subprocess.run(
            [GRID_PROXY_INIT, "-q", "-cert", str(cert), "-key", str(key), "-out", str(out), "-valid", "1:00"],
            env={**os.environ, "X509_CERT_DIR": str(self.cert_dir)},
            check=True,
            capture_output=True,
        )
        return out

    def remove(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


def _usage(ca: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=not ca,
        content_commitment=False,
        key_encipherment=not ca,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )


def _openssl_subject_hash(cert: x509.Certificate) -> str:
    """``openssl x509 -hash``: the name Globus looks a CA up by."""
    result = subprocess.run(
        ["openssl", "x509", "-noout", "-hash"],
        input=cert.public_bytes(serialization.Encoding.PEM),
        check=True,
        capture_output=True,
    )
    return result.stdout.decode().strip()


class GridftpServer:
    """globus-gridftp-server on 127.0.0.1: anonymous, password and (with ``gsi``) X.509 logins."""

    def __init__(self, workdir: Path, users: dict[str, str], gsi: GsiAuthority | None = None) -> None:
        if GRIDFTP_SERVER is None:
            raise RuntimeError("globus-gridftp-server is not installed (Debian: globus-gridftp-server-progs)")
        workdir.mkdir(parents=True, exist_ok=True)
        self.dir = workdir
        # Served from a world-readable directory: logins run as `nobody`.
        self.root = Path(tempfile.mkdtemp(prefix="gridftp-root-"))
        self.root.chmod(0o755)
        passwords = workdir / "passwords"
        # The server checks traditional crypt(3) hashes only, as globus-gridftp-password makes them.
        passwords.write_text(
            "".join(
                f"{u}:{crypt.crypt(pw, crypt.mksalt(crypt.METHOD_CRYPT))}:65534:65534::/:/bin/sh\n"
                for u, pw in users.items()
            )
        )
        self.log_path = workdir / "gridftp.log"
        command = [
            GRIDFTP_SERVER,
            "-p", "0",
            "-control-interface", "127.0.0.1",
            "-data-interface", "127.0.0.1",
            "-aa", "-anonymous-user", MAPPED_USER,
            "-password-file", str(passwords),
            "-log-level", "all",
            "-logfile", str(self.log_path),
        ]  # fmt: skip
        env = dict(os.environ)
        if gsi is not None:
            host_cert, host_key = gsi.issue("localhost", host=True)
            gridmap = workdir / "grid-mapfile"
            gridmap.write_text(f'"/CN=Gateway Test User" {MAPPED_USER}\n')
            env.update(
                X509_USER_CERT=str(host_cert),
                X509_USER_KEY=str(host_key),
                X509_CERT_DIR=str(gsi.cert_dir),
                GRIDMAP=str(gridmap),
            )
        self._out = workdir / "gridftp.out"
        with self._out.open("wb") as out:
            self.proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        self.port = self._listening_port()

    def _listening_port(self) -> int:
        for _ in range(200):
            text = self._out.read_text(errors="replace")
            if "Server listening at" in text:
                return int(text.split("Server listening at", 1)[1].split()[0].rsplit(":", 1)[1])
            if self.proc.poll() is not None:
                break
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(0.05)
        self.stop()
        raise RuntimeError(f"globus-gridftp-server did not start:\n{self._out.read_text(errors='replace')}")

    def put(self, name: str, data: bytes) -> None:
        path = self.root / name
        path.write_bytes(data)
        path.chmod(0o644)

    def path(self, name: str) -> str:
        return str(self.root / name)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def session_pids(self) -> list[int]:
        """The processes the server forked, one per open session."""
        pids = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            with contextlib.suppress(OSError):
                fields = stat.read_text().rsplit(")", 1)[1].split()
                if int(fields[1]) == self.proc.pid:
                    pids.append(int(stat.parent.name))
        return pids

    @staticmethod
    def bytes_read(pid: int) -> int:
        """What process ``pid`` has read so far (its ``rchar``), 0 if it is gone."""
        with contextlib.suppress(OSError, ValueError):
            for line in Path(f"/proc/{pid}/io").read_text().splitlines():
                if line.startswith("rchar:"):
                    return int(line.split()[1])
        return 0

    @property
    def sessions_total(self) -> int:
        return self.log().count("New connection from")

    def stop(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)  # the server and the session processes it forked
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
        shutil.rmtree(self.root, ignore_errors=True)
