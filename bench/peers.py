"""The tools users would pick instead of the gateway: rclone, and curl piped into the AWS CLI."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

from stage import BUCKET, GiB, Stage, child_cpu


def _aws_cli() -> str | None:
    # pyenv's shim answers for any Python's aws; Debian's awscli is the one a user would have.
    for candidate in ("/usr/bin/aws", shutil.which("aws")):
        if candidate and subprocess.run([candidate, "--version"], capture_output=True).returncode == 0:
            return candidate
    return None


class Peers:
    """Runs each peer against the stage's servers; a missing tool is a note, not a failure."""

    def __init__(self, stage: Stage) -> None:
        self.stage = stage
        self.notes: list[str] = []
        self.rclone = shutil.which("rclone")
        self.aws = _aws_cli()
        if self.rclone is None:
            self.notes.append("rclone is missing: no rclone cases (apt-get install rclone)")
        if self.aws is None:
            self.notes.append("the AWS CLI is missing: no curl | aws cases (apt-get install awscli)")
        if self.rclone:
            self._configure_rclone()

    def _configure_rclone(self) -> None:
        stage, env = self.stage, self.stage.env
        env.update(
            {
                "RCLONE_CONFIG_S3_TYPE": "s3",
                "RCLONE_CONFIG_S3_PROVIDER": "Other",
                "RCLONE_CONFIG_S3_ENDPOINT": env["AWS_ENDPOINT_URL"],
                "RCLONE_CONFIG_S3_ACCESS_KEY_ID": env["AWS_ACCESS_KEY_ID"],
                "RCLONE_CONFIG_S3_SECRET_ACCESS_KEY": env["AWS_SECRET_ACCESS_KEY"],
                "RCLONE_CONFIG_S3_REGION": env["AWS_REGION"],
                "RCLONE_CONFIG_S3_FORCE_PATH_STYLE": "true",
                # rclone's HEAD after a multipart upload gets 400 from moto; the upload itself is fine.
                "RCLONE_S3_NO_HEAD": "true",
            }
        )
        if "http" in stage.conns:
            env["RCLONE_CONFIG_HTTP_TYPE"] = "http"
            env["RCLONE_CONFIG_HTTP_URL"] = "http://" + stage.conns["http-counted"]["host"] + "/"
        if "ftp" in stage.conns:
            ftp = stage.conns["ftp"]
            obscured = subprocess.run(
                [str(self.rclone), "obscure", ftp["password"]], capture_output=True, text=True, check=True
            ).stdout.strip()
            env.update(
                {
                    "RCLONE_CONFIG_FTP_TYPE": "ftp",
                    "RCLONE_CONFIG_FTP_HOST": ftp["host"],
                    "RCLONE_CONFIG_FTP_PORT": str(ftp["port"]),
                    "RCLONE_CONFIG_FTP_USER": ftp["username"],
                    "RCLONE_CONFIG_FTP_PASS": obscured,
                }
            )
        if "sftp" in stage.conns:
            sftp = stage.conns["sftp-counted"]
            env.update(
                {
                    "RCLONE_CONFIG_SFTP_TYPE": "sftp",
                    "RCLONE_CONFIG_SFTP_HOST": sftp["host"],
                    "RCLONE_CONFIG_SFTP_PORT": str(sftp["port"]),
                    "RCLONE_CONFIG_SFTP_USER": sftp["username"],
                    "RCLONE_CONFIG_SFTP_KEY_FILE": sftp["private_key_file"],
                    "RCLONE_CONFIG_SFTP_SHELL_TYPE": "none",
                }
            )

    def _remote_path(self, kind: str, name: str) -> str:
        if kind == "sftp":
            return f"sftp:{self.stage.data / name}"
        return f"{kind}:{name}"

    def rclone_large(self, kind: str, name: str, size: int) -> dict[str, float] | None:
        if self.rclone is None or kind == "gridftp":  # rclone speaks no GridFTP
            return None
        if kind == "http":
            command = [self.rclone, "copyurl", self.stage.urls["http"](name), f"s3:{BUCKET}/rclone-{kind}.bin"]
        else:
            command = [self.rclone, "copyto", self._remote_path(kind, name), f"s3:{BUCKET}/rclone-{kind}.bin"]
        figures = self.stage.timed(command, size)
        self.stage.s3.delete_object(Bucket=BUCKET, Key=f"rclone-{kind}.bin")
        return figures

    def curl_aws(self, kind: str, name: str, size: int) -> dict[str, float] | None:
        if self.aws is None:
            return None
        stage = self.stage
        if kind == "sftp":
            source = (
                f"curl -sS --fail -u {stage.sshd.user}: --key {stage.sshd.client_key} "
                f"--pubkey {stage.sshd.client_key}.pub --insecure sftp://127.0.0.1:{stage.sshd.port}{stage.data / name}"
            )
        elif kind == "ftp":
            source = f"curl -sS --fail --user provider:secret {stage.urls['ftp'](name)}"
        elif kind == "gridftp":
            url = stage.urls["gridftp"](name).replace("ftp://", "ftp://provider:secret@", 1)
            source = f"globus-url-copy {url} file:///dev/stdout"
        else:
            source = f"curl -sS --fail {stage.urls['http'](name)}"
        # Debian's AWS CLI (2.9) predates AWS_ENDPOINT_URL: the endpoint goes on the command line.
        sink = (
            f"{self.aws} s3 cp - s3://{BUCKET}/curl-{kind}.bin --expected-size {size} --only-show-errors"
            f" --endpoint-url {stage.env['AWS_ENDPOINT_URL']}"
        )
        figures = stage.timed(f"set -o pipefail; {source} | {sink}", size, shell=True)
        stage.s3.delete_object(Bucket=BUCKET, Key=f"curl-{kind}.bin")
        return figures

    def rclone_small(self, kind: str) -> dict[str, float] | None:
        if self.rclone is None or kind == "gridftp":
            return None
        stage = self.stage
        stage.reset_open[kind]()
        prefix = f"rclone-small-{kind}-{time.time_ns()}"
        source = self._remote_path(kind, "small")
        command = [self.rclone, "copy", "--transfers", "2", "--checkers", "2", source, f"s3:{BUCKET}/{prefix}"]
        cpu_before = child_cpu()
        started = time.perf_counter()
        done = subprocess.run(command, env=stage.env, capture_output=True, text=True)
        seconds = time.perf_counter() - started
        if done.returncode:
            raise RuntimeError(done.stderr.strip()[-300:])
        count = len(stage.small_names)
        return {"files/s": count / seconds, "CPU s": child_cpu() - cpu_before, "provider conns": stage.max_open[kind]()}


__all__ = ["GiB", "Path", "Peers"]
