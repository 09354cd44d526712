"""Sample requests (workers.delivery) hand the pool the payload the consumer decoded: the task runs
on the same arguments, without a second JSON decode."""

from __future__ import annotations

import json

from kombu.message import Message

from workers.app import SAMPLE_TASK, app
from workers.delivery import SampleRequest
from workers.sample import evaluate_sample_task


def _message(args: list) -> Message:
    body = json.dumps([args, {}, {"callbacks": None, "errbacks": None, "chain": None, "chord": None}])
    return Message(body=body.encode(), content_type="application/json", content_encoding="utf-8",
                   headers={"id": "t-1", "task": SAMPLE_TASK, "argsrepr": "[3, 4, ...]", "root_id": "t-1"})


def test_the_sample_task_uses_the_request_that_decodes_once():
    assert evaluate_sample_task.Request == "workers.delivery:SampleRequest"


def test_the_request_carries_the_decoded_payload_and_no_content_type():
    message = _message([3, 4, {"id": "a", "input": "x"}, True])
    decoded = message.payload  # what Celery's consumer does on receipt
    request = SampleRequest(message, app=app, task=evaluate_sample_task, body=message.body, decoded=False)
    assert request.body is decoded
    assert (request.content_type, request.content_encoding) == (None, None)
    assert request.args == [3, 4, {"id": "a", "input": "x"}, True]
    assert request.kwargs == {}


def test_an_already_decoded_body_is_left_as_given():
    message = _message([1, 2, {"id": "b"}])
    given = ([1, 2, {"id": "b"}], {}, {})
    request = SampleRequest(message, app=app, task=evaluate_sample_task, body=given, decoded=True)
    assert request.body is given
