"""What the alert and dashboard tests check PromQL against: the metric names the
gateway exports (from ``gateway.metrics``'s registry, in their exposition forms),
the metric names an expression reads (a small tokenizer), and whether
expressions parse (promtool, through a generated rule file: promtool 2.42 has no
command for a bare expression)."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterable, Mapping
from pathlib import Path

from prometheus_client import REGISTRY

import gateway.metrics  # noqa: F401  (registers the gateway's metrics in REGISTRY)
from deploy.cluster import find_tool

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
