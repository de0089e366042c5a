"""The live display of ``posgw-sim load`` on a terminal (rich)."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sim.load.loops import LoadRun

PROGRESS_INTERVAL_S = 0.25


class ProgressDisplay:
    """A rich progress bar: sign-on, then the run's elapsed time, requests, rate and errors."""

    def __init__(self, duration_s: float) -> None:
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        self.duration_s = duration_s
        self.progress = Progress(TextColumn("[bold]{task.description:<8}"), BarColumn(), TimeElapsedColumn(),
                                 TextColumn("{task.fields[info]}"), auto_refresh=False)
        self.signon_task: Any = None
        self._signon_total = 0
        self._signon_done = 0
        self._refreshed = 0.0

    def __enter__(self) -> ProgressDisplay:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def start_signon(self, count: int) -> None:
        self._signon_total = count
        self.signon_task = self.progress.add_task("sign-on", total=count, info=f"0/{count} terminals")
        self.progress.refresh()

    def signed_on(self) -> None:
        self._signon_done += 1
        now = time.perf_counter()
        last = self._signon_done == self._signon_total
        if last or now - self._refreshed >= PROGRESS_INTERVAL_S:
            self._refreshed = now
            self.progress.update(self.signon_task, completed=self._signon_done,
                                 info=f"{self._signon_done}/{self._signon_total} terminals", refresh=True)

    @staticmethod
    def _info(runner: LoadRun, rate: float) -> str:
        errors = runner.stats.error_total
        colour = "red" if errors else "green"
        return f"{runner.stats.requests} requests  {rate:7.0f}/s  [{colour}]{errors} errors[/]"

    async def follow(self, runner: LoadRun, label: str = "load") -> None:
        task = self.progress.add_task(label, total=runner.options.duration_s, info=self._info(runner, 0.0))
        last_count, last_time = 0, time.perf_counter()
        try:
            while True:
                await asyncio.sleep(PROGRESS_INTERVAL_S)
                now = time.perf_counter()
                count = runner.stats.requests
                rate = (count - last_count) / max(now - last_time, 1e-9)
                last_count, last_time = count, now
                self.progress.update(task, completed=min(now - runner.started, runner.options.duration_s),
                                     info=self._info(runner, rate), refresh=True)
        finally:
            elapsed = max(time.perf_counter() - runner.started, 1e-9)
            self.progress.update(task, completed=runner.options.duration_s,
                                 info=self._info(runner, runner.stats.requests / elapsed), refresh=True)
