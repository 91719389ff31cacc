"""GridFTP over the Grid Community Toolkit's own server, through the activity API and the CLI.

The contract suite (test_contract_protocols.py) covers password logins over
``ftp://``; here: X.509 certificates and proxies over ``gsiftp://``, anonymous
logins, the session count the server sees, and a session killed mid-file.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from tests.conftest import GatewayFactory
from tests.gridftp_server import GridftpServer, GsiAuthority
from tests.providers import require_gridftp
from tests.servers import CountingProxy
from tests.support import create_activity, create_state_machine, download_message, start, wait_done
from tests.test_download_command import run_download

MiB = 1024 * 1024
PASSWORD = "pa:ss@w/rd%"  # characters that must be escaped in a URL's user info


@dataclass
class Site:
    server: GridftpServer
    gsi: GsiAuthority
    proxy: CountingProxy
    user_cert: Path
    user_key: Path
    gsi_others: list[GsiAuthority] = field(default_factory=list)

    def url(self, name: str, scheme: str = "gsiftp") -> str:
        return f"{scheme}://127.0.0.1:{self.proxy.port}{quote(self.server.path(name))}"

    def with_certificate(self) -> dict[str, Any]:
        return self.conn(x509_user_cert=str(self.user_cert), x509_user_key=str(self.user_key))

    def conn(self, **auth: Any) -> dict[str, Any]:
        return {
            "type": "gridftp",
            "host": "127.0.0.1",
            "port": self.proxy.port,
            "x509_cert_dir": str(self.gsi.cert_dir),
            **auth,
        }


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    require_gridftp()
    gsi = GsiAuthority()
    server = GridftpServer(tmp_path / "gridftp", users={"alice": PASSWORD}, gsi=gsi)
    proxy = CountingProxy(server.port)
    cert, key = gsi.issue("Gateway Test User")
    running: Site | None = None
    try:
        running = Site(server, gsi, proxy, cert, key)
        yield running
    finally:
        proxy.close()
        server.stop()
        for authority in (gsi, *(running.gsi_others if running else [])):
            authority.remove()


def _run(gateway: GatewayFactory, sfn: Any, activity: str, conn: dict[str, Any], message: Any, **settings: Any) -> Any:
    gateway(activity, conn, provider_id="GRID", **settings)
    machine = create_state_machine(sfn, activity)
    return wait_done(sfn, start(sfn, machine, message), timeout_s=120)


@pytest.mark.parametrize("credential", ["certificate", "proxy"])
def test_x509_login_moves_a_multipart_file_byte_exact(
    credential: str, site: Site, gateway: GatewayFactory, sfn: Any, s3: Any, bucket: str, activity: str
) -> None:
    data = os.urandom(3 * 5 * MiB + 4321)
    site.server.put("granule.nc", data)
    if credential == "certificate":
        auth = {"x509_user_cert": str(site.user_cert), "x509_user_key": str(site.user_key)}
    else:
        auth = {"x509_user_proxy": str(site.gsi.proxy(site.user_cert, site.user_key))}
    message = download_message([(site.url("granule.nc"), bucket, "granule.nc")], size=len(data))

    done = _run(gateway, sfn, activity, site.conn(**auth), message, part_size_mb=5)

    assert done["status"] == "SUCCEEDED", done
    body = s3.get_object(Bucket=bucket, Key="granule.nc")["Body"].read()
    assert hashlib.sha256(body).digest() == hashlib.sha256(data).digest()
    assert "Gridmap lookup" not in site.server.log()
    assert re.search(r"DN /CN=Gateway Test User successfully authorized", site.server.log()), site.server.log()[-2000:]


@pytest.mark.parametrize("who", ["untrusted", "unmapped", "no-credential"])
def test_refused_certificate_is_source_access_denied(
    who: str, site: Site, gateway: GatewayFactory, sfn: Any, s3: Any, bucket: str, activity: str
) -> None:
    site.server.put("f.bin", b"data")
    auth: dict[str, str] = {"x509_user_proxy": str(site.gsi.dir / "no-such-proxy")}
    if who != "no-credential":
        if who == "untrusted":
            stranger = GsiAuthority()  # a CA the server does not trust
            site.gsi_others.append(stranger)
            cert, key = stranger.issue("Gateway Test User")
        else:
            cert, key = site.gsi.issue("Nobody In The Gridmap")
        auth = {"x509_user_cert": str(cert), "x509_user_key": str(key)}

    done = _run(
        gateway,
        sfn,
        activity,
        site.conn(**auth),
        download_message([(site.url("f.bin"), bucket, "f.bin")]),
    )

    assert (done["status"], done["error"]) == ("FAILED", "SourceAccessDenied"), done
    assert "Contents" not in s3.list_objects_v2(Bucket=bucket)


def test_anonymous_and_password_logins_over_ftp_urls_keep_the_password_out(
    site: Site, gateway: GatewayFactory, sfn: Any, s3: Any, bucket: str
) -> None:
    data = os.urandom(200_000)
    site.server.put("open.bin", data)
    anonymous = _run(
        gateway,
        sfn,
        create_activity(sfn),
        site.conn(),
        download_message([(site.url("open.bin", "ftp"), bucket, "anon.bin")]),
    )
    with_password = _run(
        gateway,
        sfn,
        create_activity(sfn),
        site.conn(username="alice", password=PASSWORD),
        download_message([(site.url("open.bin", "ftp"), bucket, "alice.bin")]),
    )
    refused = _run(
        gateway,
        sfn,
        create_activity(sfn),
        site.conn(username="alice", password="x" + PASSWORD),  # crypt(3) reads only the first 8 characters
        download_message([(site.url("open.bin", "ftp"), bucket, "refused.bin")]),
    )

    assert [anonymous["status"], with_password["status"]] == ["SUCCEEDED", "SUCCEEDED"], (anonymous, with_password)
    for key in ("anon.bin", "alice.bin"):
        assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == data
    log = site.server.log()
    assert "[CLIENT]: USER anonymous" in log and "[CLIENT]: USER alice" in log
    assert (refused["status"], refused["error"]) == ("FAILED", "SourceAccessDenied"), refused
    assert PASSWORD not in refused["cause"] and quote(PASSWORD, safe="") not in refused["cause"]


def test_sessions_the_server_sees_stay_within_num_connections(
    site: Site, gateway: GatewayFactory, sfn: Any, s3: Any, bucket: str, activity: str
) -> None:
    files = {f"part-{i:02d}.dat": os.urandom(2 * MiB + i) for i in range(12)}
    for name, data in files.items():
        site.server.put(name, data)
    gateway(activity, site.with_certificate(), num_connections=2)
    machine = create_state_machine(sfn, activity)
    names = sorted(files)
    runs = [start(sfn, machine, download_message([(site.url(n), bucket, n) for n in names[i::3]])) for i in range(3)]

    results = [wait_done(sfn, arn, timeout_s=120) for arn in runs]

    assert [r["status"] for r in results] == ["SUCCEEDED"] * 3, [r.get("cause") for r in results]
    for name, data in files.items():
        assert s3.get_object(Bucket=bucket, Key=name)["Body"].read() == data
    assert site.proxy.total >= len(files)  # a session per file
    assert site.proxy.max_open == 2  # both connections busy at once, never a third


def test_a_session_killed_mid_file_resumes_from_its_offset(
    site: Site, gateway: GatewayFactory, sfn: Any, s3: Any, bucket: str, activity: str
) -> None:
    data = os.urandom(64 * MiB + 99)
    site.server.put("big.h5", data)
    gateway(activity, site.with_certificate(), part_size_mb=5)
    machine = create_state_machine(sfn, activity)
    killed: list[int] = []
    watcher = threading.Thread(target=_kill_first_transfer, args=(site.server, "big.h5", killed), daemon=True)
    watcher.start()

    done = wait_done(sfn, start(sfn, machine, download_message([(site.url("big.h5"), bucket, "big.h5")])), 120)
    watcher.join(5)

    assert done["status"] == "SUCCEEDED", done
    assert killed, "the transfer ended before its session could be killed"
    body = s3.get_object(Bucket=bucket, Key="big.h5")["Body"].read()
    assert hashlib.sha256(body).digest() == hashlib.sha256(data).digest()
    offsets = [int(m) for m in re.findall(r"\[CLIENT\]: (?:REST|ERET P) (\d+)", site.server.log())]
    assert offsets and 0 < offsets[-1] < len(data), offsets
    assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []


def _kill_first_transfer(server: GridftpServer, name: str, killed: list[int]) -> None:
    """SIGKILL the server's session process once it has read 8 MiB of ``name`` from disk.

    The server forks a process per session; its log is written only when the
    session ends, so the process's own I/O counter tells how far it has got.
    """
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        for pid in server.session_pids():
            if server.bytes_read(pid) > 8 * MiB:
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
                return
        time.sleep(0.005)


def test_download_command_over_gsiftp_with_the_x509_environment(
    site: Site, aws_env: dict[str, str], s3: Any, bucket: str
) -> None:
    data = os.urandom(1 * MiB + 5)
    site.server.put("one.h5", data)
    env = {
        **aws_env,
        "X509_USER_CERT": str(site.user_cert),
        "X509_USER_KEY": str(site.user_key),
        "X509_CERT_DIR": str(site.gsi.cert_dir),
    }

    done = run_download(env, site.url("one.h5"), f"s3://{bucket}/one.h5", "--no-progress")
    missing = run_download(env, site.url("absent.h5"), f"s3://{bucket}/absent.h5", "--no-progress")

    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["bytes"] == len(data)
    assert s3.get_object(Bucket=bucket, Key="one.h5")["Body"].read() == data
    assert missing.returncode == 3, missing.stderr
    assert json.loads(missing.stdout)["error_code"] == "SourceNotFound"
