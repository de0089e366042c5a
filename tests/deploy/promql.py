"""What the alert and dashboard tests check PromQL against: the metric names the
gateway exports (from ``gateway.metrics``'s registry, in their exposition forms),
the metric names an expression reads (a small tokenizer), whether expressions
parse (promtool, through a generated rule file: promtool 2.42 has no command for
a bare expression), and a real Prometheus scraping a test gateway."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
import urllib.parse
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from prometheus_client import REGISTRY

import gateway.metrics  # noqa: F401  (registers the gateway's metrics in REGISTRY)
from deploy.cluster import PROMETHEUS_YML, find_tool, http_get
from tests.e2e.test_processes import free_port

RULES_DIR = PROMETHEUS_YML.parent / "prometheus"  # alerts.yml and its tests

# Prometheus adds these to every target's scrape; of them the rules and panels use `up`.
SCRAPE_METRICS = frozenset({"up"})

# The series names a family is exposed as (prometheus_client names a counter's family without _total).
_SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
    "summary": ("", "_count", "_sum", "_created"),
    "info": ("_info",),
    "stateset": ("",),
    "unknown": ("",),
}

_KEYWORDS = frozenset({"and", "or", "unless", "offset", "bool", "by", "without", "on", "ignoring",
                       "group_left", "group_right", "inf", "nan", "atan2", "start", "end"})
_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_MATCHERS = re.compile(r"\{[^{}]*\}")
_RANGES = re.compile(r"\[[^\[\]]*\]")
_LABEL_LISTS = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
_VARIABLES = re.compile(r"\$\{[^}]*\}|\$\w+")
_IDENTIFIER = re.compile(r"(?<![\w.])([a-zA-Z_:][\w:]*)(\s*\()?")

# Grafana's variables, replaced by something PromQL parses before promtool sees an expression.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__interval": "1m", "$__range": "1h"}


def exported_metric_names() -> frozenset[str]:
    """Every series name the gateway's /metrics can carry, and ``up``."""
    names: set[str] = set(SCRAPE_METRICS)
    for family in REGISTRY.collect():
        names.update(family.name + suffix for suffix in _SUFFIXES[family.type])
    return frozenset(names)


def metric_names_in(expr: str) -> frozenset[str]:
    """The metric names an expression selects: identifiers that are neither functions
    (followed by a parenthesis), keywords, label names, label values nor durations."""
    text = _VARIABLES.sub(" ", expr)
    text = _STRINGS.sub('""', text)
    text = _MATCHERS.sub(" ", text)
    text = _RANGES.sub(" ", text)
    text = _LABEL_LISTS.sub(" ", text)
    names = set()
    for match in _IDENTIFIER.finditer(text):
        name, call = match.group(1), match.group(2)
        if call or name.lower() in _KEYWORDS:
            continue
        names.add(name)
    return frozenset(names)


def with_grafana_variables(expr: str, values: Mapping[str, str] = GRAFANA_VARIABLES) -> str:
    for variable, value in sorted(values.items(), key=lambda item: -len(item[0])):
        expr = expr.replace(variable, value)
    return expr


def promtool() -> str:
    path = find_tool("promtool")
    assert path, "promtool not installed"
    return path


def check_expressions(exprs: Iterable[str], work_dir: Path) -> subprocess.CompletedProcess[str]:
    """``promtool check rules`` on a rule file that records each expression: it fails,
    naming the expression, on one that does not parse. (YAML reads JSON.)"""
    rules = [{"record": f"check:expression_{i}", "expr": expr} for i, expr in enumerate(exprs)]
    path = work_dir / "expressions.rules.yml"
    path.write_text(json.dumps({"groups": [{"name": "expressions", "rules": rules}]}, indent=2))
    return subprocess.run([promtool(), "check", "rules", str(path)], capture_output=True, text=True, check=False)


class Prometheus:
    """A running Prometheus's HTTP API."""

    def __init__(self, url: str) -> None:
        self.url = url

    def api(self, path: str, **params: str) -> Any:
        """The ``data`` of a successful answer, else None."""
        query = ("?" + urllib.parse.urlencode(params)) if params else ""
        status, body = http_get(f"{self.url}{path}{query}", 5.0)
        if status != 200:
            return None
        answer = json.loads(body)
        return answer["data"] if answer.get("status") == "success" else None

    def query(self, expr: str) -> dict[str, Any]:
        """An instant query's whole answer (status, data or error), whatever the status; a body that is
        not JSON (a Prometheus still starting answers 503 "Service Unavailable" in plain text) gives
        ``{"status": "HTTP <code>"}``, so that a caller waiting for data keeps waiting."""
        status, body = http_get(f"{self.url}/api/v1/query?" + urllib.parse.urlencode({"query": expr}), 5.0)
        try:
            return json.loads(body)
        except ValueError:
            return {"status": f"HTTP {status}", "body": body[:200].decode(errors="replace")}


def wait_for(check: Callable[[], Any], timeout_s: float, what: str) -> Any:
    """Call ``check`` until it returns something true (blocking: run it in a thread from async code)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.2)
    raise AssertionError(f"not within {timeout_s} s: {what}")


@contextmanager
def prometheus_scraping(metrics_port: int, home: Path) -> Iterator[Prometheus]:
    """config/prometheus.yml as make cluster runs it (copied, the rules beside it, targets written), but
    scraping and evaluating every second, to be quick, one gateway (``gw1``) on ``metrics_port``."""
    (home / "targets").mkdir(parents=True)
    config = PROMETHEUS_YML.read_text()
    for setting in ("scrape_interval: 5s", "evaluation_interval: 5s", "scrape_timeout: 4s"):
        assert setting in config
        config = config.replace(setting, setting[:-3] + " 1s")
    (home / "prometheus.yml").write_text(config)
    shutil.copytree(RULES_DIR, home / "prometheus")
    targets = [{"targets": [f"127.0.0.1:{metrics_port}"], "labels": {"gateway": "gw1"}}]
    (home / "targets" / "posgw.json").write_text(json.dumps(targets))
    (home / "targets" / "haproxy.json").write_text("[]")
    port = free_port()
    prometheus = find_tool("prometheus")
    assert prometheus, "prometheus not installed"
    argv = [prometheus, f"--config.file={home / 'prometheus.yml'}", f"--storage.tsdb.path={home / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}"]
    with open(home / "prometheus.log", "wb") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
        try:
            yield Prometheus(f"http://127.0.0.1:{port}")
        finally:
            proc.terminate()
            proc.wait(10)
