"""The bench's judgment: each target of ``TARGETS``, wanted, measured, met or not."""

from __future__ import annotations

from typing import Any

from bench.config import IDLE_ACTIVE, IDLE_ACTIVE_RATE, OPEN_RATE, TARGETS, open_keys


def errors_total(r: dict[str, Any]) -> int:
    """A run's errors, its warm-up's included."""
    return r["errors_total"] + (r.get("warmup") or {}).get("errors_total", 0)


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    s, b = results["scenarios"], results["baselines"]
    ledger_rps = b["ledger"]["postings_per_s"]
    rows = []

    def row(name: str, target: str, measured: float | None, unit: str, met: bool, note: str = "") -> None:
        rows.append({"target": name, "wanted": target, "measured": measured, "unit": unit, "met": met, "note": note})

    for key, label in (("closed_1_worker", "1 worker"), ("closed_2_workers", "2 workers")):
        if key in s:
            rps = s[key]["approved_rps"]
            row(f"closed loop, 200 persistent terminals ({label})", f">= {TARGETS['closed_loop_approved_rps_min']}/s",
                rps, "approved/s", rps >= TARGETS["closed_loop_approved_rps_min"] and errors_total(s[key]) == 0)
            ratio = rps / ledger_rps if ledger_rps else None
            row(f"closed loop / ledger baseline (a) ({label})", f">= {TARGETS['closed_loop_vs_ledger_min']}",
                round(ratio, 2) if ratio else None, "x",
                ratio is not None and ratio >= TARGETS["closed_loop_vs_ledger_min"],
                f"{rps:.0f} / {ledger_rps:.0f}")
    runs = [s[key] for key in open_keys() if key in s]
    if runs:  # met only if every run meets it; the worst run's p99 is the figure
        p99s = [r["latency_ms"]["p99"] for r in runs]
        worst = None if None in p99s else max(p99s)
        loops = [r.get("open_loop") or {} for r in runs]
        row(f"open loop at {OPEN_RATE}/s: p99 (worst of {len(runs)} runs)",
            f"<= {TARGETS['open_loop_p99_ms_max']} ms", worst, "ms",
            worst is not None and worst <= TARGETS["open_loop_p99_ms_max"]
            and not any(ol.get("dropped") for ol in loops) and all(errors_total(r) == 0 for r in runs),
            "p99 of each run " + ", ".join(f"{p:g}" for p in p99s) + " ms"
            + (" (of its warm-up " + ", ".join(f"{r['warmup']['latency_ms']['p99']:g}" for r in runs) + " ms)"
               if all(r.get("warmup") for r in runs) else "") + "; "
            + ", ".join(f"{r['approved_rps']:.0f}" for r in runs) + " approved/s; "
            f"{sum(ol.get('late', 0) for ol in loops)} late, {sum(ol.get('dropped', 0) for ol in loops)} dropped")
    if "idle_10k" in s:
        i = s["idle_10k"]
        held = i["idle_opened"] == i["idle_requested"] and i["idle_still_open_after_load"] == i["idle_requested"]
        o = i["open_loop_run"]
        p99 = o["latency_ms"]["p99"]
        row(f"{i['idle_requested']:,} idle + {IDLE_ACTIVE} active at {IDLE_ACTIVE_RATE}/s: p99",
            f"<= {TARGETS['idle_p99_ms_max']} ms", p99, "ms",
            held and p99 is not None and p99 <= TARGETS["idle_p99_ms_max"] and errors_total(o) == 0
            and not (o.get("open_loop") or {}).get("dropped"),
            f"{i['idle_still_open_after_load']:,} idle held to the end; closed loop before it: "
            f"{i['approved_rps']:.0f} approved/s, p99 {i['latency_ms']['p99']} ms")
        row(f"{i['idle_requested']:,} idle + {IDLE_ACTIVE} active: gateway RSS",
            f"<= {TARGETS['idle_rss_mb_max']:.0f} MB",
            i["gateway_peak_rss_mb"], "MB peak", held and i["gateway_peak_rss_mb"] <= TARGETS["idle_rss_mb_max"],
            f"{i['gateway_rss_mb_before_idle']:.0f} MB before the idle connections")
    if "per_txn" in s:
        rps = s["per_txn"]["approved_rps"]
        row("per-txn connections, closed loop", f">= {TARGETS['per_txn_approved_rps_min']}/s", rps, "approved/s",
            rps >= TARGETS["per_txn_approved_rps_min"] and errors_total(s["per_txn"]) == 0)
    return rows
