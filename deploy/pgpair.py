"""A primary and a synchronous standby on loopback, failed over by pg_auto_failover.

Three PostgreSQL clusters of Debian's ``postgresql-15`` under one run directory,
each kept by its own ``pg_autoctl`` process (``postgresql-15-auto-failover``):

    monitor   the pg_auto_failover monitor: it health-checks the nodes and
              decides who is primary
    node1     created first: the primary (database ``posgw``)
    node2     a ``pg_basebackup`` of node1 that streams from it; pg_autoctl puts
              it in the primary's ``synchronous_standby_names`` once it streams
              (before that every commit would wait)

With two nodes the formation's ``number_sync_standbys`` is 0: a commit waits
for the standby while it is up; when the monitor finds the standby gone it
moves the primary to ``wait_primary`` and clears ``synchronous_standby_names``
(commits go on, asynchronously, and the monitor's state says so) until the
standby is back and caught up. When the primary is lost the monitor promotes the
standby, and only a standby that was in sync: a commit the gateway saw
succeed is on the new primary.

The monitor is tuned for a fast failover (``MONITOR_SETTINGS``: health checks
every second, an unreachable node unhealthy after 2 s, a primary that cannot
be reached given 3 s to demote itself): a lost primary is replaced in about
7 s, where the defaults take close to a minute.

pg_autoctl refuses to run as root: as root, every command runs as the
``postgres`` user (``runuser``) and the run directory is given to it.

    python deploy/pgpair.py [--run-dir var/pgpair] [--ports 5601,5602,5603]

starts the pair in the foreground and prints the database URL
(``POSGW_DATABASE_URL``, both nodes, ``target_session_attrs=read-write``);
Ctrl-C stops it. The tests and ``deploy/cluster.py --pair`` drive the same code
through ``PgPair``.
"""

from __future__ import annotations

import argparse
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from gateway.db.backup import archive_command, pg_bindir

NODE_NAMES = ("node1", "node2")
PORTS_FILE = "ports.json"  # in the run dir: the ports the pair was built with
DBNAME = "posgw"
RUN_AS = "postgres"  # pg_autoctl's user when we are root
POLL_S = 0.2
# The monitor's health checks (milliseconds), tuned: a failover in seconds (no
# primary for 1.4 to 5.9 s in the tests here) instead of about 50 s with the defaults.
MONITOR_SETTINGS = {
    "pgautofailover.health_check_period": "1000",
    "pgautofailover.health_check_timeout": "1000",
    "pgautofailover.health_check_max_retries": "1",
    "pgautofailover.health_check_retry_delay": "200",
    "pgautofailover.node_considered_unhealthy_timeout": "2000",
    "pgautofailover.primary_demote_timeout": "3000",
    "pgautofailover.startup_grace_period": "2000",
}
# Each node's PostgreSQL: a standby retries its WAL source every 200 ms (the 5 s
# default sometimes delays a promotion by that much); a WAL archive when asked.
NODE_SETTINGS = {
    "wal_retrieve_retry_interval": "200ms",
}


class PairError(Exception):
    """A part of the pair would not start or settle; the message says which and why."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run_as() -> str | None:
    """The user to run PostgreSQL as: ``postgres`` when we are root, else ourselves (None)."""
    return RUN_AS if os.geteuid() == 0 else None


@dataclass
class PairConfig:
    run_dir: Path
    monitor_port: int = field(default_factory=free_port)
    node_ports: tuple[int, ...] = field(default_factory=lambda: (free_port(), free_port()))
    archive_dir: Path | None = None  # each node archives its WAL here (gateway.db.backup.archive_command)
    settle_timeout_s: float = 90.0

    def __post_init__(self) -> None:
        self.run_dir = Path(self.run_dir).resolve()
        if len(self.node_ports) != len(NODE_NAMES):
            raise ValueError(f"the pair has {len(NODE_NAMES)} nodes: give as many ports")


class Proc:
    """One ``pg_autoctl`` process (and the PostgreSQL it keeps), its output in a log file."""

    def __init__(self, name: str, argv: Sequence[str], env: dict[str, str], log_path: Path) -> None:
        self.name, self.argv, self.env, self.log_path = name, list(argv), env, log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with open(self.log_path, "ab") as log:
            # a process group of its own: killing the node kills pg_autoctl and its PostgreSQL
            self.proc = subprocess.Popen(self.argv, env=self.env, stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT, start_new_session=True)

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def signal_group(self, sig: int) -> None:
        if self.proc is not None:
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                pass

    def wait(self, timeout_s: float) -> bool:
        if self.proc is None:
            return True
        try:
            self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            return False
        return True

    def tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


class PgPair:
    """Start, inspect, break and stop the pair; ``with PgPair(config) as pair:``."""

    def __init__(self, config: PairConfig) -> None:
        self.config = config
        ports_file = config.run_dir / PORTS_FILE
        if ports_file.exists():  # the pair of an earlier run: its nodes know their ports
            ports = json.loads(ports_file.read_text())
            config.monitor_port, config.node_ports = ports["monitor"], tuple(ports["nodes"])
        self.user = _run_as()
        self.bindir = pg_bindir()
        self.monitor: Proc | None = None
        self.nodes: list[Proc | None] = [None] * len(NODE_NAMES)

    # -- paths, URLs, commands -------------------------------------------------------
    def pgdata(self, name: str) -> Path:
        return self.config.run_dir / name

    @property
    def monitor_url(self) -> str:
        return f"postgresql://autoctl_node@127.0.0.1:{self.config.monitor_port}/pg_auto_failover?sslmode=disable"

    def node_url(self, index: int, dbname: str = DBNAME) -> str:
        """One node, whatever its role."""
        return f"postgresql://{self.db_user}@127.0.0.1:{self.config.node_ports[index]}/{dbname}"

    @property
    def db_user(self) -> str:
        return self.user or pwd.getpwuid(os.geteuid()).pw_name

    def url(self, dbname: str = DBNAME) -> str:
        """What the gateway uses: both nodes, the primary chosen by ``target_session_attrs``."""
        hosts = ",".join(f"127.0.0.1:{port}" for port in self.config.node_ports)
        return f"postgresql://{self.db_user}@{hosts}/{dbname}?target_session_attrs=read-write"

    def env(self) -> dict[str, str]:
        """pg_autoctl keeps its configuration and state under XDG dirs: ours, in the run dir."""
        xdg = self.config.run_dir / "xdg"
        env = dict(os.environ, XDG_CONFIG_HOME=str(xdg / "config"), XDG_DATA_HOME=str(xdg / "data"),
                   XDG_RUNTIME_DIR=str(xdg / "run"), PG_CONFIG=str(self.bindir / "pg_config"),
                   PATH=f"{self.bindir}{os.pathsep}{os.environ.get('PATH', os.defpath)}")
        env.pop("PGDATA", None)
        if self.user:
            env["HOME"] = str(self.config.run_dir)
        return env

    def argv(self, *args: str) -> list[str]:
        """A command line, as ``postgres`` when we are root."""
        command = list(args)
        if self.user:
            return ["runuser", "-u", self.user, "--", *command]
        return command

    def autoctl(self, *args: str, timeout_s: float = 60.0) -> str:
        """``pg_autoctl ARGS`` (a short command); its output. PairError unless it exits 0."""
        argv = self.argv(shutil.which("pg_autoctl") or "pg_autoctl", *args)
        result = subprocess.run(argv, env=self.env(), capture_output=True, text=True, timeout=timeout_s,
                                check=False, cwd=self.config.run_dir)
        if result.returncode != 0:
            raise PairError(f"pg_autoctl {' '.join(args)}: exit {result.returncode}: {result.stderr.strip()[-1500:]}")
        return result.stdout

    def psql(self, port: int, *statements: str, dbname: str = DBNAME, user: str | None = None,
             timeout_s: float = 10.0) -> str:
        """Statements through psql, each in a transaction of its own (unaligned, tuples only);
        PairError unless all succeed."""
        commands = [arg for sql in statements for arg in ("-c", sql)]
        argv = self.argv(str(self.bindir / "psql"), "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1",
                         "-p", str(port), "-U", user or self.db_user, "-d", dbname, *commands)
        result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s, check=False,
                                cwd=self.config.run_dir)
        if result.returncode != 0:
            raise PairError(f"psql :{port} {statements!r}: {result.stderr.strip()}")
        return result.stdout.strip()

    # -- starting ----------------------------------------------------------------------
    def start(self) -> PgPair:
        """Build the pair in an empty run dir, or run again the one it holds (then
        whichever node was primary stays primary)."""
        fresh = not (self.pgdata(NODE_NAMES[0]) / "PG_VERSION").exists()
        try:
            self._prepare_dirs()
            if fresh:
                (self.config.run_dir / PORTS_FILE).write_text(json.dumps(
                    {"monitor": self.config.monitor_port, "nodes": list(self.config.node_ports)}) + "\n")
            self._start_monitor()
            for index in range(len(NODE_NAMES)):
                self.start_node(index)
                if fresh:
                    self.wait_states({NODE_NAMES[0]: "single"} if index == 0 else
                                     {NODE_NAMES[0]: "primary", NODE_NAMES[1]: "secondary"})
            if not fresh:
                self._wait(self._roles_settled, "a primary and a secondary", self.monitor)
        except BaseException:
            self.stop()
            raise
        return self

    def _roles_settled(self) -> bool:
        states = self.states().values()
        return sorted(reported for reported, goal in states if reported == goal) == ["primary", "secondary"]

    def __enter__(self) -> PgPair:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _prepare_dirs(self) -> None:
        run_dir = self.config.run_dir
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "logs").mkdir(exist_ok=True)
        if self.config.archive_dir is not None:
            self.config.archive_dir.mkdir(parents=True, exist_ok=True)
        if self.user:
            owner = pwd.getpwnam(self.user)
            for path in (run_dir, run_dir / "logs", self.config.archive_dir):
                if path is not None:
                    os.chown(path, owner.pw_uid, owner.pw_gid)
            # the user must be able to reach the run dir: open the dirs above it for traversal
            for parent in run_dir.parents:
                mode = parent.stat().st_mode
                if not mode & 0o001:
                    os.chmod(parent, mode | 0o001)

    def _start_monitor(self) -> None:
        pgdata = self.pgdata("monitor")
        if (pgdata / "PG_VERSION").exists():
            self.monitor = self._spawn("monitor", "run", "--pgdata", str(pgdata))
        else:
            self.monitor = self._spawn("monitor", "create", "monitor", "--pgctl", str(self.bindir / "pg_ctl"),
                                       "--pgdata", str(pgdata), "--pgport", str(self.config.monitor_port),
                                       "--hostname", "127.0.0.1", "--auth", "trust", "--no-ssl", "--run")
        self._wait(self._monitor_ready, "the monitor to accept nodes", self.monitor)
        settings = [f"ALTER SYSTEM SET {name} = '{value}'" for name, value in MONITOR_SETTINGS.items()]
        self.psql(self.config.monitor_port, *settings, "SELECT pg_reload_conf()", dbname="pg_auto_failover")

    def _monitor_ready(self) -> bool:
        try:
            self.psql(self.config.monitor_port, "SELECT count(*) FROM pgautofailover.formation",
                      dbname="pg_auto_failover", timeout_s=3.0)
        except (PairError, subprocess.TimeoutExpired):
            return False
        return True

    def start_node(self, index: int) -> None:
        """Create the node (the first run) or run it again (its data dir exists).

        The first node is created (initdb, registered with the monitor) by a
        ``pg_autoctl create`` that exits, our settings are written into its
        postgresql.conf, and then it runs. The second is a ``pg_basebackup`` of
        the first, settings included; pg_autoctl does not ask for a fast
        checkpoint, so we ask the primary for one (else the copy waits for the
        next spread checkpoint, minutes away)."""
        name = NODE_NAMES[index]
        pgdata = self.pgdata(name)
        if (pgdata / "PG_VERSION").exists():
            self.nodes[index] = self._spawn(name, "run", "--pgdata", str(pgdata))
            return
        create = ("create", "postgres", "--pgctl", str(self.bindir / "pg_ctl"), "--pgdata", str(pgdata),
                  "--pgport", str(self.config.node_ports[index]), "--hostname", "127.0.0.1", "--name", name,
                  "--dbname", DBNAME, "--monitor", self.monitor_url, "--auth", "trust", "--no-ssl")
        if index == 0:
            self.autoctl(*create, timeout_s=self.config.settle_timeout_s)
            self._configure_node(pgdata)
            self.nodes[index] = self._spawn(name, "run", "--pgdata", str(pgdata))
            return
        self.nodes[index] = self._spawn(name, *create, "--run")
        primary_port = self.config.node_ports[0]

        def copied() -> bool:
            if (pgdata / "PG_VERSION").exists():
                return True
            try:
                self.psql(primary_port, "CHECKPOINT", timeout_s=5.0)
            except (PairError, subprocess.TimeoutExpired):
                pass
            return False

        self._wait(copied, f"{name}'s base backup", self.nodes[index])

    def _configure_node(self, pgdata: Path) -> None:
        """Our settings in the node's postgresql.conf (read at its next start and reload)."""
        lines = [f"{name} = '{value}'" for name, value in NODE_SETTINGS.items()]
        if self.config.archive_dir is not None:
            lines += ["archive_mode = on", f"archive_command = '{archive_command(self.config.archive_dir)}'"]
        conf = pgdata / "postgresql.conf"
        with open(conf, "a") as f:
            f.write("\n# posgw (deploy/pgpair.py)\n" + "\n".join(lines) + "\n")

    def _spawn(self, name: str, *args: str) -> Proc:
        log_path = self.config.run_dir / "logs" / f"{name}.log"
        proc = Proc(name, self.argv(shutil.which("pg_autoctl") or "pg_autoctl", *args), self.env(), log_path)
        proc.start()
        return proc

    def _wait(self, ready: Callable[[], bool], what: str, proc: Proc | None = None,
              timeout_s: float | None = None) -> None:
        deadline = time.monotonic() + (timeout_s or self.config.settle_timeout_s)
        while time.monotonic() < deadline:
            if ready():
                return
            if proc is not None and not proc.alive:
                raise PairError(f"{proc.name} exited waiting for {what}; the end of {proc.log_path}:\n{proc.tail()}")
            time.sleep(POLL_S)
        tail = f"; the end of {proc.log_path}:\n{proc.tail()}" if proc is not None else ""
        raise PairError(f"timed out waiting for {what}{tail}")

    # -- looking at it -----------------------------------------------------------------
    def states(self) -> dict[str, tuple[str, str]]:
        """The monitor's view: node name → (reported state, goal state); {} if it does not answer."""
        try:
            out = self.psql(self.config.monitor_port,
                            "SELECT json_object_agg(nodename, json_build_array(reportedstate, goalstate)) "
                            "FROM pgautofailover.node", dbname="pg_auto_failover", timeout_s=3.0)
        except (PairError, subprocess.TimeoutExpired):
            return {}
        return {name: (pair[0], pair[1]) for name, pair in json.loads(out or "{}").items()} if out else {}

    def wait_states(self, wanted: dict[str, str], timeout_s: float | None = None) -> None:
        """Until each named node has reported the state and its goal is the same."""
        seen: dict[str, tuple[str, str]] = {}

        def settled() -> bool:
            nonlocal seen
            seen = self.states()
            return all(seen.get(name) == (state, state) for name, state in wanted.items())

        try:
            self._wait(settled, f"states {wanted}", self.monitor, timeout_s)
        except PairError as exc:
            raise PairError(f"{exc}\nthe monitor has {seen}") from None

    def primary_index(self) -> int | None:
        """The node the monitor has as primary (reported and goal), None if none."""
        for name, (reported, goal) in self.states().items():
            if reported == goal and reported in ("primary", "wait_primary", "single"):
                return NODE_NAMES.index(name)
        return None

    def synchronous_standby_names(self, index: int) -> str:
        return self.psql(self.config.node_ports[index], "SHOW synchronous_standby_names")

    def postmaster_pid(self, index: int) -> int | None:
        """The node's postmaster, if it runs."""
        return self._postmaster_pid(self.pgdata(NODE_NAMES[index]))

    @staticmethod
    def _postmaster_pid(pgdata: Path) -> int | None:
        try:
            pid = int((pgdata / "postmaster.pid").read_text().split()[0])
            os.kill(pid, 0)
        except (OSError, ValueError, IndexError):
            return None
        return pid

    # -- breaking it ---------------------------------------------------------------------
    def kill_postgres(self, index: int) -> None:
        """SIGKILL the node's postmaster and every process it started (a stopped WAL
        sender too, which would never notice): PostgreSQL crashes, its pg_autoctl
        lives on. The monitor fails over before pg_autoctl has it up again, and
        pg_autoctl brings the old primary back as a standby (rewound if need be)."""
        pid = self.postmaster_pid(index)
        if pid is None:
            raise PairError(f"{NODE_NAMES[index]} has no running postmaster")
        children = self.children_of(pid)  # before they are orphans
        for victim in [pid, *children]:
            _kill(victim)

    def kill_node(self, index: int) -> None:
        """SIGKILL the node as a machine loss would: its PostgreSQL and its
        pg_autoctl; ``start_node`` brings it back."""
        proc = self.nodes[index]
        pid = self.postmaster_pid(index)
        children = self.children_of(pid) if pid is not None else []  # before they are orphans
        if proc is not None:
            proc.signal_group(signal.SIGKILL)
        for victim in ([pid] if pid is not None else []) + children:
            _kill(victim)
        if proc is not None:
            proc.wait(10.0)

    @staticmethod
    def children_of(pid: int) -> list[int]:
        result = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True, check=False)
        return [int(line) for line in result.stdout.split()]

    def wal_sender_pids(self, index: int) -> list[int]:
        """The node's WAL senders (on a primary: one per standby that streams)."""
        out = self.psql(self.config.node_ports[index], "SELECT pid FROM pg_stat_replication")
        return [int(line) for line in out.split()]

    # -- stopping ------------------------------------------------------------------------
    def stop(self, *, immediate: bool = False) -> None:
        """Stop the nodes, then the monitor; whatever does not stop in time is killed.
        ``immediate``: kill everything at once (a pair whose data is thrown away next)."""
        procs = [*self.nodes, self.monitor]
        if immediate:
            for index in range(len(NODE_NAMES)):
                self.kill_node(index)
        for proc in procs:
            if proc is not None and proc.alive:
                proc.signal_group(signal.SIGKILL if immediate else signal.SIGTERM)
        for proc in procs:
            if proc is not None and not proc.wait(15.0):
                proc.signal_group(signal.SIGKILL)
                proc.wait(5.0)
        for name in ("monitor", *NODE_NAMES):  # a postmaster left behind by a killed pg_autoctl
            pid = self._postmaster_pid(self.pgdata(name))
            if pid is not None:
                for victim in [pid, *self.children_of(pid)]:
                    _kill(victim)
        self.nodes = [None] * len(NODE_NAMES)
        self.monitor = None


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="deploy/pgpair.py", description="A PostgreSQL primary and synchronous "
                                     "standby on loopback, failed over by pg_auto_failover; Ctrl-C stops them.")
    parser.add_argument("--run-dir", type=Path, default=Path(os.environ.get("PGPAIR_RUN_DIR", "var/pgpair")))
    parser.add_argument("--ports", default=os.environ.get("PGPAIR_PORTS", "5601,5602,5603"),
                        help="monitor,node1,node2 (PGPAIR_PORTS, default 5601,5602,5603)")
    parser.add_argument("--archive-dir", type=Path, default=None, help="archive each node's WAL here")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    monitor_port, *node_ports = (int(p) for p in args.ports.split(","))
    pair = PgPair(PairConfig(args.run_dir, monitor_port, tuple(node_ports), args.archive_dir))
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        pair.start()
    except PairError as exc:
        print(f"pgpair: error: {exc}", file=sys.stderr)
        return 1
    print(f"pgpair: POSGW_DATABASE_URL={pair.url()}\n  monitor {pair.monitor_url}\n  logs {args.run_dir}/logs/",
          flush=True)
    stop.wait()
    pair.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
