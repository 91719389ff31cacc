"""The embedded AWS stack: S3, Step Functions (with activities), CloudFormation,
DynamoDB, SNS and Lambda (this package's handlers, in process) served by a moto
server over HTTP on loopback.

Needs the ``local`` extra (``pip install provider-gateway[local]``).
"""

from __future__ import annotations

import argparse
import logging
import os
import threading

LOCAL_REGION = "us-east-1"


class LocalStack:
    """A moto server on 127.0.0.1; :attr:`endpoint` is its URL."""

    def __init__(self, port: int = 0, long_poll_s: float = 60.0) -> None:
        from moto.server import ThreadedMotoServer

        from provider_gateway.local import moto_activities, moto_dynamodb, moto_lambdas

        moto_activities.install(long_poll_s=long_poll_s)
        moto_dynamodb.install()
        moto_lambdas.install()
        # Every request and every failed execution would be printed otherwise.
        logging.getLogger("werkzeug").setLevel(logging.ERROR)
        logging.getLogger("moto.stepfunctions").setLevel(logging.CRITICAL)
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
        self.endpoint = ""

    def start(self) -> LocalStack:
        self._server.start()
        host, port = self._server.get_host_and_port()
        self.endpoint = f"http://{host}:{port}"
        # moto's Step Functions engine calls Lambda, Batch, DynamoDB... on localhost:$MOTO_PORT.
        os.environ["MOTO_PORT"] = str(port)
        return self

    def stop(self) -> None:
        self._server.stop()

    def __enter__(self) -> LocalStack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def environment(self) -> dict[str, str]:
        """The standard AWS SDK variables that point a process at this stack."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_REGION": LOCAL_REGION,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
        }


def main() -> None:
    """``python -m provider_gateway.local.stack --port 5000``: serve until interrupted."""
    parser = argparse.ArgumentParser(description="moto server with Step Functions activities")
    parser.add_argument("--port", type=int, default=5000)
    args = parser.parse_args()
    stack = LocalStack(port=args.port).start()
    print(f"local AWS stack on {stack.endpoint}", flush=True)
    for name, value in stack.environment().items():
        print(f"export {name}={value}", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        stack.stop()
        os._exit(0)


if __name__ == "__main__":
    main()
