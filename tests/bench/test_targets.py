"""The benchmark's judgment of its open-loop target: several runs, met only if every run meets it."""

from __future__ import annotations

from typing import Any

from bench.config import OPEN_RUNS, open_keys
from bench.targets import targets


def _open_run(p99: float, *, dropped: int = 0, errors: int = 0, warmup_errors: int = 0) -> dict[str, Any]:
    return {"latency_ms": {"p50": 5.0, "p99": p99}, "approved_rps": 1500.0, "errors_total": errors,
            "open_loop": {"late": 0, "dropped": dropped},
            "warmup": {"latency_ms": {"p50": 6.0, "p99": p99 + 10}, "errors_total": warmup_errors}}


def _open_row(*runs: dict[str, Any]) -> dict[str, Any]:
    results = {"baselines": {"ledger": {"postings_per_s": 2000.0}},
               "scenarios": dict(zip(open_keys(), runs))}
    (row,) = [r for r in targets(results) if r["target"].startswith("open loop")]
    return row


def test_the_open_loop_scenario_has_a_result_key_per_run_the_first_under_its_plain_name() -> None:
    assert OPEN_RUNS >= 3
    assert open_keys()[0] == "open_1500"
    assert len(set(open_keys())) == OPEN_RUNS


def test_the_target_is_met_only_when_every_run_meets_it_and_the_worst_run_is_the_figure() -> None:
    met = _open_row(_open_run(12.5), _open_run(19.9), _open_run(20.0))
    assert met["met"] and met["measured"] == 20.0
    assert "12.5, 19.9, 20 ms (of its warm-up 22.5, 29.9, 30 ms)" in met["note"]

    one_over = _open_row(_open_run(12.5), _open_run(34.2), _open_run(15.0))
    assert not one_over["met"] and one_over["measured"] == 34.2


def test_a_dropped_request_or_an_error_in_any_run_fails_the_target_whatever_the_latency() -> None:
    assert not _open_row(_open_run(10.0), _open_run(10.0, dropped=3), _open_run(10.0))["met"]
    assert not _open_row(_open_run(10.0), _open_run(10.0), _open_run(10.0, errors=1))["met"]
    assert not _open_row(_open_run(10.0), _open_run(10.0, warmup_errors=1), _open_run(10.0))["met"]
    assert _open_row(_open_run(10.0), _open_run(10.0), _open_run(10.0))["met"]
