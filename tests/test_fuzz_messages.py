"""Arbitrary, near-valid and hostile messages: each is answered, the output of any accepted one builds.

The parser and the output builders run here as the gateway runs them; the
last tests send messages through the activity to a running gateway.
"""

from __future__ import annotations

import copy
import functools
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from provider_gateway import json_input
from provider_gateway.config.model import HttpConnConfig
from provider_gateway.engine.responder import bounded_cause
from provider_gateway.errors import InvalidRequest
from provider_gateway.local.http_server import FileHTTPServer
from provider_gateway.messages import FileResult, file_output, parse_download_task, parse_sync_task, task_output
from provider_gateway.protocols import check_url
from tests.conftest import GatewayFactory
from tests.support import CONTRACT_CODES, create_state_machine, download_message, start, wait_done

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


CHECK = functools.partial(check_url, HttpConnConfig(type="https", host="data.example.org"))
URL = "https://data.example.org/d/a.h5"
OUTPUT = {"bucket": "my-bucket", "key_prefix": "p/{meta.k}"}
VALID_DOWNLOAD: dict[str, Any] = {
    "payload": {
        "files": [
            {"source": {"url": URL, "size": 4}, "target": {"bucket": "my-bucket", "key": "k"}},
            {"source": {"url": URL.replace("a.h5", "b.h5")}, "target": "FROM_CONFIG", "note": "kept"},
        ]
    },
    "config": {"output": OUTPUT},
    "meta": {"k": "v"},
}
VALID_TEMPLATE: dict[str, Any] = {  # the original service's spelling of config.output
    "payload": VALID_DOWNLOAD["payload"],
    "workflow_config_template": {"DownloadActivity": {"output": OUTPUT}},
    "meta": {"k": "v"},
}
VALID_SYNC: dict[str, Any] = {
    "payload": [{"url": URL, "version": "1"}],
    "workflow_config_template": {"SyncHttpUrls": {"output": OUTPUT}},
    "meta": {"k": "v"},
}


def nested(depth: int, leaf: str = "0", kind: str = "[]") -> str:
    """JSON text of ``depth`` nested lists (or objects, kind "{}") around ``leaf``."""
    if kind == "[]":
        return "[" * depth + leaf + "]" * depth
    return '{"a":' * depth + leaf + "}" * depth


def with_text(message: dict[str, Any], where: tuple[Any, ...], raw: str) -> str:
    """``message`` as JSON text with the JSON text ``raw`` placed at ``where``."""
    marker = "\u0000MARK\u0000"
    return json.dumps(mutate(message, where, marker, drop=False)).replace(json.dumps(marker), raw)


# Messages seen to go unanswered, and their kin: each must be InvalidRequest with these words.
HOSTILE = [
    ("", "not JSON"),
    ("{", "not JSON"),
    ("[1, 2]", "must be a JSON object"),
    ('"x"', "must be a JSON object"),
    (nested(100_000), "nested deeper than 100 levels"),
    (nested(100_000, kind="{}"), "nested deeper than 100 levels"),
    (nested(101), "nested deeper than 100 levels"),
    (with_text(VALID_DOWNLOAD, ("extra",), nested(900)), "nested deeper than 100 levels (at extra"),
    (with_text(VALID_DOWNLOAD, ("payload", "files", 1, "note"), nested(900, kind="{}")), "at payload.files[1].note"),
    (with_text(VALID_DOWNLOAD, ("payload", "x"), nested(99)), "nested deeper than 100 levels (at payload.x"),
    (with_text(VALID_TEMPLATE, ("workflow_config_template",), '"x"'), "payload.files[1].target: FROM_CONFIG"),
    (with_text(VALID_TEMPLATE, ("workflow_config_template", "DownloadActivity"), "7"), "FROM_CONFIG needs"),
    (with_text(VALID_SYNC, ("workflow_config_template", "SyncHttpUrls"), "[1]"), "required for sync"),
    (with_text(VALID_DOWNLOAD, ("extra",), '{"\\ud800": 1}'), "lone surrogate (U+D800)"),
    (with_text(VALID_DOWNLOAD, ("extra",), '"a\\udfffb"'), "the value at extra holds a lone surrogate (U+DFFF)"),
    (
        with_text(VALID_DOWNLOAD, ("payload", "files", 0, "source", "url"), '"https://data.example.org/\\ud83d"'),
        "surrogate",
    ),
    (with_text(VALID_DOWNLOAD, ("extra",), "NaN"), "NaN is not a JSON number"),
    (with_text(VALID_DOWNLOAD, ("extra",), "-Infinity"), "-Infinity is not a JSON number"),
    (with_text(VALID_DOWNLOAD, ("extra",), "1e999"), "1e999 is too large"),
    (with_text(VALID_DOWNLOAD, ("extra",), "9" * 5000), "not JSON"),
    (with_text(VALID_DOWNLOAD, ("payload", "files", 0, "source", "size"), str(10**30)), "5 TiB"),
    ("[" * (json_input.MAX_CONTAINERS + 1), "more than 200000 objects and lists"),
    ("[" + " " * json_input.MAX_BYTES + "]", "over 4194304 bytes"),
]


@pytest.mark.parametrize(("text", "words"), HOSTILE, ids=[f"hostile{i}" for i in range(len(HOSTILE))])
def test_hostile_messages_are_invalid_requests_that_say_why(text: str, words: str) -> None:
    parse = parse_sync_task if "SyncHttpUrls" in text else parse_download_task
    with pytest.raises(InvalidRequest) as caught:
        parse(text, CHECK)
    assert words in caught.value.message
    assert len(caught.value.message) < 400


def test_a_valid_message_with_a_surrogate_pair_and_99_levels_is_taken_and_answered() -> None:
    text = with_text(VALID_DOWNLOAD, ("extra",), '["\\ud83d\\ude00", ' + nested(97) + "]")
    task = parse_download_task(text, CHECK)
    assert_outputs_build(task)


def assert_outputs_build(task: Any) -> None:
    """Every output the gateway builds for ``task`` serializes and encodes, whatever the results."""
    outcomes = [
        FileResult(success=True, bytes=4),
        FileResult(success=True, version_skip=True),
        FileResult(success=False, error_code="SourceUnavailable", error="connection reset by peer"),
    ]
    for result in outcomes:
        results = [result] * len(task.files)
        output = task_output(task, results)
        text = json.dumps(output, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
        text.encode("utf-8")
        assert json.loads(text) == output
        entries = [file_output(task.entries[r.index], r, res) for r, res in zip(task.files, results, strict=True)]
        json.loads(bounded_cause(entries))


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.text(max_size=200) | st.binary(max_size=200).map(lambda b: b.decode("latin-1")))
@example("\ud800")
@example('{"payload": {"Bucket": "b", "Key": "k"}}')
def test_any_text_is_parsed_or_refused_with_invalid_request(text: str) -> None:
    for parse in (parse_download_task, parse_sync_task):
        try:
            task = parse(text, CHECK)
        except InvalidRequest as exc:
            assert exc.message
        else:
            assert_outputs_build(task)


# JSON values as a hostile sender writes them: any text (surrogates too), big numbers, deep nesting.
hostile_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**40), max_value=10**40)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(alphabet=st.characters(), max_size=12),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3),
    max_leaves=10,
)
deep_text = st.tuples(st.integers(0, 400), st.sampled_from(["[]", "{}"])).map(lambda t: nested(t[0], "1", t[1]))
PLACES = [
    *PATHS,
    ("extra",),
    ("meta",),
    ("payload", "extra"),
    ("payload", "files", 0, "extra"),
    ("payload", "files", 1, "source", "extra"),
    ("config", "output"),
    ("workflow_config_template",),
]


@settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    st.sampled_from([VALID_DOWNLOAD, VALID_TEMPLATE, VALID_SYNC]),
    st.lists(
        st.tuples(
            st.sampled_from(PLACES),
            hostile_values.map(lambda v: json.dumps(v, ensure_ascii=True)) | deep_text,
        ),
        min_size=1,
        max_size=3,
    ),
)
def test_near_valid_messages_are_parsed_or_refused_and_the_output_of_any_taken_one_builds(
    base: dict[str, Any], changes: list[tuple[tuple[Any, ...], str]]
) -> None:
    text = json.dumps(base)
    for where, raw in changes:
        try:
            text = with_text(json.loads(text), where, raw)
        except (KeyError, IndexError, TypeError):
            continue  # the place no longer exists in this message
    parse = parse_sync_task if base is VALID_SYNC else parse_download_task
    try:
        task = parse(text, CHECK)
    except InvalidRequest as exc:
        assert exc.message
        event("refused")
        return
    event("taken")
    assert_outputs_build(task)


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
            done = wait_done(sfn, start(sfn, machine, message), timeout_s=90)  # a loaded machine is slow
            assert done["status"] in ("SUCCEEDED", "FAILED"), case
            if done["status"] == "FAILED":
                assert done["error"] in CONTRACT_CODES, (case, done["error"], done.get("cause"))

        each_is_answered()
        after = wait_done(sfn, start(sfn, machine, valid))

    assert after["status"] == "SUCCEEDED", after
    assert process.proc.poll() is None  # still up
    assert "Traceback" not in process.log()


def test_hostile_messages_through_the_activity_are_each_answered_invalid_request(
    gateway: GatewayFactory, sfn: Any, bucket: str, activity: str
) -> None:
    with FileHTTPServer({"/f.h5": b"data"}) as provider:
        process = gateway(activity, {"type": "http", "host": provider.host})
        machine = create_state_machine(sfn, activity, heartbeat_s=30)
        valid = download_message([(provider.url("/f.h5"), bucket, "f.h5")])
        template = {"payload": {"files": [{"source": {"url": provider.url("/f.h5")}, "target": "FROM_CONFIG"}]}}
        cases = [
            (json.dumps({**template, "workflow_config_template": "x"}), "FROM_CONFIG needs"),
            # Deeper nesting is refused by the local Step Functions itself (the parser's tests cover it).
            (with_text(valid, ("extra",), nested(120)), "nested deeper than 100 levels (at extra"),
            (with_text(valid, ("payload", "files", 0, "extra"), nested(120, kind="{}")), "at payload.files[0].extra"),
            (with_text(valid, ("extra",), '{"\\ud800": 1}'), "lone surrogate"),
            (with_text(valid, ("extra",), "NaN"), "NaN is not a JSON number"),
        ]
        executions = [(start(sfn, machine, text), words) for text, words in cases]
        answers = [(wait_done(sfn, arn, timeout_s=60), words) for arn, words in executions]
        after = wait_done(sfn, start(sfn, machine, valid))

    for done, words in answers:
        assert (done["status"], done.get("error")) == ("FAILED", "InvalidRequest"), done
        assert words in done["cause"]
    assert after["status"] == "SUCCEEDED", after
    assert process.proc.poll() is None
    assert "Traceback" not in process.log()
