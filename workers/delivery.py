"""How a worker receives a sample message: Celery's request, with the body decoded once.

Celery's consumer decodes every message's body to tell protocol versions apart
(`'args' in message.payload`), then hands the still-encoded body to the pool, where it is
decoded again before the task runs: two JSON decodes per sample, both under the interpreter
lock every thread of the process needs. The sample task's request class (Celery's `Task.Request`
extension point) passes on the payload the consumer already decoded (kombu caches it on the
message), so the pool runs the task without a second decode."""

from __future__ import annotations

from typing import Any

from celery.worker.request import Request


class SampleRequest(Request):
    def __init__(self, message, *args: Any, **kwargs: Any) -> None:  # noqa: ANN001
        body = kwargs.get("body")
        if not kwargs.get("decoded") and (body is None or body is message.body) and message.content_type:
            # `message.payload` is the decode the consumer made (kombu keeps it on the message).
            kwargs["body"] = message.payload
            kwargs["decoded"] = True
        super().__init__(message, *args, **kwargs)
