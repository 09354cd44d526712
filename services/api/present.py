"""evalfleet's results in DigitalOcean's shapes: a task result as an evaluation run, a sample as a
prompt, a page as links and meta."""

from __future__ import annotations

from urllib.parse import urlencode

from services.api.schemas import (
    STATUS_OF_PHASE,
    EvaluationMetricResult,
    EvaluationRun,
    Links,
    Meta,
    MetricResultStatus,
    MetricValueType,
    Pages,
    Prompt,
)
from services.results import Paging, TaskResultView
from shared.log import SampleRecord
from shared.samples import ChatMessage

# Metrics that are a share of samples: reported as a percentage (0.9 -> 90.0).
PERCENTAGE_METRICS = ("accuracy",)


def metric_result(name: str, metric: str, value: float | None) -> EvaluationMetricResult:
    if value is None:
        return EvaluationMetricResult(metric_name=name, metric_value_type=MetricValueType.NUMBER,
                                      status=MetricResultStatus.SKIPPED,
                                      error_description="no scored sample: the metric has no value")
    if metric in PERCENTAGE_METRICS:
        return EvaluationMetricResult(metric_name=name, metric_value_type=MetricValueType.PERCENTAGE,
                                      number_value=100 * value)
    return EvaluationMetricResult(metric_name=name, metric_value_type=MetricValueType.NUMBER, number_value=value)


def evaluation_run(view: TaskResultView) -> EvaluationRun:
    run_level = [metric_result(f"{scorer}/{metric}", metric, value)
                 for scorer, values in view.metrics.items() for metric, value in values.items()]
    star = None
    if view.star_metric is not None:
        star = metric_result(view.star_metric.metric, view.star_metric.metric.split("/", 1)[1], view.star_metric.value)
    return EvaluationRun(
        evaluation_run_uuid=view.uuid, run_name=view.spec.display_name, status=STATUS_OF_PHASE[view.phase],
        queued_at=view.queued_at, started_at=view.started_at if view.done or view.finished_at else None,
        finished_at=view.finished_at, error_description=view.error_description, pass_status=view.pass_status,
        star_metric_result=star, run_level_metric_results=run_level, test_case_name=view.evaluation_display_name,
        test_case_description=view.evaluation_description, agent_name=view.spec.model.key if view.spec.model else None,
        run_id=view.run_id, evaluation_key=view.evaluation_key, task_specification_key=view.spec.key,
        total_samples=view.total, completed_samples=view.done, errored_samples=view.errors,
        model_calls=view.model_calls, cache_hits=view.cache_hits,
    )


def as_text(value: str | list[ChatMessage] | None) -> str:
    """DigitalOcean's inputs are text: a conversation is shown one `role: content` line per message."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return "\n".join(f"{message.role}: {message.content}" for message in value)


def prompt(sample: SampleRecord) -> Prompt:
    error = f"{sample.error.type}: {sample.error.message}" if sample.error else None
    results = []
    for label, score in sample.scores.items():
        results.append(EvaluationMetricResult(
            metric_name=label, metric_value_type=MetricValueType.NUMBER, number_value=score.value,
            string_value=score.answer, reasoning=score.explanation,
            status=MetricResultStatus.COMPLETED if score.value is not None else MetricResultStatus.SKIPPED))
    if sample.error is not None and not results:
        results.append(EvaluationMetricResult(metric_name="sample", metric_value_type=MetricValueType.NUMBER,
                                              status=MetricResultStatus.FAILED, error_description=error))
    return Prompt(
        prompt_id=sample.position, sample_id=sample.id, input=as_text(sample.input), output=sample.output,
        ground_truth=sample.target,
        input_tokens=str(sample.usage.input_tokens) if sample.usage else None,
        output_tokens=str(sample.usage.output_tokens) if sample.usage else None,
        prompt_level_metric_results=results, error_description=error, cached=sample.cached,
        latency_ms=sample.latency_ms, epoch=sample.epoch,
    )


def links(base_url: str, paging: Paging, **query: object) -> tuple[Links, Meta]:
    """DigitalOcean's `links.pages` (absolute URLs; `previous`, not `prev`) and `meta`. First and
    last are always given; previous and next when they exist (next past the last page: none)."""
    kept = {k: v for k, v in query.items() if v is not None}

    def url(page: int) -> str:
        return f"{base_url}?{urlencode({**kept, 'page': page, 'per_page': paging.per_page})}"

    pages = Pages(first=url(1), last=url(paging.pages),
                  previous=url(min(paging.page - 1, paging.pages)) if paging.page > 1 else None,
                  next=url(paging.page + 1) if paging.page < paging.pages else None)
    return Links(pages=pages), Meta(page=paging.page, pages=paging.pages, total=paging.total)
