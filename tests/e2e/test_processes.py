"""The real console scripts as separate processes: ``posgw serve`` (uvloop),
``posgw`` commands, ``posgw-sim``, /healthz, /metrics, and SIGTERM."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from sim.load import LoadOptions, World, run_load
from tests.conftest import TEST_LMK

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def env_for(db_url: str, data_dir: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(POSGW_DATABASE_URL=db_url, POSGW_DATA_DIR=str(data_dir), POSGW_LMK=TEST_LMK,
               POSGW_LOG_FORMAT="json")
    return env


async def run(*argv: str, env: dict[str, str]) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(*argv, env=env, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode, out.decode(), err.decode()


def http_get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


@pytest.mark.slow
async def test_posgw_serve_signs_on_a_demo_terminal_reports_health_and_exits_0_on_sigterm(db_url, tmp_path):
    env = env_for(db_url, tmp_path)
    code, out, err = await run(str(BIN / "posgw"), "demo", "--json", env=env)
    assert code == 0, err
    demo = json.loads(out)
    terminal = demo["terminals"][0]
    port, metrics_port = free_port(), free_port()
    server = await asyncio.create_subprocess_exec(
        str(BIN / "posgw"), "serve", "--host", "127.0.0.1", "--port", str(port),
        "--metrics-port", str(metrics_port), env=env, stderr=asyncio.subprocess.PIPE)
    try:
        listening = await asyncio.wait_for(server.stderr.readline(), 30)
        assert json.loads(listening)["event"] == "listening"
        assert json.loads(listening)["port"] == port
        code, out, err = await run(
            str(BIN / "posgw-sim"), "signon", "--port", str(port), "--tid", terminal["tid"],
            "--mid", terminal["mid"], "--tmk", terminal["tmk"], "--json", env=env)
        assert code == 0, err
        result = json.loads(out)
        assert result["response_code"] == "00" and result["keys_checked"] is True
        assert terminal["tmk"] not in out
        status, body = await asyncio.to_thread(http_get, metrics_port, "/healthz")
        assert status == 200
        status, body = await asyncio.to_thread(http_get, metrics_port, "/metrics")
        assert status == 200
        assert 'posgw_requests_total{kind="signon",mti="0800",response_code="00"} 1.0' in body
        server.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(server.wait(), 30) == 0
    finally:
        if server.returncode is None:
            server.kill()
            await server.wait()
    code, out, err = await run(str(BIN / "posgw"), "terminal", "show", terminal["tid"], "--json", env=env)
    assert json.loads(out)["signed_on"] is True


@pytest.mark.slow
async def test_posgw_exit_code_2_for_bad_input_from_the_console_script(db_url, tmp_path):
    code, out, err = await run(str(BIN / "posgw"), "agent", "show", "NOBODY", env=env_for(db_url, tmp_path))
    assert code == 2 and out == ""
    assert err.strip().splitlines()[-1] == "posgw: error: unknown agent NOBODY"


@pytest.mark.slow
async def test_serve_with_two_workers_shares_the_port_and_the_metrics_and_writes_whole_log_lines(db_url, tmp_path):
    env = env_for(db_url, tmp_path)
    code, out, err = await run(str(BIN / "posgw"), "demo", "--terminals", "20", "--cards", "20", "--json", env=env)
    assert code == 0, err
    world = World.from_json(json.loads(out))
    port, metrics_port = free_port(), free_port()
    server = await asyncio.create_subprocess_exec(  # a session of its own: a failing test kills the workers too
        str(BIN / "posgw"), "serve", "--workers", "2", "--host", "127.0.0.1", "--port", str(port),
        "--metrics-port", str(metrics_port), env=env, stderr=asyncio.subprocess.PIPE, start_new_session=True)
    lines: list[bytes] = []

    async def drain() -> None:  # the two workers' stderr, as one pipe
        while line := await server.stderr.readline():
            lines.append(line)

    async def both_listening() -> None:
        while sum(b'"listening"' in line for line in lines) < 2:
            await asyncio.sleep(0.05)

    drainer = asyncio.create_task(drain())
    try:
        await asyncio.wait_for(both_listening(), 60)
        report = (await run_load(world, LoadOptions(host="127.0.0.1", port=port, duration_s=2.0,
                                                    mix={"purchase": 100}, timeout_s=5.0, seed=3))).to_dict()
        assert report["errors_total"] == 0, report["errors"]
        assert report["answered"] == report["requests"] > 20
        metrics = (await asyncio.to_thread(http_get, metrics_port, "/metrics"))[1]
        # Either worker's /metrics counts both workers' answers, code by code.
        by_code = {sample.labels["response_code"]: int(sample.value)
                   for family in text_string_to_metric_families(metrics) for sample in family.samples
                   if sample.name == "posgw_requests_total" and sample.labels["kind"] == "purchase"}
        assert by_code == report["by_code"]
        server.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(server.wait(), 30) == 0
        await asyncio.wait_for(drainer, 10)
    finally:
        if server.returncode is None:
            os.killpg(server.pid, signal.SIGKILL)
            await server.wait()
        drainer.cancel()
    # Every line whole: one JSON object each, however the two workers' writes met.
    events = [json.loads(line) for line in lines]
    assert [e["port"] for e in events if e["event"] == "listening"] == [port, port]
    assert sum(1 for e in events if e["event"] == "txn" and e["kind"] == "purchase") == report["requests"]
