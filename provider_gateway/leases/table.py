"""The lease table in DynamoDB: one item per connection slot of a provider.

Item: ``provider`` (partition key, S), ``slot`` (sort key, N), ``holder``
(who holds it, for people), ``lease_id`` (a fresh id per take: the holder's
proof), ``expires_ms`` (wall-clock expiry, epoch milliseconds, what the
conditions compare) and ``expires_at`` (the same in whole epoch seconds, the
table's TTL attribute, so that DynamoDB removes abandoned items).

Every change is a conditional write, so two takers of one slot cannot both
succeed: a slot is taken only if it has no item or its lease has expired, and
renewed or released only by the holder of its ``lease_id``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

_CONDITION_FAILED = "ConditionalCheckFailedException"
# The only calls a gateway makes on the table: what its IAM policy must allow.
LEASE_TABLE_ACTIONS = ("dynamodb:Query", "dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem")


@dataclass(frozen=True)
class SlotState:
    """One slot as the table holds it."""

    slot: int
    holder: str
    expires_ms: int


class LeaseTable:
    """Conditional reads and writes of one provider's slot items."""

    def __init__(self, dynamodb: Any, table: str) -> None:
        self._db = dynamodb
        self.name = table

    def slots(self, provider: str) -> list[SlotState]:
        """Every slot item of ``provider`` (a slot without an item is free)."""
        items: list[SlotState] = []
        kwargs: dict[str, Any] = {
            "TableName": self.name,
            "KeyConditionExpression": "provider = :p",
            "ExpressionAttributeValues": {":p": {"S": provider}},
            "ConsistentRead": True,
        }
        while True:
            page = self._db.query(**kwargs)
            items += [
                SlotState(int(i["slot"]["N"]), i.get("holder", {}).get("S", ""), int(i["expires_ms"]["N"]))
                for i in page.get("Items", [])
            ]
            if "LastEvaluatedKey" not in page:
                return items
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def take(self, provider: str, slot: int, holder: str, lease_id: str, now_ms: int, expires_ms: int) -> bool:
        """Take ``slot`` if it is free or its lease expired before ``now_ms``; False if it is held."""
        try:
            self._db.put_item(
                TableName=self.name,
                Item=self._item(provider, slot, holder, lease_id, expires_ms),
                ConditionExpression="attribute_not_exists(provider) OR expires_ms < :now",
                ExpressionAttributeValues={":now": {"N": str(now_ms)}},
            )
        except ClientError as exc:
            if _code(exc) == _CONDITION_FAILED:
                return False
            raise
        return True

    def renew(self, provider: str, slot: int, lease_id: str, expires_ms: int) -> bool:
        """Move the expiry of our lease on; False if the slot is no longer ours."""
        try:
            self._db.update_item(
                TableName=self.name,
                Key=self._key(provider, slot),
                UpdateExpression="SET expires_ms = :e, expires_at = :t",
                ConditionExpression="lease_id = :id",
                ExpressionAttributeValues={
                    ":e": {"N": str(expires_ms)},
                    ":t": {"N": str(math.ceil(expires_ms / 1000))},
                    ":id": {"S": lease_id},
                },
            )
        except ClientError as exc:
            if _code(exc) == _CONDITION_FAILED:
                return False
            raise
        return True

    def release(self, provider: str, slot: int, lease_id: str) -> None:
        """Free the slot if it is still ours (a lease already taken over is left alone)."""
        try:
            self._db.delete_item(
                TableName=self.name,
                Key=self._key(provider, slot),
                ConditionExpression="lease_id = :id",
                ExpressionAttributeValues={":id": {"S": lease_id}},
            )
        except ClientError as exc:
            if _code(exc) != _CONDITION_FAILED:
                raise

    @staticmethod
    def _key(provider: str, slot: int) -> dict[str, Any]:
        return {"provider": {"S": provider}, "slot": {"N": str(slot)}}

    def _item(self, provider: str, slot: int, holder: str, lease_id: str, expires_ms: int) -> dict[str, Any]:
        return {
            **self._key(provider, slot),
            "holder": {"S": holder},
            "lease_id": {"S": lease_id},
            "expires_ms": {"N": str(expires_ms)},
            "expires_at": {"N": str(math.ceil(expires_ms / 1000))},
        }


def create_table(dynamodb: Any, name: str) -> None:
    """Create the lease table as the examples deploy it: on demand, TTL on ``expires_at`` (local use, tests)."""
    dynamodb.create_table(
        TableName=name,
        KeySchema=[{"AttributeName": "provider", "KeyType": "HASH"}, {"AttributeName": "slot", "KeyType": "RANGE"}],
        AttributeDefinitions=[
            {"AttributeName": "provider", "AttributeType": "S"},
            {"AttributeName": "slot", "AttributeType": "N"},
        ],
        BillingMode="PAY_PER_REQUEST",
    )
    dynamodb.get_waiter("table_exists").wait(TableName=name)
    dynamodb.update_time_to_live(
        TableName=name, TimeToLiveSpecification={"Enabled": True, "AttributeName": "expires_at"}
    )


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))
