"""What ``make bench`` shows: the table of scenarios and targets, and the plot of the sweep."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.config import (
    IDLE_ACTIVE,
    IDLE_ACTIVE_RATE,
    IDLE_CONNECTIONS,
    OPEN_RATE,
    PURCHASES_PREFIX,
    ROOT,
    TARGETS,
    open_keys,
)


def ms_text(value: float | None) -> str:
    """Milliseconds in a column of 6, or a dash."""
    return "   -" if value is None else f"{value:6.1f}"


def _own_p99(r: dict[str, Any]) -> float | None:
    """The gateway's own p99 for the scenario's load kind (purchase or echo)."""
    own = r.get("gateway_latency_ms") or {}
    for kind in ("purchase", "echo"):
        if kind in own:
            return own[kind]["p99"]
    return None


def table(results: dict[str, Any]) -> str:
    """Rates and client-side latency (from the send, or the scheduled send in open loop); the
    gateway's own p99 (decode to encode); errors; CPU ms per request of gateway + PostgreSQL +
    load generator; cores other people's processes used meanwhile; CPU pressure (PSI some)."""
    head = (f"{'scenario':<48} {'rate/s':>7} {'p50 ms':>7} {'p99 ms':>7} {'gw p99':>7} {'errors':>6}  "
            f"{'CPU ms/req gw+pg+load':<22} {'others':>6} {'psi':>4}")
    lines = [head, "-" * len(head)]

    def cpu_text(per: dict[str, Any], first: str, second: str, third: str) -> str:
        if not per:
            return "-"
        parts = [per.get(first), per.get(second), per.get(third)]
        return "+".join("-" if v is None else f"{v:.2f}" for v in parts) + f"={per['total']:.2f}"

    b = results["baselines"]
    led = b["ledger"]
    c = led["cpu_cores"]
    lines.append(f"{'(a) ledger alone: post() from Python':<48} {led['postings_per_s']:>7.0f} "
                 f"{ms_text(led['latency_ms']['p50']):>7} {ms_text(led['latency_ms']['p99']):>7} {'':>7} "
                 f"{led['postings'] - led['ok']:>6}  "
                 f"{cpu_text(led['cpu_ms_per_request'], 'gateway', 'postgres', 'ledger_client'):<22} "
                 f"{c['others']:>6} {c.get('cpu_pressure_pct', '-'):>4}")
    rows = [("(b) wire alone: --wire-only, echo", b.get("wire"))]
    names = {"closed_1_worker": "mix, risk on: closed loop, 1 worker",
             "closed_2_workers": "mix, risk on: closed loop, 2 workers",
             **{key: f"mix, risk on: open loop at {OPEN_RATE}/s" + (f", run {n}" if n > 1 else "")
                for n, key in enumerate(open_keys(), 1)},
             "per_txn": "mix, risk on: closed loop, per-txn",
             "card_v2_mix": "refunds+preauths, risk on: closed, 1 worker",
             "idle_10k": f"mix, risk on: {IDLE_CONNECTIONS // 1000}k idle + {IDLE_ACTIVE} active, closed",
             f"{PURCHASES_PREFIX}closed_1_worker": "purchases, risk off: closed, 1 worker",
             f"{PURCHASES_PREFIX}closed_2_workers": "purchases, risk off: closed, 2 workers",
             **{key: f"purchases, risk off: open at {OPEN_RATE}/s" + (f", run {n}" if n > 1 else "")
                for n, key in enumerate(open_keys(PURCHASES_PREFIX), 1)}}
    rows += [(label, results["scenarios"].get(key)) for key, label in names.items()]
    big = results.get("big_ledger")
    if big:
        rows += [("big ledger run: small world, closed loop", big["small"]),
                 ("big ledger run: the big world, closed loop", big["big"])]
    if "idle_10k" in results["scenarios"]:
        rows.append((f"{IDLE_CONNECTIONS // 1000}k idle + {IDLE_ACTIVE} active, open {IDLE_ACTIVE_RATE}/s",
                     results["scenarios"]["idle_10k"]["open_loop_run"]))
    rows += [(f"mix, risk on: sweep at {p['offered_rps']}/s", p) for p in results.get("sweep", ())]
    for label, r in rows:
        if r is None:
            continue
        c = r["cpu_cores"]
        lines.append(f"{label:<48} {r['approved_rps']:>7.0f} {ms_text(r['latency_ms']['p50']):>7} "
                     f"{ms_text(r['latency_ms']['p99']):>7} {ms_text(_own_p99(r)):>7} {r['errors_total']:>6}  "
                     f"{cpu_text(r['cpu_ms_per_request'], 'gateway', 'postgres', 'load_generator'):<22} "
                     f"{c['others']:>6} {c.get('cpu_pressure_pct', '-'):>4}")
    lines.append("")
    lines.append(f"{'target':<52} {'wanted':>10} {'measured':>10}  met")
    for t in results["targets"]:
        measured = "-" if t["measured"] is None else f"{t['measured']:g}"
        lines.append(f"{t['target']:<52} {t['wanted']:>10} {measured:>10}  {'yes' if t['met'] else 'NO'}"
                     + (f"  ({t['note']})" if t["note"] else ""))
    return "\n".join(lines)


def plot(points: list[dict[str, Any]], path: Path, machine: dict[str, Any]) -> str | None:
    """The sweep as a PNG; None when matplotlib is not installed (the ``bench`` extra)."""
    try:
        import matplotlib
    except ImportError:
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    rates = [p["offered_rps"] for p in points]
    fig, ax = plt.subplots(figsize=(7.5, 4.5), dpi=110)
    for key, style in (("p50", "o-"), ("p90", "s-"), ("p99", "^-")):
        ax.plot(rates, [p["latency_ms"][key] for p in points], style, label=key)
    ax.axhline(TARGETS["open_loop_p99_ms_max"], color="grey", linestyle="--", linewidth=1,
               label=f"p99 target {TARGETS['open_loop_p99_ms_max']:.0f} ms")
    ax.set_yscale("log")
    plain = matplotlib.ticker.FuncFormatter(lambda value, _: f"{value:g}")  # 20, not 2 x 10^1
    ax.yaxis.set_major_formatter(plain)
    ax.yaxis.set_minor_formatter(plain)
    ax.set_xlabel("offered rate, requests/s (open loop, 200 persistent terminals; the mix, risk rules on)")
    ax.set_ylabel("latency, ms (from the scheduled send)")
    load_avg = machine.get("loadavg_start") or [0.0]
    ax.set_title(f"posgw: latency against offered rate ({machine['nproc']} cores shared by gateway, "
                 f"PostgreSQL, simulator;\nload average {load_avg[0]:.1f} at the start)", fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    achieved = ax.twinx()
    achieved.plot(rates, rates, color="lightgrey", linestyle=":", linewidth=1, label="offered/s (right)")
    achieved.plot(rates, [p["approved_rps"] for p in points], "k:", linewidth=1.2, label="approved/s (right)")
    achieved.set_ylabel("requests/s")
    achieved.set_ylim(0, max(rates) * 1.1)
    handles, labels = ax.get_legend_handles_labels()
    more_handles, more_labels = achieved.get_legend_handles_labels()
    ax.legend(handles + more_handles, labels + more_labels, loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return str(path.relative_to(ROOT))
