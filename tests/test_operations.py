"""What operators see of a running gateway: metrics, health, status, JSON logs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import requests
from prometheus_client.parser import text_string_to_metric_families

from provider_gateway.cli.status import render
from provider_gateway.local.http_server import FileHTTPServer
from tests import support
from tests.conftest import GatewayFactory
from tests.servers import free_port
from tests.support import cli_path, create_state_machine, download_message, metrics_args, start, wait_done

MiB = 1024 * 1024

# Runs the CLI with a SIGUSR1 handler that kills the thread named by $KILL_THREAD from inside,
# as a bug escaping its loop would: the test needs a real dead thread, not a hook in the product.
KILLABLE = """
import ctypes, os, signal, sys, threading
def kill(signum, frame):
    for thread in threading.enumerate():
        if thread.name == os.environ["KILL_THREAD"]:
            ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread.ident), ctypes.py_object(SystemExit))
signal.signal(signal.SIGUSR1, kill)
from provider_gateway.cli import main
sys.argv[0] = "provider-gateway"
main()
"""


def wait_until(check: Callable[[], Any], timeout_s: float = 30, what: str = "condition") -> Any:
    """support.wait_until, the endpoint not answering yet counting as not yet."""
    return support.wait_until(check, what, timeout_s, ignoring=(requests.ConnectionError,))


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_metrics_count_bytes_exactly_and_failures_by_code(
    gateway: GatewayFactory, activity: str, sfn: Any, bucket: str
) -> None:
    data = os.urandom(3 * MiB + 123)
    port = free_port()
    with FileHTTPServer({"/a.bin": data}) as server:
        gateway(activity, {"type": "http", "host": server.host}, provider_id="PROV", run_args=metrics_args(port))
        machine = create_state_machine(sfn, activity)
        wait_until(lambda: requests.get(f"http://127.0.0.1:{port}/healthz", timeout=5).ok, what="the endpoint")
        ok = wait_done(sfn, start(sfn, machine, download_message([(server.url("/a.bin"), bucket, "a.bin")])))
        missing = wait_done(sfn, start(sfn, machine, download_message([(server.url("/nope"), bucket, "n")])))
        assert (ok["status"], missing["status"]) == ("SUCCEEDED", "FAILED")
        prov = (("provider", "PROV"),)
        settled = (("provider_gateway_tasks_in_flight", prov), ("provider_gateway_transfer_seconds_count", prov))
        # The execution ends when Step Functions has the answer, a moment before the gateway counts it answered.
        samples = wait_until(lambda: (s := scrape(port))[settled[0]] == 0 and s[settled[1]] == 2 and s, what="settled")

    assert samples[("provider_gateway_bytes_total", prov)] == len(data)
    copied = (("error_code", ""), ("outcome", "copied"), ("provider", "PROV"))
    failed = (("error_code", "SourceNotFound"), ("outcome", "failed"), ("provider", "PROV"))
    assert samples[("provider_gateway_files_total", copied)] == 1
    assert samples[("provider_gateway_files_total", failed)] == 1
    assert samples[("provider_gateway_tasks_total", (*failed[:1], ("outcome", "failure"), ("provider", "PROV")))] == 1
    assert samples[("provider_gateway_transfer_seconds_count", prov)] == 2
    assert samples[("provider_gateway_connections_busy", prov)] == 0
    assert samples[("provider_gateway_tasks_in_flight", prov)] == 0
    assert samples[("provider_gateway_connections_open", prov)] >= 1


def test_healthz_fails_while_a_connection_thread_is_dead_and_recovers_when_it_is_replaced(
    gateway: GatewayFactory, activity: str, sfn: Any, bucket: str
) -> None:
    port = free_port()
    with FileHTTPServer({"/a.bin": b"a" * 1000}) as server:
        process = gateway(
            activity,
            {"type": "http", "host": server.host},
            provider_id="PROV",
            run_args=metrics_args(port),
            launcher=(sys.executable, "-c", KILLABLE),
            extra_env={"KILL_THREAD": "PROV-conn-1"},
        )
        healthz = f"http://127.0.0.1:{port}/healthz"
        wait_until(lambda: requests.get(healthz, timeout=5).status_code == 200, what="healthy at start")
        process.proc.send_signal(signal.SIGUSR1)
        sick = wait_until(lambda: (r := requests.get(healthz, timeout=5)).status_code == 503 and r.json(), what="503")
        assert sick["healthy"] is False
        assert any("PROV-conn-1 has died" in p for p in sick["problems"])
        wait_until(lambda: requests.get(healthz, timeout=5).status_code == 200, timeout_s=20, what="recovery")
        restarts = scrape(port)[
            ("provider_gateway_thread_restarts_total", (("kind", "connection"), ("provider", "PROV")))
        ]
        machine = create_state_machine(sfn, activity)
        done = wait_done(sfn, start(sfn, machine, download_message([(server.url("/a.bin"), bucket, "a.bin")])))
    assert restarts == 1
    assert done["status"] == "SUCCEEDED"
    assert "connection thread PROV-conn-1 died: replacing it" in process.log()


def test_json_logs_carry_task_events_and_no_secret_and_status_shows_the_transfer(
    gateway: GatewayFactory, activity: str, sfn: Any, bucket: str, aws_env: dict[str, str]
) -> None:
    data = b"d" * (6 * MiB)
    port = free_port()
    with FileHTTPServer({"/big.bin": data}, rate_bytes_per_s=2 * MiB, basic_auth=("user", "pw-SECRET-1")) as server:
        conn = {
            "type": "http",
            "host": server.host,
            "username": "user",
            "password": "pw-SECRET-1",
            "headers": {"X-Api-Key": "hdr-SECRET-2"},
        }
        process = gateway(
            activity,
            conn,
            provider_id="PROV",
            run_args=(*metrics_args(port), "--progress-interval-s", "0.5"),  # JSON: the default off a terminal
        )
        machine = create_state_machine(sfn, activity)
        big = start(sfn, machine, download_message([(server.url("/big.bin"), bucket, "big.bin")], size=len(data)))
        status_url = f"http://127.0.0.1:{port}"

        def busy_status() -> str | None:
            # The table of the status command, from /status read here: a transfer of 3 s leaves no time for
            # a command's start-up on a loaded machine (the command itself is run below with --check).
            shown = render(requests.get(f"{status_url}/status", timeout=5).json())
            return shown if "busy" in shown and "%)" in shown else None

        table = wait_until(busy_status, what="a busy connection in the status table")
        assert wait_done(sfn, big)["status"] == "SUCCEEDED"
        missing = wait_done(sfn, start(sfn, machine, download_message([(server.url("/gone"), bucket, "g")])))
        assert missing["status"] == "FAILED"
        check = subprocess.run([cli_path(), "status", "--check", "--url", status_url], timeout=30, check=False)
    assert "provider-gateway 0.1.0: healthy" in table
    assert "PROV (http): 1 busy, 1 idle" in table and "/big.bin -> s3://" in table
    assert check.returncode == 0

    log = process.log()
    assert "SECRET" not in log
    records = [json.loads(line) for line in log.splitlines() if line.strip()]
    incomplete = [r for r in records if not {"time", "level", "logger", "thread", "message"} <= r.keys()]
    assert not incomplete
    events: dict[str, list[dict[str, Any]]] = {}
    for record in records:
        if "event" in record:
            events.setdefault(record["event"], []).append(record)
    assert {"task_claimed", "file_started", "file_progress", "file_finished", "file_failed", "task_answered"} <= set(
        events
    )
    finished = events["file_finished"][0]
    assert finished["provider"] == "PROV" and finished["bytes"] == len(data) and finished["mb_per_s"] > 0
    # A file that fits in one part ends in its connection's PutObject thread, named after the connection.
    assert finished["thread"].startswith(finished["connection"]) and finished["connection"].startswith("PROV-conn-")
    assert finished["file"] == server.url("/big.bin")
    progress = events["file_progress"]
    assert progress and all(0 < p["percent"] <= 100 and p["size"] == len(data) for p in progress)
    assert all(p["connection"] == finished["connection"] for p in progress)
    assert events["file_failed"][0]["error_code"] == "SourceNotFound"


def test_status_of_no_gateway_says_so_and_fails() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    shown = subprocess.run(
        [cli_path(), "status", "--url", url], capture_output=True, text=True, timeout=30, check=False
    )
    check = subprocess.run(
        [cli_path(), "status", "--check", "--url", url], capture_output=True, timeout=30, check=False
    )
    assert shown.returncode == 1 and "no gateway answers" in shown.stderr
    assert check.returncode == 1 and check.stdout == b""


def test_healthz_fails_when_the_activity_api_stays_unreachable(gateway: GatewayFactory, activity: str) -> None:
    port = free_port()
    gateway(
        activity,
        {"type": "http", "host": "127.0.0.1:9"},
        provider_id="PROV",
        run_args=(*metrics_args(port), "--unhealthy-after-s", "1"),
        extra_env={"AWS_ENDPOINT_URL_SFN": f"http://127.0.0.1:{free_port()}"},  # nothing listens there
    )
    healthz = f"http://127.0.0.1:{port}/healthz"
    sick = wait_until(
        lambda: (r := requests.get(healthz, timeout=5)).status_code == 503 and r.json(), timeout_s=60, what="503"
    )
    assert any("GetActivityTask on " + activity in p and "failing for" in p for p in sick["problems"]), sick
    errors = scrape(port)[("provider_gateway_poll_errors_total", (("activity", activity), ("provider", "PROV")))]
    assert errors >= 1
