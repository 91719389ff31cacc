"""Many small files per protocol through the gateway, beside the S3 server's own small-object rate.

    .venv/bin/python bench/small_files.py [--files 1000] [--size-kib 64] [--runs 1] [--protocols http,ftp,sftp]

Cases, each in the same run on this machine:
  S3 alone        PutObject of each file from memory, 2 threads (the local S3's small-object rate)
  one task        one activity task carrying every file, num_connections 2
  task per file   one execution (one task) per file, num_connections 2
and prints files/s and the most connections the provider saw at once.
Results also go to bench/results/small_files.json. Everything runs on loopback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import boto3
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

from transfer import CLI, ENV, ROOT, cpu_seconds, start_moto  # noqa: E402

from provider_gateway.local.ftp_server import FileFTPServer  # noqa: E402
from provider_gateway.local.http_server import FileHTTPServer  # noqa: E402
from provider_gateway.workflow import download_state_machine  # noqa: E402
from tests.servers import SSHD, CountingProxy, Sshd  # noqa: E402


def s3_alone(names: list[str], body: bytes) -> float:
    s3 = boto3.client("s3")
    started = time.perf_counter()
    with ThreadPoolExecutor(2) as pool:
        list(pool.map(lambda name: s3.put_object(Bucket="bench", Key=f"alone/{name}", Body=body), names))
    return time.perf_counter() - started


def small_providers(stack: ExitStack, root: Path, names: list[str], body: bytes, wanted: list[str]) -> dict[str, Any]:
    for name in names:
        (root / name).write_bytes(body)
    found: dict[str, Any] = {}
    if "http" in wanted:
        http = stack.enter_context(FileHTTPServer({f"/{n}": body for n in names}))
        found["http"] = (
            {"type": "http", "host": http.host},
            lambda n, s=http: s.url(f"/{n}"),
            lambda s=http: s.connections_max,
        )
    if "ftp" in wanted:
        ftp = stack.enter_context(FileFTPServer(root))
        conn = {"type": "ftp", "host": "127.0.0.1", "port": ftp.port, "username": "provider", "password": "secret"}
        found["ftp"] = (conn, lambda n, p=ftp.port: f"ftp://127.0.0.1:{p}/{n}", lambda s=ftp: s.sessions_max)
    if "sftp" in wanted and SSHD:
        sshd = Sshd(root.parent / "sshd")
        stack.callback(sshd.stop)
        proxy = CountingProxy(sshd.port)
        stack.callback(proxy.close)
        conn = {
            "type": "sftp",
            "host": "127.0.0.1",
            "port": proxy.port,
            "username": sshd.user,
            "private_key_file": str(sshd.client_key),
            "host_key": sshd.host_key_line,
        }
        found["sftp"] = (conn, lambda n, p=proxy.port: f"sftp://127.0.0.1:{p}{root / n}", lambda x=proxy: x.max_open)
    return found


def through_gateway(
    kind: str, conn: dict[str, Any], urls: list[str], per_file: bool, work: Path, env: dict[str, str]
) -> dict[str, Any]:
    session = boto3.session.Session()
    sfn = session.client("stepfunctions")
    activity = sfn.create_activity(name=f"small-{kind}-{time.time_ns()}")["activityArn"]
    machine = sfn.create_state_machine(
        name=f"small-{kind}-{time.time_ns()}",
        roleArn="arn:aws:iam::123456789012:role/bench",
        definition=json.dumps(download_state_machine(activity, heartbeat_s=120)),
    )["stateMachineArn"]
    gateway_config = {"activity_arn": activity, "conn_config": conn, "num_connections": 2}
    config = work / f"small-{kind}.yml"
    config.write_text(yaml.safe_dump({"providers": [{"id": kind.upper(), "config": {"gateway_config": gateway_config}}]}))
    gateway = subprocess_gateway(config, env)
    prefix = f"{kind}-{'per-file' if per_file else 'one-task'}-{time.time_ns()}"
    try:
        time.sleep(2)
        cpu_before = cpu_seconds(gateway.pid)

        def message(batch: list[str]) -> str:
            files = [
                {"source": {"url": u}, "target": {"bucket": "bench", "key": f"{prefix}/{u.rsplit('/', 1)[1]}"}}
                for u in batch
            ]
            return json.dumps({"payload": {"files": files}})

        started = time.perf_counter()
        batches = [[u] for u in urls] if per_file else [urls]
        arns = [sfn.start_execution(stateMachineArn=machine, input=message(b))["executionArn"] for b in batches]
        for arn in arns:
            while (status := sfn.describe_execution(executionArn=arn))["status"] == "RUNNING":
                time.sleep(0.02)
            if status["status"] != "SUCCEEDED":
                raise RuntimeError(f"{kind}: {status.get('error')} {status.get('cause', '')[:300]}")
        seconds = time.perf_counter() - started
        return {"files": len(urls), "seconds": seconds, "cpu_s": cpu_seconds(gateway.pid) - cpu_before}
    finally:
        gateway.terminate()
        gateway.wait(30)


def subprocess_gateway(config: Path, env: dict[str, str]) -> Any:
    import subprocess

    return subprocess.Popen([CLI, "--log-level", "warning", "run", "--config", str(config)], env=env)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=1000)
    parser.add_argument("--size-kib", type=int, default=64)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--protocols", default="http,ftp,sftp")
    parser.add_argument("--per-file", action="store_true", help="also one task per file")
    args = parser.parse_args()
    names = [f"f{i:05d}.bin" for i in range(args.files)]
    body = os.urandom(args.size_kib * 1024)
    results: list[dict[str, Any]] = []
    with ExitStack() as stack, tempfile.TemporaryDirectory(prefix="pg-small-") as tmp:
        work = Path(tmp)
        env = {**os.environ, **ENV, "PYTHONPATH": str(ROOT)}
        env["AWS_ENDPOINT_URL"] = start_moto(stack, env)
        os.environ.update({k: env[k] for k in (*ENV, "AWS_ENDPOINT_URL")})
        boto3.client("s3").create_bucket(Bucket="bench")
        root = work / "files"
        root.mkdir()
        found = small_providers(stack, root, names, body, args.protocols.split(","))
        for run in range(args.runs):
            results.append({"case": "S3 alone (PutObject x2 threads)", "run": run, "files": len(names),
                            "seconds": s3_alone(names, body)})
            for kind, (conn, url, max_open) in found.items():
                modes = [False, True] if args.per_file else [False]
                for per_file in modes:
                    outcome = through_gateway(kind, conn, [url(n) for n in names], per_file, work, env)
                    case = f"{kind} {'task per file' if per_file else 'one task'}"
                    results.append({"case": case, "run": run, **outcome, "provider_max_open": max_open()})
    print(f"\n{'case':<34} {'files/s':>8} {'CPU s':>7} {'max conns':>9}   ({args.files} x {args.size_kib} KiB)")
    for r in results:
        cpu = f"{r['cpu_s']:7.1f}" if "cpu_s" in r else " " * 7
        conns = f"{r['provider_max_open']:9d}" if "provider_max_open" in r else " " * 9
        print(f"{r['case']:<34} {r['files'] / r['seconds']:8.1f} {cpu} {conns}")
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "small_files.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
