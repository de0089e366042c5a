"""The Grafana dashboard (deploy/grafana/dashboards/posgw.json) and its provisioning.
Grafana itself is not installable here (no Debian package), so its schema check
cannot run: the JSON is checked instead. It parses and has the panels an operator
watches (issue 27); the panels lie on Grafana's 24-column grid without overlap;
every query names the provisioned datasource, reads only metrics the gateway
exports (or `up`), parses under promtool, and runs on a real Prometheus scraping a
real gateway."""

from __future__ import annotations

import asyncio
import json
import math
import re
import urllib.parse
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.promql import (
    check_expressions,
    exported_metric_names,
    metric_names_in,
    prometheus_scraping,
    wait_for,
    with_grafana_variables,
)
from tests.e2e.helpers import terminal_for

REPO = Path(__file__).resolve().parents[2]
GRAFANA = REPO / "deploy" / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "posgw.json"
DATASOURCES = GRAFANA / "provisioning" / "datasources" / "prometheus.yml"
PROVIDERS = GRAFANA / "provisioning" / "dashboards" / "posgw.yml"
README = GRAFANA / "README.md"
COMPOSE = REPO / "docker-compose.yml"
TARGETS = REPO / "config" / "prometheus-targets" / "posgw.json"
GRID_COLUMNS = 24
PANEL_TYPES = {"row", "timeseries", "stat"}

# What issue 27 says an operator watches, by the metrics a panel must read for it, and
# words of its title. The store-and-forward queue has no metric yet: no panel.
WATCHED = {
    "throughput by type": ({"posgw_requests_total"}, "by type"),
    "throughput by code": ({"posgw_requests_total"}, "by code"),
    "latency": ({"posgw_request_latency_seconds_bucket"}, "latency p99"),
    "declines": ({"posgw_requests_total"}, "declines"),
    "floats below threshold": ({"posgw_agents_float_below_threshold"}, "float below threshold"),
    "unbalanced batches": ({"posgw_batches_unbalanced"}, "unbalanced batches"),
    "replication lag": ({"posgw_db_replication_lag_seconds", "posgw_db_replication_lag_bytes"}, "replication lag"),
    "pool waits": ({"posgw_db_pool_acquire_seconds"}, "pool wait"),
    "pool connections": ({"posgw_db_pool_connections_in_use", "posgw_db_pool_connections_max"}, "pool connections"),
    "primary": ({"posgw_db_primary"}, "primary reachable"),
}

# The template variable's values when the queries are checked: every gateway.
TEMPLATE_VALUES = {"$gateway": ".*"}


def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def panels() -> list[dict[str, Any]]:
    return [panel for panel in dashboard()["panels"] if panel["type"] != "row"]


def expressions() -> list[str]:
    return [target["expr"] for panel in panels() for target in panel["targets"]]


def runnable(expr: str, rate_interval: str = "1m") -> str:
    return with_grafana_variables(expr, {"$__rate_interval": rate_interval, **TEMPLATE_VALUES})


# -- the JSON ----------------------------------------------------------------------------------------

def test_it_parses_as_a_dashboard():
    board = dashboard()
    assert board["uid"] == "posgw" and board["title"] == "posgw"
    assert isinstance(board["schemaVersion"], int) and board["schemaVersion"] >= 36
    assert board["time"] == {"from": "now-1h", "to": "now"}
    assert {panel["type"] for panel in board["panels"]} <= PANEL_TYPES
    ids = [panel["id"] for panel in board["panels"]]
    assert len(ids) == len(set(ids))


def test_it_has_the_panels_an_operator_watches():
    for what, (metrics, title_words) in WATCHED.items():
        matching = [panel for panel in panels()
                    if title_words in panel["title"].lower()
                    and metrics <= set().union(*(metric_names_in(t["expr"]) for t in panel["targets"]))]
        assert matching, f"no panel for {what}: title with {title_words!r} reading {sorted(metrics)}"
    by = " ".join(expressions())
    assert "sum by (kind) (rate(posgw_requests_total" in by  # throughput by type
    assert "sum by (response_code) (rate(posgw_requests_total" in by  # and by code


def test_the_panels_lie_on_the_grid_without_overlapping():
    cells: dict[tuple[int, int], str] = {}
    for panel in dashboard()["panels"]:
        pos = panel["gridPos"]
        assert pos["w"] >= 1 and pos["h"] >= 1 and pos["x"] >= 0 and pos["y"] >= 0, panel["title"]
        assert pos["x"] + pos["w"] <= GRID_COLUMNS, panel["title"]
        for x in range(pos["x"], pos["x"] + pos["w"]):
            for y in range(pos["y"], pos["y"] + pos["h"]):
                assert (x, y) not in cells, f"{panel['title']} overlaps {cells[(x, y)]}"
                cells[(x, y)] = panel["title"]


def test_every_query_names_the_provisioned_datasource_and_has_its_own_ref_id():
    [source] = yaml.safe_load(DATASOURCES.read_text())["datasources"]
    wanted = {"type": source["type"], "uid": source["uid"]}
    for panel in panels():
        assert panel["datasource"] == wanted, panel["title"]
        assert panel["targets"], panel["title"]
        ref_ids = [target["refId"] for target in panel["targets"]]
        assert len(ref_ids) == len(set(ref_ids)), panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == wanted, panel["title"]
            assert target["expr"].strip(), panel["title"]
    for variable in dashboard()["templating"]["list"]:
        assert variable["datasource"] == wanted, variable["name"]


def variable_selectors() -> list[str]:
    """The series selectors of the query variables: ``label_values(SELECTOR, label)`` is Grafana's, not PromQL."""
    selectors = []
    for variable in dashboard()["templating"]["list"]:
        match = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", variable["definition"])
        assert match, variable["definition"]
        selectors.append(match.group(1))
    return selectors


def test_every_query_reads_only_metrics_the_gateway_exports():
    exported = exported_metric_names()
    for expr in expressions() + variable_selectors():
        names = metric_names_in(expr)
        assert names, expr
        assert names <= exported, (expr, names - exported)


def test_every_variable_a_query_uses_is_defined_or_grafanas_own():
    defined = {f"${variable['name']}" for variable in dashboard()["templating"]["list"]}
    for expr in expressions():
        for used in re.findall(r"\$\w+", expr):
            assert used in defined or used.startswith("$__"), (used, expr)
    # the gateway variable lists the label config/prometheus.yml's targets carry
    assert all("gateway" in target["labels"] for target in json.loads(TARGETS.read_text()))
    [variable] = dashboard()["templating"]["list"]
    assert variable["definition"] == 'label_values(up{job="posgw"}, gateway)'


@pytest.mark.needs_tools("promtool")
def test_every_query_parses(tmp_path):
    exprs = [runnable(expr) for expr in expressions()]
    result = check_expressions(exprs, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(exprs)} rules found" in result.stdout


@pytest.mark.needs_tools("promtool")
def test_a_query_that_does_not_parse_is_caught(tmp_path):
    result = check_expressions(['sum(rate(posgw_requests_total[1m])', "up"], tmp_path)
    assert result.returncode != 0


# -- provisioning ---------------------------------------------------------------------------------

def test_the_datasource_is_the_compose_prometheus():
    [source] = yaml.safe_load(DATASOURCES.read_text())["datasources"]
    assert source["type"] == "prometheus" and source["access"] == "proxy" and source["isDefault"] is True
    url = urllib.parse.urlsplit(source["url"])
    services = yaml.safe_load(COMPOSE.read_text())["services"]
    assert url.hostname in services  # reached by its service name on compose's network
    assert f"{url.port}:{url.port}" in services[url.hostname]["ports"]


def test_the_dashboard_provider_reads_a_directory_of_files():
    [provider] = yaml.safe_load(PROVIDERS.read_text())["providers"]
    assert provider["type"] == "file"
    assert provider["options"]["path"] == "/var/lib/grafana/dashboards/posgw"
    assert provider["allowUiUpdates"] is False


def assert_mounts_the_provisioning(service: dict[str, Any]) -> None:
    mounts = dict(volume.rsplit(":", 2)[:2] for volume in service["volumes"])
    [provider] = yaml.safe_load(PROVIDERS.read_text())["providers"]
    assert mounts["./deploy/grafana/provisioning"] == "/etc/grafana/provisioning"
    assert mounts["./deploy/grafana/dashboards"] == provider["options"]["path"]


def test_the_compose_service_of_the_readme_mounts_the_provisioning_where_grafana_reads_it():
    blocks = re.findall(r"```yaml\n(.*?)```", README.read_text(), re.S)
    service = yaml.safe_load("services:\n" + blocks[0])["services"]["grafana"]
    assert_mounts_the_provisioning(service)
    assert service["depends_on"] == ["prometheus"]


def test_compose_runs_grafana_as_the_readme_says_and_mounts_the_provisioning_where_grafana_reads_it():
    compose = yaml.safe_load(COMPOSE.read_text())
    blocks = re.findall(r"```yaml\n(.*?)```", README.read_text(), re.S)
    assert compose["services"]["grafana"] == yaml.safe_load("services:\n" + blocks[0])["services"]["grafana"]
    assert_mounts_the_provisioning(compose["services"]["grafana"])
    assert "grafana" in compose["volumes"]  # its database (users, preferences) outlives the container


def test_compose_mounts_the_alert_rules_where_prometheus_yml_names_them():
    """config/prometheus/ beside /etc/prometheus/prometheus.yml, whose rule_files are relative to it."""
    prometheus = yaml.safe_load(COMPOSE.read_text())["services"]["prometheus"]
    mounts = dict(volume.rsplit(":", 2)[:2] for volume in prometheus["volumes"] if volume.startswith("./"))
    config_dir = Path(mounts["./config/prometheus.yml"]).parent
    blocks = re.findall(r"```yaml\n(.*?)```", README.read_text(), re.S)
    assert f"./config/prometheus:{mounts['./config/prometheus']}:ro" in blocks[1]
    rule_files = yaml.safe_load((REPO / "config" / "prometheus.yml").read_text())["rule_files"]
    assert rule_files == ["prometheus/alerts.yml"]
    for rule_file in rule_files:  # where Prometheus looks is where config/prometheus/ is mounted, and it has the file
        in_container = config_dir / rule_file
        assert in_container.parent == Path(mounts["./config/prometheus"])
        assert (REPO / "config" / "prometheus" / in_container.name).is_file()


# -- on a real Prometheus -------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.needs_tools("prometheus")
async def test_every_query_runs_on_a_real_prometheus_scraping_a_real_gateway(gateway, world, tmp_path):
    """Two sign-ons with scrapes between: each panel's query is answered without error; those of
    the gauges read from the database, of `up` and of the sign-ons' counter have data."""
    terminal = terminal_for(gateway, world)
    assert (await terminal.sign_on()).response_code == "00"  # the series exists before the first scrape
    with prometheus_scraping(gateway.metrics_port, tmp_path / "prometheus") as prometheus:
        def counted(expr: str) -> bool:
            answer = prometheus.query(expr)
            return answer.get("status") == "success" and bool(answer["data"]["result"])

        await asyncio.to_thread(wait_for, lambda: counted('posgw_requests_total{kind="signon"} == 1'), 60,
                                "a scrape of the first sign-on")
        assert (await terminal.sign_on()).response_code == "00"
        await terminal.close()
        await asyncio.to_thread(wait_for, lambda: counted('increase(posgw_requests_total{kind="signon"}[30s]) > 0'),
                                60, "a scrape of the second")
        results: dict[str, list[dict[str, Any]]] = {}
        for expr in expressions():
            answer = await asyncio.to_thread(prometheus.query, runnable(expr, "30s"))
            assert answer.get("status") == "success", (expr, answer)
            results[expr] = answer["data"]["result"]

    def has_data(expr: str) -> bool:
        return any(not math.isnan(float(series["value"][1])) for series in results[expr])

    for panel in panels():
        names = set().union(*(metric_names_in(target["expr"]) for target in panel["targets"]))
        if names & {"posgw_db_primary", "posgw_db_pool_connections", "posgw_db_pool_acquire_seconds",
                    "posgw_agents_float_below_threshold", "posgw_batches_unbalanced", "up"}:
            assert any(has_data(target["expr"]) for target in panel["targets"]), panel["title"]
    [throughput] = [p for p in panels() if p["title"] == "Throughput by type"]
    [series] = results[throughput["targets"][0]["expr"]]
    assert series["metric"] == {"kind": "signon"} and float(series["value"][1]) > 0
