"""One ``posgw serve`` of the bench on free ports: started, watched (its log, its own
latency, its /metrics, its CPU and memory) and stopped."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
import urllib.request
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from bench.config import LISTEN_TIMEOUT_S, LOGS, POSGW, ROOT, STOP_TIMEOUT_S, BenchError
from bench.procs import cpu_s, descendants, free_port, rss_kb
from sim.load.stats import latency_summary  # the simulator's percentiles (nearest rank), for like with like


@dataclass
class Gateway:
    """One ``posgw serve`` on free ports, its output in ``bench/data/logs/<name>.log``."""

    name: str
    env: dict[str, str]
    workers: int = 1
    wire_only: bool = False
    port: int = 0
    metrics_port: int = 0
    process: subprocess.Popen[bytes] | None = None
    log_path: Path = field(default_factory=Path)

    def start(self) -> Gateway:
        self.port, self.metrics_port = free_port(), free_port()
        self.log_path = LOGS / f"{self.name}.log"
        cmd = [POSGW, "serve", "--host", "127.0.0.1", "--port", str(self.port),
               "--metrics-port", str(self.metrics_port), "--workers", str(self.workers)]
        if self.wire_only:
            cmd.append("--wire-only")
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(cmd, env=self.env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + LISTEN_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.listening() >= self.workers:
                return self
            if self.process.poll() is not None:
                raise BenchError(f"gateway {self.name} exited {self.process.returncode}:\n{self.log_tail()}")
            time.sleep(0.1)
        self.stop()
        raise BenchError(f"gateway {self.name}: no 'listening' log line in {LISTEN_TIMEOUT_S:.0f} s:\n"
                         f"{self.log_tail()}")

    def listening(self) -> int:
        count = 0
        with contextlib.suppress(OSError):
            for line in self.log_path.read_text(errors="replace").splitlines():
                if '"listening"' in line:
                    with contextlib.suppress(json.JSONDecodeError):
                        count += json.loads(line).get("event") == "listening"
        return count

    def log_size(self) -> int:
        with contextlib.suppress(OSError):
            return self.log_path.stat().st_size
        return 0

    def own_latency(self, since: int = 0, *, after: float | None = None) -> dict[str, Any]:
        """The gateway's own latency (``latency_ms`` of its ``txn`` log lines after byte ``since``,
        and logged after Unix time ``after`` if given: the end of a warm-up), by kind: from the
        request decoded to the response encoded, without socket or queue time."""
        by_kind: dict[str, list[float]] = {}
        with contextlib.suppress(OSError), self.log_path.open("rb") as log:
            log.seek(since)
            for line in log:
                if b'"txn"' not in line:
                    continue
                with contextlib.suppress(json.JSONDecodeError, KeyError, TypeError):
                    record = json.loads(line)
                    if record.get("event") == "txn" and (
                            after is None or datetime.fromisoformat(record["timestamp"]).timestamp() >= after):
                        by_kind.setdefault(record["kind"], []).append(record["latency_ms"] / 1000)
        return {kind: {"count": len(values), **latency_summary(values)} for kind, values in sorted(by_kind.items())}

    def log_tail(self, lines: int = 15) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def cpu(self) -> float:
        return cpu_s(descendants(self.pid))

    def rss_kb(self) -> int:
        return rss_kb(descendants(self.pid))

    def metric(self, name: str) -> float | None:
        """A sample of the gateway's /metrics, summed over its label sets."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=10) as answer:
            text = answer.read().decode()
        values = [float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                  if line.startswith(name) and line[len(name):len(name) + 1] in (" ", "{")]
        return sum(values) if values else None

    def context_cache(self) -> dict[str, int]:
        """Requests checked against the context cache since the gateway started (warm-up
        included), by result (posgw_context_cache_total: hit, stale, declined)."""
        return {result: int(self.metric(f'posgw_context_cache_total{{result="{result}"}}') or 0)
                for result in ("hit", "stale", "declined")}

    def stop(self) -> int | None:
        """SIGTERM, then wait for the drain; a gateway still up after STOP_TIMEOUT_S is killed."""
        if self.process is None or self.process.poll() is not None:
            return None if self.process is None else self.process.returncode
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            for pid in reversed(descendants(self.pid)):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            self.process.wait()
            raise BenchError(f"gateway {self.name} did not stop within {STOP_TIMEOUT_S:.0f} s of SIGTERM") from None

    def __enter__(self) -> Gateway:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        code = self.stop()
        if code not in (0, None) and exc[0] is None:
            raise BenchError(f"gateway {self.name} exited {code} after SIGTERM:\n{self.log_tail()}")
