"""The running gateway: services, terminal server, metrics/health endpoint, signals."""

from __future__ import annotations

import asyncio
import gc
import os
import signal
from collections.abc import Awaitable, Callable

import structlog
from prometheus_client import CONTENT_TYPE_LATEST, Gauge, generate_latest

from gateway import metrics
from gateway.acquiring import store
from gateway.acquiring.context import Services
from gateway.acquiring.context_cache import ContextCache
from gateway.acquiring.expiry import expire_holds
from gateway.acquiring.processor import Processor
from gateway.acquiring.risk import load_defaults as load_risk_defaults
from gateway.acquiring.router import Route, route
from gateway.acquiring.rrn import RrnAllocator
from gateway.db.migrate import check_migrated
from gateway.db.pool import create_pool, fetchval_retrying
from gateway.domain import ic
from gateway.jobs.daily import run_daily
from gateway.keys import SoftHsm, load_lmk
from gateway.reports import views as reports
from gateway.server import db_gauges
from gateway.server.tcp import GatewayServer
from gateway.settings import Settings, config_dir
from gateway.upstream.billers import Connectors
from gateway.upstream.outbox import Forwarder, ForwarderSettings
from ledger.accounts import FEE_INCOME_ACCOUNT_CODE
from protocol.messages import Message

log = structlog.get_logger("posgw.app")

HEALTH_DB_TIMEOUT_S = 2.0
# The biller outbox's forwarder has a pool of its own: its rounds (and a burst of failed
# sends' updates while a biller is down) never take a connection a terminal's request waits for.
FORWARDER_POOL_MAX = 2


async def build_services(settings: Settings, database_url: str | None = None) -> Services:
    pool = await create_pool(settings, database_url, init=store.Store.warm_up)
    try:
        async with pool.acquire() as conn:
            await check_migrated(conn)
        lmk = load_lmk(settings.lmk.get_secret_value() if settings.lmk else None, settings.data_dir)
    except BaseException:
        await pool.close()
        raise

    async def reserve_rrn_block() -> int:
        return await pool.fetchval("SELECT nextval('rrn_block_seq')")

    fee_account_id = await pool.fetchval("SELECT id FROM ledger_accounts WHERE code = $1", FEE_INCOME_ACCOUNT_CODE)
    return Services(settings, pool, SoftHsm(lmk), RrnAllocator(reserve_rrn_block), fee_account_id,
                    Connectors(pool, settings.biller_timeout_s, settings.biller_connections_max),
                    load_risk_defaults(config_dir()),
                    ContextCache(settings.context_cache_entries), store.Store(pool))


class Gateway:
    """One gateway process: start it, await ``serve_until_stopped``, or stop it.
    Each runs the biller outbox's forwarder (gateway.upstream.outbox) over a
    small pool of its own; any number of gateways (and ``--workers``) share the
    outbox through the database."""

    def __init__(self, settings: Settings, services: Services, router: Callable[[Message], Route] = route, *,
                 list_prompts: bool = True) -> None:
        self.settings = settings
        self.services = services
        self.processor = Processor(services, router, list_prompts=list_prompts)
        self.server = GatewayServer(settings, self.processor.handle)
        self._http: asyncio.base_events.Server | None = None
        self._stopped = asyncio.Event()
        self.forwarder: Forwarder | None = None
        self._expiry: asyncio.Task[None] | None = None  # pre-authorizations' holds (gateway.acquiring.expiry)

    async def start(self, host: str, port: int, metrics_port: int | None, *, reuse_port: bool = False) -> None:
        await self.server.start(host, port, reuse_port=reuse_port)
        if metrics_port is not None:
            self._http = await asyncio.start_server(self._serve_http, host, metrics_port,
                                                    reuse_port=reuse_port or None)
        await self._start_forwarder()
        self._expiry = asyncio.create_task(expire_holds(self.services.pool, self.settings))
        log.info("listening", host=host, port=self.server.port, metrics_port=self.metrics_port, pid=os.getpid())

    async def _start_forwarder(self) -> None:
        pool = await create_pool(self.settings.model_copy(update={"db_pool_min": 1, "db_pool_max": FORWARDER_POOL_MAX}))
        self.forwarder = Forwarder(pool, self.services.connectors, ForwarderSettings.from_settings(self.settings))
        self.forwarder.start()

    async def _stop_forwarder(self) -> None:
        """After the requests: what they queued is in the table, sent by any gateway still running, or the next."""
        if self.forwarder is not None:
            forwarder, self.forwarder = self.forwarder, None
            await forwarder.stop()
            await forwarder.pool.close()

    @property
    def metrics_port(self) -> int | None:
        return self._http.sockets[0].getsockname()[1] if self._http else None

    async def healthy(self) -> tuple[bool, bytes]:
        """(healthy, why): a primary answers within HEALTH_DB_TIMEOUT_S and the gateway
        is not stopping. A standby (read-only, in recovery) is no primary: while a
        failover runs there is none, and /healthz says 503. The pool replaces
        connections the database dropped (a pooled one whose server went is read
        once more on a fresh one), so health comes back with the new primary."""
        try:
            in_recovery = await asyncio.wait_for(
                fetchval_retrying(self.services.pool, "SELECT pg_is_in_recovery()"), HEALTH_DB_TIMEOUT_S)
        except Exception as exc:  # any failure (refused, dropped, timed out): unhealthy, never a failed request
            log.warning("health_check_failed", error=f"{type(exc).__name__}: {exc}")
            return False, b"database unavailable\n"
        if in_recovery:
            log.warning("health_check_failed", error="the database is a standby: no primary")
            return False, b"no primary: the database is a standby\n"
        if self.server.stopping:
            return False, b"stopping\n"
        return True, b"ok\n"

    async def refresh_db_gauges(self) -> None:
        """Gauges read from the database, each on its own: a failed read keeps its last value."""
        pool, settings = self.services.pool, self.settings
        readings = (
            ("agents_float_below_threshold", metrics.AGENTS_FLOAT_BELOW_THRESHOLD,
             lambda: reports.agents_float_below(pool, settings.float_low_threshold_fen)),
            ("batches_unbalanced", metrics.BATCHES_UNBALANCED, lambda: reports.batches_unbalanced(pool)),
        )

        async def refresh(name: str, gauge: Gauge, read: Callable[[], Awaitable[int]]) -> None:
            try:
                gauge.set(await asyncio.wait_for(read(), HEALTH_DB_TIMEOUT_S))
            except Exception as exc:  # never fail the scrape
                log.warning("metrics_refresh_failed", metric=name, error=str(exc) or type(exc).__name__)

        async def refresh_broken_devices() -> None:
            try:
                counts = await asyncio.wait_for(ic.broken_device_counts(pool), HEALTH_DB_TIMEOUT_S)
            except Exception as exc:  # never fail the scrape
                log.warning("metrics_refresh_failed", metric="terminals_device_broken",
                            error=str(exc) or type(exc).__name__)
                return
            for device, count in counts.items():
                metrics.TERMINALS_DEVICE_BROKEN.labels(device=device).set(count)

        db_gauges.record_pool_usage(pool)  # before the reads below take connections
        await asyncio.gather(*(refresh(*reading) for reading in readings), refresh_broken_devices(),
                             db_gauges.refresh(pool, HEALTH_DB_TIMEOUT_S))

    async def _serve_http(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request_line = await asyncio.wait_for(reader.readline(), 5)
            while (await asyncio.wait_for(reader.readline(), 5)) not in (b"\r\n", b"\n", b""):
                pass
            parts = request_line.decode("latin-1").split()
            path = parts[1].split("?", 1)[0] if len(parts) >= 2 else ""
            if path == "/metrics":
                await self.refresh_db_gauges()
                status, ctype, body = "200 OK", CONTENT_TYPE_LATEST, generate_latest(metrics.registry())
            elif path == "/healthz":
                ok, body = await self.healthy()
                status = "200 OK" if ok else "503 Service Unavailable"
                ctype = "text/plain"
            else:
                status, ctype, body = "404 Not Found", "text/plain", b"not found\n"
            writer.write(
                f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
                f"Connection: close\r\n\r\n".encode() + body
            )
            await writer.drain()
        except (TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()

    async def stop(self) -> None:
        if self._expiry is not None:
            self._expiry.cancel()
            await asyncio.gather(self._expiry, return_exceptions=True)
        if self._http is not None:
            self._http.close()
        await self.server.stop(self.settings.shutdown_grace_s)
        await self._stop_forwarder()
        await self.services.connectors.close()
        await self.services.pool.close()
        self._stopped.set()

    async def serve_until_signalled(self) -> None:
        loop = asyncio.get_running_loop()
        stop_requested = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop_requested.set)
        await stop_requested.wait()
        log.info("stopping", grace_s=self.settings.shutdown_grace_s)
        await self.stop()
        log.info("stopped")


async def run(settings: Settings, host: str, port: int, metrics_port: int, *, reuse_port: bool = False,
              wire_only: bool = False) -> None:
    services = await build_services(settings)
    router = route
    if wire_only:
        from gateway.acquiring.wire_only import load_terminals, wire_only_router

        router = wire_only_router(await load_terminals(services.pool))
        log.warning("wire_only", detail="benchmark baseline: sign-on and echo from memory, all else 12")
    gateway = Gateway(settings, services, router, list_prompts=not wire_only)
    await gateway.start(host, port, metrics_port, reuse_port=reuse_port)
    # The day's agent run and payout run, once across gateways (gateway.jobs.daily).
    daily_runs = None if wire_only else asyncio.create_task(run_daily(services.pool, settings))
    # What start-up built lives as long as the process: keep it out of the
    # collector's full passes, whose pauses grow with the objects it tracks.
    gc.freeze()
    try:
        await gateway.serve_until_signalled()
    finally:
        if daily_runs is not None:
            daily_runs.cancel()
            await asyncio.gather(daily_runs, return_exceptions=True)


_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def _stop_with_parent() -> Callable[[], None] | None:
    """What a worker runs before its program (``preexec_fn``): ask the kernel
    for SIGTERM when its parent dies, however it dies (SIGKILL included), so
    that no orphaned worker goes on serving the shared port beside the next
    gateway. None where there is no prctl (not Linux)."""
    import ctypes

    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except AttributeError:
        return None
    parent = os.getpid()

    def arm() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:  # the parent died before the line above
            os.kill(os.getpid(), signal.SIGTERM)

    return arm


def run_workers(argv: list[str], workers: int) -> int:
    """``posgw serve --workers N``: N gateway processes sharing the terminal
    and metrics ports (SO_REUSEPORT), their metrics kept in one directory so
    that a scrape of any worker covers all. SIGTERM/SIGINT are passed on, and
    a worker whose parent dies is sent SIGTERM; the exit code is 0 when every
    worker drained and exited 0."""
    import subprocess
    import sys
    import tempfile

    with tempfile.TemporaryDirectory(prefix="posgw-metrics-") as metrics_dir:
        env = dict(os.environ, PROMETHEUS_MULTIPROC_DIR=metrics_dir)
        children = [subprocess.Popen([sys.executable, "-m", "gateway.cli.main", *argv, "--reuse-port"], env=env,
                                     preexec_fn=_stop_with_parent())
                    for _ in range(workers)]

        def pass_on(signum: int, _frame: object) -> None:
            for child in children:
                if child.poll() is None:
                    child.send_signal(signum)

        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, pass_on)
        codes = [child.wait() for child in children]
    return 0 if all(code == 0 for code in codes) else 1
