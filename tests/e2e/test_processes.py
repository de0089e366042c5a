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
