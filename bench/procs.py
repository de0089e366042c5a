"""Processes on this machine, for the benchmarks and the tests that start servers:
free TCP ports, and from /proc the CPU seconds, resident memory and process trees
of the gateway, PostgreSQL and the load generator, and how busy the machine is.

Imports nothing of ours: ``bench``, ``deploy/bench_scaleout.py`` and the tests share it.
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Iterable
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    """A TCP port on 127.0.0.1 nobody listens on now."""
    return free_ports(1)[0]


def free_ports(count: int) -> list[int]:
    """``count`` different free TCP ports on 127.0.0.1 (all bound at once, so none repeats)."""
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            s = socket.socket()
            sockets.append(s)
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def descendants(pid: int) -> list[int]:
    """``pid`` and every live process below it (parents read from /proc/<pid>/stat)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(stat.parent.name))
    found, queue = [], [pid]
    while queue:
        current = queue.pop()
        found.append(current)
        queue.extend(children.get(current, ()))
    return found


def rss_kb(pids: Iterable[int]) -> int:
    """Resident memory of the processes together, KiB (VmRSS)."""
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
    return total


def cpu_s(pids: Iterable[int], *, with_children: bool = False) -> float:
    """User + system CPU seconds of the processes (plus their reaped children's); 0 for one gone."""
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
            if with_children:
                total += int(fields[13]) + int(fields[14])  # cutime, cstime
    return total / CLOCK_TICKS


def tree_cpu_s(root: int | None) -> float:
    """CPU seconds of a process and everything below it, live or reaped (PostgreSQL and its backends)."""
    return 0.0 if root is None else cpu_s(descendants(root), with_children=True)


def machine_busy() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot, from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]  # idle, iowait
    total = sum(values[:8])  # up to steal; guest time is already in user
    return (total - idle) / CLOCK_TICKS, total / CLOCK_TICKS


def pressure_total_us(resource_name: str) -> int | None:
    """PSI: microseconds in which some runnable task waited for ``cpu`` (or ``io``), since boot."""
    try:
        line = Path(f"/proc/pressure/{resource_name}").read_text().splitlines()[0]
    except (OSError, IndexError):
        return None
    return int(line.rsplit("total=", 1)[1])


def postmaster_pid(data_dir: Path) -> int | None:
    """The PID of the embedded PostgreSQL of a posgw data dir (``<data_dir>/pg``), or None."""
    try:
        return int((data_dir / "pg" / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
