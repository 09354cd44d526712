"""Objects built once per process for one configuration (model clients, limiters, task objects),
so no sample pays for setting them up. Keyed by the configuration's canonical JSON."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Generic, TypeVar

from pydantic import BaseModel

Built = TypeVar("Built")


class PerConfiguration(Generic[Built]):
    def __init__(self, build: Callable[..., Built]):
        self._build = build
        self._built: dict[str, Built] = {}
        self._lock = threading.Lock()

    def get(self, *configuration: BaseModel) -> Built:
        key = "\x1f".join(part.model_dump_json() for part in configuration)
        with self._lock:
            built = self._built.get(key)
            if built is None:
                built = self._built[key] = self._build(*configuration)
            return built

    def values(self) -> list[Built]:
        with self._lock:
            return list(self._built.values())

    def clear(self) -> None:
        with self._lock:
            self._built.clear()
