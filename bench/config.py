"""What ``make bench`` runs and where: paths, sizes, durations and targets; the
environment of its commands and how they are run."""

from __future__ import annotations

import os
import resource
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
DATA = BENCH / "data"
LOGS = DATA / "logs"
WORLD = DATA / "world.json"
RESULTS = BENCH / "results.json"
PLOT = BENCH / "latency.png"
BIN = Path(sys.executable).parent
POSGW, SIM = str(BIN / "posgw"), str(BIN / "posgw-sim")

# The production configuration's world: the risk rules on with config/risk.toml's defaults,
# and a world big enough that the bench's own load is not declined by them. 30,000 cards,
# 150 a terminal taken in turn (every request of a terminal takes its next card, whatever
# its kind): a card comes round at most 10 times a minute up to 25 requests a second a
# terminal (5,000/s in all), so its purchases never pass the burst limit (10 a minute),
# and it is used far less than 100 times a day over the whole bench. (More cards would
# mean fewer context cache hits: a card must come round again for its context to be
# cached; fewer, burst declines in the closed loop.) Each
# terminal has a past (``TERMINAL_PAST_DAILY`` approvals a day over the last 30 days,
# seeded in risk_counters), so the spike rule's threshold is 5 x that, not its floor of
# 200, which a terminal of the bench passes in seconds. The agent's float is topped up
# (``FLOAT_TOPUP_YUAN``) for every cash bill payment of the run.
TERMINALS, CARDS = 200, 30_000
TERMINAL_PAST_DAILY = 1000
FLOAT_TOPUP_YUAN = 10_000_000
MIX = "purchase=60,balance=10,bill-inquiry=10,bill-pay=20"  # the production configuration's mix
CARD_V2_MIX = "purchase=60,refund=10,preauth=30"  # card transactions version 2: reported, no target
PURCHASES = "purchase=100"  # the rows kept from before: purchases only, risk rules off
PURCHASES_PREFIX = "purchases_"  # their result keys: purchases_closed_1_worker, ...
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
    "workers_2_vs_1_min": 1.0,
    "open_loop_cpu_ms_max": 0.6,
    "warm_start_p99_ms_max": 50.0,
    "big_vs_small_min": 0.9,
    "closed_loop_vs_ledger_min": 0.8,
    "open_loop_p99_ms_max": 20.0,
    "idle_p99_ms_max": 20.0,
    "idle_rss_mb_max": 300.0,
    "per_txn_approved_rps_min": 1000,
}


def open_keys(prefix: str = "") -> list[str]:
    """The open-loop scenario's result keys, one per run (the first keeps the plain name);
    ``prefix`` "purchases_" for the risk-off purchase-only runs."""
    return [f"{prefix}open_1500"] + [f"{prefix}open_1500_run{n}" for n in range(2, OPEN_RUNS + 1)]


class BenchError(Exception):
    """A step of the benchmark failed; the message says which and why."""


def say(text: str) -> None:
    print(text, flush=True)


def bench_env(*, risk: bool = True) -> dict[str, str]:
    """The environment of every posgw command of the bench: its own embedded PostgreSQL,
    production logs (info, JSON), the risk rules on (config/risk.toml) unless ``risk`` is
    False (the purchase-only rows kept from before)."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("POSGW_DATABASE_URL", "POSGW_LMK", "POSGW_RISK_ENABLED")}
    env.update(POSGW_DATA_DIR=str(DATA), POSGW_LOG_LEVEL="info", POSGW_LOG_FORMAT="json",
               POSGW_RISK_ENABLED="true" if risk else "false", PYTHONUNBUFFERED="1")
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


def run(cmd: list[str], *, env: dict[str, str], timeout: float = 600, check: bool = True,
        stdout: Any = subprocess.PIPE) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(cmd, env=env, cwd=ROOT, stdout=stdout, stderr=subprocess.PIPE, text=True,
                            timeout=timeout)
    if check and result.returncode != 0:
        tail = "\n".join((result.stderr or "").strip().splitlines()[-10:])
        raise BenchError(f"{' '.join(cmd[:3])} ... exited {result.returncode}:\n{tail}")
    return result
