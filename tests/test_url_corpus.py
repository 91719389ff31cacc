"""Parser-confusion URLs against the check and the fetch, with a tripwire that must receive nothing.

Each URL of the corpus (and each one hypothesis builds) names the provider and a
tripwire listener in ways that parsers have been seen to read differently. The
gateway must either refuse the URL (InvalidRequest) or fetch exactly what it
checked, from the provider: never a byte to the tripwire.
"""

from __future__ import annotations

import hashlib
import json
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import urllib3.util
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from provider_gateway.config.model import HttpConnConfig
from provider_gateway.errors import GatewayError, InvalidRequest
from provider_gateway.local.http_server import FileHTTPServer
from provider_gateway.protocols import check_url
from provider_gateway.protocols.base import ConnectionSettings
from provider_gateway.protocols.http import HttpConnection
from provider_gateway.urls import parse_url
from tests.conftest import GatewayFactory
from tests.support import create_state_machine, download_message, start, wait_done
from tests.test_download_command import json_line, provider_config, run_download

DATA = b"the provider's own bytes\n" * 100
USER, PASSWORD = "provider", "s3cret-pw"


class Tripwire:
    """A listener on loopback that records every connection and every byte it is sent."""

    def __init__(self, host: str) -> None:
        self._listener = socket.create_server((host, 0))
        self.authority = f"{host}:{self._listener.getsockname()[1]}"
        self.received: list[bytes] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            client.settimeout(2)
            with client:
                try:
                    self.received.append(client.recv(65536))
                except OSError:
                    self.received.append(b"")

    def close(self) -> None:
        self._listener.close()


@pytest.fixture(scope="module")
def provider() -> Iterator[FileHTTPServer]:
    files = {"/ok.bin": DATA, "/ok.bin.sha256": hashlib.sha256(DATA).hexdigest().encode() + b"  ok.bin\n"}
    with FileHTTPServer(files, basic_auth=(USER, PASSWORD)) as server:
        yield server


@pytest.fixture(scope="module")
def tripwires() -> Iterator[list[Tripwire]]:
    """One on another loopback address, one on the provider's own address."""
    wires = [Tripwire("127.0.0.2"), Tripwire("127.0.0.1")]
    yield wires
    for wire in wires:
        wire.close()


def confusions(provider: str, wire: str) -> list[str]:
    """URLs that name ``provider`` (host:port) and ``wire`` (host:port) in confusable ways."""
    p_host, p_port = provider.rsplit(":", 1)
    w_host, w_port = wire.rsplit(":", 1)
    unicode_dots = w_host.replace(".", "\u3002")
    fullwidth = "".join(chr(ord(c) + 0xFEE0) if c.isdigit() else c for c in w_host)
    urls = [
        f"http://{wire}\\@{provider}/ok.bin",
        f"http://{provider}\\@{wire}/ok.bin",
        f"http://{wire}\\\\@{provider}/ok.bin",
        f"http://{wire}@{provider}/ok.bin",
        f"http://{provider}@{wire}/ok.bin",
        f"http://{USER}:{PASSWORD}@{wire}@{provider}/ok.bin",
        f"http://{wire}#@{provider}/ok.bin",
        f"http://{wire}?@{provider}/ok.bin",
        f"http://{provider}#@{wire}/ok.bin",
        f"http://{provider}?@{wire}/ok.bin",
        f"http://{wire};@{provider}/ok.bin",
        f"http://{wire}%40{provider}/ok.bin",
        f"http://{wire}%5C@{provider}/ok.bin",
        f"http://{wire} @{provider}/ok.bin",
        f"http://{wire}\t@{provider}/ok.bin",
        f"http://{provider}\t/ok.bin",
        f"http://\t{wire}/ok.bin",
        f"http://{provider}\r\n@{wire}/ok.bin",
        f"http://{provider}\x00@{wire}/ok.bin",
        f"http://{provider}/\\@{wire}/ok.bin",
        f"http://{provider}/%5C@{wire}/ok.bin",
        f"http:\\\\{wire}/ok.bin",
        f"http:/{wire}/ok.bin",
        f"http:{wire}/ok.bin",
        f"//{wire}/ok.bin",
        f"HTTP://{wire.upper()}/ok.bin",
        f"HtTp://{provider}/ok.bin",
        f"http://{unicode_dots}:{w_port}/ok.bin",
        f"http://{fullwidth}:{w_port}/ok.bin",
        f"http://{w_host}.:{w_port}/ok.bin",
        f"http://{p_host}.:{p_port}/ok.bin",
        f"http://{p_host}:0{p_port}/ok.bin",
        f"http://{w_host}:0{w_port}/ok.bin",
        f"http://{p_host}:{p_port}:{w_port}/ok.bin",
        f"http://{p_host}:+{p_port}/ok.bin",
        f"http://{p_host}:{p_port}%00/ok.bin",
        f"http://{p_host}:{w_port}/ok.bin",
        f"http://{w_host}:{p_port}/ok.bin",
        f"http://[::ffff:{w_host}]:{w_port}/ok.bin",
        f"http://[::ffff:{p_host}]:{p_port}/ok.bin",
        f"http://[::1%25lo]:{p_port}/ok.bin",
        f"http://[{w_host}]:{w_port}/ok.bin",
        f"http://{int.from_bytes(socket.inet_aton(w_host), 'big')}:{w_port}/ok.bin",
        f"http://0x7f.0.0.2:{w_port}/ok.bin",
        f"http://0177.0.0.2:{w_port}/ok.bin",
        f"http://127.2:{w_port}/ok.bin",
        f"http://{provider}@{wire}:{p_port}/ok.bin",
        f"http://{provider} /ok.bin",
        f" http://{provider}/ok.bin",
        f"http://{provider}/ok.bin ",
        f"http://localhost:{w_port}/ok.bin",
        f"http://LOCALHOST:{p_port}/ok.bin",
        f"http://{provider}/ok.bin",  # the plain one: it must work
    ]
    return list(dict.fromkeys(urls))


def two_parsers(url: str) -> set[tuple[str, int | None]]:
    """(host, port) as urllib.parse and as urllib3 read ``url`` (what each one would connect to)."""
    found: set[tuple[str, int | None]] = set()
    try:
        parts = urlsplit(url)
        found.add(((parts.hostname or "").lower(), parts.port))
    except ValueError:
        pass
    try:
        other = urllib3.util.parse_url(url)
        found.add(((other.host or "").lower().strip("[]"), other.port))
    except ValueError:
        pass
    return found


def test_every_accepted_url_reads_the_same_to_both_parsers(provider: FileHTTPServer, tripwires: list[Tripwire]) -> None:
    refused = 0
    for wire in tripwires:
        for url in confusions(provider.host, wire.authority):
            try:
                parsed = parse_url(url)
            except InvalidRequest:
                refused += 1
                continue
            assert two_parsers(url) == {(parsed.host, parsed.port)}, url
    assert refused > 40


def fetch(url: str, conn_config: HttpConnConfig) -> bytes | GatewayError:
    """What the gateway's check and fetch make of ``url``: the bytes, or the contract error."""
    try:
        check_url(conn_config, url)
        connection = HttpConnection(conn_config, ConnectionSettings(read_timeout_s=5))
        stream = connection.open(url)
        try:
            pieces = []
            while piece := stream.read(1 << 16):
                pieces.append(piece)
            return b"".join(pieces)
        finally:
            stream.close()
            connection.close()
    except GatewayError as exc:
        return exc


def provider_conn(provider: FileHTTPServer) -> HttpConnConfig:
    return HttpConnConfig(type="http", host=provider.host, username=USER, password=PASSWORD)


def test_the_corpus_is_refused_or_fetched_from_the_provider(
    provider: FileHTTPServer, tripwires: list[Tripwire]
) -> None:
    outcomes: dict[str, str] = {}
    for wire in tripwires:
        for url in confusions(provider.host, wire.authority):
            result = fetch(url, provider_conn(provider))
            if isinstance(result, bytes):
                assert result == DATA, url
                assert parse_url(url).origin == ("http", "127.0.0.1", provider.server_address[1]), url
            outcomes[url] = result.code if isinstance(result, GatewayError) else "fetched"
    assert [w.received for w in tripwires] == [[], []]
    odd = {run: o for run, o in outcomes.items() if o not in {"fetched", "InvalidRequest", "SourceNotFound"}}
    assert not odd, odd
    assert outcomes[f"http://{provider.host}/ok.bin"] == "fetched"


_PIECES = [
    "@", "\\", ":", "#", "?", "/", ";", ".", "%40", "%5c", "%2e", "%00", "\t", " ", "\u3002", "\uff0e",
    "[", "]", "%25", "0", "::ffff:", "localhost", "LOCALHOST", "user:pw@", "\r\n",
]  # fmt: skip


@st.composite
def confusable_urls(draw: st.DrawFn, provider: str, wire: str) -> str:
    """An http URL whose authority mixes the provider's and the tripwire's names with confusing characters."""
    atoms = [provider, wire, *provider.split(":"), *wire.split(":"), *_PIECES]
    authority = "".join(draw(st.lists(st.sampled_from(atoms), min_size=1, max_size=6)))
    scheme = draw(st.sampled_from(["http://", "HTTP://", "http:\\\\", "http:/", "http:///"]))
    path = draw(st.sampled_from(["/ok.bin", "\\ok.bin", "/ok.bin?x=@" + wire, "/%2e%2e/ok.bin", ""]))
    return scheme + authority + path


def test_hypothesis_urls_never_reach_the_tripwire(provider: FileHTTPServer, tripwires: list[Tripwire]) -> None:
    conn = provider_conn(provider)

    @settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
    @given(st.one_of(*(confusable_urls(provider.host, wire.authority) for wire in tripwires)))
    def property_holds(url: str) -> None:
        result = fetch(url, conn)
        if isinstance(result, bytes):
            assert result == DATA
        try:
            parsed = parse_url(url)
        except InvalidRequest:
            return
        assert two_parsers(url) == {(parsed.host, parsed.port)}

    property_holds()
    assert [w.received for w in tripwires] == [[], []]


def _outcome(done: dict[str, Any]) -> str:
    if done["status"] == "SUCCEEDED":
        (entry,) = json.loads(done["output"])["payload"]["files"]
        return "fetched" if entry["success"] and entry["bytes"] == len(DATA) else f"short: {entry}"
    return str(done.get("error"))


def _run(sfn: Any, machine: str, message: dict[str, Any]) -> str:
    """The outcome of one execution of ``message``, started once more if it was lost.

    The local Step Functions stack now and then never hands out an activity
    task (it never reaches the gateway's log); such an execution times out on
    its heartbeat.
    """
    outcome = _outcome(wait_done(sfn, start(sfn, machine, message), timeout_s=60))
    if outcome == "States.Timeout":
        outcome = _outcome(wait_done(sfn, start(sfn, machine, message), timeout_s=60))
    return outcome


def test_the_corpus_through_the_gateway_as_file_and_as_checksum_sidecar(
    gateway: GatewayFactory,
    provider: FileHTTPServer,
    tripwires: list[Tripwire],
    sfn: Any,
    s3: Any,
    bucket: str,
    activity: str,
) -> None:
    conn = {"type": "http", "host": provider.host, "username": USER, "password": PASSWORD}
    process = gateway(activity, conn, num_connections=2, heartbeat_interval_s=2)
    machine = create_state_machine(sfn, activity, heartbeat_s=10)
    good = f"http://{provider.host}/ok.bin"
    messages: dict[tuple[str, str], tuple[dict[str, Any], str]] = {}
    for wire in tripwires:
        for url in confusions(provider.host, wire.authority):
            key = f"k{len(messages)}"
            messages[("file", url)] = (download_message([(url, bucket, key)]), key)
            checksum = {"type": "sha256", "url": url.replace("/ok.bin", "/ok.bin.sha256")}
            messages[("sidecar", url)] = (download_message([(good, bucket, key + "s")], checksum=checksum), key + "s")
    outcomes = {run: _run(sfn, machine, message) for run, (message, _) in messages.items()}

    assert [w.received for w in tripwires] == [[], []]
    odd = {run: o for run, o in outcomes.items() if o not in {"fetched", "InvalidRequest", "SourceNotFound"}}
    assert not odd, odd
    assert outcomes[("file", good)] == outcomes[("sidecar", good)] == "fetched"
    for (kind, url), outcome in outcomes.items():
        if outcome == "fetched":
            assert s3.get_object(Bucket=bucket, Key=messages[(kind, url)][1])["Body"].read() == DATA
            assert parse_url(url).origin == ("http", "127.0.0.1", provider.server_address[1]), (kind, url)
    assert PASSWORD not in process.log()


@pytest.mark.parametrize("index", range(6))
def test_the_corpus_through_download_with_config(
    index: int,
    provider: FileHTTPServer,
    tripwires: list[Tripwire],
    tmp_path: Path,
    aws_env: dict[str, str],
    s3: Any,
    bucket: str,
) -> None:
    conn = {"type": "http", "host": provider.host, "username": USER, "password": PASSWORD}
    config = provider_config(tmp_path, conn)
    urls = confusions(provider.host, tripwires[index % 2].authority)[index * 3 : index * 3 + 3]
    for url in urls:
        done = run_download(aws_env, url, f"s3://{bucket}/d/x.bin", "--config", str(config))
        line = json_line(done)
        assert (done.returncode, line.get("error_code")) in {(0, None), (2, "InvalidRequest"), (3, "SourceNotFound")}
        if done.returncode == 0:
            assert s3.get_object(Bucket=bucket, Key="d/x.bin")["Body"].read() == DATA
        assert PASSWORD not in done.stdout + done.stderr
    assert [w.received for w in tripwires] == [[], []]
