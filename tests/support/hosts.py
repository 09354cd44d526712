"""Several hosts on this machine: network namespaces, each joined to a bridge in the root namespace
by a veth pair, with 10.x addresses. Services bound to the bridge's address are reached from every
host over its own link, which a test can cut (`cut(host)`) as a host that drops off the network.
Needs root (CAP_NET_ADMIN) and iproute2 (`.ci/run` installs it)."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
from dataclasses import dataclass, field

# Names carry the pid of the process that made them: a leftover of a crashed run never clashes
# with the next one, and `remove_leftovers` can tell which ones are orphans.
PREFIX = "evf"
_LEFTOVER = re.compile(rf"^{PREFIX}(\d+)(?:-h\d+|br|h\d+)$")


class NamespacesUnavailable(RuntimeError):
    """Network namespaces cannot be created here (not root, no CAP_NET_ADMIN, no iproute2)."""


def ip_command() -> str:
    found = shutil.which("ip") or ("/usr/sbin/ip" if os.path.exists("/usr/sbin/ip") else None)
    if not found:
        raise NamespacesUnavailable("iproute2's `ip` is not installed (`apt-get install iproute2`; .ci/run does it)")
    return found


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run([ip_command(), *args], capture_output=True, text=True, timeout=30)
    if check and result.returncode != 0:
        raise RuntimeError(f"`ip {' '.join(args)}` failed: {result.stderr.strip()}")
    return result


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_leftovers() -> None:
    """Namespaces and links of ours whose creating process is gone (a run killed before teardown)."""
    names = [line.split()[0] for line in _ip("netns", "list", check=False).stdout.splitlines() if line.strip()]
    links = re.findall(r"^\d+: ([^:@]+)", _ip("-o", "link", "show", check=False).stdout, flags=re.M)
    for name in names + links:
        match = _LEFTOVER.match(name)
        # This process's own pid too: a leftover of an earlier process that had the same pid.
        if match and (int(match.group(1)) == os.getpid() or not _alive(int(match.group(1)))):
            if name in names:
                _kill_namespace_processes(name)
                _ip("netns", "delete", name, check=False)
            else:
                _ip("link", "delete", name, check=False)


def _kill_namespace_processes(namespace: str) -> None:
    pids = _ip("netns", "pids", namespace, check=False).stdout.split()
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(pid), signal.SIGKILL)


@dataclass
class Host:
    name: str  # also its namespace and its hostname
    address: str
    link: str  # the root-side end of its veth pair

    def command(self, *args: str) -> list[str]:
        """`args` run on this host: in its network namespace, under its own hostname (a UTS
        namespace), so a worker's default name `evalfleet-<pid>@<host>` names this host."""
        return [ip_command(), "netns", "exec", self.name, "unshare", "--uts", "--", "sh", "-c",
                'hostname "$0" && exec "$@"', self.name, *args]


@dataclass
class HostNetwork:
    """`count` hosts on one /24; `services_address` is the bridge's (the services' host)."""

    count: int
    tag: str = field(default_factory=lambda: str(os.getpid()))
    hosts: list[Host] = field(default_factory=list)

    def __post_init__(self) -> None:
        pid = int(self.tag)
        # One /24 per creating process, away from 10.0.x and 10.1.x where other networks tend to be.
        self.subnet = f"10.{64 + (pid >> 8) % 190}.{pid & 255}"
        self.bridge = f"{PREFIX}{self.tag}br"
        self.services_address = f"{self.subnet}.1"

    def create(self) -> HostNetwork:
        remove_leftovers()
        probe = f"{PREFIX}{self.tag}-h0"
        result = _ip("netns", "add", probe, check=False)
        if result.returncode != 0:
            raise NamespacesUnavailable(f"`ip netns add` failed: {result.stderr.strip()}")
        _ip("netns", "delete", probe, check=False)
        try:
            _ip("link", "add", self.bridge, "type", "bridge")
            _ip("addr", "add", f"{self.services_address}/24", "dev", self.bridge)
            _ip("link", "set", self.bridge, "up")
            for number in range(1, self.count + 1):
                host = Host(name=f"{PREFIX}{self.tag}-h{number}", address=f"{self.subnet}.{10 + number}",
                            link=f"{PREFIX}{self.tag}h{number}")
                self.hosts.append(host)
                _ip("netns", "add", host.name)
                _ip("link", "add", host.link, "type", "veth", "peer", "name", "eth0", "netns", host.name)
                _ip("link", "set", host.link, "master", self.bridge, "up")
                _ip("-n", host.name, "addr", "add", f"{host.address}/24", "dev", "eth0")
                _ip("-n", host.name, "link", "set", "eth0", "up")
                _ip("-n", host.name, "link", "set", "lo", "up")
        except BaseException:
            self.destroy()
            raise
        return self

    def cut(self, host: Host) -> None:
        """The host drops off the network: its link goes down, its open connections hang."""
        _ip("link", "set", host.link, "down")

    def processes(self, host: Host) -> list[int]:
        return [int(pid) for pid in _ip("netns", "pids", host.name, check=False).stdout.split()]

    def destroy(self) -> None:
        for host in self.hosts:
            _kill_namespace_processes(host.name)
            _ip("netns", "delete", host.name, check=False)
            _ip("link", "delete", host.link, check=False)
        _ip("link", "delete", self.bridge, check=False)
