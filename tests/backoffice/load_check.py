"""The back office's load check (issue 26): does a crowd on the dashboard move the gateway's p99?

Not a test (no timed assertion; the figures depend on the machine): a script that
prints them. On a fresh embedded PostgreSQL under a temporary data dir it seeds
the demo world, starts ``posgw serve`` (risk rules off, as the bench) and
``posgw web`` (reading the gateway's /metrics), then runs the bench's open loop
of purchases twice, ``--rate`` a second for ``--duration`` seconds after a warm-up:
alone, and with ``--users`` back office users each loading the dashboard and
its figures every ``--every`` seconds. It prints both runs' latency of the
gateway (from ``posgw-sim load``) and the dashboard's own response times.

    .venv/bin/python -m tests.backoffice.load_check [--rate 1500] [--duration 15] [--users 20]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import signal
import socket
import statistics
import sys
import tempfile
import time
import urllib.parse
from pathlib import Path

import httpx

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def run(*argv: str, env: dict[str, str], timeout_s: float = 600) -> str:
    proc = await asyncio.create_subprocess_exec(*argv, env=env, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), timeout_s)
    if proc.returncode != 0:
        raise RuntimeError(f"{argv[1:3]} exited {proc.returncode}: {err.decode()[-2000:]}")
    return out.decode()


async def wait_http(url: str, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    async with httpx.AsyncClient() as client:
        while time.monotonic() < deadline:
            try:
                if (await client.get(url)).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.2)
    raise RuntimeError(f"{url} never answered")


async def logged_in(client: httpx.AsyncClient, password: str) -> str:
    """The session cookie of admin (sent by hand: httpx keeps Secure cookies for https only)."""
    form = await client.get("/login")
    csrf = re.search(r'name="csrf" value="([^"]+)"', form.text).group(1)
    response = await client.post("/login", content=urllib.parse.urlencode(
        {"csrf": csrf, "name": "admin", "password": password}), headers={
        "cookie": form.headers["set-cookie"].split(";")[0], "content-type": "application/x-www-form-urlencoded"})
    assert response.status_code == 303, response.text
    return response.headers["set-cookie"].split(";")[0]


async def dashboard_user(base_url: str, cookie: str, every_s: float, stop: asyncio.Event,
                         times_s: list[float], errors: list[str]) -> None:
    async with httpx.AsyncClient(base_url=base_url, headers={"cookie": cookie}, timeout=30) as client:
        while not stop.is_set():
            for path in ("/dashboard", "/dashboard/figures"):
                started = time.perf_counter()
                try:
                    response = await client.get(path)
                    if response.status_code != 200:
                        errors.append(f"{path}: {response.status_code}")
                except httpx.HTTPError as exc:
                    errors.append(f"{path}: {type(exc).__name__}")
                times_s.append(time.perf_counter() - started)
            try:
                await asyncio.wait_for(stop.wait(), every_s)
            except TimeoutError:
                pass


def percentile_ms(values: list[float], p: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))] * 1000, 1)


async def open_loop(env: dict[str, str], port: int, world: Path, args: argparse.Namespace) -> dict:
    out = await run(str(BIN / "posgw-sim"), "load", "--host", "127.0.0.1", "--port", str(port), "--world",
                    str(world), "--rate", str(args.rate), "--duration", str(args.duration), "--warmup",
                    str(args.warmup), "--mix", "purchase=100", "--json", "--quiet", env=env)
    return json.loads(out)


async def main(args: argparse.Namespace) -> int:
    data_dir = Path(tempfile.mkdtemp(prefix="posgw-web-load-"))
    env = dict(os.environ, POSGW_DATA_DIR=str(data_dir), POSGW_RISK_ENABLED="false", POSGW_LOG_LEVEL="warning")
    env.pop("POSGW_DATABASE_URL", None)
    processes: list[asyncio.subprocess.Process] = []
    try:
        await run(str(BIN / "posgw"), "db", "migrate", env=env)
        world = data_dir / "world.json"
        world.write_text(await run(str(BIN / "posgw"), "demo", "--terminals", str(args.terminals), "--cards",
                                   str(args.cards), "--json", env=env))
        port, metrics_port, web_port = free_port(), free_port(), free_port()
        processes.append(await asyncio.create_subprocess_exec(
            str(BIN / "posgw"), "serve", "--host", "127.0.0.1", "--port", str(port), "--metrics-port",
            str(metrics_port), env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL))
        web_env = dict(env, POSGW_WEB_GATEWAY_METRICS_URLS=json.dumps([f"http://127.0.0.1:{metrics_port}/metrics"]))
        web = await asyncio.create_subprocess_exec(
            str(BIN / "posgw"), "web", "--demo-admin", "--port", str(web_port), env=web_env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL)
        processes.append(web)
        password = re.search(r"password (\S+) ", (await web.stdout.readline()).decode()).group(1)
        await wait_http(f"http://127.0.0.1:{metrics_port}/healthz")
        await wait_http(f"http://127.0.0.1:{web_port}/healthz")

        alone = await open_loop(env, port, world, args)
        base_url = f"http://127.0.0.1:{web_port}"
        async with httpx.AsyncClient(base_url=base_url) as client:
            cookies = [await logged_in(client, password) for _ in range(args.users)]
        stop, times_s, errors = asyncio.Event(), [], []
        users = [asyncio.create_task(dashboard_user(base_url, cookie, args.every, stop, times_s, errors))
                 for cookie in cookies]
        crowded = await open_loop(env, port, world, args)
        stop.set()
        await asyncio.gather(*users)
        print(json.dumps({
            "rate_per_s": args.rate, "duration_s": args.duration, "users": args.users, "every_s": args.every,
            "gateway_alone": alone, "gateway_with_dashboard_users": crowded,
            "dashboard": {"requests": len(times_s), "errors": len(errors), "p50_ms": percentile_ms(times_s, 50),
                          "p99_ms": percentile_ms(times_s, 99),
                          "mean_ms": round(statistics.fmean(times_s) * 1000, 1) if times_s else None},
        }, indent=2))
        return 0
    finally:
        for process in processes:
            if process.returncode is None:
                process.send_signal(signal.SIGTERM)
                await asyncio.wait_for(process.wait(), 30)
        await run(str(BIN / "posgw"), "db", "stop", env=env)
        shutil.rmtree(data_dir, ignore_errors=True)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=int, default=1500)
    parser.add_argument("--duration", type=int, default=15)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--users", type=int, default=20)
    parser.add_argument("--every", type=float, default=1.0, help="seconds between one user's refreshes")
    parser.add_argument("--terminals", type=int, default=200)
    parser.add_argument("--cards", type=int, default=2000)
    return parser.parse_args()


if __name__ == "__main__":
    sys.exit(asyncio.run(main(parse_args())))
