"""``make bench``: the gateway beside the tools users would pick instead, same machine, same run.

    .venv/bin/python bench/run.py [--runs 3] [--size-mib 1024] [--small-files 1000] [--huge-gib 5]
                                  [--protocols http,ftp,sftp] [--unknown-gib 100]
                                  [--skip large,small,huge,unknown] [--only distance]

Everything runs on loopback against the same local servers: nginx (HTTP), pyftpdlib
(FTP), OpenSSH sshd (SFTP), and the local S3 (moto) in a process of its own.

Cases (each run ``--runs`` times; the table shows min, median and max):
  machine limits    the S3 server's own ingest (boto3 upload of an in-memory stream),
                    and each source alone to /dev/null (curl for HTTP/FTP, OpenSSH sftp)
  large files       one file per protocol: the gateway (with and without a sha256
                    checksum), rclone, and curl | aws s3 cp -: MB/s, CPU s per GiB, peak RSS
  small files       many 64 KiB files, 2 connections: the gateway (one task; a task per
                    file), rclone --transfers 2 --checkers 2, and the S3 server's own
                    PutObject rate: files/s and the provider connections open at once
  leases            the small files in one task, without and with connection_leases (a fresh
                    DynamoDB table each time): files/s, and DynamoDB calls per file
  huge file         one --huge-gib file with both connections busy: the gateway's peak RSS
  distance          small files and a large file through a delay proxy at each of
                    --distance-rtts (ms), the gateway beside rclone (see bench/distance.py)
  unknown size      one --unknown-gib file sent chunked over HTTP, no size anywhere, into an S3
                    sink that enforces the 10,000-part and 5 MiB rules: time and peak RSS

Tools that are missing (rclone, aws, nginx) are named in the output, not fatal:
``sudo apt-get install nginx rclone awscli`` (the bench installs them itself as root).
Results: a table on stdout, bench/results/bench.json and bench/results/bench.png.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from distance import Distance  # noqa: E402
from distance import add_arguments as add_distance_arguments  # noqa: E402
from distance import markdown as distance_markdown  # noqa: E402
from leases_case import gateway_small_leased  # noqa: E402
from peers import Peers  # noqa: E402
from stage import Stage  # noqa: E402
from unknown_size import gateway_unknown_size  # noqa: E402

MiB = 1024 * 1024
GiB = 1024 * MiB
RESULTS = ROOT / "bench" / "results"
SMALL_CONNECTIONS = 2  # num_connections of the small-file cases, and rclone's --transfers


def summarize(values: list[float]) -> dict[str, float]:
    return {"min": min(values), "median": statistics.median(values), "max": max(values)}


class Bench:
    """Collects each case's runs and prints them as one table.

    A case given a connection ``limit`` fails when the provider saw more
    connections at once (its ``provider conns`` or ``provider data conns``
    figure): its figures are kept, and the table marks the case FAILED.
    """

    def __init__(self) -> None:
        self.rows: dict[str, dict[str, list[float]]] = {}
        self.failed: dict[str, list[str]] = {}
        self.notes: list[str] = []

    def add(self, group: str, case: str, **figures: float) -> None:
        row = self.rows.setdefault(f"{group}|{case}", {})
        for name, value in figures.items():
            row.setdefault(name, []).append(value)
        shown = ", ".join(f"{k} {v:.1f}" for k, v in figures.items())
        print(f"  {group:<12} {case:<40} {shown}", flush=True)

    def fail(self, group: str, case: str, reason: str) -> None:
        self.failed.setdefault(f"{group}|{case}", []).append(reason)
        self.notes.append(f"{group} / {case}: FAILED: {reason}")
        print(f"  {group:<12} {case:<40} FAILED: {reason}", flush=True)

    def attempt(
        self, group: str, case: str, measure: Callable[[], dict[str, float] | None], limit: int | None = None
    ) -> None:
        try:
            figures = measure()
        except Exception as exc:
            self.fail(group, case, str(exc))
            return
        if figures is None:
            return
        self.add(group, case, **figures)
        for name in ("provider conns", "provider data conns"):
            if limit is not None and figures.get(name, 0) > limit:
                self.fail(group, case, f"{name}: {figures[name]:g} at once, more than the {limit} allowed")

    def table(self) -> list[dict[str, Any]]:
        out = []
        for key in dict.fromkeys([*self.rows, *self.failed]):
            group, case = key.split("|", 1)
            figures = {k: summarize(v) for k, v in self.rows.get(key, {}).items()}
            failed = {"failed": self.failed[key]} if key in self.failed else {}
            out.append({"group": group, "case": case, **figures, **failed})
        return out


def figures_of(row: dict[str, Any]) -> list[tuple[str, dict[str, float]]]:
    """A table row's figures: every entry but its names and its failures."""
    return [(k, v) for k, v in row.items() if k not in ("group", "case", "failed")]


def print_table(rows: list[dict[str, Any]], notes: list[str], machine: str) -> None:
    print(f"\n{machine}\n")
    print(f"{'group':<12} {'case':<40} {'figure':<20} {'min':>9} {'median':>9} {'max':>9}")
    for row in rows:
        first = True
        for name, values in figures_of(row):
            head = f"{row['group']:<12} {row['case']:<40}" if first else " " * 53
            print(f"{head} {name:<20} {values['min']:9.1f} {values['median']:9.1f} {values['max']:9.1f}")
            first = False
        for reason in row.get("failed", []):
            head = f"{row['group']:<12} {row['case']:<40}" if first else " " * 53
            print(f"{head} FAILED: {reason.splitlines()[0]}")
            first = False
    for note in notes:
        print(f"note: {note}")


def markdown(rows: list[dict[str, Any]], notes: list[str], machine: str, runs: int) -> str:
    """The table as Markdown, for docs/performance.md."""
    lines = [
        f"Machine: {machine}; {runs} runs per case.",
        "",
        "| group | case | figure | min | median | max |",
        "|---|---|---|---:|---:|---:|",
    ]
    for row in rows:
        for name, values in figures_of(row):
            lines.append(
                f"| {row['group']} | {row['case']} | {name} | {values['min']:.1f} | {values['median']:.1f} | "
                f"{values['max']:.1f} |"
            )
        for reason in row.get("failed", []):
            lines.append(f"| {row['group']} | {row['case']} | **FAILED** | {reason.splitlines()[0]} | | |")
    lines += ["", *[f"- {note.splitlines()[0]}" for note in notes]]
    return "\n".join(lines) + "\n"


def chart(rows: list[dict[str, Any]], path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("note: matplotlib is missing: no chart (pip install 'provider-gateway[bench]')")
        return
    panels = [("large", "MB/s", "large files: MB/s (median, min-max)"), ("small", "files/s", "small files: files/s")]
    fig, axes = plt.subplots(1, len(panels), figsize=(15, 7))
    for ax, (group, figure, title) in zip(axes, panels, strict=True):
        picked = [r for r in rows if r["group"] in (group, "limits") and figure in r]
        labels = [r["case"] for r in picked]
        medians = [r[figure]["median"] for r in picked]
        errors = [
            [r[figure]["median"] - r[figure]["min"] for r in picked],
            [r[figure]["max"] - r[figure]["median"] for r in picked],
        ]
        colors = [
            "tab:gray" if r["group"] == "limits" else "tab:blue" if "gateway" in r["case"] else "tab:orange"
            for r in picked
        ]
        ax.barh(labels, medians, xerr=errors, color=colors)
        ax.invert_yaxis()
        ax.set_title(title)
        ax.tick_params(axis="y", labelsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--small-files", type=int, default=1000)
    parser.add_argument("--small-kib", type=int, default=64)
    parser.add_argument("--huge-gib", type=float, default=5)
    parser.add_argument("--unknown-gib", type=float, default=100)
    parser.add_argument("--protocols", default="http,ftp,sftp,gridftp")
    parser.add_argument(
        "--skip", default="", help="comma-separated groups to skip: limits,large,small,leases,huge,unknown,distance"
    )
    parser.add_argument("--only", default="", help="comma-separated groups to run, and no others")
    add_distance_arguments(parser)
    args = parser.parse_args()
    protocols = args.protocols.split(",")
    skip = set(filter(None, args.skip.split(",")))
    if args.only:
        skip |= {"limits", "large", "small", "leases", "huge", "unknown", "distance"} - set(args.only.split(","))
    bench = Bench()
    machine = f"{platform.node()}: {os.cpu_count()} cores, {platform.platform()}, Python {platform.python_version()}"
    with ExitStack() as stack, tempfile.TemporaryDirectory(prefix="pg-bench-") as tmp:
        stage = Stage(stack, Path(tmp), protocols)
        peers = Peers(stage)
        bench.notes.extend(stage.notes + peers.notes)
        size = args.size_mib * MiB
        if not {"limits", "large"} <= skip:
            stage.make_file("big.bin", size)
        if not {"small", "leases"} <= skip:
            stage.make_small_files(args.small_files, args.small_kib * 1024)
        distance = None if "distance" in skip else Distance(stage, args)
        for run in range(args.runs):
            print(f"run {run + 1} of {args.runs}", flush=True)
            if "limits" not in skip:
                bench.attempt("limits", "S3 server ingest (boto3, in memory)", lambda: stage.s3_ingest(size))
                for kind in stage.kinds:
                    bench.attempt(
                        "limits",
                        f"{kind} source alone ({stage.reader(kind)})",
                        lambda k=kind: stage.source_alone(k, "big.bin", size),
                    )
            if "large" not in skip:
                for kind in stage.kinds:
                    bench.attempt("large", f"{kind} gateway", lambda k=kind: stage.gateway_large(k, "big.bin", size))
                    bench.attempt(
                        "large",
                        f"{kind} gateway + sha256",
                        lambda k=kind: stage.gateway_large(k, "big.bin", size, checksum=True),
                    )
                    bench.attempt("large", f"{kind} rclone", lambda k=kind: peers.rclone_large(k, "big.bin", size))
                    source = "globus-url-copy" if kind == "gridftp" else "curl"
                    bench.attempt(
                        "large", f"{kind} {source} | aws s3 cp -", lambda k=kind: peers.curl_aws(k, "big.bin", size)
                    )
            if "small" not in skip:
                bench.attempt("small", "S3 server PutObject (2 threads)", stage.s3_small_rate)
                bench.attempt(
                    "small",
                    "Step Functions alone: empty tasks, 2 threads",
                    lambda: stage.activity_rate(len(stage.small_names)),
                )
                for kind in stage.kinds:
                    for mode, per_file in (("one task", False), ("task per file", True)):
                        bench.attempt(
                            "small",
                            f"{kind} gateway, {mode}",
                            lambda k=kind, p=per_file: stage.gateway_small(k, p),
                            limit=SMALL_CONNECTIONS,
                        )
                    bench.attempt(
                        "small",
                        f"{kind} rclone --transfers 2",
                        lambda k=kind: peers.rclone_small(k),
                        limit=SMALL_CONNECTIONS,
                    )
            if distance is not None:
                distance.run(bench)
            if "leases" not in skip:
                for kind in stage.kinds:
                    bench.attempt(
                        "leases",
                        f"{kind} gateway, one task",
                        lambda k=kind: stage.gateway_small(k, False),
                        limit=SMALL_CONNECTIONS,
                    )
                    bench.attempt(
                        "leases",
                        f"{kind} gateway, one task, connection_leases",
                        lambda k=kind: gateway_small_leased(stage, k, False),
                        limit=SMALL_CONNECTIONS,
                    )
        if "huge" not in skip:
            huge = int(args.huge_gib * GiB)
            stage.make_file("huge-a.bin", huge)
            stage.make_file("huge-b.bin", huge)
            bench.attempt("huge", f"gateway, 2 x {args.huge_gib:g} GiB at once", lambda: stage.gateway_huge(huge))
        if "unknown" not in skip:
            unknown = int(args.unknown_gib * GiB)
            bench.attempt(
                "unknown",
                f"gateway, {args.unknown_gib:g} GiB, size unknown",
                lambda: gateway_unknown_size(stage, unknown),
            )
    rows = bench.table()
    print_table(rows, bench.notes, machine)
    RESULTS.mkdir(parents=True, exist_ok=True)
    document = {
        "machine": machine,
        "date": time.strftime("%Y-%m-%d"),
        "runs": args.runs,
        "rows": rows,
        "notes": bench.notes,
        "args": vars(args),
    }
    (RESULTS / "bench.json").write_text(json.dumps(document, indent=2))
    (RESULTS / "bench.md").write_text(markdown(rows, bench.notes, machine, args.runs))
    chart(rows, RESULTS / "bench.png")
    if any(row["group"] == "distance" for row in rows):
        tables = distance_markdown(rows)
        (RESULTS / "distance.md").write_text(f"Machine: {machine}; {args.runs} runs per case (medians).\n\n{tables}")
        print(f"\n{tables}")
    print(f"\nwrote {RESULTS / 'bench.json'}, bench.md and bench.png")


if __name__ == "__main__":
    if os.geteuid() == 0 and not all(shutil.which(t) for t in ("nginx", "rclone", "globus-gridftp-server")):
        subprocess.run(
            [
                "apt-get", "install", "-y", "-q", "nginx", "rclone", "awscli",
                "globus-gridftp-server-progs", "globus-gass-copy-progs",
            ],
            check=False,
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
    main()
