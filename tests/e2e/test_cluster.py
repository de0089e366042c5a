"""Scale-out as operators run it (deploy/cluster.py, what ``make cluster`` starts):
two ``posgw serve`` processes sharing one PostgreSQL, a real HAProxy in TCP mode
in front of them, a real Prometheus scraping both. One gateway is killed in the
middle of a load run: the terminals reconnect through the other, and no money is
lost or doubled."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import time
from pathlib import Path

import asyncpg
import pytest
import yaml

from bench.procs import free_ports
from deploy.cluster import Cluster, ClusterConfig, http_get
from tests.conftest import TEST_LMK

pytestmark = pytest.mark.slow

needs_haproxy_and_prometheus = pytest.mark.needs_tools("haproxy", "prometheus")

BIN = Path(sys.executable).parent
ALERTS = Path(__file__).resolve().parents[2] / "config" / "prometheus" / "alerts.yml"
TERMINALS = 16
AMOUNT_FEN = 5  # every purchase the same amount: the simulator's approvals are its money
APPROVED_PURCHASES = 'posgw_requests_total{job="posgw",kind="purchase",response_code="00"}'
# what a killed gateway may cost a terminal: a request without an answer (then its
# reversal), or a connection that could not be opened; nothing else
EXPECTED_ERRORS = {"disconnects", "timeouts", "connect_failures"}


async def wait_for(what: str, check, timeout_s: float, load: asyncio.subprocess.Process | None = None):
    """Poll ``check`` (blocking, run in a thread; it returns (done, what it saw)) until done."""
    deadline = time.monotonic() + timeout_s
    while True:
        done, seen = await asyncio.to_thread(check)
        if done:
            return seen
        if load is not None and load.returncode is not None:
            raise AssertionError(f"the load generator exited ({load.returncode}) while waiting for {what}")
        if time.monotonic() > deadline:
            raise AssertionError(f"no {what} after {timeout_s} s; last seen: {seen}")
        await asyncio.sleep(0.25)


def by_gateway(results: list[dict]) -> dict[str, float]:
    return {r["metric"].get("gateway", r["metric"].get("instance")): float(r["value"][1]) for r in results}


def gateway_counter(metrics_port: int) -> float:
    """Approved purchases straight from a gateway's /metrics."""
    status, body = http_get(f"http://127.0.0.1:{metrics_port}/metrics")
    assert status == 200
    total = 0.0
    for line in body.decode().splitlines():
        if line.startswith("posgw_requests_total{") and 'kind="purchase"' in line and 'response_code="00"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


async def card_money_fen(conn: asyncpg.Connection) -> int:
    return await conn.fetchval(
        "SELECT coalesce(sum(credits_posted - debits_posted), 0)::bigint FROM ledger_accounts WHERE kind = 'card'")


@needs_haproxy_and_prometheus
async def test_a_gateway_killed_under_load_loses_no_money_and_prometheus_scraped_both(db_url, tmp_path):
    port, gw1, gw2, m1, m2, stats, prom = free_ports(7)
    config = ClusterConfig(
        run_dir=tmp_path / "cluster", data_dir=tmp_path / "data", database_url=db_url, port=port,
        gateway_ports=(gw1, gw2), metrics_ports=(m1, m2), stats_port=stats, prometheus_port=prom,
        env={"POSGW_LMK": TEST_LMK, "POSGW_RISK_ENABLED": "false", "POSGW_LOG_FORMAT": "json"})
    cluster = Cluster(config)
    load = None
    conn = await asyncpg.connect(db_url)
    try:
        await asyncio.to_thread(cluster.start)
        demo = await asyncio.to_thread(cluster.posgw, "demo", "--terminals", str(TERMINALS), "--cards",
                                       str(TERMINALS), "--json")
        world = tmp_path / "world.json"
        world.write_text(demo.stdout)
        money_before = await card_money_fen(conn)

        load = await asyncio.create_subprocess_exec(
            str(BIN / "posgw-sim"), "load", "--host", "127.0.0.1", "--port", str(port), "--world", str(world),
            "--terminals", str(TERMINALS), "--duration", "120", "--mix", "purchase=1",
            "--amount", f"{AMOUNT_FEN / 100:.2f}", "--connect", "persistent", "--timeout", "5", "--json",
            "--quiet", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=cluster.env())

        # Prometheus has scraped approvals from both gateways: only then is one killed
        def both_scraped() -> tuple[bool, object]:
            seen = by_gateway(cluster.query(f"sum by (gateway) ({APPROVED_PURCHASES})"))
            done = set(seen) == {"gw1", "gw2"} and min(seen.values()) > 0
            return done, {"approved": seen, "up": by_gateway(cluster.query('up{job="posgw"}')),
                          "haproxy": cluster.servers()}

        await wait_for("approvals of both gateways in Prometheus", both_scraped, 40, load)

        assert cluster.stop_gateway(0, signal.SIGKILL) == -signal.SIGKILL
        killed_at = await conn.fetchval("SELECT clock_timestamp()")
        await asyncio.to_thread(cluster.wait_servers, {"gw1": "DOWN", "gw2": "UP"}, 10)
        gw2_at_kill = await asyncio.to_thread(gateway_counter, m2)

        # the load goes on through gw2 alone, and Prometheus sees it: gw1 down (its own
        # scrape fails, and HAProxy's exporter has it out of the backend), gw2 approving
        def gw1_down_and_gw2_going() -> tuple[bool, object]:
            up = by_gateway(cluster.query('up{job="posgw"}'))
            approved = by_gateway(cluster.query(f"sum by (gateway) ({APPROVED_PURCHASES})"))
            lb = {r["metric"]["server"]: float(r["value"][1])
                  for r in cluster.query('haproxy_server_status{proxy="gateways",state="UP"}')}
            done = (up == {"gw1": 0.0, "gw2": 1.0} and lb == {"gw1": 0.0, "gw2": 1.0}
                    and approved.get("gw2", 0) > gw2_at_kill)
            return done, {"up": up, "haproxy UP": lb, "approved": approved, "gw2_at_kill": gw2_at_kill}

        await wait_for("gw1 down and gw2 approving in Prometheus", gw1_down_and_gw2_going, 30, load)
        await asyncio.sleep(1.0)

        load.send_signal(signal.SIGINT)  # ends the run: in-flight requests and reversals complete
        out, err = await asyncio.wait_for(load.communicate(), 60)
        assert load.returncode == 0, err.decode()[-2000:]
        report = json.loads(out)

        # the terminals: all signed on, every error one a dying gateway explains
        assert report["signon"]["signed_on"] == TERMINALS
        errors = {name: n for name, n in report["errors"].items() if n}
        assert set(errors) <= EXPECTED_ERRORS, errors
        assert errors.get("disconnects", 0) + errors.get("timeouts", 0) >= 1, "the kill cut no request"
        assert set(report["by_code"]) == {"00"}, report["by_code"]
        # every purchase left without an answer was reversed, and every reversal answered 00
        reversals = report["reversals"]
        assert reversals["sent"] == errors.get("disconnects", 0) + errors.get("timeouts", 0)
        assert reversals["answered"] == reversals["sent"] and reversals["unanswered"] == 0
        assert set(reversals["by_code"]) <= {"00"}, reversals

        # the money: the simulator's approvals are exactly the purchases that stand
        approved = report["by_type"]["purchase"]["approved"]
        standing, standing_fen = await conn.fetchrow(
            "SELECT count(*), coalesce(sum(amount_fen), 0)::bigint FROM gw_transactions "
            "WHERE kind = 'purchase' AND status = 'approved'")
        assert standing == approved > 0
        assert standing_fen == approved * AMOUNT_FEN
        assert money_before - await card_money_fen(conn) == approved * AMOUNT_FEN
        check = await asyncio.to_thread(cluster.posgw, "ledger", "check", "--json")
        assert json.loads(check.stdout)["ok"] is True

        # every terminal went on after the kill, those that were on gw1 too
        continued = await conn.fetchval(
            "SELECT count(DISTINCT tid) FROM gw_transactions "
            "WHERE kind = 'purchase' AND status = 'approved' AND created_at > $1", killed_at)
        assert continued == TERMINALS

        # Prometheus scraped both gateways (and HAProxy) and saw gw1 go down
        assert by_gateway(cluster.query('max_over_time(up{job="posgw"}[5m])')) == {"gw1": 1.0, "gw2": 1.0}
        assert by_gateway(cluster.query('up{job="posgw"}')) == {"gw1": 0.0, "gw2": 1.0}
        scraped = by_gateway(cluster.query(f"sum by (gateway) (max_over_time({APPROVED_PURCHASES}[5m]))"))
        assert set(scraped) == {"gw1", "gw2"} and min(scraped.values()) > 0
        assert [float(r["value"][1]) for r in cluster.query('up{job="haproxy"}')] == [1.0]

        # it loaded the alert rules (make cluster copies config/prometheus/ beside prometheus.yml), every one
        # evaluates without error, and the one for a gateway down has caught gw1
        expected = {rule["alert"] for group in yaml.safe_load(ALERTS.read_text())["groups"]
                    for rule in group["rules"] if "alert" in rule}

        def gateway_down_alert() -> tuple[bool, object]:
            rules = {rule["name"]: rule for group in cluster.rules() for rule in group["rules"]
                     if rule["type"] == "alerting"}
            down = [alert["state"] for alert in rules.get("PosgwGatewayDown", {}).get("alerts", [])
                    if alert["labels"].get("gateway") == "gw1"]
            done = set(rules) == expected and all(rule["health"] == "ok" for rule in rules.values()) and bool(down)
            return done, {"loaded": sorted(rules), "unhealthy": {name: rule.get("lastError") for name, rule
                                                                 in rules.items() if rule["health"] != "ok"},
                          "gw1 down": down}

        await wait_for("the alert rules loaded and PosgwGatewayDown for gw1", gateway_down_alert, 30)
        assert len(expected) >= 13
        assert {group["file"] for group in cluster.rules()} == {str(config.run_dir / "prometheus" / "prometheus" /
                                                                    "alerts.yml")}
    finally:
        if load is not None and load.returncode is None:
            load.kill()
            await load.wait()
        await asyncio.to_thread(cluster.stop)
        await conn.close()


async def test_two_gateways_share_the_embedded_postgresql_which_the_cluster_stops_when_it_started_it(tmp_path):
    """``make cluster`` without a database URL: the embedded PostgreSQL (unix socket) under
    the data dir, one LMK file, both gateways serving; stopping the cluster stops them all."""
    port, gw1, gw2, m1, m2, stats, prom = free_ports(7)
    data = tmp_path / "data"
    config = ClusterConfig(
        run_dir=tmp_path / "cluster", data_dir=data, database_url=None, port=port, gateway_ports=(gw1, gw2),
        metrics_ports=(m1, m2), stats_port=stats, prometheus_port=prom, haproxy=None, prometheus=None,
        env={"POSGW_LOG_FORMAT": "json"})
    cluster = Cluster(config)
    try:
        await asyncio.to_thread(cluster.start)
        assert cluster.started_database and (data / "pg" / "postmaster.pid").exists()
        assert (data / "lmk.key").stat().st_mode & 0o077 == 0
        demo = json.loads((await asyncio.to_thread(cluster.posgw, "demo", "--json")).stdout)
        terminal = demo["terminals"][0]
        for gateway_port in (gw1, gw2):  # keys issued by either gateway are the other's too
            proc = await asyncio.create_subprocess_exec(
                str(BIN / "posgw-sim"), "signon", "--port", str(gateway_port), "--tid", terminal["tid"],
                "--mid", terminal["mid"], "--tmk", terminal["tmk"], "--json", env=cluster.env(),
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
            out, err = await asyncio.wait_for(proc.communicate(), 30)
            assert proc.returncode == 0, err.decode()
            assert json.loads(out)["response_code"] == "00"
        assert "not installed" in cluster.describe() and cluster.terminal_port == gw1
    finally:
        await asyncio.to_thread(cluster.stop)
    codes = [child.returncode for child in cluster.gateways]
    assert codes == [0, 0], [child.tail() for child in cluster.gateways]  # SIGTERM: drained, exit 0
    assert not (data / "pg" / "postmaster.pid").exists()
