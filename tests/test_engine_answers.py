"""The answer path end to end: an output that cannot be offloaded is still answered, once."""

from __future__ import annotations

from typing import Any

from provider_gateway.local import moto_activities
from provider_gateway.local.http_server import FileHTTPServer
from tests.conftest import GatewayFactory
from tests.support import create_state_machine, start, unique, wait_done
from tests.test_payloads import _many_files_message


def test_a_payload_bucket_that_refuses_the_write_is_answered_target_write_failed(
    gateway: GatewayFactory, sfn: Any, s3: Any, bucket: str, activity: str
) -> None:
    refusing = unique("missing")  # S3 refuses the write: NoSuchBucket
    with FileHTTPServer({"/tiny.txt": b"t"}) as provider:
        gateway(activity, {"type": "http", "host": provider.host}, payload_bucket=refusing)
        machine = create_state_machine(sfn, activity, timeout_s=600)
        answered_before = set(moto_activities.ANSWERS)

        done = wait_done(sfn, start(sfn, machine, _many_files_message(provider, bucket)), timeout_s=240)

    assert (done["status"], done["error"]) == ("FAILED", "TargetWriteFailed")
    assert f"s3://{refusing}/" in done["cause"] and "NoSuchBucket" in done["cause"]
    answers = {t: a for t, a in moto_activities.ANSWERS.items() if t not in answered_before}
    assert [len(a) for a in answers.values()] == [1]
