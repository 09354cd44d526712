"""The task registry: built-in tasks by name, user tasks by entrypoint. To add a built-in task,
subclass `Task` in a module here and list it in `BUILTIN_TASKS`."""

from __future__ import annotations

from shared.entrypoints import load_entrypoint
from shared.errors import SpecError
from shared.plan import ResolvedDataset, ResolvedTask
from shared.process_cache import PerConfiguration
from workers.tasks.base import Task, TaskConfig
from workers.tasks.data_quality import CompletenessTask, UniquenessTask
from workers.tasks.multiple_choice import MultipleChoiceTask
from workers.tasks.qa import QATask

BUILTIN_TASKS: dict[str, type[Task]] = {
    "qa": QATask,
    "multiple-choice": MultipleChoiceTask,
    "uniqueness": UniquenessTask,
    "completeness": CompletenessTask,
}

__all__ = ["BUILTIN_TASKS", "Task", "TaskConfig", "task_class", "load_task"]


def task_class(task: ResolvedTask, *, file: str | None = None, field: str | None = None) -> type[Task]:
    if task.template is not None:
        if task.template not in BUILTIN_TASKS:
            from shared.spec import did_you_mean

            raise SpecError(file, field, f"unknown task template {task.template!r}"
                            f"{did_you_mean(task.template, list(BUILTIN_TASKS))}; built-in: {', '.join(BUILTIN_TASKS)}")
        return BUILTIN_TASKS[task.template]
    cls = load_entrypoint(task.entrypoint or "", file=file, field=field)
    if not (isinstance(cls, type) and issubclass(cls, Task)):
        raise SpecError(file, field, f"{task.entrypoint!r} is not a subclass of workers.tasks.Task")
    return cls


def _build_task(task: ResolvedTask, dataset: ResolvedDataset) -> Task:
    cls = task_class(task)
    return cls(cls.validate_config(task.config), dataset)


_loaded: PerConfiguration[Task] = PerConfiguration(_build_task)


def load_task(task: ResolvedTask, dataset: ResolvedDataset) -> Task:
    """The task object for a resolved task, built once per process."""
    return _loaded.get(task, dataset)
