"""No secret is ever shown: every kind of secret, a failure of every kind, every place text goes.

The gateway (``run``), ``download``, ``validate`` and the Lambda handlers are
driven with FTP, SFTP and HTTP passwords, a bearer token, configured header
values, a private key's passphrase, passwords in task URLs and query-string
credentials (``access_token``, ``X-Amz-*``), through refused logins, missing
files, bad URLs, config type errors, a YAML syntax error and a redirect to
another host. Then every output, debug log, SendTaskFailure cause, S3 object
(key and metadata), ``/status`` and ``/metrics`` is searched for each secret.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import re
import subprocess
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paramiko
import pytest
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from provider_gateway.lambdas.download import download as download_lambda
from provider_gateway.lambdas.environment import LambdaError
from provider_gateway.lambdas.files import list_files
from provider_gateway.local.ftp_server import FileFTPServer
from provider_gateway.local.http_server import FileHTTPServer
from provider_gateway.local.sftp_server import InProcessSFTPServer
from tests.servers import free_port, wait_for_port
from tests.support import (
    GatewayProcess,
    cli_path,
    create_activity,
    create_state_machine,
    download_message,
    start,
    wait_done,
    write_config,
)


def _secret(kind: str) -> str:
    """A value no text can hold by chance: letters and digits only, so no encoding changes it."""
    return f"{kind}Zq{uuid.uuid4().hex[:12]}"


HTTP_PW = _secret("httpPw")
HTTP_WRONG = _secret("httpWrong")
TOKEN = _secret("bearerTok")
HEADER = _secret("hdrVal")
FTP_PW = _secret("ftpPw")
FTP_WRONG = _secret("ftpWrong")
SFTP_PW = _secret("sftpPw")
PASSPHRASE = _secret("keyPass")
URL_PW = _secret("urlPw")
ACCESS_TOKEN = _secret("qsTok")
AMZ_SIG = _secret("amzSig")
AMZ_CRED = _secret("amzCred")
TYPED = "9876543217123"  # a password YAML reads as a number: a type error
YAML_PW = _secret("yamlPw")
SECRETS = {
    "HTTP password": HTTP_PW,
    "HTTP wrong password": HTTP_WRONG,
    "HTTP Basic credentials": base64.b64encode(f"alice:{HTTP_PW}".encode()).decode().rstrip("="),
    "bearer token": TOKEN,
    "header value": HEADER,
    "FTP password": FTP_PW,
    "FTP wrong password": FTP_WRONG,
    "SFTP password": SFTP_PW,
    "key passphrase": PASSPHRASE,
    "URL password": URL_PW,
    "access_token": ACCESS_TOKEN,
    "X-Amz-Signature": AMZ_SIG,
    "X-Amz-Credential": AMZ_CRED,
    "password of the wrong type": TYPED,
    "password on a YAML syntax error's line": YAML_PW,
}
_PIDS = ["HTTP_BASIC", "HTTP_WRONG", "HTTP_TOKEN", "FTP_OK", "FTP_WRONG", "SFTP_PW", "SFTP_KEY"]
QUERY = f"access_token={ACCESS_TOKEN}&X-Amz-Credential={AMZ_CRED}&X-Amz-Signature={AMZ_SIG}"


@dataclass
class Seen:
    """Every text a user or operator could read, by where it came from."""

    texts: dict[str, str] = field(default_factory=dict)

    def add(self, where: str, text: Any) -> None:
        self.texts[where] = self.texts.get(where, "") + (text if isinstance(text, str) else json.dumps(text))

    def leaks(self) -> list[str]:
        return [
            f"{kind} in {where}: ...{text[max(0, text.index(value) - 120) : text.index(value) + 40]!r}..."
            for kind, value in SECRETS.items()
            for where, text in self.texts.items()
            if value in text
        ]

    def summary(self) -> list[str]:
        """Per secret, the places that show it."""
        return [
            f"{kind}: {', '.join(w for w, t in self.texts.items() if value in t)}"
            for kind, value in SECRETS.items()
            if any(value in t for t in self.texts.values())
        ]


@dataclass
class Providers:
    http: FileHTTPServer
    token: HTTPServer
    tripwire: HTTPServer
    ftp: FileFTPServer
    sftp: InProcessSFTPServer
    sftp_key: InProcessSFTPServer
    key_file: Path
    release: threading.Event


SLOW = b"s" * 200_000


def _slow_body(release: threading.Event) -> Iterator[bytes]:
    yield SLOW[:50_000]
    release.wait(60)  # in flight until the test has read /status
    yield SLOW[50_000:]


def _token_handler(tripwire: HTTPServer, release: threading.Event) -> Any:
    def handle(request: Request) -> Response:
        if request.headers.get("Authorization") != f"Bearer {TOKEN}" or request.headers.get("X-Api-Key") != HEADER:
            return Response(b"", status=401)
        if request.path == "/moved.bin":  # a CDN or pre-signed URL elsewhere, as Earthdata providers answer
            return Response(b"", status=302, headers={"Location": f"http://127.0.0.1:{tripwire.port}/cdn.bin?{QUERY}"})
        if request.path == "/ok.bin":
            return Response(b"token-ok")
        if request.path == "/slow.bin":
            headers = {"Content-Length": str(len(SLOW))}
            return Response(_slow_body(release), headers=headers, direct_passthrough=True)
        return Response(b"", status=404)

    return handle


@pytest.fixture
def providers(tmp_path: Path) -> Iterator[Providers]:
    root = tmp_path / "files"
    root.mkdir()
    (root / "ok.bin").write_bytes(b"ftp-ok")
    key_file = tmp_path / "client_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", PASSPHRASE, "-f", str(key_file)], check=True)
    public = paramiko.Ed25519Key(filename=str(key_file), password=PASSPHRASE)
    with ExitStack() as stack:
        http = stack.enter_context(FileHTTPServer({"/ok.bin": b"http-ok"}, basic_auth=("alice", HTTP_PW)))
        tripwire = HTTPServer(threaded=True)
        tripwire.expect_request(re.compile("/.*")).respond_with_data(b"", status=403)
        tripwire.start()
        stack.callback(tripwire.stop)
        token = HTTPServer(threaded=True)
        release = threading.Event()
        stack.callback(release.set)
        token.expect_request(re.compile("/.*")).respond_with_handler(_token_handler(tripwire, release))
        token.start()
        stack.callback(token.stop)
        ftp = stack.enter_context(FileFTPServer(root, password=FTP_PW))
        sftp = stack.enter_context(InProcessSFTPServer(root, password=SFTP_PW))
        sftp_key = stack.enter_context(InProcessSFTPServer(root, password=_secret("unused"), authorized_key=public))
        yield Providers(http, token, tripwire, ftp, sftp, sftp_key, key_file, release)


def _token_url(p: Providers) -> Any:
    return lambda path: f"http://127.0.0.1:{p.token.port}{path}"


def _gateway_providers(p: Providers, activities: dict[str, str]) -> list[dict[str, Any]]:
    ftp = {"type": "ftp", "host": "127.0.0.1", "port": p.ftp.port, "username": "provider"}
    sftp = {"type": "sftp", "host": "127.0.0.1", "username": "provider"}
    conns: dict[str, dict[str, Any]] = {
        "HTTP_BASIC": {"type": "http", "host": p.http.host, "username": "alice", "password": HTTP_PW},
        "HTTP_WRONG": {"type": "http", "host": p.http.host, "username": "alice", "password": HTTP_WRONG},
        "HTTP_TOKEN": {
            "type": "http",
            "host": f"127.0.0.1:{p.token.port}",
            "token": TOKEN,
            "headers": {"X-Api-Key": HEADER},
        },
        "FTP_OK": {**ftp, "password": FTP_PW},
        "FTP_WRONG": {**ftp, "password": FTP_WRONG},
        "SFTP_PW": {**sftp, "port": p.sftp.port, "password": SFTP_PW, "host_key": p.sftp.host_key_line},
        "SFTP_KEY": {
            **sftp,
            "port": p.sftp_key.port,
            "private_key_file": str(p.key_file),
            "private_key_passphrase": PASSPHRASE,
            "host_key": p.sftp_key.host_key_line,
        },
    }
    return [
        {
            "id": pid,
            "gateway_config": {
                "activity_arn": activities[pid],
                "conn_config": conn,
                "num_connections": 1,
                "failure_mode": "per_file",
                "retries": 1,
                "shutdown_grace_s": 2,
            },
        }
        for pid, conn in conns.items()
    ]


def _tasks(p: Providers, bucket: str) -> dict[str, list[dict[str, Any]]]:
    """Per provider, the task messages to send: successes beside refused logins, missing files, bad URLs."""
    http, token = p.http.url, _token_url(p)
    ftp = f"ftp://127.0.0.1:{p.ftp.port}"
    with_pw = http("/ok.bin").replace("http://", f"http://bob:{URL_PW}@")
    return {
        "HTTP_BASIC": [
            download_message(
                [
                    (http(f"/ok.bin?{QUERY}"), bucket, "basic-ok"),
                    (http(f"/missing.bin?{QUERY}"), bucket, "basic-missing"),
                    (with_pw, bucket, "basic-userinfo"),
                ]
            ),
            download_message([(f"http://carol:{URL_PW}@elsewhere.invalid/x.bin?{QUERY}", bucket, "elsewhere")]),
            download_message([(f"http://bob:{URL_PW}@{p.http.host}:99999/x.bin?{QUERY}", bucket, "bad-port")]),
            download_message([(f"gopher://bob:{URL_PW}@{p.http.host}/x.bin?{QUERY}", bucket, "bad-scheme")]),
        ],
        "HTTP_WRONG": [download_message([(http(f"/ok.bin?{QUERY}"), bucket, "wrong-http")])],
        "HTTP_TOKEN": [
            download_message(
                [
                    (token(f"/ok.bin?{QUERY}"), bucket, "token-ok"),
                    (token(f"/moved.bin?{QUERY}"), bucket, "token-moved"),
                    (token(f"/missing.bin?{QUERY}"), bucket, "token-missing"),
                ]
            )
        ],
        "FTP_OK": [
            download_message(
                [
                    (f"{ftp}/ok.bin", bucket, "ftp-ok"),
                    (f"{ftp}/missing.bin", bucket, "ftp-missing"),
                    (f"ftp://provider:{URL_PW}@127.0.0.1:{p.ftp.port}/ok.bin", bucket, "ftp-userinfo"),
                ]
            )
        ],
        "FTP_WRONG": [download_message([(f"{ftp}/ok.bin", bucket, "ftp-wrong")])],
        "SFTP_PW": [
            download_message(
                [
                    (f"sftp://127.0.0.1:{p.sftp.port}/ok.bin", bucket, "sftp-ok"),
                    (f"sftp://127.0.0.1:{p.sftp.port}/missing.bin", bucket, "sftp-missing"),
                ]
            )
        ],
        "SFTP_KEY": [download_message([(f"sftp://127.0.0.1:{p.sftp_key.port}/ok.bin", bucket, "sftp-key-ok")])],
    }


def _run_gateway(
    p: Providers, sfn: Any, s3: Any, bucket: str, aws_env: dict[str, str], tmp: Path, seen: Seen
) -> dict[str, str]:
    """``run`` with every provider and every task; returns each target key's outcome (error code or 'ok')."""
    activities = {pid: create_activity(sfn, pid.lower().replace("_", "-")) for pid in _PIDS}
    config = write_config(tmp / "gateway.yml", _gateway_providers(p, activities))
    port = free_port()
    process = GatewayProcess(
        config,
        aws_env,
        tmp / "gateway.log",
        run_args=("--metrics-port", str(port), "--metrics-host", "127.0.0.1"),
    )
    outcomes: dict[str, str] = {}
    try:
        slow = start(
            sfn,
            create_state_machine(sfn, activities["HTTP_TOKEN"]),
            download_message([(_token_url(p)(f"/slow.bin?{QUERY}"), bucket, "token-slow")]),
        )
        wait_for_port(port)
        _read_endpoints(port, seen, in_flight="slow.bin")  # /status shows the file in flight
        p.release.set()
        executions: list[tuple[str, dict[str, Any]]] = [
            (slow, {"payload": {"files": [{"target": {"key": "token-slow"}}]}})
        ]
        executions += [
            (start(sfn, create_state_machine(sfn, activities[pid]), message), message)
            for pid, messages in _tasks(p, bucket).items()
            for message in messages
        ]
        for arn, message in executions:
            done = wait_done(sfn, arn, timeout_s=90)
            seen.add(f"execution {arn[-8:]}", {k: done.get(k) for k in ("output", "error", "cause")})
            for entry in _file_results(done) or message["payload"]["files"]:
                key = entry["target"]["key"]
                outcomes[key] = "ok" if entry.get("success") else str(entry.get("error_code", done.get("error")))
        _read_endpoints(port, seen)
    finally:
        code = process.terminate()
        seen.add("gateway log (debug)", process.log())
    assert code == 0, process.log()[-3000:]
    for item in s3.list_objects_v2(Bucket=bucket).get("Contents", []):
        head = s3.head_object(Bucket=bucket, Key=item["Key"])
        seen.add(f"S3 object {item['Key']}", {"key": item["Key"], "metadata": head.get("Metadata", {})})
        seen.add(f"S3 body {item['Key']}", s3.get_object(Bucket=bucket, Key=item["Key"])["Body"].read().decode())
    return outcomes


def _read_endpoints(port: int, seen: Seen, in_flight: str | None = None) -> None:
    """/status, /metrics and /healthz; with ``in_flight``, once /status shows that file being copied."""
    deadline = time.monotonic() + 30
    while True:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/status", timeout=10) as response:
            text = response.read().decode()
        if in_flight is None or in_flight in text or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert in_flight is None or in_flight in text, text
    seen.add("GET /status", text)
    for path in ("/metrics", "/healthz"):
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as response:
            seen.add(f"GET {path}", response.read().decode())


def _file_results(done: dict[str, Any]) -> list[dict[str, Any]]:
    """The per-file results of a finished execution (none when the whole task was refused)."""
    try:
        document = json.loads(done.get("output") or done.get("cause") or "")
    except ValueError:
        return []
    files = document.get("payload", document).get("files", []) if isinstance(document, dict) else []
    return [f for f in files if isinstance(f, dict) and "target" in f and "success" in f]


def _cli(args: list[str], env: dict[str, str], seen: Seen, where: str) -> int:
    done = subprocess.run(
        [cli_path(), "--log-level", "debug", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=120,
    )
    seen.add(f"{where}: stdout", done.stdout)
    seen.add(f"{where}: stderr", done.stderr)
    return done.returncode


def _bad_configs(tmp: Path, arn: str, host: str) -> dict[str, Path]:
    typed = tmp / "typed.yml"
    typed.write_text(
        f"""providers:
  - id: FTP_TYPED
    config:
      gateway_config:
        activity_arn: {arn}
        num_connections: 1
        conn_config: {{type: ftp, host: 127.0.0.1, username: provider, password: {TYPED}}}
"""
    )
    syntax = tmp / "syntax.yml"
    syntax.write_text(
        f"""providers:
  - id: FTP_SYNTAX
    config:
      gateway_config:
        activity_arn: {arn}
        num_connections: 1
        conn_config:
          type: ftp
          password: "{YAML_PW}" oops: [
"""
    )
    newline_header = tmp / "newline.yml"
    write_config(
        newline_header,
        [
            {
                "id": "HTTP_NEWLINE",
                "gateway_config": {
                    "activity_arn": arn,
                    "num_connections": 1,
                    "conn_config": {"type": "http", "host": host, "headers": {"X-Api-Key": f"{HEADER}\n"}},
                },
            },
            {
                "id": "HTTP_NEWLINE_TOKEN",
                "gateway_config": {
                    "activity_arn": arn,
                    "num_connections": 1,
                    "conn_config": {"type": "http", "host": host, "token": f"{TOKEN}\r\n"},
                },
            },
        ],
    )
    return {"type error": typed, "YAML syntax error": syntax, "newline in a header": newline_header}


def _one_shot_commands(p: Providers, bucket: str, aws_env: dict[str, str], tmp: Path, seen: Seen) -> dict[str, int]:
    """``download`` and ``validate`` through every failure; returns each case's exit status."""
    arn = "arn:aws:states:us-east-1:123456789012:activity:secrets"
    config = write_config(tmp / "one-shot.yml", _gateway_providers(p, dict.fromkeys(_PIDS, arn)))
    http, token = p.http.url, _token_url(p)
    basic = ["--provider", "HTTP_BASIC"]
    cases = {
        "download ok with query credentials": ["download", "--config", str(config), *basic, http(f"/ok.bin?{QUERY}")],
        "download missing": ["download", "--config", str(config), *basic, http(f"/missing.bin?{QUERY}")],
        "download redirect elsewhere": [
            "download",
            "--config",
            str(config),
            "--provider",
            "HTTP_TOKEN",
            token(f"/moved.bin?{QUERY}"),
        ],
        "download userinfo": [
            "download",
            http(f"/ok.bin?{QUERY}").replace("http://", f"http://alice:{HTTP_PW}@"),
        ],
        "download userinfo refused": [
            "download",
            http(f"/ok.bin?{QUERY}").replace("http://", f"http://alice:{HTTP_WRONG}@"),
        ],
        "download ftp refused": ["download", f"ftp://provider:{FTP_WRONG}@127.0.0.1:{p.ftp.port}/ok.bin"],
        "download ftp missing": ["download", f"ftp://provider:{FTP_PW}@127.0.0.1:{p.ftp.port}/missing.bin"],
        "download sftp refused": ["download", f"sftp://provider:{URL_PW}@127.0.0.1:{p.sftp.port}/ok.bin"],
        "download bad URL": ["download", f"http://bob:{URL_PW}@127.0.0.1:99999/x.bin?{QUERY}"],
        "validate": ["validate", "--config", str(config)],
    }
    for name, path in _bad_configs(tmp, arn, p.http.host).items():
        cases[f"validate {name}"] = ["validate", "--config", str(path)]
        cases[f"download {name}"] = ["download", "--config", str(path), "--provider", "HTTP_NEWLINE", http("/ok.bin")]
    newline = tmp / "newline.yml"
    cases["download newline in a token"] = ["download", "--config", str(newline), "--provider", "HTTP_NEWLINE_TOKEN"]
    cases["download newline in a token"].append(http("/ok.bin"))
    codes = {}
    for name, args in cases.items():
        if args[0] == "download":
            args = [*args, f"s3://{bucket}/one-shot/"]
        codes[name] = _cli(args, aws_env, seen, name)
    return codes


class Context:
    """The Lambda context: how long the invocation has left."""

    def get_remaining_time_in_millis(self) -> int:
        return 900_000


def _lambdas(
    p: Providers, bucket: str, aws_env: dict[str, str], tmp: Path, seen: Seen, monkeypatch: pytest.MonkeyPatch
) -> dict[str, str]:
    """The file-list and download handlers through failures; returns each case's outcome."""
    arn = "arn:aws:states:us-east-1:123456789012:activity:secrets"
    config = write_config(tmp / "lambda.yml", _gateway_providers(p, dict.fromkeys(_PIDS, arn)))
    for name, value in {**aws_env, "GATEWAY_CONFIG": str(config)}.items():
        monkeypatch.setenv(name, value)
    p.http.files["/list.json"] = json.dumps([p.http.url(f"/ok.bin?{QUERY}")]).encode()
    with_pw = p.http.url("/list.json").replace("http://", f"http://bob:{URL_PW}@")
    target = {"bucket": bucket, "key_prefix": "lambda"}
    list_events = {
        "list ok": {"provider": "HTTP_BASIC", "callback": {"files_url": p.http.url(f"/list.json?{QUERY}")}},
        "list missing": {"provider": "HTTP_BASIC", "callback": {"files_url": p.http.url(f"/none.json?{QUERY}")}},
        "list userinfo": {"provider": "HTTP_BASIC", "callback": {"files_url": with_pw}},
        "list refused": {"provider": "HTTP_WRONG", "callback": {"files_url": p.http.url(f"/list.json?{QUERY}")}},
        "list elsewhere": {
            "provider": "HTTP_BASIC",
            "callback": {"files": [f"http://bob:{URL_PW}@elsewhere.invalid/x?{QUERY}"]},
        },
    }
    outcomes: dict[str, str] = {}
    for name, event in list_events.items():
        outcomes[name] = _call(lambda e=event: _without_working_urls(list_files({**e, "target": target})), seen, name)

    def task(provider: str, url: str, key: str) -> dict[str, Any]:
        entry = {"source": {"url": url}, "target": {"bucket": bucket, "key": key}}
        return {"provider": provider, "task": {"payload": {"files": [entry]}}}

    download_events = {
        "download ok": task("HTTP_BASIC", p.http.url(f"/ok.bin?{QUERY}"), "lambda-ok"),
        "download missing": task("HTTP_BASIC", p.http.url(f"/missing.bin?{QUERY}"), "lambda-missing"),
        "download refused": task("HTTP_WRONG", p.http.url(f"/ok.bin?{QUERY}"), "lambda-refused"),
        "download redirect elsewhere": task("HTTP_TOKEN", _token_url(p)(f"/moved.bin?{QUERY}"), "lambda-moved"),
        "download ftp refused": task("FTP_WRONG", f"ftp://127.0.0.1:{p.ftp.port}/ok.bin", "lambda-ftp"),
        "download bad URL": task("HTTP_BASIC", f"http://bob:{URL_PW}@{p.http.host}:99999/x?{QUERY}", "lambda-bad"),
    }
    for name, event in download_events.items():
        outcomes[name] = _call(lambda e=event: download_lambda(e, Context()), seen, name)
    return outcomes


def _without_working_urls(listed: dict[str, Any]) -> dict[str, Any]:
    """The file list without each file's URL and the task and Batch job built on it (the next state runs
    them, and must fetch the URL as given).

    Pre-signed query credentials are part of that URL. Everything else the
    list holds (messages, errors, routing) is still searched.
    """
    files = [{k: v for k, v in entry.items() if k not in ("url", "task", "batch")} for entry in listed.get("files", [])]
    assert all(entry.get("url") for entry in listed.get("files", [])), "every listed file keeps its URL"
    return {**listed, "files": files}


def _call(handler: Any, seen: Seen, where: str) -> str:
    try:
        seen.add(f"lambda {where}", handler())
        return "ok"
    except LambdaError as exc:
        seen.add(f"lambda {where} error", f"{type(exc).__name__}: {exc}")
        return type(exc).__name__


def test_no_secret_in_any_output_log_cause_object_or_endpoint(
    providers: Providers,
    sfn: Any,
    s3: Any,
    bucket: str,
    aws_env: dict[str, str],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen = Seen()
    gateway = _run_gateway(providers, sfn, s3, bucket, aws_env, tmp_path, seen)
    commands = _one_shot_commands(providers, bucket, aws_env, tmp_path, seen)
    caplog.set_level(logging.DEBUG)  # from here on, only the handlers run in this process
    caplog.clear()
    lambdas = _lambdas(providers, bucket, aws_env, tmp_path, seen, monkeypatch)
    seen.add("Lambda logs (debug)", caplog.text)
    seen.add("tripwire host: requests received", [dict(r.headers) for r, _ in providers.tripwire.log])

    # Every secret was in play: each kind of login worked somewhere, each kind of failure happened.
    assert {k: gateway.get(k) for k in ("basic-ok", "token-ok", "ftp-ok", "sftp-ok", "sftp-key-ok")} == dict.fromkeys(
        ("basic-ok", "token-ok", "ftp-ok", "sftp-ok", "sftp-key-ok"), "ok"
    ), gateway
    assert gateway.get("wrong-http") == gateway.get("ftp-wrong") == "SourceAccessDenied", gateway
    assert {gateway.get(k) for k in ("basic-missing", "ftp-missing", "sftp-missing", "token-missing")} == {
        "SourceNotFound"
    }, gateway
    assert "InvalidRequest" in gateway.values(), gateway  # the bad URLs
    assert commands["download ok with query credentials"] == commands["validate"] == 0, commands
    assert commands["download missing"] == 3 and commands["download ftp refused"] == 4, commands
    assert all(commands[f"validate {name}"] != 0 for name in ("type error", "YAML syntax error")), commands
    assert lambdas["list ok"] == lambdas["download ok"] == "ok", lambdas
    assert lambdas["download missing"] == "SourceNotFound", lambdas
    assert lambdas["download refused"] == "SourceAccessDenied", lambdas
    assert len(seen.texts) > 40

    leaks = seen.leaks()
    assert not leaks, f"{len(leaks)} secret(s) shown:\n" + "\n".join(seen.summary()) + "\n\nwhere:\n" + "\n".join(leaks)


def test_the_search_finds_a_secret_where_there_is_one() -> None:
    seen = Seen()
    seen.add("a log", f"GET /x?access_token={ACCESS_TOKEN} 200")
    assert seen.leaks() and "access_token in a log" in seen.leaks()[0]
