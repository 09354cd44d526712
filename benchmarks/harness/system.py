"""What the harness knows about the machine and its own processes: machine facts and versions,
child processes it starts (and always stops), RSS sampling through /proc, and CPU accounting that
tells how much of the machine other programs used while a figure was measured."""

from __future__ import annotations

import contextlib
import os
import platform
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
BENCH = REPO / "benchmarks"
WORK = BENCH / ".work"
RESULTS = BENCH / "results"
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


class ScenarioTimeout(Exception):
    """A scenario ran past its time budget."""


class Deadline:
    def __init__(self, seconds: float, what: str):
        self.what = what
        self.seconds = seconds
        self.end = time.monotonic() + seconds

    def remaining(self) -> float:
        left = self.end - time.monotonic()
        if left <= 0:
            raise ScenarioTimeout(f"{self.what}: exceeded its {self.seconds:.0f} s budget")
        return left


# -- machine and versions ----------------------------------------------------------------------


def machine_info() -> dict[str, Any]:
    cpu_model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    mem_kb = 0
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
    return {
        "cores": os.cpu_count(),
        "memory_gib": round(mem_kb / 1024 / 1024, 1),
        "cpu_model": cpu_model,
        "kernel": platform.release(),
        "loadavg_at_start": list(os.getloadavg()),
    }


def _dist_version(name: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return None


def git_commit() -> dict[str, Any]:
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, timeout=30).stdout.strip()

    # The harness's own output is rewritten after every scenario: it is not a change to the code measured.
    dirty = git("status", "--porcelain", "--untracked-files=no", "--", ".", ":(exclude)benchmarks/results")
    return {"commit": git("rev-parse", "HEAD"), "branch": git("rev-parse", "--abbrev-ref", "HEAD"),
            "tracked_changes": bool(dirty)}


def versions(redis_version: str | None, inspect_version: str | None) -> dict[str, Any]:
    return {
        "python": sys.version.split()[0],
        "evalfleet": _dist_version("evalfleet"),
        "evalfleet_git": git_commit(),
        "celery": _dist_version("celery"),
        "kombu": _dist_version("kombu"),
        "redis_py": _dist_version("redis"),
        "sqlalchemy": _dist_version("sqlalchemy"),
        "pydantic": _dist_version("pydantic"),
        "openai_py": _dist_version("openai"),
        "redis_server": redis_version,
        "inspect_ai": inspect_version,
    }


# -- /proc ---------------------------------------------------------------------------------------


def rss_kb(pid: int) -> int | None:
    """Resident set size of a process, in KiB; None once it is gone."""
    try:
        with open(f"/proc/{pid}/statm") as handle:
            return int(handle.read().split()[1]) * PAGE_KB
    except (OSError, IndexError, ValueError):
        return None


def _proc_stat(pid: int) -> tuple[int, float] | None:
    """(ppid, cpu seconds incl. waited-for children) of a process."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            raw = handle.read()
    except OSError:
        return None
    rest = raw[raw.rfind(")") + 2:].split()
    ppid = int(rest[1])
    utime, stime, cutime, cstime = (int(x) for x in rest[11:15])
    return ppid, (utime + stime + cutime + cstime) / CLK_TCK


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def _system_busy_s() -> float:
    with open("/proc/stat") as handle:
        fields = handle.readline().split()[1:]
    values = [int(x) for x in fields]
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    return (sum(values[:8]) - idle) / CLK_TCK


def _cpu_snapshot() -> tuple[float, float, float]:
    """(machine busy CPU s, CPU s of this process tree, CPU s of redis-server)."""
    me = os.getpid()
    parents: dict[int, int] = {}
    cpu: dict[int, float] = {}
    redis = 0.0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        pid = int(entry)
        stat = _proc_stat(pid)
        if stat is None:
            continue
        parents[pid], cpu[pid] = stat
        if _comm(pid) == "redis-server":
            redis += stat[1]
    ours = 0.0
    for pid in cpu:
        node = pid
        for _ in range(64):
            if node == me:
                ours += cpu[pid]
                break
            node = parents.get(node, 0)
            if node <= 1:
                break
    return _system_busy_s(), ours, redis


class CpuMeter:
    """CPU used on the whole machine during a measurement, split into this harness's processes,
    redis-server (shared by everyone) and everything else (other users of the machine)."""

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.start = _cpu_snapshot()

    def stop(self) -> dict[str, float]:
        wall = time.monotonic() - self.started
        end = _cpu_snapshot()
        busy, ours, redis = (b - a for a, b in zip(self.start, end, strict=True))
        others = max(0.0, busy - ours - redis)
        capacity = max(wall * (os.cpu_count() or 1), 1e-9)
        return {"wall_s": round(wall, 3), "machine_busy_cpu_s": round(busy, 2), "harness_cpu_s": round(ours, 2),
                "redis_cpu_s": round(redis, 2), "other_cpu_s": round(others, 2),
                "other_share": round(others / capacity, 3)}


def wait_for_quiet(max_wait_s: float, threshold: float = 0.25, window_s: float = 2.0) -> dict[str, Any]:
    """Wait (bounded) until other programs use less than `threshold` of the machine."""
    started = time.monotonic()
    share = None
    while True:
        meter = CpuMeter()
        time.sleep(window_s)
        share = meter.stop()["other_share"]
        waited = time.monotonic() - started
        if share < threshold or waited >= max_wait_s:
            if share >= threshold:
                log(f"  machine still busy after {waited:.0f} s: other programs use {share:.0%} of it; going on")
            return {"waited_s": round(waited, 1), "other_share": share}


# -- child processes -----------------------------------------------------------------------------


@dataclass
class Child:
    name: str
    process: subprocess.Popen
    log_path: Path | None = None
    _handle: Any = None

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def tail(self, chars: int = 3000) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return self.log_path.read_text(errors="replace")[-chars:]


class Children:
    """Every process the harness starts, each in its own session (process group), so stopping one
    never touches anything else on the machine."""

    def __init__(self) -> None:
        self.children: list[Child] = []
        self.lock = threading.Lock()

    def start(self, name: str, argv: list[str], *, env: dict[str, str], cwd: Path, log_path: Path | None) -> Child:
        handle = None
        if log_path is not None:
            log_path.parent.mkdir(parents=True, exist_ok=True)
            handle = open(log_path, "w")  # noqa: SIM115 - closed in stop()
        process = subprocess.Popen(argv, env=env, cwd=cwd, stdin=subprocess.DEVNULL,
                                   stdout=handle or subprocess.DEVNULL, stderr=subprocess.STDOUT,
                                   start_new_session=True)
        child = Child(name, process, log_path, handle)
        with self.lock:
            self.children.append(child)
        return child

    def stop(self, child: Child, timeout: float = 20.0) -> int | None:
        if child.alive():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(child.pid, signal.SIGTERM)
            try:
                child.process.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(child.pid, signal.SIGKILL)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    child.process.wait(10)
        # Anything the child left in its own process group goes too.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(child.pid, signal.SIGKILL)
        if child._handle is not None:
            child._handle.close()
            child._handle = None
        with self.lock:
            if child in self.children:
                self.children.remove(child)
        return child.process.returncode

    def stop_all(self) -> None:
        for child in list(reversed(self.children)):
            self.stop(child)


CHILDREN = Children()


@dataclass
class Completed:
    returncode: int
    stdout: str
    stderr: str
    wall_s: float
    peak_rss_kb: int | None = None


def run_process(argv: list[str], *, env: dict[str, str], cwd: Path, timeout: float, name: str,
                sample_rss: bool = False) -> Completed:
    """Run a command to completion in its own session; on timeout kill its whole group and raise."""
    started = time.monotonic()
    process = subprocess.Popen(argv, env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, start_new_session=True)
    child = Child(name, process)
    with CHILDREN.lock:
        CHILDREN.children.append(child)
    sampler = RssSampler({name: process.pid}, interval_s=0.2) if sample_rss else None
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        CHILDREN.stop(child, timeout=5)
        out, err = process.communicate()
        raise ScenarioTimeout(f"{name} did not finish within {timeout:.0f} s; stderr tail: {err[-1500:]}") from None
    finally:
        if sampler is not None:
            sampler.stop()
        with CHILDREN.lock:
            if child in CHILDREN.children:
                CHILDREN.children.remove(child)
    peak = sampler.peak(name) if sampler is not None else None
    return Completed(process.returncode, out, err, time.monotonic() - started, peak)


class RssSampler:
    """Samples the RSS of some processes every `interval_s` in a background thread."""

    def __init__(self, pids: dict[str, int], interval_s: float = 0.25):
        self.pids = dict(pids)
        self.interval_s = interval_s
        self.series: dict[str, list[tuple[float, int]]] = {name: [] for name in pids}
        self.t0 = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            now = time.monotonic() - self.t0
            for name, pid in self.pids.items():
                value = rss_kb(pid)
                if value is not None:
                    self.series[name].append((now, value))
            self._stop.wait(self.interval_s)

    def now(self) -> float:
        return time.monotonic() - self.t0

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def peak(self, name: str, since: float = 0.0, until: float | None = None) -> int | None:
        values = [v for t, v in self.series.get(name, []) if t >= since and (until is None or t <= until)]
        return max(values) if values else None

    def at(self, name: str, when: float) -> int | None:
        """The last sample at or before `when`."""
        best = None
        for t, v in self.series.get(name, []):
            if t <= when:
                best = v
            else:
                break
        return best
