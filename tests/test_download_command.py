"""``provider-gateway download``: one file end to end through the real CLI, into the local S3."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import trustme
from hypothesis import given, settings
from hypothesis import strategies as st
from pytest_httpserver import HTTPServer

from provider_gateway.config.model import FtpConnConfig
from provider_gateway.errors import InvalidRequest
from provider_gateway.local.ftp_server import FileFTPServer
from provider_gateway.local.http_server import FileHTTPServer
from provider_gateway.messages import CHECKSUM_ALGORITHMS, HEX_LENGTHS, Checksum, parse_download_task
from tests.providers import provider_for
from tests.servers import SSHD, STOCK_HOST_KEYS, Sshd, keygen
from tests.support import cli_path, unique, write_config

ARN = "arn:aws:states:us-east-1:123456789012:activity:unused"
MiB = 1024 * 1024


def run_download(aws_env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [cli_path(), "download", *args],
        env={**os.environ, **aws_env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def json_line(done: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 1, f"expected one JSON line on stdout, got {done.stdout!r} (stderr {done.stderr!r})"
    line: dict[str, Any] = json.loads(lines[0])
    return line


def provider_config(tmp_path: Path, conn_config: dict[str, Any], **settings: Any) -> Path:
    gateway = {"activity_arn": ARN, "conn_config": conn_config, "num_connections": 1, **settings}
    return write_config(tmp_path / f"{unique('cfg')}.yml", [{"id": "PROV", "gateway_config": gateway}])


def no_uploads_left(s3: Any, bucket: str) -> bool:
    return not s3.list_multipart_uploads(Bucket=bucket).get("Uploads")


@pytest.mark.parametrize("kind", ["http", "ftp", "sftp"])
def test_download_copies_a_file_with_the_providers_config(
    kind: str, tmp_path: Path, aws_env: dict[str, str], s3: Any, bucket: str
) -> None:
    data = os.urandom(3 * MiB + 17)
    with provider_for(kind, tmp_path) as provider:
        provider.put("granule 1.h5", data)
        config = provider_config(tmp_path, provider.conn_config(True))
        digest = hashlib.sha256(data).hexdigest()
        done = run_download(
            aws_env,
            provider.url("granule 1.h5"),
            f"s3://{bucket}/in/",
            "--config",
            str(config),
            "--version",
            "v7",
            "--checksum",
            f"sha256:{digest}",
        )
    assert done.returncode == 0, done.stderr
    line = json_line(done)
    assert line["success"] is True
    assert line["bytes"] == len(data)
    assert line["target"] == {"bucket": bucket, "key": "in/granule 1.h5"}
    assert line["checksum"] == {"type": "sha256", "value": digest}
    obj = s3.get_object(Bucket=bucket, Key="in/granule 1.h5")
    assert obj["Body"].read() == data
    assert obj["Metadata"]["version"] == "v7"


def test_download_takes_credentials_from_the_url_and_keeps_them_out_of_the_output(
    tmp_path: Path, aws_env: dict[str, str], s3: Any, bucket: str
) -> None:
    data = os.urandom(MiB)
    with FileHTTPServer(basic_auth=("user", "p@ss word")) as server:
        server.files["/a.bin"] = data
        url = server.url("/a.bin").replace("http://", "http://user:p%40ss%20word@")
        done = run_download(aws_env, url, f"s3://{bucket}/a.bin", "--size", str(len(data)))
        bare = server.url("/a.bin")
    assert done.returncode == 0, done.stderr
    assert "p%40ss" not in done.stdout + done.stderr and "p@ss" not in done.stdout + done.stderr
    assert json_line(done)["source"] == bare
    assert s3.get_object(Bucket=bucket, Key="a.bin")["Body"].read() == data


def test_download_of_a_same_version_object_is_skipped(
    tmp_path: Path, aws_env: dict[str, str], s3: Any, bucket: str
) -> None:
    s3.put_object(Bucket=bucket, Key="k", Body=b"old", Metadata={"version": "v1"})
    with FileHTTPServer() as server:
        server.files["/k"] = b"new"
        done = run_download(aws_env, server.url("/k"), f"s3://{bucket}/k", "--version", "v1")
        requests_seen = server.connections.total
    assert done.returncode == 0, done.stderr
    assert json_line(done)["version_skip"] is True
    assert requests_seen == 0
    assert s3.get_object(Bucket=bucket, Key="k")["Body"].read() == b"old"


@pytest.mark.parametrize("kind", ["http", "ftp", "sftp"])
def test_download_exit_status_names_the_error(
    kind: str, tmp_path: Path, aws_env: dict[str, str], s3: Any, bucket: str
) -> None:
    with provider_for(kind, tmp_path) as provider:
        provider.put("here.bin", b"x" * 1000)
        good = provider_config(tmp_path, provider.conn_config(True))
        bad_login = provider_config(tmp_path, provider.conn_config(False))
        missing = run_download(aws_env, provider.url("absent.bin"), f"s3://{bucket}/m", "--config", str(good))
        refused = run_download(aws_env, provider.url("here.bin"), f"s3://{bucket}/r", "--config", str(bad_login))
        short = run_download(
            aws_env, provider.url("here.bin"), f"s3://{bucket}/s", "--config", str(good), "--size", "999"
        )
    for done, code, status in (
        (missing, "SourceNotFound", 3),
        (refused, "SourceAccessDenied", 4),
        (short, "IntegrityError", 6),
    ):
        assert done.returncode == status, (code, done.stdout, done.stderr)
        line = json_line(done)
        assert line["success"] is False
        assert line["error_code"] == code
        assert f"error: {code}:" in done.stderr
    assert s3.list_objects_v2(Bucket=bucket).get("KeyCount") == 0
    assert no_uploads_left(s3, bucket)


@pytest.mark.parametrize(
    ("url", "target", "message"),
    [
        ("gopher://example.invalid/x", "s3://b/k", "scheme 'gopher' is not supported"),
        ("http://127.0.0.1:99999/x", "s3://b/k", "not a valid URL"),
        ("http://127.0.0.1/x", "b/k", "is not s3://BUCKET/KEY"),
        ("http://127.0.0.1/", "s3://b/", "names no file"),
        ("sftp://127.0.0.1/x", "s3://b/k", "needs a user name"),
    ],
)
def test_download_refuses_invalid_requests_with_status_2(
    url: str, target: str, message: str, aws_env: dict[str, str]
) -> None:
    done = run_download(aws_env, url, target)
    assert done.returncode == 2, done.stderr
    line = json_line(done)
    assert line["error_code"] == "InvalidRequest"
    assert message in line["error"]


def test_download_refuses_a_url_of_no_configured_provider_and_a_bucket_not_allowed(
    tmp_path: Path, aws_env: dict[str, str], bucket: str
) -> None:
    config = provider_config(tmp_path, {"type": "http", "host": "127.0.0.1:8"}, allowed_buckets=["only-this"])
    other_host = run_download(aws_env, "http://127.0.0.2:8/x", f"s3://{bucket}/k", "--config", str(config))
    not_allowed = run_download(aws_env, "http://127.0.0.1:8/x", f"s3://{bucket}/k", "--config", str(config))
    assert other_host.returncode == 2
    assert "belongs to 0 configured providers" in json_line(other_host)["error"]
    assert not_allowed.returncode == 2
    assert "not in allowed_buckets" in json_line(not_allowed)["error"]


# The child's own high-water mark. wait4's ru_maxrss would not do: Linux carries the
# forked parent's peak (this test process, with the local S3 in it) across exec.
PEAK_RSS_WRAPPER = """
import atexit, re, sys
report = sys.argv.pop(1)
def peak():
    status = open("/proc/self/status").read()
    open(report, "w").write(re.search(r"VmHWM:\\s+(\\d+) kB", status).group(1))
atexit.register(peak)
from provider_gateway.cli import main
sys.argv[0] = "provider-gateway"
main()
"""


def peak_rss_mib(args: list[str], env: dict[str, str], report: Path) -> float:
    """Peak resident memory (MiB) of ``provider-gateway ARGS``, which must succeed."""
    done = subprocess.run(
        [sys.executable, "-c", PEAK_RSS_WRAPPER, str(report), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return int(report.read_text()) / 1024


def test_download_memory_stays_bounded_for_a_file_much_larger_than_a_part(
    tmp_path: Path, aws_env: dict[str, str], s3: Any, bucket: str
) -> None:
    big = os.urandom(MiB) * 160  # 160 MiB: 32 parts of 5 MiB
    env = {**os.environ, **aws_env}
    with FileHTTPServer() as server:
        server.files["/small"] = b"s" * 1000
        server.files["/big"] = big
        config = provider_config(tmp_path, {"type": "http", "host": server.host}, part_size_mb=5)
        base = ["download", "--config", str(config)]
        small_rss = peak_rss_mib([*base, server.url("/small"), f"s3://{bucket}/small"], env, tmp_path / "small")
        big_rss = peak_rss_mib([*base, server.url("/big"), f"s3://{bucket}/big"], env, tmp_path / "big")
    assert s3.head_object(Bucket=bucket, Key="big")["ContentLength"] == len(big)
    print(f"peak RSS: {small_rss:.0f} MiB for 1 kB, {big_rss:.0f} MiB for 160 MiB")
    # Part buffers (a few 5 MiB parts in flight) on top of the same program copying a tiny file.
    assert big_rss - small_rss < 64, (small_rss, big_rss)


def test_download_progress_bar_shows_bytes_rate_and_total_only_when_asked(aws_env: dict[str, str], bucket: str) -> None:
    with FileHTTPServer() as server:
        server.files["/p.bin"] = b"p" * (3 * MiB)
        shown = run_download(aws_env, server.url("/p.bin"), f"s3://{bucket}/p", "--progress")
        hidden = run_download(aws_env, server.url("/p.bin"), f"s3://{bucket}/q")
    assert shown.returncode == 0 and hidden.returncode == 0
    assert "100%" in shown.stderr and "3.00M/3.00M" in shown.stderr and "B/s" in shown.stderr
    assert hidden.stderr == ""  # not a terminal: no bar, nothing but the JSON line on stdout
    assert json_line(shown)["bytes"] == json_line(hidden)["bytes"] == 3 * MiB


def test_sigterm_aborts_the_upload_and_exits_with_gateway_shutdown(
    aws_env: dict[str, str], s3: Any, bucket: str
) -> None:
    import signal
    import time

    with FileHTTPServer(rate_bytes_per_s=4 * MiB) as server:
        server.files["/slow.bin"] = b"z" * (40 * MiB)  # 10 s at this rate
        proc = subprocess.Popen(
            [cli_path(), "download", server.url("/slow.bin"), f"s3://{bucket}/slow.bin"],
            env={**os.environ, **aws_env},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        deadline = time.monotonic() + 30
        while server.bytes_served < 12 * MiB and time.monotonic() < deadline:  # past the first parts
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 8, err
    line = json.loads(out)
    assert line["error_code"] == "GatewayShutdown"
    assert s3.list_objects_v2(Bucket=bucket).get("KeyCount") == 0
    assert not s3.list_multipart_uploads(Bucket=bucket).get("Uploads")


# --- URLs without --config: every server the URL can name ----------------------------------------

needs_sshd = pytest.mark.skipif(SSHD is None and not os.environ.get("CI"), reason="needs OpenSSH sshd")


@pytest.fixture(scope="module")
def stock_sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sshd]:
    """A key-only sshd with RSA, ECDSA and ed25519 host keys, as a stock OpenSSH install has."""
    sshd = Sshd(tmp_path_factory.mktemp("sshd"), host_key_types=STOCK_HOST_KEYS)
    yield sshd
    sshd.stop()


def home_with(tmp_path: Path, sshd: Sshd, identity: Path | None = None) -> Path:
    """A HOME whose ~/.ssh pins only the server's RSA key and holds ``identity`` as id_ed25519."""
    ssh = tmp_path / unique("home") / ".ssh"
    ssh.mkdir(parents=True)
    (ssh / "known_hosts").write_text(f"[127.0.0.1]:{sshd.port} {sshd.key_line('rsa')}\n")
    if identity is not None:
        shutil.copy(identity, ssh / "id_ed25519")
        (ssh / "id_ed25519").chmod(0o600)
    return ssh.parent


def download_as(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [cli_path(), "download", *args], env=env, capture_output=True, text=True, timeout=120, check=False
    )


@needs_sshd
def test_an_sftp_url_logs_in_with_a_key_as_ssh_would(
    stock_sshd: Sshd, tmp_path: Path, aws_env: dict[str, str], s3: Any, bucket: str
) -> None:
    data = os.urandom(MiB + 3)
    (tmp_path / "f.bin").write_bytes(data)
    url = f"sftp://{stock_sshd.user}@127.0.0.1:{stock_sshd.port}{tmp_path / 'f.bin'}"
    base = {**os.environ, **aws_env, "SSH_AUTH_SOCK": ""}
    bare_home = home_with(tmp_path, stock_sshd)

    given = download_as(
        {**base, "HOME": str(bare_home)}, url, f"s3://{bucket}/given", "--identity-file", str(stock_sshd.client_key)
    )
    default = download_as(
        {**base, "HOME": str(home_with(tmp_path, stock_sshd, stock_sshd.client_key))}, url, f"s3://{bucket}/default"
    )
    none = download_as({**base, "HOME": str(bare_home)}, url, f"s3://{bucket}/none")
    with ssh_agent(tmp_path, stock_sshd.client_key) as socket_path:
        agent = download_as({**base, "HOME": str(bare_home), "SSH_AUTH_SOCK": socket_path}, url, f"s3://{bucket}/agent")

    for done, key in ((given, "given"), (default, "default"), (agent, "agent")):
        assert done.returncode == 0, (key, done.stdout, done.stderr)
        assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == data
    assert none.returncode == 4, none.stderr
    assert "no key was accepted" in json_line(none)["error"] and "none found" in json_line(none)["error"]
    assert stock_sshd.logins >= 3


@contextmanager
def ssh_agent(tmp_path: Path, key: Path) -> Iterator[str]:
    """A running ssh-agent holding ``key``; yields its socket."""
    socket_path = str(tmp_path / unique("agent"))
    agent = subprocess.Popen(["ssh-agent", "-D", "-a", socket_path], stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while not Path(socket_path).exists():
            assert time.monotonic() < deadline and agent.poll() is None, "ssh-agent did not start"
            time.sleep(0.02)
        subprocess.run(
            ["ssh-add", str(key)], env={**os.environ, "SSH_AUTH_SOCK": socket_path}, check=True, capture_output=True
        )
        yield socket_path
    finally:
        agent.terminate()
        agent.wait(10)


@needs_sshd
def test_an_sftp_directory_or_an_unpinned_host_fails_at_once(
    stock_sshd: Sshd, tmp_path: Path, aws_env: dict[str, str], bucket: str
) -> None:
    env = {**os.environ, **aws_env, "SSH_AUTH_SOCK": "", "HOME": str(home_with(tmp_path, stock_sshd))}
    key = ["--identity-file", str(stock_sshd.client_key)]
    folder = f"sftp://{stock_sshd.user}@127.0.0.1:{stock_sshd.port}{tmp_path}"
    directory = download_as(env, folder, f"s3://{bucket}/d", *key)
    other = tmp_path / "other_known_hosts"
    impostor_key = Path(f"{keygen(tmp_path / 'k', 'rsa')}.pub").read_text()
    other.write_text(f"[127.0.0.1]:{stock_sshd.port} {impostor_key}")
    impostor = download_as(env, f"{folder}/x", f"s3://{bucket}/x", *key, "--known-hosts", str(other))
    assert (directory.returncode, json_line(directory)["error_code"]) == (3, "SourceNotFound"), directory.stderr
    assert "is a directory" in json_line(directory)["error"]
    assert (impostor.returncode, json_line(impostor)["error_code"]) == (4, "SourceAccessDenied")
    assert "SHA256:" in json_line(impostor)["error"]
    for done in (directory, impostor):
        assert json_line(done)["seconds"] < 3  # answered at once, not after retries


def test_ca_bundle_verifies_an_https_url(tmp_path: Path, aws_env: dict[str, str], s3: Any, bucket: str) -> None:
    authority = trustme.CA()
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    authority.issue_cert("127.0.0.1").configure_cert(context)
    ca_file = tmp_path / "ca.pem"
    authority.cert_pem.write_to_path(str(ca_file))
    server = HTTPServer(host="127.0.0.1", ssl_context=context)
    server.expect_request("/s.bin").respond_with_data(b"secure bytes")
    server.start()
    try:
        url = server.url_for("/s.bin")
        trusted = run_download(aws_env, url, f"s3://{bucket}/s.bin", "--ca-bundle", str(ca_file))
        untrusted = run_download(aws_env, url, f"s3://{bucket}/u.bin")
    finally:
        server.clear()
        server.stop()
    assert url.startswith("https://") and trusted.returncode == 0, trusted.stderr
    assert s3.get_object(Bucket=bucket, Key="s.bin")["Body"].read() == b"secure bytes"
    assert untrusted.returncode != 0 and "certificate verify failed" in json_line(untrusted)["error"].lower()


def test_key_and_ca_options_are_refused_where_they_cannot_apply(
    tmp_path: Path, aws_env: dict[str, str], bucket: str
) -> None:
    pem = tmp_path / "ca.pem"
    pem.write_text("x")
    cases = [
        (["http://127.0.0.1:9/x", "--ca-bundle", str(pem)], "--ca-bundle applies to https and ftps URLs, not http"),
        (["sftp://u@127.0.0.1:9/x", "--ca-bundle", str(pem)], "--ca-bundle applies to https and ftps URLs, not sftp"),
        (["ftp://127.0.0.1:9/x", "--identity-file", str(pem)], "--identity-file applies to sftp URLs, not ftp"),
        (["https://127.0.0.1:9/x", "--ca-bundle", str(tmp_path / "absent.pem")], "--ca-bundle: no file at"),
    ]
    for args, message in cases:
        done = run_download(aws_env, args[0], f"s3://{bucket}/k", *args[1:])
        assert done.returncode == 2 and message in json_line(done)["error"], (args, done.stdout, done.stderr)
    with_config = run_download(
        aws_env, "https://127.0.0.1:9/x", f"s3://{bucket}/k", "--config", str(pem), "--ca-bundle", str(pem)
    )
    assert with_config.returncode == 2 and "are for a URL without --config" in with_config.stderr


@pytest.mark.skipif(
    "ca_bundle" not in FtpConnConfig.__dataclass_fields__, reason="ftps has no ca_bundle setting in this build"
)
def test_ca_bundle_verifies_an_ftps_url(tmp_path: Path, aws_env: dict[str, str], s3: Any, bucket: str) -> None:
    authority = trustme.CA()
    cert = tmp_path / "ftp-cert.pem"
    authority.issue_cert("127.0.0.1").private_key_and_cert_chain_pem.write_to_path(str(cert))
    ca_file = tmp_path / "ca.pem"
    authority.cert_pem.write_to_path(str(ca_file))
    root = tmp_path / "ftp-root"
    root.mkdir()
    (root / "f.bin").write_bytes(b"ftps bytes")
    with FileFTPServer(root, tls_cert=cert) as server:
        url = f"ftps://provider:secret@127.0.0.1:{server.port}/f.bin"
        trusted = run_download(aws_env, url, f"s3://{bucket}/f.bin", "--ca-bundle", str(ca_file))
        untrusted = run_download(aws_env, url, f"s3://{bucket}/u.bin")
        logins = server.logins
    assert trusted.returncode == 0, trusted.stderr
    assert s3.get_object(Bucket=bucket, Key="f.bin")["Body"].read() == b"ftps bytes"
    assert untrusted.returncode == 4 and "certificate verify failed" in json_line(untrusted)["error"].lower()
    assert logins == 1  # the unverified server never saw the password


@pytest.mark.parametrize(
    "checksum",
    ["md5:abc", "sha256:" + "g" * 64, "sha1:" + "0" * 41, "crc32:0badf00d", "md5"],
    ids=["md5-too-short", "non-hex", "sha1-too-long", "unknown-algorithm", "no-digest"],
)
def test_a_bad_checksum_is_refused_with_status_2_before_the_provider_is_asked(
    checksum: str, aws_env: dict[str, str], s3: Any, bucket: str
) -> None:
    with FileHTTPServer() as server:
        server.files["/f.bin"] = b"x" * 1000
        done = run_download(aws_env, server.url("/f.bin"), f"s3://{bucket}/f.bin", "--checksum", checksum)
        asked = (server.connections.total, list(server.requests))
    assert done.returncode == 2, (done.stdout, done.stderr)
    line = json_line(done)
    assert line["error_code"] == "InvalidRequest" and "--checksum" in line["error"]
    assert asked == (0, [])
    assert s3.list_objects_v2(Bucket=bucket).get("KeyCount") == 0


def test_a_well_formed_but_wrong_checksum_reaches_the_provider_and_fails_with_status_6(
    aws_env: dict[str, str], s3: Any, bucket: str
) -> None:
    with FileHTTPServer() as server:
        server.files["/f.bin"] = b"x" * 1000
        done = run_download(aws_env, server.url("/f.bin"), f"s3://{bucket}/f.bin", "--checksum", "MD5:" + "0" * 32)
        asked = server.connections.total
    assert done.returncode == 6, (done.stdout, done.stderr)
    assert json_line(done)["error_code"] == "IntegrityError"
    assert asked >= 1
    assert s3.list_objects_v2(Bucket=bucket).get("KeyCount") == 0


HEX = "0123456789abcdefABCDEF"
ALGORITHMS = st.one_of(
    st.sampled_from(CHECKSUM_ALGORITHMS), st.text("abcdefghijklmnopqrstuvwxyz0123456789-", max_size=8)
)
RIGHT_LENGTH_HEX = st.sampled_from(CHECKSUM_ALGORITHMS).flatmap(
    lambda name: st.tuples(st.just(name), st.text(HEX, min_size=HEX_LENGTHS[name], max_size=HEX_LENGTHS[name]))
)
DIGESTS = st.one_of(
    st.sampled_from(sorted(HEX_LENGTHS.values())).flatmap(lambda n: st.text(HEX, min_size=n - 1, max_size=n + 1)),
    st.text(HEX, max_size=140),
    st.text(max_size=140).filter(lambda text: text == text.strip()),
)


def _in_task(algorithm: str, digest: str) -> Checksum | str:
    """The checksum a task message with {type, value} asks for, or the refusal's message."""
    source = {"url": "http://h/x", "checksum": {"type": algorithm, "value": digest}}
    entry = {"source": source, "target": {"bucket": "my-bucket", "key": "k"}}
    try:
        return parse_download_task({"payload": {"files": [entry]}}, url_check=lambda url: None).files[0].checksum
    except InvalidRequest as exc:
        return exc.message


def _on_command_line(algorithm: str, digest: str) -> Checksum | str:
    try:
        return Checksum.from_text(f"{algorithm}:{digest}")
    except InvalidRequest as exc:
        return exc.message


@settings(max_examples=300, deadline=None)
@given(RIGHT_LENGTH_HEX)
def test_a_digest_of_each_algorithms_length_is_accepted_in_the_task_and_on_the_command_line(
    named: tuple[str, str],
) -> None:
    algorithm, digest = named
    expected = Checksum(algorithm, digest.lower())
    assert _in_task(algorithm, digest) == expected
    assert _on_command_line(algorithm, digest) == expected
    assert _on_command_line(algorithm.upper(), f" {digest.upper()} ") == expected


@settings(max_examples=500, deadline=None)
@given(ALGORITHMS, DIGESTS)
def test_the_task_and_the_command_line_refuse_the_same_checksums(algorithm: str, digest: str) -> None:
    valid = algorithm in HEX_LENGTHS and len(digest) == HEX_LENGTHS[algorithm] and all(c in HEX for c in digest)
    in_task, on_command_line = _in_task(algorithm, digest), _on_command_line(algorithm, digest)
    if valid:
        assert in_task == on_command_line == Checksum(algorithm, digest.lower())
    else:
        assert isinstance(in_task, str) and isinstance(on_command_line, str)
        problem = "must be one of" if algorithm not in HEX_LENGTHS else f"must be a {HEX_LENGTHS[algorithm]}-digit hex"
        assert problem in in_task and problem in on_command_line
