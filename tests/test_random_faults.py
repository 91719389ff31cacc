"""The gateway's promises, checked after every run under faults drawn at random.

Each run starts ``provider-gateway run`` (the real CLI, a child process) in
front of a real provider (pytest-httpserver, pyftpdlib, OpenSSH sshd) reached
through a fault proxy, with its S3 and Step Functions endpoints behind
proxies too. What breaks, where and when is drawn from a seeded random
source. After the run:

- every task token GetActivityTask delivered got exactly one answer,
  counted at the Step Functions endpoint;
- every object in the bucket is byte-exact (so every SUCCEEDED file is);
- no multipart upload is left;
- the provider never saw more than ``num_connections`` sessions at once;
- the process exited 0 within ``shutdown_grace_s`` plus a few seconds of
  its SIGTERM;
- faults the retries can heal (no SIGTERM, no AccessDenied) end SUCCEEDED.

``FAULT_SEED`` picks the seed (the seed of run i is FAULT_SEED + i, a random
base otherwise) and ``FAULT_RUNS`` the number of runs; a failure prints the
command that replays it.
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from pytest_httpserver import HTTPServer

from provider_gateway.local.ftp_server import FileFTPServer
from provider_gateway.local.stack import LocalStack
from tests.faults import Fault, FaultKind, FaultProxy, RangeFiles, StepFunctionsProxy, Throttle
from tests.servers import SSHD, FaultyS3Proxy, Sshd
from tests.support import (
    GatewayProcess,
    create_activity,
    create_state_machine,
    download_message,
    start,
    unique,
    write_config,
)

MiB = 1024 * 1024
FAULT_SEED = int(os.environ.get("FAULT_SEED") or random.SystemRandom().randrange(1_000_000))
FAULT_RUNS = int(os.environ.get("FAULT_RUNS") or 12)
# How long after shutdown_grace_s the process may take to exit ("a few seconds"): the
# gateway gives cancelled transfers 5 s to answer, then its threads 5 s to end.
EXIT_SLACK_S = 10.0
# How long a run without SIGTERM may take before its unanswered tasks count as lost.
RUN_DEADLINE_S = 90.0
PROTOCOLS = ["http", "ftp", *(["sftp"] if SSHD is not None or os.environ.get("CI") else [])]


@dataclass
class Plan:
    """What one run does, all drawn from its seed."""

    seed: int
    protocol: str
    sized: bool
    sizes: list[int]
    tasks: list[list[int]]
    num_connections: int
    failure_mode: str
    faults: list[Fault]
    server_aborts: dict[int, float]
    s3_fault: tuple[int, str] | None
    throttle: Throttle
    sigterm_after_s: float | None
    grace_s: int

    @property
    def read_timeout_s(self) -> float:
        # With a SIGTERM a stall is left to the cancellation alone: no timeout ends it first.
        return 30.0 if self.sigterm_after_s is not None else 2.0

    def labels(self) -> list[str]:
        """The fault kinds of this run, as the table shows them."""
        out = [f"{self.protocol} {f.kind}" for f in self.faults]
        out += [f"{self.protocol} server abort"] * len(self.server_aborts)
        if not self.sized and self.protocol != "sftp":
            out.append(f"{self.protocol} without {'SIZE' if self.protocol == 'ftp' else 'Content-Length'}")
        if self.s3_fault:
            out.append(f"S3 PUT {'403' if self.s3_fault[1] == 'AccessDenied' else '500'}")
        if self.throttle.answers:
            out.append(f"SendTask* throttled x{'1-4' if self.throttle.answers <= 4 else '5+'}")
        if self.throttle.heartbeats:
            out.append("SendTaskHeartbeat throttled")
        if self.sigterm_after_s is not None:
            out.append("SIGTERM")
        return out or ["none"]


def draw(seed: int) -> Plan:
    """The plan of the run with this seed."""
    rng = random.Random(seed)
    protocol = rng.choice(PROTOCOLS)
    sizes = [
        rng.choice([0, rng.randrange(1, 200_000), rng.randrange(MiB, 4 * MiB), rng.randrange(11 * MiB // 2, 11 * MiB)])
        for _ in range(rng.randint(1, 4))
    ]
    order = list(range(len(sizes)))
    cuts = sorted(rng.sample(range(1, len(sizes)), rng.randint(0, min(2, len(sizes) - 1))))
    tasks = [order[a:b] for a, b in zip([0, *cuts], [*cuts, len(sizes)], strict=True)]
    kinds: list[FaultKind] = ["reset", "truncate", "stall"]
    faults = [Fault(rng.choice(kinds), rng.randrange(0, max(sizes) + 1)) for _ in range(rng.choice([0, 1, 1, 2, 3]))]
    stalls = [f for f in faults if f.kind == "stall"]
    faults = [f for f in faults if f.kind != "stall"] + stalls[:1]  # each stall costs a read timeout
    aborts = {}
    if protocol == "ftp" and len(faults) < 3 and rng.random() < 0.3:  # within the 4 resumes of a file
        aborts[rng.randrange(len(sizes))] = rng.uniform(0.05, 0.95)
    sigterm = rng.uniform(0.2, 5.0) if rng.random() < 0.35 else None
    return Plan(
        seed=seed,
        protocol=protocol,
        sized=protocol == "sftp" or rng.random() < 0.5,
        sizes=sizes,
        tasks=tasks,
        num_connections=rng.randint(1, 3),
        failure_mode=rng.choice(["task", "per_file"]),
        faults=faults,
        server_aborts=aborts,
        s3_fault=(rng.randint(1, 3), rng.choice(["AccessDenied", "InternalError"])) if rng.random() < 0.3 else None,
        throttle=Throttle(
            answers=rng.choice([1, 2, 3, 5, 6]) if rng.random() < 0.3 else 0,
            heartbeats=rng.choice([1, 3]) if rng.random() < 0.2 else 0,
        ),
        sigterm_after_s=sigterm,
        grace_s=rng.choice([1, 2, 3]),
    )


@dataclass
class Providers:
    """The real servers every run goes through (one of each for the module)."""

    root: Path
    http: HTTPServer
    http_files: RangeFiles
    ftp: FileFTPServer
    sshd: Sshd | None


@dataclass
class Outcome:
    """What one run did, and which promises it broke."""

    plan: Plan
    fired: list[str] = field(default_factory=list)
    statuses: list[str] = field(default_factory=list)
    claimed: int = 0
    orphaned: int = 0
    lost: int = 0
    twice: int = 0
    violations: list[str] = field(default_factory=list)


OUTCOMES: list[Outcome] = []


@pytest.fixture(scope="module")
def providers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Providers]:
    root = tmp_path_factory.mktemp("random-faults")
    (root / "files").mkdir()
    files = RangeFiles({})
    with ExitStack() as stack:
        http = HTTPServer(threaded=True)
        http.expect_request(re.compile("/.*")).respond_with_handler(files)
        http.no_handler_status_code = 404
        http.start()
        stack.callback(http.stop)
        ftp = stack.enter_context(FileFTPServer(root / "files"))
        sshd = None
        if "sftp" in PROTOCOLS:
            sshd = Sshd(root / "sshd")
            stack.callback(sshd.stop)
        yield Providers(root / "files", http, files, ftp, sshd)


@pytest.fixture(scope="module", autouse=True)
def fault_table(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if reporter is None or capture is None or not OUTCOMES:
        return
    with capture.global_and_fixture_disabled():  # shown whether the last run passed or not
        reporter.write_line("")
        for line in table(OUTCOMES):
            reporter.write_line(line)


def table(outcomes: list[Outcome]) -> list[str]:
    """Fault kind x runs: planned, fired, runs that broke a promise; then the lost tokens."""
    rows: dict[str, list[int]] = {}
    for outcome in outcomes:
        fired = list(outcome.fired)
        for label in outcome.plan.labels():
            row = rows.setdefault(label, [0, 0, 0])
            row[0] += 1
            if label in fired:
                fired.remove(label)
                row[1] += 1
            row[2] += bool(outcome.violations)
    width = max(len(k) for k in rows)
    lines = [
        f"random faults: base seed {FAULT_SEED}, {len(outcomes)} run(s)",
        f"{'fault':<{width}}  planned  fired  runs failing",
        *(f"{k:<{width}}  {v[0]:>7}  {v[1]:>5}  {v[2]:>12}" for k, v in sorted(rows.items())),
        f"tokens claimed: {sum(o.claimed for o in outcomes)}  answered twice: {sum(o.twice for o in outcomes)}"
        f"  handed out after the poller had gone: {sum(o.orphaned for o in outcomes)}",
        f"lost: {sum(o.lost for o in outcomes)}",
    ]
    for outcome in outcomes:
        if outcome.violations:
            lines.append(f"  seed {outcome.plan.seed} ({', '.join(outcome.plan.labels())}): {outcome.violations[0]}")
    return lines


class Run:
    """One plan carried out against the local stack and the providers."""

    def __init__(self, plan: Plan, providers: Providers, stack: LocalStack, sfn: Any, s3: Any, tmp: Path) -> None:
        self.plan = plan
        self.providers = providers
        self.sfn = sfn
        self.s3 = s3
        self.tmp = tmp
        self.stack = stack
        rng = random.Random(plan.seed)
        self.names = [f"f{plan.seed}-{i}.bin" for i in range(len(plan.sizes))]
        self.data = {name: rng.randbytes(size) for name, size in zip(self.names, plan.sizes, strict=True)}
        self.bucket = unique("faults")
        self.outcome = Outcome(plan)
        self.put_count = 0

    def s3_fails(self, method: str, path: str) -> str | None:
        if method != "PUT" or self.plan.s3_fault is None:
            return None
        self.put_count += 1
        nth, code = self.plan.s3_fault
        return code if self.put_count == nth else None

    def carry_out(self) -> Outcome:
        plan = self.plan
        self.s3.create_bucket(Bucket=self.bucket)
        with ExitStack() as stack:
            proxy = self._provider_proxy()
            stack.callback(proxy.close)
            sfn_proxy = StepFunctionsProxy(self.stack.endpoint, plan.throttle)
            stack.callback(sfn_proxy.close)
            s3_proxy = FaultyS3Proxy(self.stack.endpoint, self.s3_fails)
            stack.callback(s3_proxy.close)
            activity = create_activity(self.sfn, "faults")
            process = self._gateway(activity, proxy, sfn_proxy, s3_proxy)
            stack.callback(self._kill_if_running, process)
            machine = create_state_machine(self.sfn, activity, heartbeat_s=30, timeout_s=600)
            executions = [
                start(
                    self.sfn,
                    machine,
                    download_message([(self._url(proxy, self.names[i]), self.bucket, self.names[i]) for i in task]),
                )
                for task in plan.tasks
            ]
            self._stop(process, sfn_proxy, executions)
            self._check(proxy, sfn_proxy, s3_proxy, executions)
            for arn in executions:  # the tasks never claimed stay RUNNING: end them
                if self.sfn.describe_execution(executionArn=arn)["status"] == "RUNNING":
                    self.sfn.stop_execution(executionArn=arn)
            if self.outcome.violations:
                self.outcome.violations.append("gateway log tail:\n" + process.log()[-4000:])
        return self.outcome

    @staticmethod
    def _kill_if_running(process: GatewayProcess) -> None:
        if process.proc.poll() is None:
            os.killpg(process.proc.pid, signal.SIGKILL)

    def _provider_proxy(self) -> FaultProxy:
        plan, providers = self.plan, self.providers
        if plan.protocol == "http":
            providers.http_files.files.update({f"/{n}": d for n, d in self.data.items()})
            providers.http_files.sized = plan.sized
            proxy = FaultProxy(providers.http.port)
        else:
            for name, data in self.data.items():
                (providers.root / name).write_bytes(data)
            if plan.protocol == "ftp":
                for index, fraction in plan.server_aborts.items():
                    providers.ftp.resets[self.names[index]] = [fraction]
                proxy = FaultProxy(providers.ftp.port, ftp=True, deny=frozenset(() if plan.sized else ("SIZE",)))
            else:
                assert providers.sshd is not None
                proxy = FaultProxy(providers.sshd.port)
        proxy.faults = plan.faults
        return proxy

    def _url(self, proxy: FaultProxy, name: str) -> str:
        if self.plan.protocol == "sftp":
            return f"sftp://127.0.0.1:{proxy.port}{self.providers.root / name}"
        return f"{self.plan.protocol}://127.0.0.1:{proxy.port}/{name}"

    def _conn_config(self, proxy: FaultProxy) -> dict[str, Any]:
        protocol = self.plan.protocol
        if protocol == "http":
            return {"type": "http", "host": f"127.0.0.1:{proxy.port}"}
        if protocol == "ftp":
            return {
                "type": "ftp",
                "host": "127.0.0.1",
                "port": proxy.port,
                "username": "provider",
                "password": "secret",
            }
        sshd = self.providers.sshd
        assert sshd is not None
        return {
            "type": "sftp",
            "host": "127.0.0.1",
            "port": proxy.port,
            "username": sshd.user,
            "private_key_file": str(sshd.client_key),
            "host_key": sshd.host_key_line,
        }

    def _gateway(
        self, activity: str, proxy: FaultProxy, sfn_proxy: StepFunctionsProxy, s3_proxy: FaultyS3Proxy
    ) -> GatewayProcess:
        plan = self.plan
        gateway_config = {
            "activity_arn": activity,
            "conn_config": self._conn_config(proxy),
            "num_connections": plan.num_connections,
            "failure_mode": plan.failure_mode,
            "part_size_mb": 5,
            "read_timeout_s": plan.read_timeout_s,
            "shutdown_grace_s": plan.grace_s,
            "heartbeat_interval_s": 1,
        }
        config = write_config(self.tmp / "collections.yml", [{"id": "FAULTY", "gateway_config": gateway_config}])
        env = {
            **self.stack.environment(),
            "AWS_ENDPOINT_URL_S3": s3_proxy.endpoint,
            "AWS_ENDPOINT_URL_SFN": sfn_proxy.endpoint,
        }
        return GatewayProcess(config, env, self.tmp / "gateway.log")

    def _stop(self, process: GatewayProcess, sfn_proxy: StepFunctionsProxy, executions: list[str]) -> None:
        plan = self.plan
        if plan.sigterm_after_s is not None:
            # The moment is drawn within the service, from its first poll: a signal before the
            # handlers exist ends any Python program with -15, with nothing claimed.
            if not sfn_proxy.polls.wait(60):
                self.outcome.violations.append("the gateway never polled for a task")
            time.sleep(plan.sigterm_after_s)  # the random moment is the fault itself, not a wait for state
        else:
            deadline = time.monotonic() + RUN_DEADLINE_S
            while time.monotonic() < deadline and any(s == "RUNNING" for s in self._statuses(executions)):
                time.sleep(0.2)
        process.proc.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        limit = plan.grace_s + EXIT_SLACK_S
        try:
            code = process.proc.wait(limit + 30)
        except subprocess.TimeoutExpired:
            os.killpg(process.proc.pid, signal.SIGKILL)
            process.proc.wait()
            code = None
        took = time.monotonic() - signalled
        if code != 0:
            self.outcome.violations.append(f"exit code {code} after SIGTERM (took {took:.1f}s)")
        if took > limit:
            self.outcome.violations.append(f"exit took {took:.1f}s after SIGTERM, over grace {plan.grace_s}s + slack")

    def _statuses(self, executions: list[str]) -> list[str]:
        return [self.sfn.describe_execution(executionArn=arn)["status"] for arn in executions]

    def _check(
        self, proxy: FaultProxy, sfn_proxy: StepFunctionsProxy, s3_proxy: FaultyS3Proxy, executions: list[str]
    ) -> None:
        out, plan = self.outcome, self.plan
        out.fired = [f"{plan.protocol} {f.kind}" for f in plan.faults if f.fired]
        out.fired += [
            f"{plan.protocol} server abort"
            for i in plan.server_aborts
            if not self.providers.ftp.resets.get(self.names[i], [None])
        ]
        out.fired += [label for label in plan.labels() if label.startswith(("ftp without", "http without"))]
        if s3_proxy.failed:
            out.fired += [label for label in plan.labels() if label.startswith("S3 PUT")]
        if sfn_proxy.throttled.get("SendTaskSuccess") or sfn_proxy.throttled.get("SendTaskFailure"):
            out.fired += [label for label in plan.labels() if label.startswith("SendTask* throttled")]
        if sfn_proxy.throttled.get("SendTaskHeartbeat"):
            out.fired.append("SendTaskHeartbeat throttled")
        if plan.sigterm_after_s is not None:
            out.fired.append("SIGTERM")

        lost, twice = sfn_proxy.lost(), sfn_proxy.answered_twice()
        out.claimed, out.lost, out.twice = len(sfn_proxy.claims), len(lost), len(twice)
        out.orphaned = len(sfn_proxy.orphaned)
        out.violations += [f"claimed token ...{t[-12:]} never answered" for t in lost]
        out.violations += [f"token ...{t[-12:]} answered {len(a)} times: {a}" for t, a in twice.items()]
        answered = sum(1 for t in sfn_proxy.claims if t not in lost)
        deadline = time.monotonic() + 15  # moto ends an execution shortly after its answer
        while time.monotonic() < deadline and sum(s != "RUNNING" for s in self._statuses(executions)) < answered:
            time.sleep(0.1)
        out.statuses = self._statuses(executions)

        for arn, status in zip(executions, out.statuses, strict=True):
            if status != "SUCCEEDED":
                continue
            output = json.loads(self.sfn.describe_execution(executionArn=arn)["output"])
            for entry in output["payload"]["files"]:
                if entry["success"] and self._object(entry["target"]["key"]) != self.data[entry["target"]["key"]]:
                    out.violations.append(f"SUCCEEDED file {entry['target']['key']} is not byte-exact in S3")
        for item in self.s3.list_objects_v2(Bucket=self.bucket).get("Contents", []):
            body = self._object(item["Key"])
            if body != self.data.get(item["Key"]):
                size = len(self.data.get(item["Key"], b""))
                out.violations.append(
                    f"object {item['Key']} has {len(body or b'')} bytes, not the {size} of the source"
                )
        uploads = self.s3.list_multipart_uploads(Bucket=self.bucket).get("Uploads", [])
        if uploads:
            out.violations.append(f"multipart uploads left: {[u['Key'] for u in uploads]}")
        if proxy.max_open > plan.num_connections:
            out.violations.append(
                f"the provider saw {proxy.max_open} sessions at once, over {plan.num_connections}: {proxy.peak}"
            )
        healable = plan.sigterm_after_s is None and (plan.s3_fault is None or plan.s3_fault[1] != "AccessDenied")
        if healable and out.statuses != ["SUCCEEDED"] * len(executions):
            causes = [
                self.sfn.describe_execution(executionArn=arn).get("cause", "")[:300]
                for arn, s in zip(executions, out.statuses, strict=True)
                if s != "SUCCEEDED"
            ]
            out.violations.append(f"faults the retries heal ended {out.statuses}: {causes}")
        if healable:
            for arn, status in zip(executions, out.statuses, strict=True):
                if status == "SUCCEEDED":
                    output = json.loads(self.sfn.describe_execution(executionArn=arn)["output"])
                    failed = [f for f in output["payload"]["files"] if not f["success"]]
                    if failed:
                        out.violations.append(f"faults the retries heal failed files: {failed}")

    def _object(self, key: str) -> bytes | None:
        try:
            return bytes(self.s3.get_object(Bucket=self.bucket, Key=key)["Body"].read())
        except self.s3.exceptions.NoSuchKey:
            return None


@pytest.mark.parametrize("index", range(FAULT_RUNS), ids=lambda i: f"run{i}")
def test_invariants_hold_under_random_faults(
    index: int, providers: Providers, stack: LocalStack, sfn: Any, s3: Any, tmp_path: Path
) -> None:
    seed = FAULT_SEED + index
    plan = draw(seed)
    outcome = Run(plan, providers, stack, sfn, s3, tmp_path).carry_out()
    OUTCOMES.append(outcome)
    assert not outcome.violations, (
        f"seed {seed}: {', '.join(plan.labels())}\n{plan}\n"
        + "\n".join(outcome.violations)
        + f"\nreplay: FAULT_SEED={seed} FAULT_RUNS=1 .venv/bin/python -m pytest {__file__} -x"
    )
