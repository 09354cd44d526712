"""Dataset checks that need no model: `uniqueness` and `completeness` of a field."""

from __future__ import annotations

import hashlib
import json

from pydantic import Field

from shared.log import Score
from shared.samples import Sample
from workers.tasks.base import Task, TaskConfig

MEAN_METRICS = ("mean", "stderr")


class FieldConfig(TaskConfig):
    field: str = Field(description="The dataset column checked, by its name in the file.")


class CompletenessTask(Task):
    """1 when the field is present and neither empty nor blank, else 0."""

    config_model = FieldConfig
    config: FieldConfig
    needs_model = False
    needs_input = False

    def metrics(self) -> dict[str, tuple[str, ...]]:
        return {"completeness": MEAN_METRICS}

    def score(self, sample: Sample, output: str | None) -> dict[str, Score]:
        value = sample.field(self.config.field, self.dataset)
        empty = value is None or (isinstance(value, str | list | dict) and not str(value).strip()) or (
            isinstance(value, list | dict) and not value
        )
        return {"completeness": Score(value=0.0 if empty else 1.0, answer=None if value is None else str(value))}


class UniquenessTask(Task):
    """1 when the sample's value of the field occurs exactly once among the selected samples."""

    config_model = FieldConfig
    config: FieldConfig
    needs_model = False
    needs_input = False
    scores_population = True

    def metrics(self) -> dict[str, tuple[str, ...]]:
        return {"uniqueness": MEAN_METRICS}

    def group_key(self, sample: Sample) -> str:
        value = sample.field(self.config.field, self.dataset)
        return hashlib.blake2b(json.dumps(value, sort_keys=True).encode(), digest_size=16).hexdigest()

    def score(self, sample: Sample, output: str | None) -> dict[str, Score]:
        value = sample.field(self.config.field, self.dataset)
        # Provisional until the aggregator sees the whole selection (score_in_population).
        return {"uniqueness": Score(value=None, answer=None if value is None else str(value))}

    def score_in_population(self, scores: dict[str, Score], duplicated: bool) -> dict[str, Score]:
        score = scores["uniqueness"]
        return {"uniqueness": score.model_copy(update={
            "value": 0.0 if duplicated else 1.0,
            "explanation": "value occurs more than once" if duplicated else None,
        })}
