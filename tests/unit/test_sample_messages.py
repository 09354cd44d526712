"""The sample messages `SampleSender` publishes are Celery's own: the same headers, body, exchange
and routing key `app.send_task` produces, each with its own id (workers and `pending_samples`
read them as any Celery task message)."""

from __future__ import annotations

import pytest
from celery import signals

from workers.app import _SAMPLE_ARGS, SAMPLE_TASK, SampleSender, app, configure_app
from workers.sample import evaluate_sample_task  # noqa: F401 - registers the sample task

# A queue no worker consumes, emptied afterwards: an embedded worker started later in this process
# must not run these messages as samples of its own task results.
QUEUE = "evalfleet-test-sample-messages"


@pytest.fixture
def published(monkeypatch, tmp_path):
    monkeypatch.setenv("EVALFLEET_HOME", str(tmp_path))
    monkeypatch.delenv("EVALFLEET_BROKER_URL", raising=False)
    configure_app()
    app.finalize()
    seen: list[dict] = []

    def capture(sender=None, body=None, headers=None, exchange=None, routing_key=None, **_):  # noqa: ANN001
        seen.append({"task": sender, "body": body, "headers": dict(headers), "exchange": exchange,
                     "routing_key": routing_key})

    signals.before_task_publish.connect(capture, weak=False)
    try:
        yield seen
    finally:
        signals.before_task_publish.disconnect(capture)
        with app.connection_for_write() as connection:
            connection.default_channel.queue_purge(QUEUE)


def test_a_sample_message_is_the_one_send_task_builds(published):
    sample = {"id": "q1", "input": "What is 2+2?", "target": "4", "metadata": {"k": [1, 2]}}
    queue = QUEUE
    with SampleSender() as sender:
        sender.send(12, 7, sample, queue, checked=True)
        sender.send(12, 8, sample, queue)
        app.send_task(SAMPLE_TASK, args=[12, 7, sample, True], queue=queue, producer=sender.producer,
                      task_id="reference", declare=[], argsrepr="[12, 7, ...]", kwargsrepr="{}")
    first, second, reference = published
    assert first["body"] == reference["body"]
    assert second["body"][0] == [12, 8, sample]
    assert (first["exchange"], first["routing_key"]) == (reference["exchange"], reference["routing_key"]) == ("", queue)
    ids = {message["headers"].pop("id") for message in (first, second)}
    assert len(ids) == 2 and "reference" not in ids
    assert first["headers"].pop("root_id") in ids
    reference["headers"].pop("id"), reference["headers"].pop("root_id")
    assert first["headers"] == reference["headers"]
    assert second["headers"]["argsrepr"] == "[12, 8, ...]"
    # What a scan of waiting messages reads (workers.app.pending_samples).
    assert _SAMPLE_ARGS.search(b'"argsrepr": "' + first["headers"]["argsrepr"].encode()).groups() == (b"12", b"7")


def test_every_message_of_a_run_gets_a_unique_id(published):
    with SampleSender() as one, SampleSender() as other:
        for position in range(50):
            one.send(1, position, {"id": str(position), "input": "x"}, QUEUE)
            other.send(1, position, {"id": str(position), "input": "x"}, QUEUE)
    assert len({message["headers"]["id"] for message in published}) == 100
