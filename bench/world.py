"""The bench's world and the machine it runs on: a fresh data dir with the embedded
PostgreSQL, migrated and seeded (``posgw demo``); the machine, its disk, the git
checkout; PostgreSQL's settings, its WAL made ready, and what it does in the
background (autovacuum, checkpoints, writes) during each scenario."""

from __future__ import annotations

import asyncio
import contextlib
import os
import platform
import re
import shutil
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg

from bench.config import (
    CARDS,
    DATA,
    FLOAT_TOPUP_YUAN,
    LOGS,
    POSGW,
    ROOT,
    TERMINAL_PAST_DAILY,
    TERMINALS,
    WAL_PREALLOCATED_MB,
    WORLD,
    run,
    say,
)
from gateway.db.pool import database_url
from gateway.domain.demo import DEMO_AGENT, demo_tid
from gateway.settings import Settings
from sim.load.stats import latency_summary  # the simulator's percentiles (nearest rank), for like with like


def setup(env: dict[str, str]) -> dict[str, Any]:
    """A fresh data dir: the embedded PostgreSQL migrated, 200 terminals and 10,000 cards seeded."""
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
    run([POSGW, "agent", "topup", DEMO_AGENT, str(FLOAT_TOPUP_YUAN), "--json"], env=env)
    past = seed_terminal_past([demo_tid(index) for index in range(1, TERMINALS + 1)])
    say(f"agent {DEMO_AGENT}'s float topped up by {FLOAT_TOPUP_YUAN:,} yuan; each terminal given a past of "
        f"{TERMINAL_PAST_DAILY} approvals a day over the last 30 days ({past} risk counters)")
    return {"migrate_s": round(migrate_s, 2), "demo_s": round(demo_s, 2), "terminals": TERMINALS, "cards": CARDS,
            "float_topup_yuan": FLOAT_TOPUP_YUAN, "terminal_past_daily": TERMINAL_PAST_DAILY}


def seed_terminal_past(tids: list[str]) -> int:
    """Each terminal's approvals over the 30 days before today (risk_counters), as a terminal in
    service has them: the spike rule compares a day with that past (config/risk.toml). Seeded,
    not sent: the days are past. Today is the gateway's local day, as the gateway counts it."""
    today = Settings().today()

    async def work(conn: Any) -> int:
        await conn.execute(
            """INSERT INTO risk_counters (scope, owner, day, count, amount_fen)
               SELECT 'terminal', tid, $2::date - d, $3, $3 * 5 FROM unnest($1::text[]) tid, generate_series(1, 30) d
               ON CONFLICT DO NOTHING""", tids, today, TERMINAL_PAST_DAILY)
        return await conn.fetchval("SELECT count(*) FROM risk_counters WHERE scope = 'terminal'")

    return on_postgres(work)


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
        at = datetime.strptime(found[1], "%Y-%m-%d %H:%M:%S.%f").replace(tzinfo=UTC).timestamp()
        during = next((name for name, start, end in windows if start <= at <= end), None)
        events.append({"at": found[1], "event": found[2], "table": found[3], "scenario": during})
    return events


def git_info() -> dict[str, Any]:
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    status = subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True)
    changed = [line[3:] for line in status.stdout.splitlines()]
    return {"commit": head.stdout.strip() or None, "uncommitted_files": len(changed),
            "uncommitted_gateway_files": sorted(f for f in changed if f.startswith("gateway/"))}
