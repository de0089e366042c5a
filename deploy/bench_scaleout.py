"""How much does a second gateway add in front of one PostgreSQL? (README, "Scaling out")

Starts the cluster of deploy/cluster.py (embedded PostgreSQL in a temporary
directory, or ``--database-url``; two gateways; HAProxy; no Prometheus, which
would only add noise), creates a demo world, and runs ``posgw-sim load``
(closed loop, persistent connections, purchases only, risk rules off) through
HAProxy with both gateways, then with one (the other stopped and marked DOWN by
HAProxy), alternating for ``--rounds``; with ``--direct``, also one gateway
without HAProxy, to show what the balancer costs.

Besides throughput and latency it measures the CPU each part used (from /proc):
the gateways, HAProxy, PostgreSQL (the postmaster and its backends; only for the
embedded server, which runs here), and the load generator, in milliseconds of
CPU per transaction. Those costs say what a bigger machine would do: one
PostgreSQL core carries 1000 / (its ms per transaction) transactions a second,
one gateway process (one core: Python, one event loop) 1000 / (its ms).

    .venv/bin/python deploy/bench_scaleout.py --terminals 64 --duration 10 --rounds 2
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.procs import cpu_s, free_ports, machine_busy, postmaster_pid, tree_cpu_s  # noqa: E402
from deploy.cluster import Cluster, ClusterConfig, find_tool  # noqa: E402


@dataclass
class Sample:
    gateways: float
    haproxy: float
    postgres: float
    loadgen: float
    busy: float
    total: float


def sample(cluster: Cluster, postmaster: int | None) -> Sample:
    busy, total = machine_busy()
    return Sample(
        gateways=cpu_s(child.pid for child in cluster.gateways if child.alive),
        haproxy=cpu_s([cluster.haproxy.pid]) if cluster.haproxy is not None else 0.0,
        postgres=tree_cpu_s(postmaster),
        loadgen=resource.getrusage(resource.RUSAGE_CHILDREN).ru_utime
        + resource.getrusage(resource.RUSAGE_CHILDREN).ru_stime,
        busy=busy, total=total)


def run_load(cluster: Cluster, port: int, world: Path, args: argparse.Namespace, postmaster: int | None) -> dict:
    argv = [str(cluster.config.bin_dir / "posgw-sim"), "load", "--host", "127.0.0.1", "--port", str(port),
            "--world", str(world), "--terminals", str(args.terminals), "--duration", str(args.duration),
            "--mix", "purchase=1", "--connect", "persistent", "--json", "--quiet"]
    before = sample(cluster, postmaster)
    done = subprocess.run(argv, env=cluster.env(), capture_output=True, text=True, check=False)
    after = sample(cluster, postmaster)
    if done.returncode != 0:
        raise SystemExit(f"posgw-sim load failed ({done.returncode}): {done.stderr[-2000:]}")
    report = json.loads(done.stdout)
    requests = max(report["requests"], 1)
    wall = report["duration_s"]

    def per_txn_ms(name: str) -> float:
        return round((getattr(after, name) - getattr(before, name)) * 1000 / requests, 3)

    def cores(name: str) -> float:
        return round((getattr(after, name) - getattr(before, name)) / wall, 2)

    return {
        "throughput_rps": report["throughput_rps"], "approved": report["approved"], "requests": report["requests"],
        "errors_total": report["errors_total"], "errors": {k: v for k, v in report["errors"].items() if v},
        "by_code": report["by_code"], "latency_ms": report["latency_ms"], "duration_s": wall,
        "cpu_ms_per_txn": {name: per_txn_ms(name) for name in ("gateways", "haproxy", "postgres", "loadgen")},
        "cores_used": {name: cores(name) for name in ("gateways", "haproxy", "postgres", "loadgen")},
        "machine_busy_pct": round(100 * (after.busy - before.busy) / max(after.total - before.total, 1), 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="deploy/bench_scaleout.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--terminals", type=int, default=64)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=2, help="each configuration this many times, alternating")
    parser.add_argument("--direct", action="store_true", help="also one gateway without HAProxy")
    parser.add_argument("--database-url", default=None, help="default: an embedded PostgreSQL in a temp dir")
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (logs, database)")
    args = parser.parse_args(argv)
    if find_tool("haproxy") is None:
        raise SystemExit("haproxy is not installed (apt-get install -y haproxy)")
    work = Path(tempfile.mkdtemp(prefix="posgw-bench-"))
    port, gw1, gw2, m1, m2, stats, prom = free_ports(7)
    config = ClusterConfig(
        run_dir=work / "cluster", data_dir=work / "data", database_url=args.database_url, port=port,
        gateway_ports=(gw1, gw2), metrics_ports=(m1, m2), stats_port=stats, prometheus_port=prom,
        prometheus=None, env={"POSGW_RISK_ENABLED": "false", "POSGW_LOG_FORMAT": "json"})
    cluster = Cluster(config)
    results: list[dict[str, Any]] = []
    load_before = os.getloadavg()[0]
    try:
        cluster.start()
        postmaster = None if args.database_url else postmaster_pid(config.data_dir)
        world = work / "world.json"
        world.write_text(cluster.posgw("demo", "--terminals", str(args.terminals), "--cards",
                                       str(args.terminals), "--json").stdout)
        plan = ["2 gateways", "1 gateway"] + (["1 gateway, direct"] if args.direct else [])
        for round_number in range(args.rounds):
            for name in plan if round_number % 2 == 0 else plan[::-1]:
                if name == "2 gateways":
                    cluster.start_gateway(1)
                else:
                    cluster.stop_gateway(1, signal.SIGTERM)
                    cluster.wait_servers({"gw1": "UP", "gw2": "DOWN"}, 15)
                time.sleep(1.0)
                target = gw1 if name.endswith("direct") else port
                result = {"config": name, "round": round_number + 1,
                          **run_load(cluster, target, world, args, postmaster)}
                results.append(result)
                print(json.dumps(result), flush=True)
    finally:
        cluster.stop()
        if args.keep:
            print(f"kept {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)
    print()
    print(f"{args.terminals} terminals, closed loop, persistent, purchases only, {args.duration:g} s per run, "
          f"{os.cpu_count()} CPUs, load average {load_before:.1f} before, {os.getloadavg()[0]:.1f} after")
    print("| configuration | runs | throughput (tx/s) | p50 / p99 ms | CPU ms per tx: gateways, HAProxy, "
          "PostgreSQL, load generator | machine busy |")
    print("|---|---|---|---|---|---|")
    for name in dict.fromkeys(r["config"] for r in results):
        runs = [r for r in results if r["config"] == name]
        rps = [r["throughput_rps"] for r in runs]
        cpu = {k: statistics.median(r["cpu_ms_per_txn"][k] for r in runs)
               for k in ("gateways", "haproxy", "postgres", "loadgen")}
        print(f"| {name} | {len(runs)} | {statistics.median(rps):.0f} ({', '.join(f'{v:.0f}' for v in rps)}) | "
              f"{statistics.median(r['latency_ms']['p50'] for r in runs):.1f} / "
              f"{statistics.median(r['latency_ms']['p99'] for r in runs):.1f} | "
              f"{cpu['gateways']:.2f}, {cpu['haproxy']:.2f}, {cpu['postgres']:.2f}, {cpu['loadgen']:.2f} | "
              f"{statistics.median(r['machine_busy_pct'] for r in runs):.0f}% |")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
