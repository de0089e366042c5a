"""``posgw-sim load`` with refunds and pre-authorizations (issue 21) against a real gateway
over real sockets, through the command-line entry point: ``--check`` stays money-exact
(holds count against the available balance, refunds give back), with and without
dropped connections (the reversals owed are still sent at the end)."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

import pytest

from tests.conftest import TEST_LMK

BIN = Path(sys.executable).parent


@pytest.fixture
async def demo_world(cli, tmp_path, monkeypatch, db_url) -> Path:
    """``posgw demo`` (4 terminals, 4 cards), its JSON as the world, and the environment the
    operator CLI that ``--check`` runs needs to reach the same database."""
    result = await cli("demo", "--terminals", "4", "--cards", "4", "--json")
    assert result.code == 0, result.stderr
    path = tmp_path / "world.json"
    path.write_text(result.stdout)
    for name, value in (("POSGW_DATABASE_URL", db_url), ("POSGW_DATA_DIR", str(tmp_path)),
                        ("POSGW_LMK", TEST_LMK), ("POSGW_RISK_ENABLED", "false")):
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("PATH", f"{BIN}:{os.environ['PATH']}")
    return path


async def load(gateway, world: Path, *argv: str) -> tuple[int, dict]:
    """``posgw-sim load ... --check`` as a process of its own; its exit code and JSON report."""
    process = await asyncio.create_subprocess_exec(
        str(BIN / "posgw-sim"), "load", "--port", str(gateway.server.port), "--world", str(world), "--quiet",
        "--json", "--check", *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(process.communicate(), 120)
    assert out, err.decode()
    return process.returncode or 0, json.loads(out)


async def assert_ledger_clean(cli) -> None:
    result = await cli("ledger", "check", "--json")
    assert result.code == 0, result.stdout + result.stderr


@pytest.mark.slow
async def test_a_load_with_refunds_and_preauths_is_money_exact(gateway, cli, demo_world):
    code, report = await load(gateway, demo_world, "--mix", "purchase=60,refund=10,preauth=30",
                              "--duration", "3", "--amount", "0.50-5.00", "--seed", "21")
    assert code == 0, report["check"]
    types = report["by_type"]
    assert types["refund"]["approved"] > 0 and types["preauth"]["approved"] > 0, types
    assert report["check"]["ok"] is True and report["check"]["cards"] == 4
    assert report["errors_total"] == 0, report["errors"]
    await assert_ledger_clean(cli)
    held = [(await cli("card", "show", card["pan"], "--json")).json["holds_fen"]
            for card in json.loads(demo_world.read_text())["cards"]]
    assert sum(held) > 0  # the pre-authorizations still open at the end hold their amounts


@pytest.mark.slow
async def test_dropped_refunds_and_preauths_are_reversed_and_the_check_stays_exact(gateway, cli, demo_world):
    code, report = await load(gateway, demo_world, "--mix", "purchase=60,refund=10,preauth=30",
                              "--duration", "3", "--amount", "0.50-5.00", "--faults", "drop=10", "--seed", "7")
    assert code == 0, report["check"]
    assert report["faults"]["drop"]["reversals_needed"] > 0
    assert report["check"]["ok"] is True and report["check"]["in_doubt"] == []
    await assert_ledger_clean(cli)
