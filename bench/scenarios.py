"""The scenarios of ``make bench``: the ledger alone, a load against a gateway of its own,
10,000 idle connections beside an active few, and the sweep of open-loop rates; each
load a ``posgw-sim load`` run whose JSON report is kept with the CPU and memory used."""

from __future__ import annotations

import itertools
import json
import socket
import sys
import time
from pathlib import Path
from typing import Any

from bench import big_ledger
from bench.config import (
    IDLE_ACTIVE,
    IDLE_ACTIVE_RATE,
    LEDGER_POOL,
    LEDGER_TASKS,
    SIM,
    TERMINALS,
    WORLD,
    run,
    say,
)
from bench.meters import CpuMeter, MemoryPoller
from bench.output import ms_text
from bench.serve import Gateway

_batches = itertools.count(1)


def load(env: dict[str, str], gateway: Gateway, *, duration: float, warmup: float, terminals: int = TERMINALS,
         mix: str = "purchase=100", rate: float | None = None, connect: str = "persistent",
         world: Path = WORLD) -> dict[str, Any]:
    """One ``posgw-sim load`` run; its JSON report. Every run has a batch (60.2) of its own: the
    simulator starts each terminal at a random STAN, and a STAN a terminal used in an earlier run
    of the same batch would be a repeat (same key) with other content, answered 94."""
    cmd = [SIM, "load", "--world", str(world), "--host", "127.0.0.1", "--port", str(gateway.port),
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
                  warmup_loaded: float, *, mix: str) -> dict[str, Any]:
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
            report = load(env, gateway, duration=duration, warmup=warmup, terminals=IDLE_ACTIVE, mix=mix)
            cpu = meter.read()
            own = gateway.own_latency(after=measured_from(report))
            log_at, open_meter = gateway.log_size(), CpuMeter(gateway)
            open_report = load(env, gateway, duration=duration, warmup=warmup_loaded, terminals=IDLE_ACTIVE,
                               rate=IDLE_ACTIVE_RATE, mix=mix)
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
                   warmup_loaded: float, *, mix: str) -> list[dict[str, Any]]:
    points = []
    with Gateway("sweep", env) as gateway:
        for n, rate in enumerate(rates):
            meter = CpuMeter(gateway)
            since = gateway.log_size()
            report = load(env, gateway, duration=duration, rate=rate, warmup=warmup_loaded if n else warmup, mix=mix)
            cpu = meter.read()
            summary = _with_cpu(load_summary(report), meter, cpu)
            points.append({"offered_rps": rate, "approved_rps": summary["approved_rps"],
                           "latency_ms": summary["latency_ms"], "open_loop": summary.get("open_loop"),
                           "gateway_latency_ms": gateway.own_latency(since, after=measured_from(report)),
                           "errors_total": summary["errors_total"], "cpu_cores": cpu,
                           "cpu_ms_per_request": summary["cpu_ms_per_request"]})
            say(f"  sweep {rate:>5}/s: approved {summary['approved_rps']:>7.1f}/s  "
                f"p50 {ms_text(summary['latency_ms']['p50'])}  p90 {ms_text(summary['latency_ms']['p90'])}  "
                f"p99 {ms_text(summary['latency_ms']['p99'])} ms")
    return points


def scenario_big_ledger(env: dict[str, str], *, duration: float, warmup: float, mix: str,
                        scale: float) -> dict[str, Any]:
    """The closed loop on the small world, the big world seeded (bench.big_ledger), the same closed
    loop on it: back to back, in the same run; with the seeding's figures and the hot lookups' plans."""
    small = scenario_load(env, "big_ledger_small", duration=duration, warmup=warmup, mix=mix)
    say(f"    small world: {small['approved_rps']:.0f} approved/s, p99 {small['latency_ms']['p99']} ms")
    say(f"    seeding the big world (scale {scale:g}):")
    seeded = big_ledger.seed(env, scale)
    say(f"    seeded in {seeded['seconds']} s: {seeded['cards_total']:,} cards, {seeded['transfers_total']:,} "
        f"transfers; database {seeded['database_mb']:,} MB")
    plans = big_ledger.plans()
    say(f"    hot lookups that scan: {', '.join(plans['scans']) or 'none'}")
    big = scenario_load(env, "big_ledger_big", duration=duration, warmup=warmup, mix=mix,
                        world=big_ledger.BIG_WORLD)
    say(f"    big world: {big['approved_rps']:.0f} approved/s, p99 {big['latency_ms']['p99']} ms")
    return {"small": small, "big": big, "seed": seeded, **plans, "scale": scale}
