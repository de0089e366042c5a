"""``make bench``: the load benchmark of the gateway, with its two baselines.

On a fresh data dir (``bench/data``, removed first) it starts the embedded
PostgreSQL (``posgw db migrate``), seeds 200 terminals and 30,000 cards
(``posgw demo``), tops up the agent's float and gives each terminal a past
(bench.world.setup: the risk rules' defaults must not decline the bench's own
load), then runs each scenario against a ``posgw serve`` of its own on free
ports, stopped with SIGTERM after.

The production configuration (issue 28): the risk rules on, as
``config/risk.toml`` sets them, and the mix
purchase=60,balance=10,bill-inquiry=10,bill-pay=20 (cash bill payments drawing
on the agent's float):

- closed loop, 200 persistent terminals, 15 s, 1 worker and 2;
- open loop at 1,500/s, 15 s, three times, each against a gateway of its own
  (a target is met only if every run meets it); the first 10 s of each, on a
  gateway just started, are its warm-up, judged on their own (warm start);
- closed loop, a new connection per transaction (per-txn), 15 s;
- 10,000 idle connections held open while 100 terminals run, 15 s closed loop
  (how much they still carry), then 15 s open loop at 500/s, 5 requests a
  second each, with the gateway's peak resident memory;
- a sweep, open loop at 250 to 2,500/s, 6 s each, for the plot;
- the big ledger (bench.big_ledger): the same closed loop on the small world
  and on 1,000 terminals, 1,000,000 cards and 10,000,000 transfers seeded in
  bulk, in the same run.

Kept from before, labelled so: purchases only, the risk rules off
(``POSGW_RISK_ENABLED=false``), closed loop with 1 worker and 2 and open loop
at 1,500/s three times, so that runs stay comparable with the history; and the
two baselines: (a) the ledger alone, ``bench.ledger_baseline``, the purchase
posting through ``ledger.postings.post`` from Python, 64 coroutines over a
pool of 16, 10 s; (b) the wire alone, ``posgw serve --wire-only`` and
``posgw-sim load --mix echo=100``, 200 persistent terminals, 10 s.

Every load run's measured seconds come after a warm-up of the same load, not
counted (``posgw-sim load --warmup``: 10 s on a gateway just started, 3 s
before the next run on the same gateway): its figures are kept beside the
run's as ``warmup``, its errors count against the targets, and the CPU per
request is over both. A request the bench's own world gets declined (any
answer but 00) fails its targets too.

Everything runs on this machine: gateway, PostgreSQL, simulator. The gateway
runs as in production (log level info, one JSON line per request, to a file:
``bench/data/logs/<scenario>.log``). Writes ``bench/results.json`` and,
when matplotlib is installed (the ``bench`` extra), ``bench/latency.png``;
prints a table; ends with ``posgw ledger check`` and ``posgw db stop``.

    .venv/bin/python -m bench.run [--quick] [--keep-db] [--no-big-ledger]

This module runs the steps in order; the rest of ``bench/`` by concern:
``config`` (paths, sizes, durations, targets, the commands' environment),
``procs`` (ports and /proc readings, shared with deploy/ and the tests),
``meters`` (CPU and memory over a scenario), ``serve`` (one ``posgw serve``),
``world`` (the data dir, the machine, PostgreSQL), ``scenarios``, ``targets``
(the judgment) and ``output`` (the table and the plot).
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import sys
import time
from datetime import UTC, datetime
from typing import Any

from bench.config import (
    CARD_V2_MIX,
    DATA,
    DURATIONS,
    FD_HEADROOM,
    IDLE_ACTIVE,
    IDLE_ACTIVE_RATE,
    IDLE_CONNECTIONS,
    LEDGER_POOL,
    LEDGER_TASKS,
    LOGS,
    MIX,
    OPEN_RATE,
    OPEN_RUNS,
    PLOT,
    POSGW,
    PURCHASES,
    PURCHASES_PREFIX,
    RESULTS,
    ROOT,
    SWEEP_RATES,
    BenchError,
    bench_env,
    open_keys,
    raise_fd_limit,
    run,
    say,
)
from bench.output import plot, table
from bench.scenarios import scenario_big_ledger, scenario_idle, scenario_ledger, scenario_load, scenario_sweep
from bench.targets import targets
from bench.world import (
    Window,
    background_events,
    fsync_ms,
    git_info,
    log_autovacuum,
    machine_info,
    postgres_info,
    preallocate_wal,
    setup,
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description="posgw load benchmark (make bench)")
    parser.add_argument("--quick", action="store_true", help="a fifth of every duration, for trying the bench out")
    parser.add_argument("--keep-db", action="store_true", help="leave the bench's PostgreSQL running")
    parser.add_argument("--no-big-ledger", action="store_true", help="skip the big ledger (its seeding takes minutes)")
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
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine_info(), "git": git_info(),
        "conditions": {
            "logs": "level info, JSON, one line per request, to bench/data/logs/<scenario>.log",
            "risk_enabled": "on (config/risk.toml) but in the purchase-only rows", "mix": MIX, "fd_limit": fd_limit, "durations_s": dur, "quick": args.quick,
            "where": "gateway, PostgreSQL and simulator on this one machine",
        },
    }
    say(f"posgw bench: {results['machine']['nproc']} cores, {results['machine']['cpu_model']}, "
        f"load average {' '.join(f'{x:.2f}' for x in results['machine']['loadavg_start'])}")
    say("gateway as in production: log level info, JSON lines to bench/data/logs/, the risk rules on "
        "(config/risk.toml), the mix " + MIX + "; the purchase-only rows kept from before run with risk OFF")
    ok = False
    try:
        prepare(results, env)
        windows = measure(results, env, dur, idle_count, big_scale=None if args.no_big_ledger else 0.02 if args.quick else 1.0)
        judge(results, windows)
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


def prepare(results: dict[str, Any], env: dict[str, str]) -> None:
    """The fresh world (``setup``), PostgreSQL's settings and WAL, the disk's fsync: into ``results``."""
    results["setup"] = setup(env)
    results["machine"]["postgres"] = postgres_info()
    wal = results["setup"]["wal"] = preallocate_wal()
    say(f"WAL: {wal['segments']} segments of {wal['segment_bytes'] // 2**20} MiB ready for reuse "
        f"(min_wal_size {wal['min_wal_size_mb']} MB; {wal['seconds']} s)")
    results["machine"]["fsync_8k_ms"] = fsync_ms(DATA)
    say(f"fdatasync of 8 KiB in {DATA.relative_to(ROOT)}: {results['machine']['fsync_8k_ms']} ms")


def measure(results: dict[str, Any], env: dict[str, str], dur: dict[str, float],
            idle_count: int, *, big_scale: float | None) -> list[tuple[str, float, float]]:
    """Every scenario in turn, into ``results`` (baselines, scenarios, sweep, postgres_writes);
    their windows (scenario, start, end as Unix times)."""
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

    off = bench_env(risk=False)
    steps: list[tuple[str, str, dict[str, str], dict[str, Any]]] = [
        ("wire", "(b) wire alone: --wire-only, echo=100, 200 persistent terminals", env,
         {"duration": dur["baseline"], "wire_only": True, "mix": "echo=100"}),
        ("closed_1_worker", "closed loop, the mix, risk on, 200 persistent terminals, 1 worker", env,
         {"duration": dur["scenario"], "mix": MIX}),
        ("closed_2_workers", "closed loop, the mix, risk on, 200 persistent terminals, --workers 2", env,
         {"duration": dur["scenario"], "workers": 2, "mix": MIX}),
        *((key, f"open loop at {OPEN_RATE}/s, the mix, risk on, 200 persistent terminals, run {n} of {OPEN_RUNS}",
           env, {"duration": dur["scenario"], "rate": OPEN_RATE, "mix": MIX})
          for n, key in enumerate(open_keys(), 1)),
        ("per_txn", "closed loop, the mix, risk on, 200 terminals, a connection per transaction", env,
         {"duration": dur["scenario"], "connect": "per-txn", "mix": MIX}),
        ("card_v2_mix", f"closed loop, card transactions version 2 ({CARD_V2_MIX}: refunds of earlier purchases, "
         "pre-authorizations later completed or cancelled), risk on, 200 persistent terminals, 1 worker", env,
         {"duration": dur["scenario"], "mix": CARD_V2_MIX}),
        ("purchases_closed_1_worker", "purchases only, risk OFF: closed loop, 200 persistent terminals, 1 worker",
         off, {"duration": dur["scenario"], "mix": PURCHASES}),
        ("purchases_closed_2_workers", "purchases only, risk OFF: closed loop, 200 persistent, --workers 2",
         off, {"duration": dur["scenario"], "workers": 2, "mix": PURCHASES}),
        *((key, f"purchases only, risk OFF: open loop at {OPEN_RATE}/s, 200 persistent, run {n} of {OPEN_RUNS}",
           off, {"duration": dur["scenario"], "rate": OPEN_RATE, "mix": PURCHASES})
          for n, key in enumerate(open_keys(PURCHASES_PREFIX), 1)),
    ]
    for key, title, step_env, options in steps:
        say(f"{title}, {options['duration']:.0f} s after {dur['warmup']:.0f} s of warm-up")
        with window(key):
            result = scenario_load(step_env, key, warmup=dur["warmup"], **options)
        result["risk_enabled"] = step_env["POSGW_RISK_ENABLED"] == "true"
        (results["baselines"] if key == "wire" else results["scenarios"])[key] = result
        say(f"    {result['approved_rps']:.0f} approved/s, p50 {result['latency_ms']['p50']} ms, "
            f"p99 {result['latency_ms']['p99']} ms, errors {result['errors_total']}, "
            f"CPU {result['cpu_ms_per_request'].get('total')} ms/request, declined {_declined(result)}")

    say(f"{idle_count:,} idle connections + {IDLE_ACTIVE} active terminals, closed loop, then open loop at "
        f"{IDLE_ACTIVE_RATE}/s, {dur['scenario']:.0f} s each (after {dur['warmup']:.0f} and "
        f"{dur['warmup_loaded']:.0f} s of warm-up)")
    with window("idle_10k"):
        idle = results["scenarios"]["idle_10k"] = scenario_idle(env, dur["scenario"], idle_count, dur["warmup"],
                                                                dur["warmup_loaded"], mix=MIX)
    say(f"    {idle['idle_opened']:,} idle opened in {idle['idle_connect_s']} s, "
        f"{idle['approved_rps']:.0f} approved/s, p99 {idle['latency_ms']['p99']} ms; at {IDLE_ACTIVE_RATE}/s: "
        f"p99 {idle['open_loop_run']['latency_ms']['p99']} ms; gateway RSS peak {idle['gateway_peak_rss_mb']} MB")

    say(f"sweep: open loop at {', '.join(map(str, SWEEP_RATES))}/s, {dur['sweep']:.0f} s each (after "
        f"{dur['warmup']:.0f} s of warm-up at the first rate, {dur['warmup_loaded']:.0f} s at each other)")
    with window("sweep"):
        results["sweep"] = scenario_sweep(env, SWEEP_RATES, dur["sweep"], dur["warmup"], dur["warmup_loaded"],
                                          mix=MIX)
    if big_scale is not None:  # last: the seeding makes every table of the bench's world big
        say(f"big ledger: closed loop, the mix, risk on, 1 worker, {dur['scenario']:.0f} s after {dur['warmup']:.0f} s "
            f"of warm-up, on the small world, then on 1,000 terminals, 1,000,000 cards, 10,000,000 transfers"
            + (f" (x {big_scale:g}: --quick)" if big_scale != 1.0 else ""))
        with window("big_ledger"):
            results["big_ledger"] = scenario_big_ledger(env, duration=dur["scenario"], warmup=dur["warmup"], mix=MIX,
                                                        scale=big_scale)
    return windows


def _declined(result: dict[str, Any]) -> int:
    """Answers other than 00 (by response code) in a run and its warm-up: the production
    configuration's world is made so that its own load is never declined."""
    def count(by_code: dict[str, int]) -> int:
        return sum(n for code, n in by_code.items() if code != "00")

    return count(result.get("by_code") or {}) + count((result.get("warmup") or {}).get("by_code") or {})


def judge(results: dict[str, Any], windows: list[tuple[str, float, float]]) -> None:
    """The ratios to the baselines, the targets, and what PostgreSQL did in the background, into ``results``."""
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


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchError as exc:
        print(f"bench: error: {exc}", file=sys.stderr)
        sys.exit(1)
