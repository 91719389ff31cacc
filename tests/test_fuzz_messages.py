"""Arbitrary and near-valid messages at the activity: each is answered, the gateway stays up."""

from __future__ import annotations

import copy
import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from provider_gateway.local.http_server import FileHTTPServer
from tests.conftest import GatewayFactory
from tests.support import create_state_machine, download_message, start, wait_done

CONTRACT_CODES = {
    "InvalidRequest",
    "SourceNotFound",
    "SourceAccessDenied",
    "SourceUnavailable",
    "IntegrityError",
    "TargetWriteFailed",
    "OutputTooLarge",
    "GatewayShutdown",
}

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=12),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)
PATHS = [
    ("payload",),
    ("payload", "files"),
    ("payload", "files", 0),
    ("payload", "files", 0, "source"),
    ("payload", "files", 0, "source", "url"),
    ("payload", "files", 0, "source", "size"),
    ("payload", "files", 0, "source", "checksum"),
    ("payload", "files", 0, "source", "version"),
    ("payload", "files", 0, "target"),
    ("payload", "files", 0, "target", "bucket"),
    ("payload", "files", 0, "target", "key"),
    ("payload", "files", 0, "type"),
    ("config",),
]


def mutate(message: dict[str, Any], path: tuple[Any, ...], value: Any, drop: bool) -> dict[str, Any]:
    changed = copy.deepcopy(message)
    node: Any = changed
    for part in path[:-1]:
        node = node[part]
    if drop and isinstance(node, dict):
        node.pop(path[-1], None)
    else:
        node[path[-1]] = value
    return changed


def test_arbitrary_and_near_valid_messages_are_each_answered(
    gateway: GatewayFactory, sfn: Any, s3: Any, bucket: str, activity: str
) -> None:
    with FileHTTPServer({"/f.h5": b"data"}) as provider:
        process = gateway(activity, {"type": "http", "host": provider.host})
        machine = create_state_machine(sfn, activity, heartbeat_s=30)
        valid = download_message([(provider.url("/f.h5"), bucket, "f.h5")])

        @settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
        @given(
            st.one_of(
                json_values.map(lambda v: ("arbitrary", v)),
                st.tuples(st.sampled_from(PATHS), json_values, st.booleans()).map(
                    lambda t: ("near-valid", mutate(valid, *t))
                ),
            )
        )
        def each_is_answered(case: tuple[str, Any]) -> None:
            message = json.dumps(case[1]) if case[0] == "arbitrary" else case[1]  # any JSON text is valid input
            done = wait_done(sfn, start(sfn, machine, message), timeout_s=30)
            assert done["status"] in ("SUCCEEDED", "FAILED"), case
            if done["status"] == "FAILED":
                assert done["error"] in CONTRACT_CODES, (case, done["error"], done.get("cause"))

        each_is_answered()
        after = wait_done(sfn, start(sfn, machine, valid))

    assert after["status"] == "SUCCEEDED", after
    assert process.proc.poll() is None  # still up
    assert "Traceback" not in process.log()
