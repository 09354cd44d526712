"""Untrusted input through the CLI: keys and uploaded task result logs cannot steer writes outside
the log directory, YAML cannot construct Python objects, and `python` models (and task
entrypoints) import only modules listed in EVALFLEET_ALLOWED_MODULES."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.faults.conftest import read_log, rows, write_dataset, write_run_file

BAD_INPUT = 2
# Bounded: a check that went missing must fail the test, not hang it.
TIMEOUT_S = 60


def _document(key: str = "secure", spec_key: str = "secure-qa", *, model: dict | None = None,
              model_key: str = "m", tasks: list | None = None, task_key: str = "qa",
              log_path: str | None = None) -> dict:
    spec = {"key": spec_key, "task_key": task_key, "model_key": model_key, "dataset_key": "data",
            "task_config": {"scorers": ["includes"]}}
    if log_path is not None:
        spec["task_result_log_path"] = log_path
    document = {"datasets": [{"key": "data", "path": "data.jsonl"}],
                "models": [model or {"key": "m", "provider": "mock", "name": "target"}],
                "evaluation": {"key": key, "display_name": "Security", "task_specifications": [spec]}}
    if tasks:
        document["tasks"] = tasks
    return document


def _project(root: Path, document: dict, name: str = "run.yaml") -> Path:
    write_dataset(root / "data.jsonl", rows(3))
    return write_run_file(root / name, document)


def _files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


@pytest.mark.parametrize(("field", "value"), [
    ("spec", "../x"),
    ("spec", "a/../../x"),
    ("evaluation", "../x"),
])
def test_a_key_cannot_leave_the_log_directory(sandbox, cli, field, value):
    project = sandbox.root / "project"
    document = _document(key=value) if field == "evaluation" else _document(spec_key=value)
    path = _project(project, document)
    before = _files(sandbox.root)

    result = cli("run", "-f", str(path), "--json", timeout=TIMEOUT_S)

    assert result.returncode == BAD_INPUT, str(result)
    assert "key" in result.stderr and "a key may hold only letters, digits" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    assert not sandbox.log_dir.exists() or not any(sandbox.log_dir.rglob("*.json"))
    assert not (sandbox.root.parent / "x.json").exists() and not (sandbox.root.parent / "outside.json").exists()
    new = _files(sandbox.root) - before
    assert not any(name.endswith(".json") for name in new), new


def test_an_uploaded_log_is_read_only_from_inside_the_run_files_directory(sandbox, cli):
    # A real, matching log of the same specification, made by a first run.
    project = sandbox.root / "project"
    path = _project(project, _document())
    made = cli("run", "-f", str(path), "--json", timeout=TIMEOUT_S, check=0).json()
    [source] = [t["log_path"] for t in made["task_results"]]
    outside = sandbox.root / "elsewhere" / "log.json"
    outside.parent.mkdir()
    shutil.copyfile(source, outside)

    (project / "link.json").symlink_to(outside)
    for location, reason in (("../elsewhere/log.json", "leaves the run file's directory"),
                             (str(outside), "is absolute"),
                             ("link.json", "resolves outside"),
                             ("file://" + str(outside), "only paths relative")):
        path = _project(project, _document(log_path=location), name="upload.yaml")
        result = cli("run", "-f", str(path), "--json", timeout=TIMEOUT_S)
        assert result.returncode == BAD_INPUT, str(result)
        assert reason in result.stderr, result.stderr
        assert "task_result_log_path" in result.stderr

    # The same log inside the directory is accepted, even when its own contents name paths that
    # would leave the log directory: the new log's place comes from the run file's keys only.
    tampered = json.loads(Path(source).read_text())
    tampered["run_id"] = "../../../evil-run"
    tampered["task_specification"]["key"] = "../../../evil-spec"
    tampered["evaluation"]["key"] = "../../../evil-evaluation"
    (project / "inside.json").write_text(json.dumps(tampered))
    path = _project(project, _document(log_path="inside.json"), name="upload.yaml")
    report = cli("run", "-f", str(path), "--json", timeout=TIMEOUT_S, check=0).json()
    [written] = [Path(t["log_path"]) for t in report["task_results"]]
    assert written == sandbox.log_dir / "secure" / report["run_id"] / "secure-qa.json"
    assert read_log(written)["task_specification"]["key"] == "secure-qa"
    everything = [str(p) for p in sandbox.root.parent.glob("**/*evil*")] + [
        str(p) for p in Path("/tmp").glob("*evil-*")]
    assert everything == []


@pytest.mark.parametrize("tag", [
    "!!python/object/apply:os.system ['touch PWNED']",
    "!!python/name:os.system",
])
def test_yaml_cannot_construct_python_objects(sandbox, cli, tag):
    project = sandbox.root / "project"
    write_dataset(project / "data.jsonl", rows(3))
    text = (f"evaluation:\n  key: {tag}\n  display_name: D\n  task_specifications:\n"
            "    - {task_key: qa, model_key: mock$target, dataset_key: data}\n"
            "datasets:\n  - {key: data, path: data.jsonl}\n")
    (project / "run.yaml").write_text(text)

    result = cli("run", "-f", str(project / "run.yaml"), "--json", timeout=TIMEOUT_S)

    assert result.returncode == BAD_INPUT, str(result)
    assert "malformed YAML" in result.stderr and "python" in result.stderr, result.stderr
    assert not any(sandbox.root.rglob("PWNED")) and not Path("PWNED").exists()


@pytest.mark.parametrize("case", ["declared-model", "model-reference", "task-entrypoint"])
def test_python_code_is_imported_only_from_allowed_modules(sandbox, cli, case):
    project = sandbox.root / "project"
    env = {"EVALFLEET_ALLOWED_MODULES": None}
    if case == "declared-model":
        document = _document(model={"key": "m", "provider": "python", "name": "os:getcwd"})
        env = {"EVALFLEET_ALLOWED_MODULES": "json,osx"}  # `os` is neither, nor under either
    elif case == "model-reference":
        document = _document(model_key="python$subprocess:getoutput")
    else:
        document = _document(tasks=[{"key": "mine", "entrypoint": "os.path:join"}], task_key="mine")
    path = _project(project, document)

    result = cli("run", "-f", str(path), "--json", timeout=TIMEOUT_S, env=env)

    assert result.returncode == BAD_INPUT, str(result)
    assert "EVALFLEET_ALLOWED_MODULES" in result.stderr, result.stderr
    assert "not allowed" in result.stderr
    assert not sandbox.log_dir.exists() or not any(sandbox.log_dir.rglob("*.json"))
