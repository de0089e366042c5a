"""The real console scripts as separate processes: ``posgw serve`` (uvloop),
``posgw`` commands, ``posgw-sim``, /healthz, /metrics, and SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import sys
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from bench.procs import free_port
from sim.load import LoadOptions, World, run_load
from tests.conftest import TEST_LMK

BIN = Path(sys.executable).parent


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


class Workers:
    """``posgw serve --workers 2`` in a session of its own (a failing test kills
    the workers too), its stderr (both workers') read line by line."""

    def __init__(self, server: asyncio.subprocess.Process) -> None:
        self.server = server
        self.lines: list[bytes] = []
        self.drainer = asyncio.create_task(self._drain())

    @classmethod
    async def start(cls, env: dict[str, str], port: int, metrics_port: int) -> Workers:
        server = await asyncio.create_subprocess_exec(
            str(BIN / "posgw"), "serve", "--workers", "2", "--host", "127.0.0.1", "--port", str(port),
            "--metrics-port", str(metrics_port), env=env, stderr=asyncio.subprocess.PIPE, start_new_session=True)
        return cls(server)

    async def _drain(self) -> None:
        while line := await self.server.stderr.readline():
            self.lines.append(line)

    async def listening(self) -> list[dict]:
        """The two workers' ``listening`` lines, once both are up."""
        while True:
            found = [json.loads(line) for line in self.lines if b'"listening"' in line]
            if len(found) == 2:
                return found
            await asyncio.sleep(0.05)

    async def close(self) -> None:
        """Kill what is left of the session: the parent, and workers that outlived it."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.server.pid, signal.SIGKILL)
        await asyncio.wait_for(self.server.wait(), 30)  # (it returns once the workers let go of stderr too)
        self.drainer.cancel()


def gone(pid: int) -> bool:
    """Whether a process has exited (a zombie waiting for its reaper counts as gone)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


@pytest.mark.slow
async def test_serve_with_two_workers_shares_the_port_and_the_metrics_and_writes_whole_log_lines(db_url, tmp_path):
    env = env_for(db_url, tmp_path)
    code, out, err = await run(str(BIN / "posgw"), "demo", "--terminals", "20", "--cards", "20", "--json", env=env)
    assert code == 0, err
    world = World.from_json(json.loads(out))
    port, metrics_port = free_port(), free_port()
    workers = await Workers.start(env, port, metrics_port)
    try:
        listening = await asyncio.wait_for(workers.listening(), 60)
        assert [line["port"] for line in listening] == [port, port]
        assert len({line["pid"] for line in listening}) == 2
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
        workers.server.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(workers.server.wait(), 30) == 0
        await asyncio.wait_for(workers.drainer, 10)
    finally:
        await workers.close()
    # Every line whole: one JSON object each, however the two workers' writes met.
    events = [json.loads(line) for line in workers.lines]
    assert sum(1 for e in events if e["event"] == "txn" and e["kind"] == "purchase") == report["requests"]


@pytest.mark.slow
async def test_workers_stop_when_their_parent_is_killed(db_url, tmp_path):
    env = env_for(db_url, tmp_path)
    port, metrics_port = free_port(), free_port()
    workers = await Workers.start(env, port, metrics_port)
    try:
        pids = [line["pid"] for line in await asyncio.wait_for(workers.listening(), 60)]
        assert workers.server.pid not in pids and not any(gone(pid) for pid in pids)
        workers.server.kill()  # SIGKILL: nothing of the parent runs, its children are not told

        async def all_gone() -> None:
            while not all(gone(pid) for pid in pids):
                await asyncio.sleep(0.05)

        await asyncio.wait_for(all_gone(), 30)
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=5).close()
        await asyncio.wait_for(workers.drainer, 10)  # the workers' own stop, in their last lines
        assert [json.loads(line)["event"] for line in workers.lines].count("stopped") == 2
    finally:
        await workers.close()
