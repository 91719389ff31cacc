"""boto3 clients, configured once and passed to whoever needs them.

Endpoints, region and credentials come from the standard AWS SDK
environment (``AWS_REGION``, ``AWS_ENDPOINT_URL``, ``AWS_ENDPOINT_URL_S3``,
``AWS_ENDPOINT_URL_SFN``, profiles, the ECS task role).
"""

from __future__ import annotations

import os
from typing import Any

import boto3
from botocore.config import Config as BotoConfig

# GetActivityTask holds the request for up to 60 s: the read timeout must outlast it.
ACTIVITY_POLL_READ_TIMEOUT_S = 70


def default_session() -> boto3.session.Session:
    """The SDK's default session; botocore reads only AWS_DEFAULT_REGION, so AWS_REGION is honoured here too."""
    session = boto3.session.Session()
    if session.region_name is None and os.environ.get("AWS_REGION"):
        session = boto3.session.Session(region_name=os.environ["AWS_REGION"])
    return session


class AwsClients:
    """Factory of the thread-safe boto3 clients the gateway shares between threads."""

    def __init__(self, session: boto3.session.Session | None = None, max_pool: int = 50) -> None:
        self._session = session or default_session()
        self._max_pool = max_pool

    def s3(self) -> Any:
        """An S3 client sized for concurrent part uploads."""
        config = BotoConfig(
            max_pool_connections=self._max_pool,
            retries={"mode": "standard", "max_attempts": 5},
            tcp_keepalive=True,
        )
        return self._session.client("s3", config=config)

    def sfn(self) -> Any:
        """A Step Functions client whose read timeout outlasts the 60 s long poll.

        botocore tries each call twice at most: the callers retry on their own
        schedule (the poller's backoff, the next heartbeat, the responder's
        retries), which a stop can cut short. Five botocore attempts inside
        each of theirs took up to 15 s per try, so a throttled answer could
        miss the end of a shutdown.
        """
        config = BotoConfig(
            read_timeout=ACTIVITY_POLL_READ_TIMEOUT_S,
            connect_timeout=10,
            max_pool_connections=self._max_pool,
            retries={"mode": "standard", "max_attempts": 2},
            tcp_keepalive=True,
        )
        return self._session.client("stepfunctions", config=config)

    def lease_table(self) -> Any:
        """A DynamoDB client for connection leases: short timeouts, so a slow table cannot delay the fence."""
        config = BotoConfig(
            connect_timeout=2,
            read_timeout=3,
            retries={"mode": "standard", "max_attempts": 2},
            max_pool_connections=self._max_pool,
        )
        return self._session.client("dynamodb", config=config)

    def client(self, service: str) -> Any:
        """A plain client of any other service (DynamoDB, SNS...)."""
        return self._session.client(service)

    def resource(self, service: str) -> Any:
        """A boto3 resource (DynamoDB tables)."""
        return self._session.resource(service)

    def cloudformation(self) -> Any:
        """A CloudFormation client (resource id resolution)."""
        return self._session.client("cloudformation")
