"""What the OpenAI provider reads from a Chat Completions body: the text and the token counts,
with anything missing or oddly shaped read as empty rather than failing the sample."""

from __future__ import annotations

import pytest

from workers.providers.openai import _completion_fields


@pytest.mark.parametrize(("body", "expected"), [
    ({"choices": [{"message": {"role": "assistant", "content": "Paris"}}],
      "usage": {"prompt_tokens": 12, "completion_tokens": 1, "total_tokens": 13}}, ("Paris", 12, 1)),
    ({"choices": [{"message": {"role": "assistant", "content": None}}]}, ("", None, None)),
    ({"choices": [], "usage": {"prompt_tokens": 3}}, ("", 3, None)),
    ({"choices": [{"finish_reason": "length"}], "usage": None}, ("", None, None)),
    ("not a body", ("", None, None)),
])
def test_text_and_tokens_of_a_completion_body(body, expected):
    assert _completion_fields(body) == expected
