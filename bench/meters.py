"""What the processes of a scenario use while it runs: CPU (cores and milliseconds per
request, by gateway, PostgreSQL, load generator and everyone else) and peak memory."""

from __future__ import annotations

import resource
import threading
import time

from bench.config import DATA, MEMORY_POLL_S
from bench.procs import descendants, machine_busy, postmaster_pid, pressure_total_us, rss_kb, tree_cpu_s
from bench.serve import Gateway


class CpuMeter:
    """Cores used over an interval by the gateway, PostgreSQL, the load generator
    (children of this process) and the whole machine: what is left is other people's."""

    def __init__(self, gateway: Gateway | None) -> None:
        self.gateway = gateway
        self.started = time.perf_counter()
        self.gw = gateway.cpu() if gateway else 0.0
        self.pg = tree_cpu_s(postmaster_pid(DATA))
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        self.children = usage.ru_utime + usage.ru_stime
        self.machine, _ = machine_busy()
        self.pressure = {name: pressure_total_us(name) for name in ("cpu", "io")}
        self.seconds: dict[str, float] = {}

    def read(self) -> dict[str, float]:
        """Cores used on average, by whom; ``seconds`` keeps the CPU seconds themselves. With
        ``cpu_pressure_pct``: the share of the time some runnable task waited for a CPU (PSI)."""
        elapsed = max(time.perf_counter() - self.started, 1e-9)
        gw = (self.gateway.cpu() if self.gateway else 0.0) - self.gw
        pg = tree_cpu_s(postmaster_pid(DATA)) - self.pg
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        sim = usage.ru_utime + usage.ru_stime - self.children  # reaped: the simulator, baseline (a)
        machine = machine_busy()[0] - self.machine
        self.seconds = {"gateway": gw, "postgres": pg, "load_generator": sim, "elapsed": elapsed}
        cores = {"gateway": round(gw / elapsed, 2), "postgres": round(pg / elapsed, 2),
                 "load_generator": round(sim / elapsed, 2), "machine": round(machine / elapsed, 2),
                 "others": round(max(0.0, machine - gw - pg - sim) / elapsed, 2)}
        for name, before in self.pressure.items():
            after = pressure_total_us(name)
            if before is not None and after is not None:
                cores[f"{name}_pressure_pct"] = round((after - before) / 1e6 / elapsed * 100, 1)
        return cores

    def per_request_ms(self, requests: int) -> dict[str, float | None]:
        """CPU milliseconds per request, by whom, over the meter's interval (sign-on included):
        a figure other people's load on the machine changes far less than a rate."""
        if not requests or not self.seconds:
            return {}
        per = {name: round(value * 1000 / requests, 3) for name, value in self.seconds.items() if name != "elapsed"}
        per["total"] = round(sum(per.values()), 3)
        return per


class MemoryPoller:
    """Peak resident memory of a process tree, read every ``MEMORY_POLL_S``."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak_kb = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def _poll(self) -> None:
        while not self._stop.is_set():
            self.peak_kb = max(self.peak_kb, rss_kb(descendants(self.pid)))
            self.samples += 1
            self._stop.wait(MEMORY_POLL_S)

    def __enter__(self) -> MemoryPoller:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak_kb = max(self.peak_kb, rss_kb(descendants(self.pid)))
