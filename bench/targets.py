"""The bench's judgment: each target of ``TARGETS``, wanted, measured, met or not. The
production configuration's targets first (the mix, risk rules on: issue 28), then those of
the purchase-only, risk-off rows kept from before (labelled so), idle connections, per-txn
and the big ledger."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from bench.config import IDLE_ACTIVE, IDLE_ACTIVE_RATE, OPEN_RATE, PURCHASES_PREFIX, TARGETS, open_keys

Row = Callable[..., None]


def errors_total(r: dict[str, Any]) -> int:
    """A run's errors, its warm-up's included."""
    return r["errors_total"] + (r.get("warmup") or {}).get("errors_total", 0)


def declined_total(r: dict[str, Any]) -> int:
    """Answers other than 00 in a run and its warm-up: the bench's world is made so that its
    own load is never declined, by the risk rules or anything else."""
    def count(by_code: dict[str, int] | None) -> int:
        return sum(n for code, n in (by_code or {}).items() if code != "00")

    return count(r.get("by_code")) + count((r.get("warmup") or {}).get("by_code"))


def clean(r: dict[str, Any]) -> bool:
    return errors_total(r) == 0 and declined_total(r) == 0


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    s = results["scenarios"]
    rows: list[dict[str, Any]] = []

    def row(name: str, target: str, measured: float | None, unit: str, met: bool, note: str = "") -> None:
        rows.append({"target": name, "wanted": target, "measured": measured, "unit": unit, "met": met, "note": note})

    _closed(s, "", "the mix, risk on", row, results)
    _open(s, "", "the mix, risk on", row, production=True)
    _closed(s, PURCHASES_PREFIX, "purchases, risk off", row, results)
    _open(s, PURCHASES_PREFIX, "purchases, risk off", row, production=False)
    if "idle_10k" in s:
        _idle(s["idle_10k"], row)
    if "per_txn" in s:
        rps = s["per_txn"]["approved_rps"]
        row("per-txn connections, closed loop, the mix, risk on", f">= {TARGETS['per_txn_approved_rps_min']}/s",
            rps, "approved/s", rps >= TARGETS["per_txn_approved_rps_min"] and clean(s["per_txn"]))
    big = results.get("big_ledger")
    if big:
        small, large = big["small"]["approved_rps"], big["big"]["approved_rps"]
        ratio = large / small if small else None
        row("big ledger / small world, closed loop, same run", f">= {TARGETS['big_vs_small_min']}",
            round(ratio, 2) if ratio else None, "x",
            ratio is not None and ratio >= TARGETS["big_vs_small_min"] and clean(big["big"]) and clean(big["small"]),
            f"{large:.0f} / {small:.0f} approved/s; p99 {big['big']['latency_ms']['p99']} vs "
            f"{big['small']['latency_ms']['p99']} ms; seeded in {big['seed']['seconds']} s, database "
            f"{big['seed']['database_mb']} MB")
    return rows


def _closed(s: dict[str, Any], prefix: str, label: str, row: Row, results: dict[str, Any]) -> None:
    ledger_rps = results["baselines"]["ledger"]["postings_per_s"]
    one, two = s.get(f"{prefix}closed_1_worker"), s.get(f"{prefix}closed_2_workers")
    for r, workers in ((one, "1 worker"), (two, "2 workers")):
        if r is None:
            continue
        rps = r["approved_rps"]
        row(f"closed loop, {label}, 200 persistent ({workers})", f">= {TARGETS['closed_loop_approved_rps_min']}/s",
            rps, "approved/s", rps >= TARGETS["closed_loop_approved_rps_min"] and clean(r),
            f"{declined_total(r)} declined, {errors_total(r)} errors")
        if prefix:  # the purchases' ratio to the ledger alone, as before
            ratio = rps / ledger_rps if ledger_rps else None
            row(f"closed loop / ledger baseline (a), {label} ({workers})",
                f">= {TARGETS['closed_loop_vs_ledger_min']}", round(ratio, 2) if ratio else None, "x",
                ratio is not None and ratio >= TARGETS["closed_loop_vs_ledger_min"], f"{rps:.0f} / {ledger_rps:.0f}")
    if one and two:
        ratio = two["approved_rps"] / one["approved_rps"] if one["approved_rps"] else None
        row(f"closed loop, {label}: 2 workers / 1 worker", f">= {TARGETS['workers_2_vs_1_min']}",
            round(ratio, 2) if ratio else None, "x", ratio is not None and ratio >= TARGETS["workers_2_vs_1_min"],
            f"{two['approved_rps']:.0f} / {one['approved_rps']:.0f}; gateway CPU "
            f"{two['cpu_ms_per_request'].get('gateway')} / {one['cpu_ms_per_request'].get('gateway')} ms/request")


def _open(s: dict[str, Any], prefix: str, label: str, row: Row, *, production: bool) -> None:
    runs = [s[key] for key in open_keys(prefix) if key in s]
    if not runs:
        return
    p99s = [r["latency_ms"]["p99"] for r in runs]
    worst = None if None in p99s else max(p99s)
    loops = [r.get("open_loop") or {} for r in runs]
    row(f"open loop at {OPEN_RATE}/s, {label}: p99 (worst of {len(runs)} runs)",
        f"<= {TARGETS['open_loop_p99_ms_max']} ms", worst, "ms",
        worst is not None and worst <= TARGETS["open_loop_p99_ms_max"]
        and not any(ol.get("dropped") for ol in loops) and all(clean(r) for r in runs),
        "p99 of each run " + ", ".join(f"{p:g}" for p in p99s) + " ms; "
        + ", ".join(f"{r['approved_rps']:.0f}" for r in runs) + " approved/s; "
        f"{sum(ol.get('late', 0) for ol in loops)} late, {sum(ol.get('dropped', 0) for ol in loops)} dropped, "
        f"{sum(declined_total(r) for r in runs)} declined")
    if not production:
        return
    cpus = [r["cpu_ms_per_request"].get("total") for r in runs]
    worst_cpu = None if None in cpus else max(cpus)
    row(f"open loop at {OPEN_RATE}/s, {label}: CPU per request gw+pg+sim (worst run)",
        f"<= {TARGETS['open_loop_cpu_ms_max']} ms", worst_cpu, "ms",
        worst_cpu is not None and worst_cpu <= TARGETS["open_loop_cpu_ms_max"],
        "each run " + ", ".join(
            "+".join(f"{r['cpu_ms_per_request'].get(k, 0):.2f}" for k in ("gateway", "postgres", "load_generator"))
            + f"={r['cpu_ms_per_request'].get('total', 0):.2f}" for r in runs))
    warm = [(r.get("warmup") or {}).get("latency_ms", {}).get("p99") for r in runs]
    worst_warm = None if None in warm else max(warm)
    row(f"a gateway just started, open loop at {OPEN_RATE}/s, {label}: p99 of its first 10 s (worst)",
        f"<= {TARGETS['warm_start_p99_ms_max']} ms", worst_warm, "ms",
        worst_warm is not None and worst_warm <= TARGETS["warm_start_p99_ms_max"],
        "each run " + ", ".join(f"{p:g}" for p in warm if p is not None) + " ms")


def _idle(i: dict[str, Any], row: Row) -> None:
    held = i["idle_opened"] == i["idle_requested"] and i["idle_still_open_after_load"] == i["idle_requested"]
    o = i["open_loop_run"]
    p99 = o["latency_ms"]["p99"]
    row(f"{i['idle_requested']:,} idle + {IDLE_ACTIVE} active at {IDLE_ACTIVE_RATE}/s, the mix: p99",
        f"<= {TARGETS['idle_p99_ms_max']} ms", p99, "ms",
        held and p99 is not None and p99 <= TARGETS["idle_p99_ms_max"] and clean(o)
        and not (o.get("open_loop") or {}).get("dropped"),
        f"{i['idle_still_open_after_load']:,} idle held to the end; closed loop before it: "
        f"{i['approved_rps']:.0f} approved/s, p99 {i['latency_ms']['p99']} ms")
    row(f"{i['idle_requested']:,} idle + {IDLE_ACTIVE} active: gateway RSS",
        f"<= {TARGETS['idle_rss_mb_max']:.0f} MB",
        i["gateway_peak_rss_mb"], "MB peak", held and i["gateway_peak_rss_mb"] <= TARGETS["idle_rss_mb_max"],
        f"{i['gateway_rss_mb_before_idle']:.0f} MB before the idle connections")
