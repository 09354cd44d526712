"""Test doubles we own. `tests.fakes.openai_server`: a fake OpenAI-compatible Chat Completions server
(import `FakeOpenAIServer` and `FakeConfig` from that module; run it with
`python -m tests.fakes.openai_server --help`)."""
