"""One large file per protocol: the gateway end to end, beside each side alone.

    .venv/bin/python bench/transfer.py [--size-mib 1024] [--runs 1] [--protocols http,ftp,sftp]

For each protocol it measures, in the same run on this machine:
  source alone   the gateway's own protocol client reading the file to nothing
                 (a separate process, so it does not share the servers' GIL)
  S3 alone       upload_fileobj of an in-memory stream of the same size into the local S3
  end to end     ``provider-gateway run`` serving one activity task: provider -> S3
and prints MB/s and the gateway's CPU seconds per GiB. Results also go to
bench/results/transfer.json. Everything runs on loopback.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import boto3
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from provider_gateway.local.ftp_server import FileFTPServer  # noqa: E402
from provider_gateway.local.http_server import FileHTTPServer  # noqa: E402
from provider_gateway.workflow import download_state_machine  # noqa: E402
from tests.servers import SSHD, Sshd, free_port, wait_for_port  # noqa: E402

MiB = 1024 * 1024
CLI = str(Path(sys.executable).parent / "provider-gateway")
ENV = {
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_ACCESS_KEY_ID": "bench",
    "AWS_SECRET_ACCESS_KEY": "bench",
}

READ_ALONE = """
import sys, time
from provider_gateway.config.loader import _conn
from provider_gateway.config.fields import Fields
from provider_gateway.protocols import ConnectionSettings, connection_factory
import json
conn = _conn(json.loads(sys.argv[1]), "conn_config")
connection = connection_factory(conn)(conn, ConnectionSettings())
started = time.perf_counter()
stream = connection.open(sys.argv[2])
total = 0
while piece := stream.read(1 << 20):
    total += len(piece)
stream.close()
print(json.dumps({"bytes": total, "seconds": time.perf_counter() - started}))
"""

S3_ALONE = """
import io, json, sys, time, boto3
from provider_gateway.transfer.s3upload import transfer_config, part_size_for
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
s3.upload_fileobj(Zeros(), sys.argv[2], "s3-alone.bin", Config=transfer_config(part_size_for(size, 8 << 20)))
print(json.dumps({"bytes": size, "seconds": time.perf_counter() - started}))
"""


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_json(code: str, *args: str, env: dict[str, str]) -> dict[str, Any]:
    done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env, cwd=ROOT)
    if done.returncode:
        raise RuntimeError(done.stderr[-2000:])
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def make_file(path: Path, size: int) -> None:
    block = os.urandom(4 * MiB)
    with path.open("wb") as out:
        for _ in range(size // len(block)):
            out.write(block)
        out.write(block[: size % len(block)])


def start_moto(stack: ExitStack, env: dict[str, str]) -> str:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "provider_gateway.local.stack", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=ROOT,
    )
    stack.callback(proc.kill)
    wait_for_port(port, 30)
    return f"http://127.0.0.1:{port}"


def providers(
    stack: ExitStack, work: Path, data_file: Path, wanted: list[str]
) -> dict[str, tuple[dict[str, Any], str]]:
    found: dict[str, tuple[dict[str, Any], str]] = {}
    if "http" in wanted:
        http = stack.enter_context(FileHTTPServer({"/big.bin": data_file.read_bytes()}))
        found["http"] = ({"type": "http", "host": http.host}, http.url("/big.bin"))
    if "ftp" in wanted:
        ftp = stack.enter_context(FileFTPServer(data_file.parent))
        conn = {"type": "ftp", "host": "127.0.0.1", "port": ftp.port, "username": "provider", "password": "secret"}
        found["ftp"] = (conn, f"ftp://127.0.0.1:{ftp.port}/{data_file.name}")
    if "sftp" in wanted and SSHD:
        sshd = Sshd(work / "sshd")
        stack.callback(sshd.stop)
        conn = {
            "type": "sftp",
            "host": "127.0.0.1",
            "port": sshd.port,
            "username": sshd.user,
            "private_key_file": str(sshd.client_key),
            "host_key": sshd.host_key_line,
        }
        found["sftp"] = (conn, f"sftp://127.0.0.1:{sshd.port}{data_file}")
    return found


def end_to_end(kind: str, conn: dict[str, Any], url: str, size: int, work: Path, env: dict[str, str]) -> dict[str, Any]:
    session = boto3.session.Session()
    sfn, s3 = session.client("stepfunctions"), session.client("s3")
    activity = sfn.create_activity(name=f"bench-{kind}-{time.time_ns()}")["activityArn"]
    machine = sfn.create_state_machine(
        name=f"bench-{kind}-{time.time_ns()}",
        roleArn="arn:aws:iam::123456789012:role/bench",
        definition=json.dumps(download_state_machine(activity, heartbeat_s=120)),
    )["stateMachineArn"]
    config = work / f"{kind}.yml"
    config.write_text(
        yaml.safe_dump(
            {
                "providers": [
                    {
                        "id": kind.upper(),
                        "config": {
                            "gateway_config": {"activity_arn": activity, "conn_config": conn, "num_connections": 1}
                        },
                    }
                ]
            }
        )
    )
    gateway = subprocess.Popen([CLI, "--log-level", "warning", "run", "--config", str(config)], env=env)
    try:
        time.sleep(2)  # let it start and begin polling
        cpu_before = cpu_seconds(gateway.pid)
        message = {
            "payload": {
                "files": [{"source": {"url": url, "size": size}, "target": {"bucket": "bench", "key": f"{kind}.bin"}}]
            }
        }
        started = time.perf_counter()
        arn = sfn.start_execution(stateMachineArn=machine, input=json.dumps(message))["executionArn"]
        while (status := sfn.describe_execution(executionArn=arn))["status"] == "RUNNING":
            time.sleep(0.05)
        seconds = time.perf_counter() - started
        cpu = cpu_seconds(gateway.pid) - cpu_before
        if status["status"] != "SUCCEEDED":
            raise RuntimeError(f"{kind}: {status.get('error')} {status.get('cause', '')[:500]}")
        s3.delete_object(Bucket="bench", Key=f"{kind}.bin")
        return {"bytes": size, "seconds": seconds, "cpu_s_per_gib": cpu / (size / 1024**3)}
    finally:
        gateway.terminate()
        gateway.wait(30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--protocols", default="http,ftp,sftp")
    args = parser.parse_args()
    size = args.size_mib * MiB
    results: list[dict[str, Any]] = []
    with ExitStack() as stack, tempfile.TemporaryDirectory(prefix="pg-bench-") as tmp:
        work = Path(tmp)
        env = {**os.environ, **ENV, "PYTHONPATH": str(ROOT)}
        env["AWS_ENDPOINT_URL"] = start_moto(stack, env)
        os.environ.update({k: env[k] for k in (*ENV, "AWS_ENDPOINT_URL")})
        boto3.client("s3").create_bucket(Bucket="bench")
        data_file = work / "big.bin"
        make_file(data_file, size)
        for run in range(args.runs):
            s3_alone = run_json(S3_ALONE, str(size), "bench", env=env)
            results.append({"case": "S3 alone (upload_fileobj)", "run": run, **s3_alone})
            for kind, (conn, url) in providers(stack, work, data_file, args.protocols.split(",")).items():
                alone = run_json(READ_ALONE, json.dumps(conn), url, env=env)
                results.append({"case": f"{kind} source alone", "run": run, **alone})
                results.append(
                    {"case": f"{kind} end to end", "run": run, **end_to_end(kind, conn, url, size, work, env)}
                )
    print(f"\n{'case':<28} {'MB/s':>8} {'CPU s/GiB':>10}   ({args.size_mib} MiB, {socket.gethostname()})")
    for r in results:
        cpu = f"{r['cpu_s_per_gib']:10.1f}" if "cpu_s_per_gib" in r else " " * 10
        print(f"{r['case']:<28} {r['bytes'] / r['seconds'] / 1e6:8.1f} {cpu}")
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "transfer.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    socket.setdefaulttimeout(None)
    main()
