"""User tasks for tests (`entrypoint: python_tasks:<Name>`), importable because pytest puts tests/
on sys.path. Allowed only through EVALFLEET_ALLOWED_MODULES=python_tasks."""

from __future__ import annotations

from pydantic import Field

from workers.tasks.qa import QAConfig, QATask


class TriviaConfig(QAConfig):
    config_key: list[str] = Field(default_factory=list, description="A list this task accepts and ignores.")


class TriviaTask(QATask):
    """The reference's "hp-trivia": question answering, scored by `includes`."""

    config_model = TriviaConfig
