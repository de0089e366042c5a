"""``make cluster``: the topology of docker-compose.yml as local processes.

    PostgreSQL   ``POSGW_DATABASE_URL``, or the embedded one (pgserver) under the
                 data dir, started by ``posgw db migrate``: it listens on a unix
                 socket, and both gateways reach it through the shared
                 ``POSGW_DATA_DIR`` as every ``posgw`` command does; or, with
                 ``--pair`` (``make cluster``), a primary and a synchronous
                 standby failed over by pg_auto_failover (deploy/pgpair.py),
                 archiving their WAL into ``<run dir>/archive``; the gateways
                 get both nodes in one URL and follow the primary
    gw1, gw2     two ``posgw serve`` processes on 127.0.0.1, each with /metrics
                 and /healthz on a metrics port of its own
    HAProxy      config/haproxy.cfg as it is (it reads its addresses from the
                 environment): TCP on the terminal port in front of gw1 and gw2
    Prometheus   config/prometheus.yml, copied into the run directory next to the
                 target files it reads (targets/posgw.json, targets/haproxy.json)
                 and the alert rules it loads (config/prometheus/, as prometheus/)

Everything runs in the foreground; Ctrl-C (or SIGTERM) stops it all: the
gateways first (they answer 503 on /healthz, HAProxy takes them out, and they
drain), then HAProxy and Prometheus, then the embedded PostgreSQL if this
script started it. HAProxy and Prometheus are started when they are installed
(Debian: ``apt-get install haproxy prometheus``); without them the gateways run
alone and the script says so.

Ports come from flags or the environment (defaults in brackets):
  --port             CLUSTER_PORT               terminals connect here (HAProxy) [8583]
  --gateway-ports    CLUSTER_GATEWAY_PORTS      the two gateways                 [8584,8585]
  --metrics-ports    CLUSTER_METRICS_PORTS      their /metrics and /healthz      [9584,9585]
  --stats-port       CLUSTER_STATS_PORT         HAProxy /stats and /metrics      [8404]
  --prometheus-port  CLUSTER_PROMETHEUS_PORT    Prometheus                       [9090]
  --run-dir          CLUSTER_RUN_DIR            logs, Prometheus config and data [var/cluster]
  --pair             CLUSTER_PAIR=1             PostgreSQL as a pair (deploy/pgpair.py)
  --pair-ports       CLUSTER_PAIR_PORTS         its monitor and nodes      [5601,5602,5603]
The database is ``POSGW_DATABASE_URL`` when set, else the embedded one under
``POSGW_DATA_DIR`` (default ./var, the one ``make run`` uses). The tests drive
the same code through ``Cluster`` with free ports and a temporary directory.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script (make cluster): deploy/ is no installed package
    sys.path.insert(0, str(REPO))

from deploy.pgpair import PairConfig, PairError, PgPair  # noqa: E402

HAPROXY_CFG = REPO / "config" / "haproxy.cfg"
PROMETHEUS_YML = REPO / "config" / "prometheus.yml"
PROMETHEUS_RULES = PROMETHEUS_YML.parent / "prometheus"  # alerts.yml (and its promtool tests)
GATEWAY_NAMES = ("gw1", "gw2")  # the servers of config/haproxy.cfg
BACKEND = "gateways"  # its backend
INSTALL_LINE = "sudo apt-get install -y haproxy prometheus"
SBIN_DIRS = ("/usr/local/sbin", "/usr/sbin", "/sbin")  # haproxy lives here, often not on a user's PATH
LB_MAXCONN = 20000  # the gateway's connections_max
POLL_S = 0.1
STOP_TIMEOUT_S = 20.0  # a gateway's shutdown_grace_s (10 s) and some


class ClusterError(Exception):
    """A part of the cluster would not start; the message says which and why."""


def find_tool(name: str) -> str | None:
    """The path of ``name`` (``HAPROXY_BIN``/``PROMETHEUS_BIN`` win), also looking in the sbin dirs;
    None if it is not there."""
    explicit = os.environ.get(f"{name.upper()}_BIN")
    if explicit:
        return shutil.which(explicit)
    search = os.pathsep.join([os.environ.get("PATH", os.defpath), *SBIN_DIRS])
    return shutil.which(name, path=search)


def _ports(text: str) -> tuple[int, ...]:
    try:
        ports = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected PORT,PORT, got {text!r}") from None
    if len(ports) != len(GATEWAY_NAMES) or not all(0 < p < 65536 for p in ports):
        raise argparse.ArgumentTypeError(f"expected {len(GATEWAY_NAMES)} ports, got {text!r}")
    return ports


def _pair_ports(text: str) -> tuple[int, ...]:
    try:
        ports = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected MONITOR,NODE1,NODE2 ports, got {text!r}") from None
    if len(ports) != 3 or not all(0 < p < 65536 for p in ports):
        raise argparse.ArgumentTypeError(f"expected 3 ports, got {text!r}")
    return ports


def hide_password(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


def http_get(url: str, timeout_s: float = 2.0) -> tuple[int, bytes]:
    """(status, body); status 0 when nothing answered."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except (OSError, ValueError):
        return 0, b""


@dataclass
class ClusterConfig:
    run_dir: Path
    data_dir: Path  # the LMK file, and the embedded PostgreSQL when there is no URL
    database_url: str | None = None
    port: int = 8583
    gateway_ports: tuple[int, ...] = (8584, 8585)
    metrics_ports: tuple[int, ...] = (9584, 9585)
    stats_port: int = 8404
    prometheus_port: int = 9090
    haproxy: str | None = field(default_factory=lambda: find_tool("haproxy"))  # None: not started
    prometheus: str | None = field(default_factory=lambda: find_tool("prometheus"))
    env: dict[str, str] = field(default_factory=dict)  # POSGW_* settings for the gateways and commands
    bin_dir: Path = field(default_factory=lambda: Path(sys.executable).parent)  # where `posgw` is
    start_timeout_s: float = 60.0
    pair_ports: tuple[int, ...] | None = None  # monitor, node1, node2: PostgreSQL as a pair (deploy/pgpair.py)

    def __post_init__(self) -> None:
        self.run_dir = Path(self.run_dir).resolve()
        self.data_dir = Path(self.data_dir).resolve()
        if len(self.gateway_ports) != len(GATEWAY_NAMES) or len(self.metrics_ports) != len(GATEWAY_NAMES):
            raise ValueError(f"config/haproxy.cfg has {len(GATEWAY_NAMES)} gateways: give as many ports")


class Child:
    """One process of the cluster, its output in a log file."""

    def __init__(self, name: str, argv: Sequence[str], env: Mapping[str, str], log_path: Path) -> None:
        self.name = name
        self.argv = list(argv)
        self.env = dict(env)
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self.reported = False  # its unexpected exit has been told

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            # a session of its own: Ctrl-C reaches this script only, which stops
            # the children in order
            self.proc = subprocess.Popen(self.argv, env=self.env, cwd=REPO, stdin=subprocess.DEVNULL,
                                         stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.reported = False

    @property
    def pid(self) -> int | None:
        return None if self.proc is None else self.proc.pid

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def returncode(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def send(self, sig: int) -> None:
        if self.alive:
            assert self.proc is not None
            self.proc.send_signal(sig)

    def stop(self, sig: int | None = signal.SIGTERM, timeout_s: float = STOP_TIMEOUT_S) -> int | None:
        """Signal (once: a second SIGTERM would cut a gateway's drain short), wait, and kill
        if it will not go; its exit code. ``sig`` None: it was signalled already."""
        if self.proc is None:
            return None
        if sig is not None:
            self.send(sig)
        try:
            return self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()

    def tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def failed(self, what: str) -> ClusterError:
        return ClusterError(f"{self.name} {what} (exit code {self.returncode}); the end of {self.log_path}:\n"
                            f"{self.tail()}")


class Cluster:
    """Start, inspect, break and stop the cluster; ``with Cluster(config) as c:``."""

    def __init__(self, config: ClusterConfig) -> None:
        self.config = config
        self.log_dir = config.run_dir / "logs"
        self.gateways = [self._gateway_child(i) for i in range(len(GATEWAY_NAMES))]
        self.haproxy: Child | None = None
        self.prometheus: Child | None = None
        self.started_database = False  # the embedded PostgreSQL was started by us: stop it at the end
        self.pair: PgPair | None = None

    # -- environment and commands -------------------------------------------------
    def env(self) -> dict[str, str]:
        """The environment of the gateways and of ``posgw`` commands against this cluster."""
        env = dict(os.environ)
        env["POSGW_DATA_DIR"] = str(self.config.data_dir)
        env.setdefault("POSGW_CONFIG_DIR", str(REPO / "config"))
        if self.config.database_url:
            env["POSGW_DATABASE_URL"] = self.config.database_url
        else:
            env.pop("POSGW_DATABASE_URL", None)
        env.update(self.config.env)
        return env

    def posgw(self, *argv: str, timeout_s: float = 120.0) -> subprocess.CompletedProcess[str]:
        """Run ``posgw ARGV`` against the cluster's database; ``ClusterError`` unless it exits 0."""
        result = subprocess.run([str(self.config.bin_dir / "posgw"), *argv], env=self.env(), cwd=REPO,
                                capture_output=True, text=True, timeout=timeout_s, check=False)
        if result.returncode != 0:
            raise ClusterError(f"posgw {' '.join(argv)}: exit {result.returncode}: {result.stderr.strip()[-2000:]}")
        return result

    def _gateway_child(self, index: int) -> Child:
        name = GATEWAY_NAMES[index]
        argv = [str(self.config.bin_dir / "posgw"), "serve", "--host", "127.0.0.1",
                "--port", str(self.config.gateway_ports[index]),
                "--metrics-port", str(self.config.metrics_ports[index])]
        return Child(name, argv, {}, self.log_dir / f"{name}.log")

    def haproxy_env(self) -> dict[str, str]:
        """What config/haproxy.cfg reads from the environment."""
        c = self.config
        env = dict(os.environ)
        env.update(POSGW_LB_BIND=f"127.0.0.1:{c.port}", POSGW_LB_STATS_BIND=f"127.0.0.1:{c.stats_port}")
        for index in range(1, len(GATEWAY_NAMES) + 1):
            env[f"POSGW_GW{index}_ADDR"] = f"127.0.0.1:{c.gateway_ports[index - 1]}"
            env[f"POSGW_GW{index}_CHECK_PORT"] = str(c.metrics_ports[index - 1])
        if "POSGW_LB_MAXCONN" not in env:
            # HAProxy needs about two descriptors per connection and refuses to
            # start when it cannot raise its limit that far (not root)
            hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
            if hard != resource.RLIM_INFINITY:
                env["POSGW_LB_MAXCONN"] = str(max(100, min(LB_MAXCONN, (hard - 200) // 2)))
        return env

    # -- starting ---------------------------------------------------------------------
    def start(self) -> Cluster:
        self.config.run_dir.mkdir(parents=True, exist_ok=True)
        try:
            self._start_database()
            for index in range(len(self.gateways)):
                self._launch_gateway(index)
            for index in range(len(self.gateways)):
                self._wait_healthy(index)
            if self.config.haproxy:
                self._start_haproxy()
            if self.config.prometheus:
                self._start_prometheus()
        except BaseException:
            self.stop()
            raise
        return self

    def __enter__(self) -> Cluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _start_pair(self) -> None:
        """The pair under <run dir>/pgpair (built on the first run, run again after),
        its URL the gateways' database; on a new pair, the demo world."""
        assert self.config.pair_ports is not None
        monitor_port, *node_ports = self.config.pair_ports
        pair_dir = self.config.run_dir / "pgpair"
        fresh = not (pair_dir / "node1" / "PG_VERSION").exists()
        self.pair = PgPair(PairConfig(pair_dir, monitor_port, tuple(node_ports),
                                      archive_dir=self.config.run_dir / "archive"))
        try:
            self.pair.start()
        except PairError as exc:
            raise ClusterError(f"the PostgreSQL pair: {exc}") from None
        self.config.database_url = self.pair.url()
        self.posgw("db", "migrate")
        if fresh:
            self.posgw("demo")

    def _start_database(self) -> None:
        if self.config.pair_ports is not None:
            self._start_pair()
        if not self.config.database_url:
            pid_file = self.config.data_dir / "pg" / "postmaster.pid"
            self.started_database = not pid_file.exists()
        if self.pair is None:
            self.posgw("db", "migrate")  # starts the embedded server when there is no URL
        if not self.env().get("POSGW_LMK"):
            # both gateways read <data dir>/lmk.key: create it before either starts
            sys.path.insert(0, str(REPO))
            from gateway.keys import load_lmk

            load_lmk(None, self.config.data_dir)

    def _launch_gateway(self, index: int) -> None:
        child = self.gateways[index]
        child.env = self.env()
        child.start()

    def _wait_healthy(self, index: int) -> None:
        child = self.gateways[index]
        url = f"http://127.0.0.1:{self.config.metrics_ports[index]}/healthz"
        deadline = time.monotonic() + self.config.start_timeout_s
        while time.monotonic() < deadline:
            if not child.alive:
                raise child.failed("exited while starting")
            if http_get(url, 1.0)[0] == 200:
                return
            time.sleep(POLL_S)
        raise child.failed(f"not healthy at {url} after {self.config.start_timeout_s:.0f} s")

    def start_gateway(self, index: int) -> None:
        """(Re)start one gateway and wait until it is healthy and HAProxy has it UP."""
        if self.gateways[index].alive:
            return
        self._launch_gateway(index)
        self._wait_healthy(index)
        if self.haproxy is not None:
            self.wait_servers({GATEWAY_NAMES[index]: "UP"})

    def stop_gateway(self, index: int, sig: int = signal.SIGTERM) -> int | None:
        """Stop one gateway (SIGKILL: kill it, as a crash would); its exit code."""
        return self.gateways[index].stop(sig)

    def _start_haproxy(self) -> None:
        assert self.config.haproxy
        argv = [self.config.haproxy, "-db", "-f", str(HAPROXY_CFG)]
        env = self.haproxy_env()
        check = subprocess.run([*argv, "-c", "-q"], env=env, capture_output=True, text=True, check=False)
        if check.returncode != 0:
            raise ClusterError(f"haproxy -c -f {HAPROXY_CFG}: {(check.stdout + check.stderr).strip()}")
        self.haproxy = Child("haproxy", argv, env, self.log_dir / "haproxy.log")
        self.haproxy.start()
        self.wait_servers(dict.fromkeys(GATEWAY_NAMES, "UP"))

    def _start_prometheus(self) -> None:
        assert self.config.prometheus
        c = self.config
        home = c.run_dir / "prometheus"
        (home / "targets").mkdir(parents=True, exist_ok=True)
        shutil.copyfile(PROMETHEUS_YML, home / "prometheus.yml")
        # the alert rules, where prometheus.yml's rule_files (relative to it) name them
        shutil.copytree(PROMETHEUS_RULES, home / "prometheus", dirs_exist_ok=True)
        gateways = [{"targets": [f"127.0.0.1:{port}"], "labels": {"gateway": name}}
                    for name, port in zip(GATEWAY_NAMES, c.metrics_ports)]
        lb = [{"targets": [f"127.0.0.1:{c.stats_port}"]}] if self.haproxy is not None else []
        for name, targets in (("posgw", gateways), ("haproxy", lb)):
            tmp = home / "targets" / f".{name}.json"
            tmp.write_text(json.dumps(targets, indent=2) + "\n")
            tmp.replace(home / "targets" / f"{name}.json")  # whole files only: Prometheus watches them
        argv = [c.prometheus, f"--config.file={home / 'prometheus.yml'}", f"--storage.tsdb.path={home / 'data'}",
                f"--web.listen-address=127.0.0.1:{c.prometheus_port}"]
        self.prometheus = Child("prometheus", argv, dict(os.environ), self.log_dir / "prometheus.log")
        self.prometheus.start()
        url = f"{self.prometheus_url}/-/ready"
        deadline = time.monotonic() + c.start_timeout_s
        while http_get(url, 1.0)[0] != 200:
            if not self.prometheus.alive:
                raise self.prometheus.failed("exited while starting")
            if time.monotonic() > deadline:
                raise self.prometheus.failed(f"not ready at {url}")
            time.sleep(POLL_S)

    # -- looking at it -------------------------------------------------------------
    @property
    def prometheus_url(self) -> str:
        return f"http://127.0.0.1:{self.config.prometheus_port}"

    @property
    def terminal_port(self) -> int:
        """Where terminals connect: HAProxy, or the first gateway when there is no HAProxy."""
        return self.config.port if self.haproxy is not None else self.config.gateway_ports[0]

    def servers(self) -> dict[str, str]:
        """HAProxy's view of the gateways: name → status (UP, DOWN, MAINT, ...); {} if it does not answer."""
        status, body = http_get(f"http://127.0.0.1:{self.config.stats_port}/stats;csv", 1.0)
        if status != 200:
            return {}
        rows = csv.DictReader(io.StringIO(body.decode().lstrip("# ")))
        return {row["svname"]: row["status"].split(" ")[0] for row in rows
                if row.get("pxname") == BACKEND and row.get("svname") in GATEWAY_NAMES}

    def wait_servers(self, wanted: Mapping[str, str], timeout_s: float | None = None) -> None:
        """Wait until HAProxy reports these gateways in these states."""
        deadline = time.monotonic() + (self.config.start_timeout_s if timeout_s is None else timeout_s)
        seen: dict[str, str] = {}
        while time.monotonic() < deadline:
            if self.haproxy is not None and not self.haproxy.alive:
                raise self.haproxy.failed("exited")
            seen = self.servers()
            if all(seen.get(name) == state for name, state in wanted.items()):
                return
            time.sleep(POLL_S)
        raise ClusterError(f"HAProxy: wanted {dict(wanted)}, has {seen}")

    def rules(self) -> list[dict[str, Any]]:
        """The rule groups Prometheus has loaded (``/api/v1/rules``), each with its ``file`` and ``rules``."""
        status, body = http_get(f"{self.prometheus_url}/api/v1/rules", 5.0)
        if status != 200:
            raise ClusterError(f"Prometheus rules: HTTP {status} {body[:200]!r}")
        return json.loads(body)["data"]["groups"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant PromQL query: the result vector (each ``metric`` labels and ``value``)."""
        url = f"{self.prometheus_url}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        status, body = http_get(url, 5.0)
        if status != 200:
            raise ClusterError(f"Prometheus {expr!r}: HTTP {status} {body[:200]!r}")
        answer = json.loads(body)
        if answer.get("status") != "success":
            raise ClusterError(f"Prometheus {expr!r}: {answer}")
        return answer["data"]["result"]

    def children(self) -> Iterator[Child]:
        yield from self.gateways
        for child in (self.haproxy, self.prometheus):
            if child is not None:
                yield child

    def describe(self) -> str:
        c = self.config
        database = (hide_password(c.database_url) if c.database_url
                    else f"embedded, under {c.data_dir / 'pg'} (unix socket)")
        lines = [f"posgw cluster: PostgreSQL {database}"]
        if self.pair is not None:
            primary = self.pair.primary_index()
            lines.append(f"  pair        primary node{'12'[primary] if primary is not None else '?'}, "
                         f"pg_auto_failover monitor {self.pair.monitor_url}; WAL archived into "
                         f"{c.run_dir / 'archive'}; logs {self.pair.config.run_dir / 'logs'}/")
        if self.haproxy is not None:
            lines.append(f"  terminals   127.0.0.1:{c.port}   HAProxy, TCP, leastconn over gw1 and gw2")
        for name, port, metrics in zip(GATEWAY_NAMES, c.gateway_ports, c.metrics_ports):
            lines.append(f"  {name}         127.0.0.1:{port}   http://127.0.0.1:{metrics}/metrics  /healthz")
        if self.haproxy is not None:
            lines.append(f"  haproxy     http://127.0.0.1:{c.stats_port}/stats  (and /metrics)")
        else:
            lines.append(f"  haproxy     not installed ({INSTALL_LINE}): terminals use the gateways' ports")
        if self.prometheus is not None:
            lines.append(f"  prometheus  {self.prometheus_url}   (try: up, posgw_requests_total)")
        else:
            lines.append(f"  prometheus  not installed ({INSTALL_LINE})")
        lines.append(f"  logs        {self.log_dir}/")
        return "\n".join(lines)

    # -- stopping ------------------------------------------------------------------
    def stop(self) -> None:
        """Stop everything that runs: gateways (drain), HAProxy, Prometheus, our embedded PostgreSQL."""
        for child in self.gateways:
            child.send(signal.SIGTERM)  # all at once, then wait for each
        for child in self.gateways:
            child.stop(sig=None)
        for child in (self.haproxy, self.prometheus):
            if child is not None:
                child.stop(timeout_s=10.0)
        if self.pair is not None:
            self.pair.stop()
            self.pair = None
        if self.started_database:
            self.started_database = False
            try:
                self.posgw("db", "stop")
            except (ClusterError, subprocess.TimeoutExpired) as exc:
                print(f"cluster: could not stop the embedded PostgreSQL: {exc}", file=sys.stderr)


@contextmanager
def _stop_signals() -> Iterator[threading.Event]:
    """SIGINT and SIGTERM set an event instead of interrupting."""
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _watch(cluster: Cluster, stop: threading.Event) -> None:
    """Until Ctrl-C: tell when a process exits and when HAProxy changes its mind about a gateway."""
    states = cluster.servers() if cluster.haproxy is not None else {}
    while not stop.wait(1.0):
        for child in cluster.children():
            if child.proc is not None and not child.alive and not child.reported:
                child.reported = True
                print(f"cluster: {child.name} exited with code {child.returncode}; see {child.log_path}",
                      file=sys.stderr)
        if cluster.haproxy is not None and cluster.haproxy.alive:
            now = cluster.servers()
            for name, state in now.items():
                if states.get(name) != state:
                    print(f"cluster: HAProxy has {name} {state}", file=sys.stderr)
            states = now or states


def build_parser() -> argparse.ArgumentParser:
    env = os.environ.get
    parser = argparse.ArgumentParser(
        prog="deploy/cluster.py", description="PostgreSQL, two posgw gateways, HAProxy and Prometheus "
        "on this machine, in the foreground; Ctrl-C stops them all.")
    parser.add_argument("--port", type=int, default=int(env("CLUSTER_PORT", "8583")),
                        help="terminal port of HAProxy (CLUSTER_PORT, default 8583)")
    parser.add_argument("--gateway-ports", type=_ports, default=_ports(env("CLUSTER_GATEWAY_PORTS", "8584,8585")),
                        help="the gateways' terminal ports (CLUSTER_GATEWAY_PORTS, default 8584,8585)")
    parser.add_argument("--metrics-ports", type=_ports, default=_ports(env("CLUSTER_METRICS_PORTS", "9584,9585")),
                        help="their metrics ports (CLUSTER_METRICS_PORTS, default 9584,9585)")
    parser.add_argument("--stats-port", type=int, default=int(env("CLUSTER_STATS_PORT", "8404")),
                        help="HAProxy stats and /metrics (CLUSTER_STATS_PORT, default 8404)")
    parser.add_argument("--prometheus-port", type=int, default=int(env("CLUSTER_PROMETHEUS_PORT", "9090")),
                        help="Prometheus (CLUSTER_PROMETHEUS_PORT, default 9090)")
    parser.add_argument("--run-dir", type=Path, default=Path(env("CLUSTER_RUN_DIR", "var/cluster")),
                        help="logs, Prometheus config and data (CLUSTER_RUN_DIR, default var/cluster)")
    parser.add_argument("--pair", action="store_true", default=env("CLUSTER_PAIR", "") not in ("", "0"),
                        help="PostgreSQL as a primary and a synchronous standby with pg_auto_failover "
                        "(deploy/pgpair.py) under the run dir (CLUSTER_PAIR=1)")
    parser.add_argument("--pair-ports", type=_pair_ports,
                        default=_pair_ports(env("CLUSTER_PAIR_PORTS", "5601,5602,5603")),
                        help="the pair's monitor and two nodes (CLUSTER_PAIR_PORTS, default 5601,5602,5603)")
    parser.add_argument("--no-haproxy", action="store_true", help="do not start HAProxy")
    parser.add_argument("--no-prometheus", action="store_true", help="do not start Prometheus")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    config = ClusterConfig(
        run_dir=args.run_dir, data_dir=Path(os.environ.get("POSGW_DATA_DIR") or "var"),
        database_url=os.environ.get("POSGW_DATABASE_URL") or None, port=args.port,
        gateway_ports=args.gateway_ports, metrics_ports=args.metrics_ports, stats_port=args.stats_port,
        prometheus_port=args.prometheus_port, pair_ports=args.pair_ports if args.pair else None)
    if args.pair and config.database_url:
        print("cluster: error: --pair and POSGW_DATABASE_URL: choose one", file=sys.stderr)
        return 2
    if args.no_haproxy:
        config.haproxy = None
    if args.no_prometheus:
        config.prometheus = None
    cluster = Cluster(config)
    try:
        cluster.start()
    except KeyboardInterrupt:
        return 130
    except ClusterError as exc:
        print(f"cluster: error: {exc}", file=sys.stderr)
        return 1
    with _stop_signals() as stop:
        print(cluster.describe(), flush=True)
        print("Ctrl-C stops everything.", flush=True)
        _watch(cluster, stop)
        print("cluster: stopping", file=sys.stderr, flush=True)
        cluster.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
