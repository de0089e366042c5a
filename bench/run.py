"""``make bench``: the load benchmark of the gateway, with its two baselines.

On a fresh data dir (``bench/data``, removed first) it starts the embedded
PostgreSQL (``posgw db migrate``), seeds 200 terminals and 10,000 cards
(``posgw demo``), then runs each scenario against a ``posgw serve`` of its own
on free ports, stopped with SIGTERM after:

- baseline (a), the ledger alone: ``bench.ledger_baseline``, the purchase
  posting through ``ledger.postings.post`` from Python, 64 coroutines over a
  pool of 16, 10 s;
- baseline (b), the wire alone: ``posgw serve --wire-only`` and
  ``posgw-sim load --mix echo=100``, 200 persistent terminals, 10 s;
- purchases, closed loop, 200 persistent terminals, 15 s, 1 worker and 2;
- purchases, open loop at 1,500/s, 15 s, three times, each against a gateway
  of its own (the target is met only if every run meets it);
- purchases, closed loop, a new connection per transaction (per-txn), 15 s;
- 10,000 idle connections held open while 100 terminals run, 15 s closed loop
  (how much they still carry), then 15 s open loop at 500/s, 5 requests a
  second each (the latency target: in closed loop, 100 terminals waiting on
  each other measure the throughput, p99 <= 20 ms there would need more than
  5,000/s), with the gateway's peak resident memory;
- a sweep, open loop at 250 to 2,500/s, 6 s each, for the plot.

Every load run's measured seconds come after a warm-up of the same load, not
counted (``posgw-sim load --warmup``: 10 s on a gateway just started, 3 s
before the next run on the same gateway): its figures are kept beside the
run's as ``warmup``, its errors count against the targets, and the CPU per
request is over both.

Everything runs on this machine: gateway, PostgreSQL, simulator. The gateway
runs as in production (log level info, one JSON line per request, to a file:
``bench/data/logs/<scenario>.log``) except that the risk rules are off
(``POSGW_RISK_ENABLED=false``): their daily and burst limits would decline a
load that reuses 10,000 cards for minutes. Writes ``bench/results.json`` and,
when matplotlib is installed (the ``bench`` extra), ``bench/latency.png``;
prints a table; ends with ``posgw ledger check`` and ``posgw db stop``.

    .venv/bin/python -m bench.run [--quick] [--keep-db]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import itertools
import json
import os
import platform
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from sim.load.stats import latency_summary  # the simulator's percentiles (nearest rank), for like with like

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
DATA = BENCH / "data"
LOGS = DATA / "logs"
WORLD = DATA / "world.json"
RESULTS = BENCH / "results.json"
PLOT = BENCH / "latency.png"
BIN = Path(sys.executable).parent
POSGW, SIM = str(BIN / "posgw"), str(BIN / "posgw-sim")

TERMINALS, CARDS = 200, 10_000
IDLE_CONNECTIONS, IDLE_ACTIVE = 10_000, 100
IDLE_ACTIVE_RATE = 500  # open loop, requests/s of the 100 active terminals together
SWEEP_RATES = (250, 500, 1000, 1500, 2000, 2500)
OPEN_RATE = 1500
# The open-loop target's scenario runs this many times, each against a gateway
# of its own: on this shared machine one run's p99 swings by a factor of two or
# more between identical runs, so one run alone says little.
OPEN_RUNS = 3
# Before each measured load run the simulator drives the same load, not counted
# (posgw-sim load --warmup; its figures are kept as "warmup"): the gateway's
# context cache fills, and connections and buffers settle, as they have on a
# gateway serving traffic. Longer on a gateway just started ("warmup") than
# before the next run on one already loaded ("warmup_loaded").
DURATIONS = {"baseline": 10.0, "scenario": 15.0, "sweep": 6.0, "warmup": 10.0, "warmup_loaded": 3.0}
LEDGER_TASKS, LEDGER_POOL = 64, 16
MEMORY_POLL_S = 0.5
LISTEN_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 30.0
WAL_PREALLOCATED_MB = 1024  # more than every scenario together writes (about 850 MiB)
FD_HEADROOM = 2_000  # beyond the idle connections: pool, log, listening sockets, the active terminals

TARGETS = {
    "closed_loop_approved_rps_min": 3000,
    "closed_loop_vs_ledger_min": 0.8,
    "open_loop_p99_ms_max": 20.0,
    "idle_p99_ms_max": 20.0,
    "idle_rss_mb_max": 300.0,
    "per_txn_approved_rps_min": 1000,
}


def open_keys() -> list[str]:
    """The open-loop scenario's result keys, one per run (the first keeps the plain name)."""
    return ["open_1500"] + [f"open_1500_run{n}" for n in range(2, OPEN_RUNS + 1)]


class BenchError(Exception):
    """A step of the benchmark failed; the message says which and why."""


def say(text: str) -> None:
    print(text, flush=True)


# -- environment ----------------------------------------------------------------------


def bench_env() -> dict[str, str]:
    """The environment of every posgw command of the bench: its own embedded PostgreSQL,
    production-like logs (info, JSON), risk rules off."""
    env = {k: v for k, v in os.environ.items() if k not in ("POSGW_DATABASE_URL", "POSGW_LMK")}
    env.update(POSGW_DATA_DIR=str(DATA), POSGW_LOG_LEVEL="info", POSGW_LOG_FORMAT="json",
               POSGW_RISK_ENABLED="false", PYTHONUNBUFFERED="1")
    return env


def raise_fd_limit(needed: int) -> dict[str, int]:
    """Raise RLIMIT_NOFILE to the hard limit (children inherit it: the gateway needs
    one descriptor per connection, the bench one per idle socket it holds)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, needed)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return {"soft": soft, "hard": hard}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(cmd: list[str], *, env: dict[str, str], timeout: float = 600, check: bool = True,
        stdout: Any = subprocess.PIPE) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(cmd, env=env, cwd=ROOT, stdout=stdout, stderr=subprocess.PIPE, text=True,
                            timeout=timeout)
    if check and result.returncode != 0:
        tail = "\n".join((result.stderr or "").strip().splitlines()[-10:])
        raise BenchError(f"{' '.join(cmd[:3])} ... exited {result.returncode}:\n{tail}")
    return result


# -- /proc readings ------------------------------------------------------------------------

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


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


def rss_kb(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
    return total


def cpu_s(pids: list[int], *, with_children: bool = False) -> float:
    """User + system CPU seconds of the processes (plus their reaped children's)."""
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
            if with_children:
                total += int(fields[13]) + int(fields[14])  # cutime, cstime
    return total / CLOCK_TICKS


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


def postgres_pids() -> list[int]:
    pid_file = DATA / "pg" / "postmaster.pid"
    try:
        return descendants(int(pid_file.read_text().split()[0]))
    except (OSError, ValueError, IndexError):
        return []


class CpuMeter:
    """Cores used over an interval by the gateway, PostgreSQL, the load generator
    (children of this process) and the whole machine: what is left is other people's."""

    def __init__(self, gateway: Gateway | None) -> None:
        self.gateway = gateway
        self.started = time.perf_counter()
        self.gw = gateway.cpu() if gateway else 0.0
        self.pg = cpu_s(postgres_pids(), with_children=True)
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
        pg = cpu_s(postgres_pids(), with_children=True) - self.pg
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


# -- the gateway -------------------------------------------------------------------------


@dataclass
class Gateway:
    """One ``posgw serve`` on free ports, its output in ``bench/data/logs/<name>.log``."""

    name: str
    env: dict[str, str]
    workers: int = 1
    wire_only: bool = False
    port: int = 0
    metrics_port: int = 0
    process: subprocess.Popen[bytes] | None = None
    log_path: Path = field(default_factory=Path)

    def start(self) -> Gateway:
        self.port, self.metrics_port = free_port(), free_port()
        self.log_path = LOGS / f"{self.name}.log"
        cmd = [POSGW, "serve", "--host", "127.0.0.1", "--port", str(self.port),
               "--metrics-port", str(self.metrics_port), "--workers", str(self.workers)]
        if self.wire_only:
            cmd.append("--wire-only")
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(cmd, env=self.env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + LISTEN_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.listening() >= self.workers:
                return self
            if self.process.poll() is not None:
                raise BenchError(f"gateway {self.name} exited {self.process.returncode}:\n{self.log_tail()}")
            time.sleep(0.1)
        self.stop()
        raise BenchError(f"gateway {self.name}: no 'listening' log line in {LISTEN_TIMEOUT_S:.0f} s:\n"
                         f"{self.log_tail()}")

    def listening(self) -> int:
        count = 0
        with contextlib.suppress(OSError):
            for line in self.log_path.read_text(errors="replace").splitlines():
                if '"listening"' in line:
                    with contextlib.suppress(json.JSONDecodeError):
                        count += json.loads(line).get("event") == "listening"
        return count

    def log_size(self) -> int:
        with contextlib.suppress(OSError):
            return self.log_path.stat().st_size
        return 0

    def own_latency(self, since: int = 0, *, after: float | None = None) -> dict[str, Any]:
        """The gateway's own latency (``latency_ms`` of its ``txn`` log lines after byte ``since``,
        and logged after Unix time ``after`` if given: the end of a warm-up), by kind: from the
        request decoded to the response encoded, without socket or queue time."""
        by_kind: dict[str, list[float]] = {}
        with contextlib.suppress(OSError), self.log_path.open("rb") as log:
            log.seek(since)
            for line in log:
                if b'"txn"' not in line:
                    continue
                with contextlib.suppress(json.JSONDecodeError, KeyError, TypeError):
                    record = json.loads(line)
                    if record.get("event") == "txn" and (
                            after is None or datetime.fromisoformat(record["timestamp"]).timestamp() >= after):
                        by_kind.setdefault(record["kind"], []).append(record["latency_ms"] / 1000)
        return {kind: {"count": len(values), **latency_summary(values)} for kind, values in sorted(by_kind.items())}

    def log_tail(self, lines: int = 15) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def cpu(self) -> float:
        return cpu_s(descendants(self.pid))

    def rss_kb(self) -> int:
        return rss_kb(descendants(self.pid))

    def metric(self, name: str) -> float | None:
        """A sample of the gateway's /metrics, summed over its label sets."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=10) as answer:
            text = answer.read().decode()
        values = [float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                  if line.startswith(name) and line[len(name):len(name) + 1] in (" ", "{")]
        return sum(values) if values else None

    def context_cache(self) -> dict[str, int]:
        """Requests checked against the context cache since the gateway started (warm-up
        included), by result (posgw_context_cache_total: hit, stale, declined)."""
        return {result: int(self.metric(f'posgw_context_cache_total{{result="{result}"}}') or 0)
                for result in ("hit", "stale", "declined")}

    def stop(self) -> int | None:
        """SIGTERM, then wait for the drain; a gateway still up after STOP_TIMEOUT_S is killed."""
        if self.process is None or self.process.poll() is not None:
            return None if self.process is None else self.process.returncode
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            for pid in reversed(descendants(self.pid)):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            self.process.wait()
            raise BenchError(f"gateway {self.name} did not stop within {STOP_TIMEOUT_S:.0f} s of SIGTERM") from None

    def __enter__(self) -> Gateway:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        code = self.stop()
        if code not in (0, None) and exc[0] is None:
            raise BenchError(f"gateway {self.name} exited {code} after SIGTERM:\n{self.log_tail()}")


# -- the load ----------------------------------------------------------------------------


_batches = itertools.count(1)


def load(env: dict[str, str], gateway: Gateway, *, duration: float, warmup: float, terminals: int = TERMINALS,
         mix: str = "purchase=100", rate: float | None = None, connect: str = "persistent") -> dict[str, Any]:
    """One ``posgw-sim load`` run; its JSON report. Every run has a batch (60.2) of its own: the
    simulator starts each terminal at a random STAN, and a STAN a terminal used in an earlier run
    of the same batch would be a repeat (same key) with other content, answered 94."""
    cmd = [SIM, "load", "--world", str(WORLD), "--host", "127.0.0.1", "--port", str(gateway.port),
           "--terminals", str(terminals), "--duration", str(duration), "--mix", mix, "--connect", connect,
           "--batch", str(next(_batches)), "--warmup", str(warmup), "--json", "--quiet"]
    if rate is not None:
        cmd += ["--rate", str(rate)]
    result = run(cmd, env=env, timeout=warmup + duration + 180)
    return json.loads(result.stdout.strip().splitlines()[-1])


def load_summary(report: dict[str, Any]) -> dict[str, Any]:
    """The figures of a load report the results keep at top level (the full report is kept too)."""
    out = {"terminals": report["terminals"], "connect": report["connect"], "mode": report["mode"],
           "duration_s": report["duration_s"], "requests": report["requests"], "answered": report["answered"],
           "approved": report["approved"],
           "approved_rps": report["approved_rps"], "throughput_rps": report["throughput_rps"],
           "latency_ms": report["latency_ms"], "by_code": report["by_code"],
           "errors": {k: v for k, v in report["errors"].items() if v}, "errors_total": report["errors_total"]}
    if report.get("open_loop"):
        out["open_loop"] = report["open_loop"]
    if report.get("warmup"):
        out["warmup"] = report["warmup"]
    return out


def measured_from(report: dict[str, Any]) -> float | None:
    """When the run's measured requests began (Unix time): the end of its warm-up."""
    return (report.get("warmup") or {}).get("ended_at")


# -- scenarios ---------------------------------------------------------------------------


def scenario_ledger(env: dict[str, str], seconds: float) -> dict[str, Any]:
    meter = CpuMeter(None)
    result = run([sys.executable, "-m", "bench.ledger_baseline", "--seconds", str(seconds),
                  "--tasks", str(LEDGER_TASKS), "--pool", str(LEDGER_POOL), "--json"], env=env)
    report = json.loads(result.stdout.strip().splitlines()[-1])
    report["cpu_cores"] = meter.read()
    report["cpu_cores"]["ledger_client"] = report["cpu_cores"].pop("load_generator")
    per = meter.per_request_ms(report["postings"])
    per.pop("gateway", None)
    per["ledger_client"] = per.pop("load_generator", None)
    report["cpu_ms_per_request"] = per
    return report


def _with_cpu(summary: dict[str, Any], meter: CpuMeter, cpu: dict[str, float]) -> dict[str, Any]:
    """The CPU the meter saw, over the warm-up and the run: per request, the requests of both."""
    summary["cpu_cores"] = cpu
    summary["cpu_ms_per_request"] = meter.per_request_ms(
        summary["answered"] + (summary.get("warmup") or {}).get("answered", 0))
    return summary


def scenario_load(env: dict[str, str], name: str, *, duration: float, warmup: float, workers: int = 1,
                  wire_only: bool = False, **load_options: Any) -> dict[str, Any]:
    with Gateway(name, env, workers=workers, wire_only=wire_only) as gateway, MemoryPoller(gateway.pid) as memory:
        meter = CpuMeter(gateway)
        report = load(env, gateway, duration=duration, warmup=warmup, **load_options)
        cpu = meter.read()
        own = gateway.own_latency(after=measured_from(report))
        cache = gateway.context_cache()
    return {**_with_cpu(load_summary(report), meter, cpu), "gateway_latency_ms": own, "context_cache": cache,
            "workers": workers, "wire_only": wire_only, "gateway_peak_rss_mb": round(memory.peak_kb / 1024, 1),
            "report": report}


def open_idle(port: int, count: int) -> tuple[list[socket.socket], int]:
    """``count`` plain TCP connections that never send; (sockets, connect failures)."""
    sockets, failures = [], 0
    for _ in range(count):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.settimeout(10)
        try:
            s.connect(("127.0.0.1", port))
        except OSError:
            s.close()
            failures += 1
            if failures > 50:
                break
            continue
        sockets.append(s)
    return sockets, failures


def scenario_idle(env: dict[str, str], duration: float, idle_count: int, warmup: float,
                  warmup_loaded: float) -> dict[str, Any]:
    with Gateway("idle", env) as gateway, MemoryPoller(gateway.pid) as memory:
        rss_before_kb = gateway.rss_kb()
        started = time.perf_counter()
        sockets, failures = open_idle(gateway.port, idle_count)
        connect_s = time.perf_counter() - started
        try:
            deadline, held = time.monotonic() + 30, 0.0
            while time.monotonic() < deadline:
                held = gateway.metric("posgw_connections_open") or 0.0
                if held >= len(sockets):
                    break
                time.sleep(0.2)
            rss_idle_kb = gateway.rss_kb()
            meter = CpuMeter(gateway)
            report = load(env, gateway, duration=duration, warmup=warmup, terminals=IDLE_ACTIVE)
            cpu = meter.read()
            own = gateway.own_latency(after=measured_from(report))
            log_at, open_meter = gateway.log_size(), CpuMeter(gateway)
            open_report = load(env, gateway, duration=duration, warmup=warmup_loaded, terminals=IDLE_ACTIVE,
                               rate=IDLE_ACTIVE_RATE)
            open_cpu = open_meter.read()
            open_own = gateway.own_latency(log_at, after=measured_from(open_report))
            held_after = gateway.metric("posgw_connections_open") or 0.0
            still_open = sum(1 for s in sockets if _still_open(s))
        finally:
            for s in sockets:
                s.close()
    return {**_with_cpu(load_summary(report), meter, cpu), "gateway_latency_ms": own,
            "open_loop_run": {**_with_cpu(load_summary(open_report), open_meter, open_cpu),
                              "gateway_latency_ms": open_own, "report": open_report},
            "idle_requested": idle_count, "idle_opened": len(sockets),
            "idle_connect_failures": failures, "idle_connect_s": round(connect_s, 2),
            "gateway_connections_open_before_load": int(held), "gateway_connections_open_after_load": int(held_after),
            "idle_still_open_after_load": still_open,
            "gateway_rss_mb_before_idle": round(rss_before_kb / 1024, 1),
            "gateway_rss_mb_with_idle": round(rss_idle_kb / 1024, 1),
            "gateway_peak_rss_mb": round(memory.peak_kb / 1024, 1), "memory_samples": memory.samples,
            "report": report}


def _still_open(s: socket.socket) -> bool:
    """Not closed by the gateway: a peek finds nothing to read (EOF would read b'')."""
    try:
        s.setblocking(False)
        return s.recv(1, socket.MSG_PEEK) != b""
    except BlockingIOError:
        return True
    except OSError:
        return False


def scenario_sweep(env: dict[str, str], rates: tuple[int, ...], duration: float, warmup: float,
                   warmup_loaded: float) -> list[dict[str, Any]]:
    points = []
    with Gateway("sweep", env) as gateway:
        for n, rate in enumerate(rates):
            meter = CpuMeter(gateway)
            since = gateway.log_size()
            report = load(env, gateway, duration=duration, rate=rate, warmup=warmup_loaded if n else warmup)
            cpu = meter.read()
            summary = _with_cpu(load_summary(report), meter, cpu)
            points.append({"offered_rps": rate, "approved_rps": summary["approved_rps"],
                           "latency_ms": summary["latency_ms"], "open_loop": summary.get("open_loop"),
                           "gateway_latency_ms": gateway.own_latency(since, after=measured_from(report)),
                           "errors_total": summary["errors_total"], "cpu_cores": cpu,
                           "cpu_ms_per_request": summary["cpu_ms_per_request"]})
            say(f"  sweep {rate:>5}/s: approved {summary['approved_rps']:>7.1f}/s  "
                f"p50 {_ms(summary['latency_ms']['p50'])}  p90 {_ms(summary['latency_ms']['p90'])}  "
                f"p99 {_ms(summary['latency_ms']['p99'])} ms")
    return points


# -- machine -----------------------------------------------------------------------------


def machine_info() -> dict[str, Any]:
    cpu_model = None
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    mem_kb = None
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
    return {"nproc": len(os.sched_getaffinity(0)), "cpu_count": os.cpu_count(), "cpu_model": cpu_model,
            "memory_gb": round(mem_kb / 1024 / 1024, 1) if mem_kb else None, "kernel": platform.release(),
            "python": platform.python_version(), "loadavg_start": list(os.getloadavg())}


def fsync_ms(directory: Path, count: int = 100) -> dict[str, float | None]:
    """8 KiB written and fdatasync'd ``count`` times in ``directory``: the floor of a commit's latency."""
    path = directory / "fsync-probe"
    latencies = []
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        block = os.urandom(8192)
        for _ in range(count):
            started = time.perf_counter()
            os.write(fd, block)
            os.fdatasync(fd)
            latencies.append(time.perf_counter() - started)
    finally:
        os.close(fd)
        path.unlink()
    return latency_summary(latencies)


def on_postgres(work: Any) -> Any:
    """``await work(conn)`` on a connection to the bench's PostgreSQL."""
    async def connected() -> Any:
        import asyncpg

        from gateway.db.pool import database_url
        from gateway.settings import Settings

        conn = await asyncpg.connect(database_url(Settings()))
        try:
            return await work(conn)
        finally:
            await conn.close()

    return asyncio.run(connected())


def postgres_info() -> dict[str, Any]:
    async def query(conn: Any) -> dict[str, Any]:
        names = ("server_version", "shared_buffers", "max_connections", "fsync", "synchronous_commit",
                 "wal_level", "max_wal_size")
        return {name: await conn.fetchval(f"SELECT current_setting('{name}')") for name in names}

    return on_postgres(query)


async def _set_system(conn: Any, name: str, value: str) -> None:
    """``ALTER SYSTEM SET name = value`` on the bench's cluster, in effect at once (a reload)."""
    await conn.execute(f"ALTER SYSTEM SET {name} = '{value}'")
    await conn.execute("SELECT pg_reload_conf()")


def log_autovacuum() -> None:
    """Have PostgreSQL log every autovacuum and autoanalyze (its default: only those
    over 10 minutes), so that ``background_events`` can say which ran during which
    scenario. Logging only: nothing the load meets changes."""
    on_postgres(lambda conn: _set_system(conn, "log_autovacuum_min_duration", "0"))


def preallocate_wal(megabytes: int = WAL_PREALLOCATED_MB) -> dict[str, Any]:
    """Give the new cluster the WAL segments one that has run for a while has.
    A brand-new cluster has none to reuse before its first checkpoint (five
    minutes in, longer than the bench), so every 16 MB of WAL means a new
    segment, zero-filled and synced while each commit waits for it: at
    1,500 purchases/s one every 5 s, each the start of an episode of slow
    requests. With ``min_wal_size`` at ``megabytes``, switching to a new
    segment until that much WAL is behind, then checkpointing, leaves those
    segments renamed for reuse (recycled), as a checkpoint does in any
    long-running cluster; the scenarios then write into them. The shared
    buffers are left as the scenarios make them: no checkpoint runs between
    scenarios."""
    async def work(conn: Any) -> dict[str, Any]:
        segment = int(await conn.fetchval("SELECT setting FROM pg_settings WHERE name = 'wal_segment_size'"))
        await _set_system(conn, "min_wal_size", f"{megabytes}MB")
        for _ in range(megabytes * 2**20 // segment):
            await conn.execute("SELECT pg_logical_emit_message(false, 'posgw-bench', 'wal')")  # a record to leave
            await conn.execute("SELECT pg_switch_wal()")
        await conn.execute("CHECKPOINT")
        return {"min_wal_size_mb": megabytes, "segment_bytes": segment,
                "segments": await conn.fetchval("SELECT count(*) FROM pg_ls_waldir()")}

    started = time.perf_counter()
    result = on_postgres(work)
    result["seconds"] = round(time.perf_counter() - started, 2)
    return result


def postgres_writes() -> dict[str, int]:
    """PostgreSQL's cumulative writes: WAL bytes, and the buffers written by the
    checkpointer, by the background writer, and by backends themselves (a dirty
    buffer evicted in a query's path, when shared_buffers has no clean one)."""
    async def query(conn: Any) -> dict[str, int]:
        row = await conn.fetchrow(
            "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::bigint AS wal_bytes,"
            " buffers_checkpoint, buffers_clean, buffers_backend FROM pg_stat_bgwriter")
        return dict(row)

    return on_postgres(query)


class Window:
    """A scenario's span: its Unix times, for ``background_events``, and what
    PostgreSQL wrote meanwhile (``postgres_writes`` differences)."""

    def __init__(self, name: str, log: list[tuple[str, float, float]], writes: dict[str, dict[str, int]]) -> None:
        self.name, self.log, self.writes = name, log, writes

    def __enter__(self) -> Window:
        self.start, self.before = time.time(), postgres_writes()
        return self

    def __exit__(self, *exc: object) -> None:
        self.log.append((self.name, self.start, time.time()))
        after = postgres_writes()
        self.writes[self.name] = {key: after[key] - self.before[key] for key in after}


_PG_EVENT = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+) UTC \[\d+\] LOG:  "
                       r"(automatic vacuum|automatic analyze|checkpoint starting)(?: of table \"([^\"]+)\")?")


def background_events(log: Path, windows: list[tuple[str, float, float]]) -> list[dict[str, Any]]:
    """The autovacuums, autoanalyzes (logged as they end) and checkpoint starts in
    PostgreSQL's log, each with the scenario it fell in (``windows``: name, start
    and end as Unix times)."""
    events = []
    for line in log.read_text(errors="replace").splitlines() if log.exists() else ():
        found = _PG_EVENT.match(line)
        if found is None:
            continue
        at = datetime.strptime(found[1], "%Y-%m-%d %H:%M:%S.%f").replace(tzinfo=timezone.utc).timestamp()
        during = next((name for name, start, end in windows if start <= at <= end), None)
        events.append({"at": found[1], "event": found[2], "table": found[3], "scenario": during})
    return events


def git_info() -> dict[str, Any]:
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    status = subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True)
    changed = [line[3:] for line in status.stdout.splitlines()]
    return {"commit": head.stdout.strip() or None, "uncommitted_files": len(changed),
            "uncommitted_gateway_files": sorted(f for f in changed if f.startswith("gateway/"))}


# -- report ------------------------------------------------------------------------------


def _ms(value: float | None) -> str:
    return "   -" if value is None else f"{value:6.1f}"


def errors_total(r: dict[str, Any]) -> int:
    """A run's errors, its warm-up's included."""
    return r["errors_total"] + (r.get("warmup") or {}).get("errors_total", 0)


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    s, b = results["scenarios"], results["baselines"]
    ledger_rps = b["ledger"]["postings_per_s"]
    rows = []

    def row(name: str, target: str, measured: float | None, unit: str, met: bool, note: str = "") -> None:
        rows.append({"target": name, "wanted": target, "measured": measured, "unit": unit, "met": met, "note": note})

    for key, label in (("closed_1_worker", "1 worker"), ("closed_2_workers", "2 workers")):
        if key in s:
            rps = s[key]["approved_rps"]
            row(f"closed loop, 200 persistent terminals ({label})", f">= {TARGETS['closed_loop_approved_rps_min']}/s",
                rps, "approved/s", rps >= TARGETS["closed_loop_approved_rps_min"] and errors_total(s[key]) == 0)
            ratio = rps / ledger_rps if ledger_rps else None
            row(f"closed loop / ledger baseline (a) ({label})", f">= {TARGETS['closed_loop_vs_ledger_min']}",
                round(ratio, 2) if ratio else None, "x",
                ratio is not None and ratio >= TARGETS["closed_loop_vs_ledger_min"],
                f"{rps:.0f} / {ledger_rps:.0f}")
    runs = [s[key] for key in open_keys() if key in s]
    if runs:  # met only if every run meets it; the worst run's p99 is the figure
        p99s = [r["latency_ms"]["p99"] for r in runs]
        worst = None if None in p99s else max(p99s)
        loops = [r.get("open_loop") or {} for r in runs]
        row(f"open loop at {OPEN_RATE}/s: p99 (worst of {len(runs)} runs)",
            f"<= {TARGETS['open_loop_p99_ms_max']} ms", worst, "ms",
            worst is not None and worst <= TARGETS["open_loop_p99_ms_max"]
            and not any(ol.get("dropped") for ol in loops) and all(errors_total(r) == 0 for r in runs),
            "p99 of each run " + ", ".join(f"{p:g}" for p in p99s) + " ms"
            + (" (of its warm-up " + ", ".join(f"{r['warmup']['latency_ms']['p99']:g}" for r in runs) + " ms)"
               if all(r.get("warmup") for r in runs) else "") + "; "
            + ", ".join(f"{r['approved_rps']:.0f}" for r in runs) + " approved/s; "
            f"{sum(ol.get('late', 0) for ol in loops)} late, {sum(ol.get('dropped', 0) for ol in loops)} dropped")
    if "idle_10k" in s:
        i = s["idle_10k"]
        held = i["idle_opened"] == i["idle_requested"] and i["idle_still_open_after_load"] == i["idle_requested"]
        o = i["open_loop_run"]
        p99 = o["latency_ms"]["p99"]
        row(f"{i['idle_requested']:,} idle + {IDLE_ACTIVE} active at {IDLE_ACTIVE_RATE}/s: p99",
            f"<= {TARGETS['idle_p99_ms_max']} ms", p99, "ms",
            held and p99 is not None and p99 <= TARGETS["idle_p99_ms_max"] and errors_total(o) == 0
            and not (o.get("open_loop") or {}).get("dropped"),
            f"{i['idle_still_open_after_load']:,} idle held to the end; closed loop before it: "
            f"{i['approved_rps']:.0f} approved/s, p99 {i['latency_ms']['p99']} ms")
        row(f"{i['idle_requested']:,} idle + {IDLE_ACTIVE} active: gateway RSS",
            f"<= {TARGETS['idle_rss_mb_max']:.0f} MB",
            i["gateway_peak_rss_mb"], "MB peak", held and i["gateway_peak_rss_mb"] <= TARGETS["idle_rss_mb_max"],
            f"{i['gateway_rss_mb_before_idle']:.0f} MB before the idle connections")
    if "per_txn" in s:
        rps = s["per_txn"]["approved_rps"]
        row("per-txn connections, closed loop", f">= {TARGETS['per_txn_approved_rps_min']}/s", rps, "approved/s",
            rps >= TARGETS["per_txn_approved_rps_min"] and errors_total(s["per_txn"]) == 0)
    return rows


def _own_p99(r: dict[str, Any]) -> float | None:
    """The gateway's own p99 for the scenario's load kind (purchase or echo)."""
    own = r.get("gateway_latency_ms") or {}
    for kind in ("purchase", "echo"):
        if kind in own:
            return own[kind]["p99"]
    return None


def table(results: dict[str, Any]) -> str:
    """Rates and client-side latency (from the send, or the scheduled send in open loop); the
    gateway's own p99 (decode to encode); errors; CPU ms per request of gateway + PostgreSQL +
    load generator; cores other people's processes used meanwhile; CPU pressure (PSI some)."""
    head = (f"{'scenario':<42} {'rate/s':>7} {'p50 ms':>7} {'p99 ms':>7} {'gw p99':>7} {'errors':>6}  "
            f"{'CPU ms/req gw+pg+load':<22} {'others':>6} {'psi':>4}")
    lines = [head, "-" * len(head)]

    def cpu_text(per: dict[str, Any], first: str, second: str, third: str) -> str:
        if not per:
            return "-"
        parts = [per.get(first), per.get(second), per.get(third)]
        return "+".join("-" if v is None else f"{v:.2f}" for v in parts) + f"={per['total']:.2f}"

    b = results["baselines"]
    led = b["ledger"]
    c = led["cpu_cores"]
    lines.append(f"{'(a) ledger alone: post() from Python':<42} {led['postings_per_s']:>7.0f} "
                 f"{_ms(led['latency_ms']['p50']):>7} {_ms(led['latency_ms']['p99']):>7} {'':>7} "
                 f"{led['postings'] - led['ok']:>6}  "
                 f"{cpu_text(led['cpu_ms_per_request'], 'gateway', 'postgres', 'ledger_client'):<22} "
                 f"{c['others']:>6} {c.get('cpu_pressure_pct', '-'):>4}")
    rows = [("(b) wire alone: --wire-only, echo", b.get("wire"))]
    names = {"closed_1_worker": "closed loop, 200 persistent, 1 worker",
             "closed_2_workers": "closed loop, 200 persistent, 2 workers",
             **{key: f"open loop at {OPEN_RATE}/s, 200 persistent" + (f", run {n}" if n > 1 else "")
                for n, key in enumerate(open_keys(), 1)},
             "per_txn": "closed loop, 200 per-txn connections",
             "idle_10k": f"{IDLE_CONNECTIONS // 1000}k idle + {IDLE_ACTIVE} active, closed loop"}
    rows += [(label, results["scenarios"].get(key)) for key, label in names.items()]
    if "idle_10k" in results["scenarios"]:
        rows.append((f"{IDLE_CONNECTIONS // 1000}k idle + {IDLE_ACTIVE} active, open {IDLE_ACTIVE_RATE}/s",
                     results["scenarios"]["idle_10k"]["open_loop_run"]))
    rows += [(f"sweep: open loop at {p['offered_rps']}/s", p) for p in results.get("sweep", ())]
    for label, r in rows:
        if r is None:
            continue
        c = r["cpu_cores"]
        lines.append(f"{label:<42} {r['approved_rps']:>7.0f} {_ms(r['latency_ms']['p50']):>7} "
                     f"{_ms(r['latency_ms']['p99']):>7} {_ms(_own_p99(r)):>7} {r['errors_total']:>6}  "
                     f"{cpu_text(r['cpu_ms_per_request'], 'gateway', 'postgres', 'load_generator'):<22} "
                     f"{c['others']:>6} {c.get('cpu_pressure_pct', '-'):>4}")
    lines.append("")
    lines.append(f"{'target':<52} {'wanted':>10} {'measured':>10}  met")
    for t in results["targets"]:
        measured = "-" if t["measured"] is None else f"{t['measured']:g}"
        lines.append(f"{t['target']:<52} {t['wanted']:>10} {measured:>10}  {'yes' if t['met'] else 'NO'}"
                     + (f"  ({t['note']})" if t["note"] else ""))
    return "\n".join(lines)


def plot(points: list[dict[str, Any]], path: Path, machine: dict[str, Any]) -> str | None:
    """The sweep as a PNG; None when matplotlib is not installed (the ``bench`` extra)."""
    try:
        import matplotlib
    except ImportError:
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    rates = [p["offered_rps"] for p in points]
    fig, ax = plt.subplots(figsize=(7.5, 4.5), dpi=110)
    for key, style in (("p50", "o-"), ("p90", "s-"), ("p99", "^-")):
        ax.plot(rates, [p["latency_ms"][key] for p in points], style, label=key)
    ax.axhline(TARGETS["open_loop_p99_ms_max"], color="grey", linestyle="--", linewidth=1,
               label=f"p99 target {TARGETS['open_loop_p99_ms_max']:.0f} ms")
    ax.set_yscale("log")
    plain = matplotlib.ticker.FuncFormatter(lambda value, _: f"{value:g}")  # 20, not 2 x 10^1
    ax.yaxis.set_major_formatter(plain)
    ax.yaxis.set_minor_formatter(plain)
    ax.set_xlabel("offered rate, purchases/s (open loop, 200 persistent terminals)")
    ax.set_ylabel("latency, ms (from the scheduled send)")
    load_avg = machine.get("loadavg_start") or [0.0]
    ax.set_title(f"posgw: latency against offered rate ({machine['nproc']} cores shared by gateway, "
                 f"PostgreSQL, simulator;\nload average {load_avg[0]:.1f} at the start)", fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    achieved = ax.twinx()
    achieved.plot(rates, rates, color="lightgrey", linestyle=":", linewidth=1, label="offered/s (right)")
    achieved.plot(rates, [p["approved_rps"] for p in points], "k:", linewidth=1.2, label="approved/s (right)")
    achieved.set_ylabel("purchases/s")
    achieved.set_ylim(0, max(rates) * 1.1)
    handles, labels = ax.get_legend_handles_labels()
    more_handles, more_labels = achieved.get_legend_handles_labels()
    ax.legend(handles + more_handles, labels + more_labels, loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return str(path.relative_to(ROOT))


# -- main --------------------------------------------------------------------------------


def setup(env: dict[str, str]) -> dict[str, Any]:
    if (DATA / "pg" / "postmaster.pid").exists():
        say("stopping the PostgreSQL of an earlier run")
        run([POSGW, "db", "stop"], env=env, check=False)
    shutil.rmtree(DATA, ignore_errors=True)
    LOGS.mkdir(parents=True)
    started = time.perf_counter()
    run([POSGW, "db", "migrate"], env=env)
    migrate_s = time.perf_counter() - started
    say(f"fresh data dir {DATA.relative_to(ROOT)}: PostgreSQL started and migrated in {migrate_s:.1f} s")
    started = time.perf_counter()
    with WORLD.open("w") as world:
        run([POSGW, "demo", "--terminals", str(TERMINALS), "--cards", str(CARDS), "--json"], env=env, stdout=world)
    demo_s = time.perf_counter() - started
    say(f"seeded {TERMINALS} terminals and {CARDS:,} cards (posgw demo) in {demo_s:.1f} s")
    return {"migrate_s": round(migrate_s, 2), "demo_s": round(demo_s, 2), "terminals": TERMINALS, "cards": CARDS}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description="posgw load benchmark (make bench)")
    parser.add_argument("--quick", action="store_true", help="a fifth of every duration, for trying the bench out")
    parser.add_argument("--keep-db", action="store_true", help="leave the bench's PostgreSQL running")
    args = parser.parse_args(argv)
    scale = 0.2 if args.quick else 1.0
    dur = {k: max(2.0, v * scale) for k, v in DURATIONS.items()}
    env = bench_env()
    os.environ.update(POSGW_DATA_DIR=env["POSGW_DATA_DIR"])
    os.environ.pop("POSGW_DATABASE_URL", None)
    fd_limit = raise_fd_limit(IDLE_CONNECTIONS + FD_HEADROOM)
    idle_count = IDLE_CONNECTIONS
    if fd_limit["soft"] < IDLE_CONNECTIONS + FD_HEADROOM:
        idle_count = max(0, fd_limit["soft"] - FD_HEADROOM)
        say(f"RLIMIT_NOFILE is {fd_limit['soft']}: only {idle_count} idle connections")
    started = time.perf_counter()
    results: dict[str, Any] = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": machine_info(), "git": git_info(),
        "conditions": {
            "logs": "level info, JSON, one line per request, to bench/data/logs/<scenario>.log",
            "risk_enabled": False, "fd_limit": fd_limit, "durations_s": dur, "quick": args.quick,
            "where": "gateway, PostgreSQL and simulator on this one machine",
        },
    }
    say(f"posgw bench: {results['machine']['nproc']} cores, {results['machine']['cpu_model']}, "
        f"load average {' '.join(f'{x:.2f}' for x in results['machine']['loadavg_start'])}")
    say("gateway as in production (log level info, JSON lines to bench/data/logs/) but risk rules OFF "
        "(POSGW_RISK_ENABLED=false) in every scenario")
    ok = False
    try:
        results["setup"] = setup(env)
        results["machine"]["postgres"] = postgres_info()
        wal = results["setup"]["wal"] = preallocate_wal()
        say(f"WAL: {wal['segments']} segments of {wal['segment_bytes'] // 2**20} MiB ready for reuse "
            f"(min_wal_size {wal['min_wal_size_mb']} MB; {wal['seconds']} s)")
        results["machine"]["fsync_8k_ms"] = fsync_ms(DATA)
        say(f"fdatasync of 8 KiB in {DATA.relative_to(ROOT)}: {results['machine']['fsync_8k_ms']} ms")
        results["baselines"], results["scenarios"] = {}, {}
        log_autovacuum()
        windows: list[tuple[str, float, float]] = []  # (scenario, start, end), Unix times
        results["postgres_writes"] = {}

        def window(name: str) -> Window:
            return Window(name, windows, results["postgres_writes"])

        say(f"(a) ledger alone: {LEDGER_TASKS} coroutines over a pool of {LEDGER_POOL}, {dur['baseline']:.0f} s")
        with window("ledger"):
            results["baselines"]["ledger"] = scenario_ledger(env, dur["baseline"])
        say(f"    {results['baselines']['ledger']['postings_per_s']:.0f} postings/s")

        steps: list[tuple[str, str, dict[str, Any]]] = [
            ("wire", "(b) wire alone: --wire-only, echo=100, 200 persistent terminals",
             {"duration": dur["baseline"], "wire_only": True, "mix": "echo=100"}),
            ("closed_1_worker", "closed loop purchases, 200 persistent terminals, 1 worker",
             {"duration": dur["scenario"]}),
            ("closed_2_workers", "closed loop purchases, 200 persistent terminals, --workers 2",
             {"duration": dur["scenario"], "workers": 2}),
            *((key, f"open loop purchases at {OPEN_RATE}/s, 200 persistent terminals, run {n} of {OPEN_RUNS}",
               {"duration": dur["scenario"], "rate": OPEN_RATE}) for n, key in enumerate(open_keys(), 1)),
            ("per_txn", "closed loop purchases, 200 terminals, a connection per transaction",
             {"duration": dur["scenario"], "connect": "per-txn"}),
        ]
        for key, title, options in steps:
            say(f"{title}, {options['duration']:.0f} s after {dur['warmup']:.0f} s of warm-up")
            with window(key):
                result = scenario_load(env, key, warmup=dur["warmup"], **options)
            (results["baselines"] if key == "wire" else results["scenarios"])[key] = result
            say(f"    {result['approved_rps']:.0f} approved/s, p50 {result['latency_ms']['p50']} ms, "
                f"p99 {result['latency_ms']['p99']} ms, errors {result['errors_total']}")

        say(f"{idle_count:,} idle connections + {IDLE_ACTIVE} active terminals, closed loop, then open loop at "
            f"{IDLE_ACTIVE_RATE}/s, {dur['scenario']:.0f} s each (after {dur['warmup']:.0f} and "
            f"{dur['warmup_loaded']:.0f} s of warm-up)")
        with window("idle_10k"):
            idle = results["scenarios"]["idle_10k"] = scenario_idle(env, dur["scenario"], idle_count, dur["warmup"],
                                                                    dur["warmup_loaded"])
        say(f"    {idle['idle_opened']:,} idle opened in {idle['idle_connect_s']} s, "
            f"{idle['approved_rps']:.0f} approved/s, p99 {idle['latency_ms']['p99']} ms; at {IDLE_ACTIVE_RATE}/s: "
            f"p99 {idle['open_loop_run']['latency_ms']['p99']} ms; gateway RSS peak {idle['gateway_peak_rss_mb']} MB")

        say(f"sweep: open loop at {', '.join(map(str, SWEEP_RATES))}/s, {dur['sweep']:.0f} s each (after "
            f"{dur['warmup']:.0f} s of warm-up at the first rate, {dur['warmup_loaded']:.0f} s at each other)")
        with window("sweep"):
            results["sweep"] = scenario_sweep(env, SWEEP_RATES, dur["sweep"], dur["warmup"], dur["warmup_loaded"])

        wire = results["baselines"]["wire"]["approved_rps"]
        ledger = results["baselines"]["ledger"]["postings_per_s"]
        closed = {k: results["scenarios"][k]["approved_rps"] for k in ("closed_1_worker", "closed_2_workers")}
        results["ratios"] = {f"{k}_vs_ledger": round(v / ledger, 2) if ledger else None for k, v in closed.items()}
        results["ratios"].update({f"{k}_vs_wire": round(v / wire, 2) if wire else None for k, v in closed.items()})
        results["targets"] = targets(results)
        results["background_events"] = background_events(DATA / "pg" / "log", windows)
        during: dict[str, collections.Counter[str]] = {}
        for event in results["background_events"]:
            if event["scenario"]:
                during.setdefault(event["scenario"], collections.Counter())[event["event"]] += 1
        say("PostgreSQL's background work during the scenarios (bench/results.json: background_events): "
            + ("; ".join(f"{name}: " + ", ".join(f"{n} {what}" for what, n in counts.items())
                         for name, counts in during.items()) or "none logged"))
        say("PostgreSQL's writes (bench/results.json: postgres_writes): " + "; ".join(
            f"{name}: WAL {w['wal_bytes'] / 2**20:.0f} MiB, buffers by backends {w['buffers_backend']}, "
            f"by the background writer {w['buffers_clean']}, at checkpoints {w['buffers_checkpoint']}"
            for name, w in results["postgres_writes"].items()))

        check = run([POSGW, "ledger", "check", "--json"], env=env, check=False)
        results["ledger_check"] = {"exit_code": check.returncode,
                                   **(json.loads(check.stdout) if check.stdout.strip() else {})}
        plot_path = plot(results["sweep"], PLOT, results["machine"])
        results["plot"] = plot_path
        ok = True
    finally:
        results["machine"]["loadavg_end"] = list(os.getloadavg())
        results["elapsed_s"] = round(time.perf_counter() - started, 1)
        if not args.keep_db:
            stopped = run([POSGW, "db", "stop", "--json"], env=env, check=False)
            say(f"posgw db stop: {stopped.stdout.strip() or stopped.stderr.strip()}")
        if ok:
            RESULTS.write_text(json.dumps(results, indent=2) + "\n")

    say("")
    say(table(results))
    say("")
    check = results["ledger_check"]
    say(f"posgw ledger check: exit {check['exit_code']} "
        + json.dumps({k: v for k, v in check.items() if k != "exit_code"}))
    say(f"plot: {results['plot']}" if results["plot"] else
        "plot: skipped (matplotlib not installed: pip install -e '.[bench]')")
    say(f"results: {RESULTS.relative_to(ROOT)}; gateway logs: {LOGS.relative_to(ROOT)}/; "
        f"{results['elapsed_s']:.0f} s in all; load average now "
        f"{' '.join(f'{x:.2f}' for x in results['machine']['loadavg_end'])}")
    return 0 if check["exit_code"] == 0 else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchError as exc:
        print(f"bench: error: {exc}", file=sys.stderr)
        sys.exit(1)
