"""The endpoints, under /v2/gen-ai: each a few lines over the query layer (services.results), the
submitter and the token library. Handlers are plain functions: FastAPI runs them in its thread
pool, beside the database's blocking driver."""

from __future__ import annotations

import tempfile
import threading
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from fastapi import Path as PathParam
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse

from services.api import present
from services.api.auth import ApiProblem, Caller, require
from services.api.schemas import (
    STATUS_OF_PHASE,
    ApiError,
    BenchmarksOutput,
    CreatedToken,
    CreateEvaluationRunOutput,
    CreateToken,
    EvaluationRunOutput,
    EvaluationRunResultsOutput,
    EvaluationRunsOutput,
    EvaluationRunStatus,
    PromptOutput,
    RunsOutput,
    SampleOutput,
    Token,
    TokensOutput,
    TrendsOutput,
)
from services.comparison import COMPARE_FILTERS, MAX_COMPARED, Comparison, compare
from services.results import (
    OUTCOMES,
    SAMPLE_ORDERS,
    find_samples,
    list_task_results,
    sample_at,
    task_result,
    task_results_of_run,
)
from shared.errors import EvalfleetError, SpecError
from shared.settings import get_settings

router = APIRouter(prefix="/v2/gen-ai")
MAX_PER_PAGE = 1000
MAX_RUN_FILE_BYTES = 20 * 1024 * 1024
ERRORS = {status: {"model": ApiError} for status in (400, 401, 403, 404, 422, 429, 500, 503)}
Page = Annotated[int, Query(ge=1, le=10_000_000, description="Page number, from 1.")]
PerPage = Annotated[int, Query(ge=1, le=MAX_PER_PAGE, description="Items per page (at most 1,000).")]
RunUuid = Annotated[str, PathParam(max_length=64, description="The evaluation run's UUID (one task result).")]
_PHASE_OF_NAME = {**{status.value: phase for phase, status in STATUS_OF_PHASE.items()},
                  **{phase: phase for phase in STATUS_OF_PHASE}}


def _view(uuid: str):  # noqa: ANN202
    view = task_result(uuid)
    if view is None:
        raise ApiProblem(404, "not_found", f"no evaluation run {uuid!r}")
    return view


@router.get("/evaluation_runs", response_model=EvaluationRunsOutput, responses=ERRORS,
            summary="List evaluation runs, newest first")
def list_evaluation_runs(request: Request, page: Page = 1, per_page: PerPage = 50,
                         status: Annotated[str | None, Query(
                             max_length=64, description="A status (EVALUATION_RUN_SUCCESSFUL) or its short name "
                             "(successful).")] = None,
                         evaluation_key: Annotated[str | None, Query(max_length=250)] = None,
                         _caller: Caller = Depends(require("read"))) -> EvaluationRunsOutput:
    phase = None
    if status is not None:
        phase = _PHASE_OF_NAME.get(status) or _PHASE_OF_NAME.get(status.lower())
        if phase is None:
            raise ApiProblem(422, "unprocessable_entity", f"query parameter `status`: unknown status {status!r}; "
                             f"one of {', '.join(s.value for s in EvaluationRunStatus if s.name != 'UNSPECIFIED')}")
    views, paging = list_task_results(page, per_page, phase=phase, evaluation_key=evaluation_key)
    links, meta = present.links(str(request.url_for("list_evaluation_runs")), paging, status=status,
                                evaluation_key=evaluation_key)
    return EvaluationRunsOutput(evaluation_runs=[present.evaluation_run(v) for v in views], links=links, meta=meta)


@router.get("/evaluation_runs/{evaluation_run_uuid}", response_model=EvaluationRunOutput, responses=ERRORS,
            summary="Retrieve an evaluation run")
def get_evaluation_run(evaluation_run_uuid: RunUuid, _caller: Caller = Depends(require("read"))) -> EvaluationRunOutput:
    return EvaluationRunOutput(evaluation_run=present.evaluation_run(_view(evaluation_run_uuid)))


@router.get("/evaluation_runs/{evaluation_run_uuid}/results", response_model=EvaluationRunResultsOutput,
            responses=ERRORS, summary="Retrieve the results of an evaluation run, a page of prompts at a time")
def get_evaluation_run_results(request: Request, evaluation_run_uuid: RunUuid, page: Page = 1,
                               per_page: PerPage = 50,
                               outcome: Annotated[str | None, Query(
                                   max_length=16, description="correct, incorrect, error or cached (an evalfleet "
                                   "extension; without it, prompts are paged by position)")] = None,
                               search: Annotated[str | None, Query(
                                   max_length=200, description="Text in the sample's id, input or output.")] = None,
                               sort: Annotated[str, Query(
                                   max_length=16, description="position, score, -score, latency or -latency.")
                               ] = "position",
                               _caller: Caller = Depends(require("read"))) -> EvaluationRunResultsOutput:
    if outcome is not None and outcome not in OUTCOMES:
        raise ApiProblem(422, "unprocessable_entity", f"query parameter `outcome`: one of {', '.join(OUTCOMES)}")
    if sort not in SAMPLE_ORDERS:
        raise ApiProblem(422, "unprocessable_entity", f"query parameter `sort`: one of {', '.join(SAMPLE_ORDERS)}")
    view = _view(evaluation_run_uuid)
    samples, paging = find_samples(view, page, per_page, outcome=outcome, search=search or None, order=sort)
    links, meta = present.links(str(request.url_for("get_evaluation_run_results",
                                                    evaluation_run_uuid=evaluation_run_uuid)), paging,
                                outcome=outcome, search=search or None, sort=None if sort == "position" else sort)
    return EvaluationRunResultsOutput(evaluation_run=present.evaluation_run(view),
                                      prompts=[present.prompt(s) for s in samples], links=links, meta=meta)


@router.get("/evaluation_runs/{evaluation_run_uuid}/results/{prompt_id}", response_model=PromptOutput,
            responses=ERRORS, summary="Retrieve the results of one prompt (sample) of an evaluation run")
def get_prompt_results(evaluation_run_uuid: RunUuid,
                       prompt_id: Annotated[int, PathParam(ge=0, le=2**53, description="The sample's position.")],
                       _caller: Caller = Depends(require("read"))) -> PromptOutput:
    return PromptOutput(prompt=present.prompt(_recorded(_view(evaluation_run_uuid), prompt_id, "prompt")))


def _recorded(view, position: int, noun: str):  # noqa: ANN001, ANN202
    """The record at a position, or a 404 saying whether it does not exist or is not done yet."""
    sample = sample_at(view, position)
    if sample is None:
        detail = f"no such {noun}" if position >= view.total else "not evaluated yet"
        raise ApiProblem(404, "not_found", f"{noun} {position} of evaluation run {view.uuid}: {detail}")
    return sample


@router.get("/evaluation_runs/{evaluation_run_uuid}/samples/{position}", response_model=SampleOutput,
            responses=ERRORS, summary="One sample's whole record and the prompt sent (an evalfleet extension)")
def get_sample(evaluation_run_uuid: RunUuid,
               position: Annotated[int, PathParam(ge=0, le=2**53, description="The sample's position.")],
               _caller: Caller = Depends(require("read"))) -> SampleOutput:
    from shared.prompts import prompt_sent

    view = _view(evaluation_run_uuid)
    sample = _recorded(view, position, "sample")
    try:
        sent = prompt_sent(sample, view.spec)
    except ValueError:
        sent = None
    if isinstance(sent, list):
        sent = [message.model_dump() for message in sent]
    return SampleOutput(sample=sample.model_dump(mode="json"), prompt_sent=sent)


@router.post("/evaluation_runs", response_model=CreateEvaluationRunOutput, responses=ERRORS,
             summary="Submit a run file (YAML or JSON); one evaluation run per task specification",
             openapi_extra={"requestBody": {"required": True, "content": {
                 "application/yaml": {"schema": {"type": "string"}},
                 "application/json": {"schema": {"type": "object"}}}}})
async def create_evaluation_run(request: Request,
                                _caller: Caller = Depends(require("submit"))) -> CreateEvaluationRunOutput:
    raw = await request.body()
    return await run_in_threadpool(_submit, raw)


def _submit(raw: bytes) -> CreateEvaluationRunOutput:
    """Validated exactly as `evalfleet run` validates a file (one line naming the field, here a
    422), except that datasets on this machine must be under EVALFLEET_DATA_ROOTS."""
    from services.submitter import submit_resolved, validate_run_file

    if not raw.strip():
        raise ApiProblem(400, "bad_request", "the request body is empty: send a run file (YAML or JSON)")
    if len(raw) > MAX_RUN_FILE_BYTES:
        raise ApiProblem(400, "bad_request", f"the run file is larger than {MAX_RUN_FILE_BYTES} bytes; put large "
                         "datasets on S3 and name them by URL")
    with tempfile.TemporaryDirectory(prefix="evalfleet-api-") as directory:
        path = Path(directory) / "run.yaml"
        path.write_bytes(raw)
        try:
            resolved = validate_run_file(path, data_roots=get_settings().data_root_paths, display_name="run file")
        except SpecError as exc:
            raise ApiProblem(422, "unprocessable_entity", str(exc)) from None
    # The samples are fed a window at a time for as long as the run needs; the answer goes out as
    # soon as the run exists. Should this server stop, a worker takes the feeding over.
    created: list[str] = []
    failures: list[Exception] = []
    finished = threading.Event()

    def feed() -> None:
        try:
            submit_resolved(resolved, on_created=created.append)
        except Exception as exc:  # noqa: BLE001 - reported below, or in the run's own error
            failures.append(exc)
        finally:
            finished.set()

    threading.Thread(target=feed, name="evalfleet-api-feeder", daemon=True).start()
    while not created and not finished.wait(0.02):
        pass
    if not created:
        raise ApiProblem(500, "server_error", str(failures[0]) if failures else "the run was not created")
    run_id = created[0]
    return CreateEvaluationRunOutput(run_id=run_id, evaluation_run_uuids=[v.uuid for v in task_results_of_run(run_id)])


@router.post("/evaluation_runs/{evaluation_run_uuid}/cancel", response_model=EvaluationRunOutput, responses=ERRORS,
             summary="Cancel the run that holds this evaluation run (all of its task specifications)")
def cancel_evaluation_run(evaluation_run_uuid: RunUuid,
                          _caller: Caller = Depends(require("submit"))) -> EvaluationRunOutput:
    from services.runs import CANCEL_GRACE_S, begin_cancel, cancel_run

    view = _view(evaluation_run_uuid)
    if view.finished_at is None and begin_cancel(view.run_id):
        # The rest (the grace period, then the logs) goes on after the answer.
        threading.Thread(target=cancel_run, args=(view.run_id, CANCEL_GRACE_S), daemon=True,
                         name="evalfleet-api-cancel").start()
    return EvaluationRunOutput(evaluation_run=present.evaluation_run(_view(evaluation_run_uuid)))


@router.get("/evaluation_runs/{evaluation_run_uuid}/log", responses={**ERRORS, 409: {"model": ApiError},
                                                                   200: {"content": {"application/json": {}}}},
            response_class=StreamingResponse, summary="Download the task result log of an evaluation run")
def download_log(evaluation_run_uuid: RunUuid,
                 log_format: Annotated[str, Query(alias="format", max_length=16, description="evalfleet (the task "
                                                  "result log) or inspect (Inspect AI's .eval, converted on the "
                                                  "fly)")] = "evalfleet",
                 _caller: Caller = Depends(require("read"))) -> StreamingResponse:
    from shared.log.reader import open_log

    if log_format not in ("evalfleet", "inspect"):
        raise ApiProblem(422, "unprocessable_entity", "query parameter `format`: evalfleet or inspect")
    view = _view(evaluation_run_uuid)
    if not view.log_path:
        raise ApiProblem(409, "conflict", f"evaluation run {evaluation_run_uuid} has no log yet (status "
                         f"{STATUS_OF_PHASE[view.phase].value})")
    if log_format == "inspect":
        return _inspect_log(view)
    handle = open_log(view.log_path)

    def chunks():  # noqa: ANN202
        with handle:
            while chunk := handle.read(1024 * 1024):
                yield chunk

    return StreamingResponse(chunks(), media_type="application/json",
                             headers={"content-disposition": f'attachment; filename="{view.spec.key}.json"'})


@router.get("/tokens", response_model=TokensOutput, responses=ERRORS, summary="List the live API tokens")
def list_api_tokens(_caller: Caller = Depends(require("admin"))) -> TokensOutput:
    from services.tokens import list_tokens

    return TokensOutput(tokens=[Token.model_validate(t.model_dump()) for t in list_tokens()])


@router.post("/tokens", response_model=CreatedToken, responses=ERRORS, summary="Create an API token (shown once)")
def create_api_token(request_body: CreateToken, _caller: Caller = Depends(require("admin"))) -> CreatedToken:
    from services.tokens import create_token

    token, info = create_token(request_body.name, request_body.scope)  # type: ignore[arg-type]
    return CreatedToken(token=token, info=Token.model_validate(info.model_dump()))


@router.delete("/tokens/{token_id}", response_model=Token, responses=ERRORS, summary="Revoke an API token")
def revoke_api_token(token_id: Annotated[int, PathParam(ge=1, le=2**31)],
                     _caller: Caller = Depends(require("admin"))) -> Token:
    from services.tokens import revoke_token

    try:
        return Token.model_validate(revoke_token(token_id).model_dump())
    except EvalfleetError as exc:
        raise ApiProblem(404, "not_found", str(exc)) from None


# -- evalfleet's own reads: runs (submissions), comparisons, trends and benchmarks --------------------


@router.get("/runs", response_model=RunsOutput, responses=ERRORS, summary="List runs (submissions), newest first")
def list_runs_route(request: Request, page: Page = 1, per_page: Annotated[int, Query(ge=1, le=200)] = 20,
                    evaluation_key: Annotated[str | None, Query(max_length=250)] = None,
                    status: Annotated[str | None, Query(max_length=32, description="running, success, error, "
                                                        "cancelled, cancelling")] = None,
                    tag: Annotated[str | None, Query(max_length=250)] = None,
                    model: Annotated[str | None, Query(max_length=250, description="A model key.")] = None,
                    _caller: Caller = Depends(require("read"))) -> RunsOutput:
    from services.results import Paging
    from services.runs import count_runs, list_runs

    paging = Paging(page, per_page, count_runs(evaluation_key, status, tag, model))
    found = list_runs(per_page, evaluation_key, status, offset=paging.first_index, tag=tag, model=model)
    links, meta = present.links(str(request.url_for("list_runs_route")), paging, evaluation_key=evaluation_key,
                                status=status, tag=tag, model=model)
    return RunsOutput(runs=found, links=links, meta=meta)


def _run_id(run_id: str) -> str:
    from services.results import resolve_run_id
    from shared.errors import RunNotFound

    try:
        return resolve_run_id(run_id)
    except RunNotFound:
        raise ApiProblem(404, "not_found", f"no run {run_id!r}") from None
    except SpecError as exc:
        raise ApiProblem(422, "unprocessable_entity", f"path parameter `run_id`: {exc.message}") from None


RunId = Annotated[str, PathParam(max_length=64, description="A run id, or a unique prefix of 6 or more characters.")]


@router.get("/runs/{run_id}", responses=ERRORS, summary="A run: its task results with metrics, errors and usage")
def get_run(run_id: RunId, _caller: Caller = Depends(require("read"))) -> dict:
    from services.runs import run_report

    report = run_report(_run_id(run_id), with_errors=True, with_usage=True)
    return report.model_dump(mode="json")


@router.get("/runs/{run_id}/benchmark", response_model=BenchmarksOutput, responses=ERRORS,
            summary="The run's model comparisons: score, cost and latency per model, best overall and best value")
def get_benchmark(run_id: RunId, _caller: Caller = Depends(require("read"))) -> BenchmarksOutput:
    from services.analysis.benchmark import benchmark_documents

    run_id = _run_id(run_id)
    try:
        return BenchmarksOutput(benchmarks=benchmark_documents(run_id))
    except EvalfleetError:  # not a benchmark: no task evaluated with several models
        return BenchmarksOutput(benchmarks=[])


@router.get("/trends", response_model=TrendsOutput, responses=ERRORS,
            summary="An evaluation's star metric and metrics over its runs")
def get_trends(evaluation_key: Annotated[str, Query(min_length=1, max_length=250)],
               days: Annotated[int, Query(ge=1, le=3650)] = 7,
               _caller: Caller = Depends(require("read"))) -> TrendsOutput:
    from services.analysis.trends import run_series, summary

    try:
        return TrendsOutput(summary=summary(evaluation_key, days), runs=run_series(evaluation_key))
    except EvalfleetError as exc:
        raise ApiProblem(404, "not_found", str(exc)) from None


@router.get("/compare", response_model=Comparison, responses=ERRORS,
            summary="Task results over the same dataset side by side: outcomes per sample, metric deltas")
def get_comparison(uuid: Annotated[list[str], Query(min_length=2, max_length=MAX_COMPARED,
                                                    description="Two or more evaluation run UUIDs; the first is the "
                                                    "baseline.")],
                   which: Annotated[str, Query(max_length=16, description="all, differ, first_right or "
                                               "first_wrong")] = "all",
                   page: Page = 1, per_page: Annotated[int, Query(ge=1, le=500)] = 50,
                   _caller: Caller = Depends(require("read"))) -> Comparison:
    if which not in COMPARE_FILTERS:
        raise ApiProblem(422, "unprocessable_entity", f"query parameter `which`: one of {', '.join(COMPARE_FILTERS)}")
    views = [_view(one) for one in uuid]
    datasets = {(v.spec.dataset.key, v.spec.dataset.path) for v in views}
    if len(datasets) > 1:
        raise ApiProblem(422, "unprocessable_entity", "query parameter `uuid`: the evaluation runs are over different "
                         "datasets")
    return compare(views, page, per_page, which)


def _inspect_log(view) -> StreamingResponse:  # noqa: ANN001
    """The log converted to Inspect's .eval in a temporary directory, streamed, then removed."""
    import shutil

    from shared.interop import convert_to_inspect

    directory = tempfile.mkdtemp(prefix="evalfleet-inspect-")
    try:
        path = Path(convert_to_inspect(view.log_path, directory, "eval"))
    except Exception:
        shutil.rmtree(directory, ignore_errors=True)
        raise

    def chunks():  # noqa: ANN202
        try:
            with open(path, "rb") as handle:
                while chunk := handle.read(1024 * 1024):
                    yield chunk
        finally:
            shutil.rmtree(directory, ignore_errors=True)

    return StreamingResponse(chunks(), media_type="application/zip",
                             headers={"content-disposition": f'attachment; filename="{path.name}"'})
