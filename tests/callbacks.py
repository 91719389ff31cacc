"""The callback workflow's AWS pieces on the local stack: table, functions, API Gateway events."""

from __future__ import annotations

import base64
import io
import json
import time
import zipfile
from typing import Any

import boto3

from provider_gateway.lambdas.callbacks import sign
from tests.support import unique

LAMBDA_ROLE = "provider-gateway-lambda"


def create_table(dynamodb: Any) -> str:
    """The callback table as the SAM template defines it (key callback_id, TTL expires_at)."""
    name = unique("callbacks")
    dynamodb.create_table(
        TableName=name,
        KeySchema=[{"AttributeName": "callback_id", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "callback_id", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    dynamodb.update_time_to_live(
        TableName=name, TimeToLiveSpecification={"Enabled": True, "AttributeName": "expires_at"}
    )
    return name


def _role_arn(iam: Any) -> str:
    try:
        return str(iam.get_role(RoleName=LAMBDA_ROLE)["Role"]["Arn"])
    except iam.exceptions.NoSuchEntityException:
        trust = {
            "Version": "2012-10-17",
            "Statement": [
                {"Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"}, "Action": "sts:AssumeRole"}
            ],
        }
        return str(iam.create_role(RoleName=LAMBDA_ROLE, AssumeRolePolicyDocument=json.dumps(trust))["Role"]["Arn"])


def create_function(clients: dict[str, Any], handler: str, env: dict[str, str], timeout_s: int = 60) -> str:
    """A Lambda function on the local stack whose handler is one of the package's (run in process)."""
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("README", "the handler lives in the provider_gateway package")
    created = clients["lambda"].create_function(
        FunctionName=unique(handler.rsplit(".", 1)[-1]),
        Runtime="python3.11",
        Role=_role_arn(clients["iam"]),
        Handler=handler,
        Code={"ZipFile": archive.getvalue()},
        Timeout=timeout_s,
        Environment={"Variables": env},
    )
    return str(created["FunctionArn"])


def api_event(callback_id: str, body: bytes, signature: str | None, base64_body: bool = False) -> dict[str, Any]:
    """An API Gateway HTTP API (payload 2.0) event for POST /callbacks/{callback_id}."""
    headers = {"content-type": "application/json", "host": "abc123.execute-api.us-east-1.amazonaws.com"}
    if signature is not None:
        headers["x-signature-256"] = signature
    return {
        "version": "2.0",
        "routeKey": "POST /callbacks/{callback_id}",
        "rawPath": f"/callbacks/{callback_id}",
        "rawQueryString": "",
        "headers": headers,
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "abc123",
            "domainName": "abc123.execute-api.us-east-1.amazonaws.com",
            "http": {
                "method": "POST",
                "path": f"/callbacks/{callback_id}",
                "protocol": "HTTP/1.1",
                "sourceIp": "203.0.113.9",
                "userAgent": "provider/1.0",
            },
            "requestId": "req-1",
            "routeKey": "POST /callbacks/{callback_id}",
            "stage": "$default",
            "timeEpoch": 1763700000000,
        },
        "pathParameters": {"callback_id": callback_id},
        "body": base64.b64encode(body).decode() if base64_body else body.decode(),
        "isBase64Encoded": base64_body,
    }


def signed(callback_id: str, secret: str, message: dict[str, Any]) -> dict[str, Any]:
    body = json.dumps(message).encode()
    return api_event(callback_id, body, sign(secret, body))


def local_clients(env: dict[str, str]) -> dict[str, Any]:
    session = boto3.session.Session(
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        region_name=env["AWS_REGION"],
    )
    return {
        name: session.client(name, endpoint_url=env["AWS_ENDPOINT_URL"])
        for name in ("dynamodb", "lambda", "iam", "stepfunctions", "s3", "sns")
    }


def waiting_callback(dynamodb: Any, table: str, execution_arn: str, timeout_s: float = 30) -> dict[str, Any]:
    """The table's item for ``execution_arn`` once the register function has stored it."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        items = dynamodb.scan(TableName=table).get("Items", [])
        for item in items:
            if item.get("execution", {}).get("S") == execution_arn:
                return {k: next(iter(v.values())) for k, v in item.items()}
        time.sleep(0.2)
    raise AssertionError(f"no callback registered for {execution_arn} within {timeout_s}s")
