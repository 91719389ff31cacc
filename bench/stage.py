"""The benchmark's stage: local S3, the three providers, the files, and the gateway's runs."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import boto3
import yaml

from provider_gateway.local.ftp_server import FileFTPServer
from provider_gateway.workflow import download_state_machine
from tests.gridftp_server import GLOBUS_URL_COPY, GRIDFTP_SERVER, GridftpServer
from tests.servers import SSHD, CountingProxy, Sshd, free_port, wait_for_port

MiB = 1024 * 1024
GiB = 1024 * MiB
ROOT = Path(__file__).resolve().parent.parent
CLI = str(Path(sys.executable).parent / "provider-gateway")
CREDENTIALS = {
    "AWS_REGION": "us-east-1",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_ACCESS_KEY_ID": "bench",
    "AWS_SECRET_ACCESS_KEY": "bench",
}
BUCKET = "bench"

S3_ALONE = """
import io, json, sys, time, boto3
from boto3.s3.transfer import TransferConfig
size = int(sys.argv[1])
class Zeros(io.RawIOBase):
    def __init__(self): self.left = size
    def readable(self): return True
    def read(self, n=-1):
        n = self.left if n < 0 else min(n, self.left)
        self.left -= n
        return bytes(n)
s3 = boto3.client("s3")
started = time.perf_counter()
config = TransferConfig(multipart_chunksize=8 << 20, max_concurrency=4)
s3.upload_fileobj(Zeros(), "bench", "s3-alone.bin", Config=config)
print(json.dumps({"seconds": time.perf_counter() - started}))
"""

NGINX_CONF = """
daemon off;
worker_processes 1;
error_log {dir}/error.log;
pid {dir}/nginx.pid;
events {{ worker_connections 256; }}
http {{
    access_log off;
    sendfile on;
    tcp_nodelay on;
    keepalive_requests 100000;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    server {{
        listen 127.0.0.1:{port};
        root {root};
        autoindex on;
    }}
}}
"""


def child_cpu() -> float:
    usage = os.times()
    return usage.children_user + usage.children_system


def proc_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def proc_peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class Stage:
    """Starts everything once; each measurement method runs one case and returns its figures."""

    def __init__(self, stack: ExitStack, work: Path, protocols: list[str]) -> None:
        self.stack = stack
        self.work = work
        self.notes: list[str] = []
        work.chmod(0o755)  # nginx's workers do not run as the owner of the files
        self.data = work / "data"
        (self.data / "small").mkdir(parents=True)
        self.env = {**os.environ, **CREDENTIALS, "PYTHONPATH": str(ROOT)}
        self.env.pop("AWS_CA_BUNDLE", None)  # rclone's S3 backend refuses to start with it set
        self.env["AWS_ENDPOINT_URL"] = self._start_moto()
        os.environ.update({k: self.env[k] for k in (*CREDENTIALS, "AWS_ENDPOINT_URL")})
        self.s3 = boto3.client("s3")
        self.sfn = boto3.client("stepfunctions")
        self.s3.create_bucket(Bucket=BUCKET)
        self.small_names: list[str] = []
        self.small_body = b""
        self.conns: dict[str, dict[str, Any]] = {}
        self.urls: dict[str, Callable[[str], str]] = {}
        self.max_open: dict[str, Callable[[], int]] = {}
        self.reset_open: dict[str, Callable[[], None]] = {}
        for kind in protocols:
            getattr(self, f"_start_{kind}")()
        self.kinds = [k for k in protocols if k in self.conns]

    # --- servers -------------------------------------------------------------------------

    def _start_moto(self) -> str:
        port = free_port()
        proc = subprocess.Popen(
            [sys.executable, "-m", "provider_gateway.local.stack", "--port", str(port)],
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            cwd=ROOT,
        )
        self.stack.callback(proc.kill)
        wait_for_port(port, 30)
        return f"http://127.0.0.1:{port}"

    def _start_http(self) -> None:
        nginx = shutil.which("nginx") or "/usr/sbin/nginx"
        if not Path(nginx).exists():
            self.notes.append("nginx is missing: no HTTP cases (apt-get install nginx)")
            return
        port = free_port()
        run = self.work / "nginx"
        run.mkdir()
        conf = run / "nginx.conf"
        conf.write_text(NGINX_CONF.format(dir=run, port=port, root=self.data))
        proc = subprocess.Popen(
            [nginx, "-c", str(conf), "-p", str(run)], stderr=subprocess.DEVNULL, start_new_session=True
        )
        self.stack.callback(os.killpg, proc.pid, signal.SIGKILL)  # the master and its workers
        wait_for_port(port, 10)
        proxy = CountingProxy(port)  # counts the connections each tool opens
        self.stack.callback(proxy.close)
        self.conns["http"] = {"type": "http", "host": f"127.0.0.1:{port}"}
        self.urls["http"] = lambda name: f"http://127.0.0.1:{port}/{name}"
        self.urls["http-counted"] = lambda name: f"http://127.0.0.1:{proxy.port}/{name}"
        self.conns["http-counted"] = {"type": "http", "host": f"127.0.0.1:{proxy.port}"}
        self.max_open["http"] = lambda: proxy.max_open
        self.reset_open["http"] = lambda: setattr(proxy, "max_open", 0)

    def _start_ftp(self) -> None:
        ftp = self.stack.enter_context(FileFTPServer(self.data))
        self.conns["ftp"] = {
            "type": "ftp",
            "host": "127.0.0.1",
            "port": ftp.port,
            "username": "provider",
            "password": "secret",
        }
        self.urls["ftp"] = lambda name: f"ftp://127.0.0.1:{ftp.port}/{name}"
        self.max_open["ftp"] = lambda: ftp.connections.max
        self.reset_open["ftp"] = ftp.connections.restart_peak
        self.ftp = ftp

    def _start_sftp(self) -> None:
        if not SSHD:
            self.notes.append("OpenSSH sshd is missing: no SFTP cases (apt-get install openssh-server)")
            return
        self.sshd = Sshd(self.work / "sshd")
        self.stack.callback(self.sshd.stop)
        proxy = CountingProxy(self.sshd.port)
        self.stack.callback(proxy.close)
        self.conns["sftp"] = {
            "type": "sftp",
            "host": "127.0.0.1",
            "port": self.sshd.port,
            "username": self.sshd.user,
            "private_key_file": str(self.sshd.client_key),
            "host_key": self.sshd.host_key_line,
        }
        self.conns["sftp-counted"] = {**self.conns["sftp"], "port": proxy.port}
        self.urls["sftp"] = lambda name: f"sftp://127.0.0.1:{self.sshd.port}{self.data / name}"
        self.urls["sftp-counted"] = lambda name: f"sftp://127.0.0.1:{proxy.port}{self.data / name}"
        self.max_open["sftp"] = lambda: proxy.max_open
        self.reset_open["sftp"] = lambda: setattr(proxy, "max_open", 0)
        self.sftp_proxy_port = proxy.port

    def _start_gridftp(self) -> None:
        if not (GRIDFTP_SERVER and GLOBUS_URL_COPY):
            self.notes.append(
                "globus-gridftp-server or globus-url-copy is missing: no GridFTP cases "
                "(apt-get install globus-gridftp-server-progs globus-gass-copy-progs)"
            )
            return
        server = GridftpServer(self.work / "gridftp", users={"provider": "secret"})
        self.stack.callback(server.stop)
        proxy = CountingProxy(server.port)  # control sessions only: data connections go to the server
        self.stack.callback(proxy.close)
        self.conns["gridftp"] = {
            "type": "gridftp",
            "host": "127.0.0.1",
            "port": server.port,
            "username": "provider",
            "password": "secret",
        }
        self.conns["gridftp-counted"] = {**self.conns["gridftp"], "port": proxy.port}
        self.urls["gridftp"] = lambda name: f"ftp://127.0.0.1:{server.port}{self.data / name}"
        self.urls["gridftp-counted"] = lambda name: f"ftp://127.0.0.1:{proxy.port}{self.data / name}"
        self.max_open["gridftp"] = lambda: proxy.max_open
        self.reset_open["gridftp"] = lambda: setattr(proxy, "max_open", 0)

    def counted(self, kind: str) -> str:
        """The name under which ``kind``'s connections pass a counter (FTP counts sessions itself)."""
        return f"{kind}-counted" if f"{kind}-counted" in self.conns else kind

    # --- files -----------------------------------------------------------------------------

    def make_file(self, name: str, size: int) -> None:
        block = os.urandom(8 * MiB)
        with (self.data / name).open("wb") as out:
            for _ in range(size // len(block)):
                out.write(block)
            out.write(block[: size % len(block)])

    def make_small_files(self, count: int, size: int) -> None:
        self.small_body = os.urandom(size)
        self.small_names = [f"small/f{i:05d}.bin" for i in range(count)]
        for name in self.small_names:
            (self.data / name).write_bytes(self.small_body)

    def sha256(self, name: str) -> str:
        import hashlib

        digest = hashlib.sha256()
        with (self.data / name).open("rb") as f:
            while block := f.read(8 * MiB):
                digest.update(block)
        return digest.hexdigest()

    # --- machine limits ------------------------------------------------------------------

    def s3_ingest(self, size: int) -> dict[str, float]:
        done = subprocess.run(
            [sys.executable, "-c", S3_ALONE, str(size)], env=self.env, cwd=ROOT, capture_output=True, text=True
        )
        if done.returncode:
            raise RuntimeError(done.stderr[-500:])
        seconds = json.loads(done.stdout)["seconds"]
        self.s3.delete_object(Bucket=BUCKET, Key="s3-alone.bin")
        return {"MB/s": size / seconds / 1e6}

    def s3_small_rate(self) -> dict[str, float]:
        from concurrent.futures import ThreadPoolExecutor

        started = time.perf_counter()
        with ThreadPoolExecutor(2) as pool:
            list(
                pool.map(
                    lambda n: self.s3.put_object(Bucket=BUCKET, Key=f"alone/{n}", Body=self.small_body),
                    self.small_names,
                )
            )
        return {"files/s": len(self.small_names) / (time.perf_counter() - started)}

    def activity_and_machine(self, label: str) -> tuple[str, str]:
        """A new activity, and a state machine whose one Task uses it."""
        activity = self.sfn.create_activity(name=f"bench-{label}-{time.time_ns()}")["activityArn"]
        machine = self.sfn.create_state_machine(
            name=f"bench-{label}-{time.time_ns()}",
            roleArn="arn:aws:iam::123456789012:role/bench",
            definition=json.dumps(download_state_machine(activity, heartbeat_s=300)),
        )["stateMachineArn"]
        return activity, machine

    def activity_rate(self, count: int) -> dict[str, float]:
        """Tasks/s of the local Step Functions alone: 2 threads claim and answer empty tasks."""
        activity, machine = self.activity_and_machine("empty")
        started = time.perf_counter()
        for _ in range(count):
            self.sfn.start_execution(stateMachineArn=machine, input="{}")
        answered = [0]
        finished = [0.0]

        def work() -> None:
            client = boto3.client("stepfunctions")
            while answered[0] < count:
                task = client.get_activity_task(activityArn=activity, workerName="bench")
                if task.get("taskToken"):
                    client.send_task_success(taskToken=task["taskToken"], output="{}")
                    answered[0] += 1
                    finished[0] = time.perf_counter()
            # the other thread's last long poll returns empty when its wait ends; it is not timed

        for _ in range(2):  # daemons: the last long poll may outlive the measurement by a minute
            threading.Thread(target=work, daemon=True).start()
        while answered[0] < count:
            time.sleep(0.05)
        return {"tasks/s": count / (finished[0] - started)}

    def reader(self, kind: str) -> str:
        return {"sftp": "OpenSSH sftp", "gridftp": "globus-url-copy"}.get(kind, "curl")

    def source_alone(self, kind: str, name: str, size: int) -> dict[str, float]:
        if kind == "gridftp":
            url = self.urls["gridftp"](name).replace("ftp://", "ftp://provider:secret@", 1)
            return self.timed([str(GLOBUS_URL_COPY), url, "file:///dev/null"], size)
        if kind == "sftp":
            target = f"{self.sshd.user}@127.0.0.1:{self.data / name}"
            command = [
                "sftp",
                "-q",
                "-P",
                str(self.sshd.port),
                "-i",
                str(self.sshd.client_key),
                "-o",
                f"UserKnownHostsFile={self.sshd.dir / 'known_hosts'}",
                "-o",
                "StrictHostKeyChecking=no",
                target,
                "/dev/null",
            ]
        else:
            command = ["curl", "-sS", "--fail", "-o", "/dev/null", "--user", "provider:secret", self.urls[kind](name)]
            if kind == "http":
                command.remove("--user")
                command.remove("provider:secret")
        return self.timed(command, size)

    def timed(self, command: list[str] | str, size: int, shell: bool = False) -> dict[str, float]:
        cpu_before = child_cpu()
        started = time.perf_counter()
        executable = "/bin/bash" if shell else None  # pipefail
        done = subprocess.run(command, shell=shell, executable=executable, env=self.env, capture_output=True, text=True)
        seconds = time.perf_counter() - started
        if done.returncode:
            raise RuntimeError(f"exit {done.returncode}: {done.stderr.strip()[-300:]}")
        return {"MB/s": size / seconds / 1e6, "CPU s/GiB": (child_cpu() - cpu_before) / (size / GiB)}

    # --- the gateway -----------------------------------------------------------------------

    def gateway(
        self,
        kind: str,
        connections: int,
        extra_env: dict[str, str] | None = None,
        extra_config: dict[str, Any] | None = None,
    ) -> tuple[subprocess.Popen[bytes], str]:
        """A running ``provider-gateway run`` for ``kind``, and the state machine of its activity."""
        activity, machine = self.activity_and_machine(kind)
        gateway_config = {
            "activity_arn": activity,
            "conn_config": self.conns[kind],
            "num_connections": connections,
            **(extra_config or {}),
        }
        config = self.work / f"{kind}-{time.time_ns()}.yml"
        provider = {"id": kind.upper().replace("-", "_"), "config": {"gateway_config": gateway_config}}
        config.write_text(yaml.safe_dump({"providers": [provider]}))
        ops_port = free_port()
        command = [CLI, "--log-level", "warning", "run", "--config", str(config), "--metrics-port", str(ops_port)]
        if os.environ.get("BENCH_PROFILE"):  # py-spy's collapsed stacks, for flamegraph.pl or speedscope
            out = ROOT / "bench" / "results" / f"profile-{kind}-{time.time_ns()}.txt"
            out.parent.mkdir(parents=True, exist_ok=True)
            command = ["py-spy", "record", "--idle", "--format", "raw", "--rate", "200", "-o", str(out), "--", *command]
        proc = subprocess.Popen(command, env={**self.env, **(extra_env or {})})
        # Its ops endpoint answers once it is configured, just before its pollers start: a fixed sleep
        # instead counted a slow start (a busy machine) in the first case's time, or wasted the rest.
        deadline = time.monotonic() + 60
        while not _answers(f"http://127.0.0.1:{ops_port}/healthz"):
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError(f"the gateway did not start (exit {proc.poll()})")
            time.sleep(0.05)
        return proc, machine

    def execute(self, machine: str, batches: list[list[dict[str, Any]]], stall_s: float = 180) -> None:
        """Runs an execution per batch, until all have SUCCEEDED (else raises).

        Raises too when none has finished for ``stall_s``: a case that hangs fails, the bench goes on.
        """
        arns = [
            self.sfn.start_execution(stateMachineArn=machine, input=json.dumps({"payload": {"files": files}}))[
                "executionArn"
            ]
            for files in batches
        ]
        progress = time.monotonic()
        for done, arn in enumerate(arns):
            while (status := self.sfn.describe_execution(executionArn=arn))["status"] == "RUNNING":
                if time.monotonic() - progress > stall_s:
                    raise RuntimeError(
                        f"{done} of {len(arns)} executions done, then none for {stall_s:g} s: {arn} is still RUNNING"
                    )
                time.sleep(0.02)
            progress = time.monotonic()
            if status["status"] != "SUCCEEDED":
                raise RuntimeError(f"{status.get('error')}: {status.get('cause', '')[:300]}")

    def stop(self, proc: subprocess.Popen[bytes]) -> None:
        if os.environ.get("BENCH_PROFILE"):  # stop the gateway under py-spy, which then writes its profile
            for child in Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split():
                os.kill(int(child), signal.SIGTERM)
        else:
            proc.terminate()
        proc.wait(60)

    def gateway_large(self, kind: str, name: str, size: int, checksum: bool = False) -> dict[str, float]:
        proc, machine = self.gateway(kind, 1)
        try:
            source: dict[str, Any] = {"url": self.urls[kind](name), "size": size}
            if checksum:
                source["checksum"] = {"type": "sha256", "value": self.sha256(name)}
            cpu_before = proc_cpu(proc.pid)
            started = time.perf_counter()
            target = {"bucket": BUCKET, "key": f"gw-{kind}.bin"}
            self.execute(machine, [[{"source": source, "target": target}]], stall_s=max(180, size / 1e6))
            seconds = time.perf_counter() - started
            figures = {
                "MB/s": size / seconds / 1e6,
                "CPU s/GiB": (proc_cpu(proc.pid) - cpu_before) / (size / GiB),
                "peak RSS MiB": proc_peak_rss_mib(proc.pid),
            }
        finally:
            self.stop(proc)
        self.s3.delete_object(Bucket=BUCKET, Key=f"gw-{kind}.bin")
        return figures

    def gateway_small(
        self,
        kind: str,
        per_file: bool,
        names: list[str] | None = None,
        extra_env: dict[str, str] | None = None,
        extra_config: dict[str, Any] | None = None,
    ) -> dict[str, float]:
        """``names`` (the small files by default) over 2 connections, in one task or a task each."""
        names = self.small_names if names is None else names
        counted = self.counted(kind)
        self.reset_open[kind]()
        proc, machine = self.gateway(counted, 2, extra_env, extra_config)
        prefix = f"gw-small-{kind}-{time.time_ns()}"
        files = [
            {
                "source": {"url": self.urls[counted](n), "size": (self.data / n).stat().st_size},
                "target": {"bucket": BUCKET, "key": f"{prefix}/{n}"},
            }
            for n in names
        ]
        try:
            cpu_before = proc_cpu(proc.pid)
            started = time.perf_counter()
            self.execute(machine, [[f] for f in files] if per_file else [files])
            seconds = time.perf_counter() - started
            cpu = proc_cpu(proc.pid) - cpu_before
        finally:
            self.stop(proc)
        return {"files/s": len(files) / seconds, "CPU s": cpu, "provider conns": self.max_open[kind]()}

    def gateway_huge(self, size: int) -> dict[str, float]:
        from s3sink import S3Sink

        kind = "http" if "http" in self.kinds else self.kinds[0]
        # moto keeps every object in memory (two 5 GiB files took 24 GB here): S3 is a sink for this case.
        sink = S3Sink()
        proc, machine = self.gateway(kind, 2, {"AWS_ENDPOINT_URL_S3": sink.endpoint})
        files = [
            {"source": {"url": self.urls[kind](name), "size": size}, "target": {"bucket": BUCKET, "key": name}}
            for name in ("huge-a.bin", "huge-b.bin")
        ]
        try:
            started = time.perf_counter()
            self.execute(machine, [files], stall_s=max(180, 2 * size / 1e6))
            seconds = time.perf_counter() - started
            rss = proc_peak_rss_mib(proc.pid)
        finally:
            self.stop(proc)
            sink.shutdown()
        if sink.received < 2 * size:
            raise RuntimeError(f"the S3 sink received {sink.received} bytes of {2 * size}")
        return {"peak RSS MiB": rss, "MB/s": 2 * size / seconds / 1e6}


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1):
            return True
    except OSError:  # not listening yet; or listening and unhealthy (HTTPError)
        return False


def hostname() -> str:
    return socket.gethostname()
