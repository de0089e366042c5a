"""Driving the signed-on terminals for a while: closed loop (each terminal sends its next
request as soon as it has the answer to the last) or open loop (requests scheduled at
R/s overall; latency counted from the scheduled time, so a slow gateway cannot hide its
queue); every response's MAC verified; a warm-up first, reported apart."""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import math
import random
import signal
import time
from collections.abc import Iterable
from dataclasses import replace
from typing import Any

from protocol.codes import ResponseCode
from sim.load.check import BalanceReader, CheckError, check_report, payers_of
from sim.load.family import FAMILY_TYPES, Step
from sim.load.faults import Faults
from sim.load.frames import ResponseFormatError, read_response
from sim.load.money import MoneySeen, Payer
from sim.load.options import AMOUNT_TYPES, MONEY_TYPES, UNMACCED_TYPES, LoadOptions, UsageError
from sim.load.progress import ProgressDisplay
from sim.load.stats import LATE_AFTER_S, Report, Stats, build_report
from sim.load.terminals import LoadTerminal, check_world, make_terminals, sign_on_all
from sim.load.world import World

CONNECT_RETRY_DELAY_S = 0.1


class LoadRun:
    """Drives the signed-on terminals for the duration and counts what happens."""

    def __init__(self, terminals: list[LoadTerminal], options: LoadOptions, money: MoneySeen | None = None) -> None:
        self.terminals = terminals
        self.options = options
        self.rng = random.Random(options.seed)
        self.stats = Stats(options.mix)
        self.money = MoneySeen() if money is None else money
        self.faults = Faults(self.stats, options, self.rng, self.money)
        self._kinds = list(options.mix)
        self._kind_bounds = list(_cumulative(options.mix.values()))
        self._fault_names = list(options.faults)
        self._fault_bounds = list(_cumulative(options.faults.values()))
        self._amount_low, self._amount_high = options.amount_fen
        self.started = 0.0
        self.ends = 0.0
        self._next_slot = 0
        self._total_slots = 0
        self.stopped = False

    def stop(self) -> None:
        """End the run early (Ctrl-C): no new requests; those in flight complete."""
        self.stopped = True
        self.ends = min(self.ends, time.perf_counter())
        self._total_slots = min(self._total_slots, self._next_slot)

    # -- choosing ----------------------------------------------------------------
    def _kind(self) -> str:
        if len(self._kinds) == 1:
            return self._kinds[0]
        return self._kinds[bisect.bisect_right(self._kind_bounds, self.rng.random() * self._kind_bounds[-1])]

    def _fault(self) -> str | None:
        if not self._fault_names:
            return None
        roll = self.rng.random() * 100
        index = bisect.bisect_right(self._fault_bounds, roll)
        return self._fault_names[index] if index < len(self._fault_names) else None

    def _amount(self) -> int:
        if self._amount_low == self._amount_high:
            return self._amount_low
        return self.rng.randint(self._amount_low, self._amount_high)

    # -- running -------------------------------------------------------------------
    async def run(self) -> float:
        """Run the load; returns the seconds from the first request to the last answer."""
        self.started = time.perf_counter()
        self.ends = self.started + self.options.duration_s
        if self.options.rate:
            self._total_slots = int(self.options.rate * self.options.duration_s)
            workers = [self._open_loop(t) for t in self.terminals]
        else:
            workers = [self._closed_loop(t) for t in self.terminals]
        await asyncio.gather(*workers)
        if self.options.rate:
            self.stats.scheduled = self._scheduled_until(time.perf_counter())
        return time.perf_counter() - self.started

    def _scheduled_until(self, now: float) -> int:
        """Slots whose time has come by ``now`` (all slots once the run is over)."""
        elapsed = min(now, self.ends) - self.started
        return min(self._total_slots, max(0, math.ceil(elapsed * (self.options.rate or 0))))

    async def _closed_loop(self, terminal: LoadTerminal) -> None:
        while time.perf_counter() < self.ends:
            await self.one(terminal, None)

    async def _open_loop(self, terminal: LoadTerminal) -> None:
        rate = self.options.rate or 1.0
        while self._next_slot < self._total_slots:
            slot = self._next_slot
            self._next_slot += 1
            scheduled = self.started + slot / rate
            now = time.perf_counter()
            if scheduled > now:
                await asyncio.sleep(scheduled - now)
            else:
                lag = now - scheduled
                if lag > LATE_AFTER_S:
                    self.stats.late += 1
                if lag > self.stats.max_lag_s:
                    self.stats.max_lag_s = lag
                if now >= self.ends:  # the run is over: this slot and the rest are dropped
                    self._next_slot = self._total_slots
                    return
            await self.one(terminal, scheduled)

    async def one(self, terminal: LoadTerminal, scheduled: float | None) -> None:
        """One slot of the load: a request, possibly with a fault, or a garbage probe; none while
        the terminal owes a reversal the gateway does not answer yet."""
        self.stats.slots += 1
        if terminal.owed and not await self.faults.pay_owed(terminal):
            self.stats.reversals["slots_held"] += 1
            await asyncio.sleep(CONNECT_RETRY_DELAY_S)
            return
        fault = self._fault()
        if fault == "garbage":
            await self.faults.garbage()
            return
        kind = self._kind()
        if fault == "badmac" and kind in UNMACCED_TYPES:
            fault = None  # an echo carries no MAC to spoil
        stan = terminal.next_stan()
        step: Step | None = None
        if kind in FAMILY_TYPES:
            card = terminal.card_in_turn()
            step = terminal.family.step(terminal.terminal, kind, f"{stan:06d}", self._amount(), self.rng,
                                        card.pan, card.pin)
            if step is None:  # nothing to refund yet: a purchase instead
                kind = "purchase"
        payer: Payer | None
        if step is not None:
            frame, message = step.frame(terminal.mac_of, bad_mac=fault == "badmac")
            amount, payer = step.amount_fen, step.payer
        else:
            template = terminal.template(kind)
            amount = self._amount() if kind in AMOUNT_TYPES else 0
            frame, message = template.build(stan, amount, terminal.mac_of, bad_mac=fault == "badmac")
            payer = template.payer
        settled = False
        try:
            settled = await self._exchange(terminal, kind, fault, stan, frame, message, scheduled, amount, payer,
                                           step)
        finally:
            if step is not None and not settled:
                terminal.family.unanswered(step)

    async def _exchange(self, terminal: LoadTerminal, kind: str, fault: str | None, stan: int, frame: bytes,
                        message: bytes, scheduled: float | None, amount: int, payer: Payer | None,
                        step: Step | None) -> bool:
        """Send one request and act on its answer; True when a refund or pre-authorization step got
        an answer its terminal can act on (then ``step`` is settled)."""
        stats, options = self.stats, self.options
        try:
            connection = await terminal.open_connection()
        except (OSError, TimeoutError):
            if fault is None or fault == "repeat":
                stats.request(kind)
            stats.error("connect_failures")
            await asyncio.sleep(CONNECT_RETRY_DELAY_S)
            return False
        if fault == "drop":
            stats.faults["drop"]["injected"] += 1
            connection.send_only(frame)
            connection.close()  # before the answer could be read
            if connection is terminal.connection:
                terminal.connection = None
            if kind in MONEY_TYPES:
                stats.faults["drop"]["reversals_needed"] += 1
                await self.faults.reverse(terminal, message, "drop", reason="98")
            return False
        if fault == "badmac":
            await self.faults.badmac(terminal, connection, frame)
            return False
        stats.request(kind)
        started = scheduled if scheduled is not None else time.perf_counter()
        try:
            body = await connection.exchange(frame, options.timeout_s)
        except TimeoutError:
            await self.faults.no_answer(terminal, connection, kind, message, "timeouts")
            return False
        except ConnectionError:
            await self.faults.no_answer(terminal, connection, kind, message, "disconnects")
            return False
        except ResponseFormatError:
            await self.faults.no_answer(terminal, connection, kind, message, "bad_responses")
            return False
        latency = time.perf_counter() - started
        try:
            view = read_response(body[11:])
        except ResponseFormatError:
            await self.faults.no_answer(terminal, connection, kind, message, "bad_responses")
            return False
        if view.stan != f"{stan:06d}" or view.terminal_id != terminal.spec.tid or view.code is None:
            await self.faults.no_answer(terminal, connection, kind, message, "bad_responses")
            return False
        code = view.code
        if view.mac is not None:
            mac_ok = terminal.verify_mac(view)
        else:
            known = ResponseCode.of(code)
            mac_ok = kind in UNMACCED_TYPES or (known is not None and not known.always_macced)
        stats.answer(kind, code, latency)
        if not mac_ok:
            stats.error("mac_failures")
            terminal.done_with(connection)
            if kind in MONEY_TYPES and code == "00":
                await self.faults.reverse(terminal, message, "mac_failure", reason="06")
            return False
        if step is not None:
            terminal.family.answered(step, code, body[11:], self.money)
        elif code == "00" and payer is not None:
            self.money.approved(payer, amount)
            if kind == "purchase" and payer[1] is not None:
                terminal.family.sold(payer[1], view.rrn, view.local_date, amount)
        if fault == "repeat":
            await self.faults.repeat(connection, frame, body, code)
        terminal.done_with(connection)
        return step is not None


def _cumulative(values: Iterable[float]) -> Iterable[float]:
    total = 0.0
    for value in values:
        total += value
        yield total


def _warmup_summary(report: Report) -> dict[str, Any]:
    """What the report keeps of a warm-up: its counts, latency and errors."""
    keep = ("duration_s", "requests", "answered", "approved", "by_code", "throughput_rps", "approved_rps",
            "latency_ms", "errors", "errors_total", "open_loop")
    summary = {name: getattr(report, name) for name in keep}
    summary["errors"] = {name: count for name, count in report.errors.items() if count}
    return summary


async def _drive(runner: LoadRun, progress: ProgressDisplay | None, label: str) -> float:
    """Run the load with Ctrl-C stopping it and the progress display following it; its seconds."""
    loop = asyncio.get_running_loop()
    with contextlib.suppress(NotImplementedError, RuntimeError):
        loop.add_signal_handler(signal.SIGINT, runner.stop)
    ticker = None
    if progress is not None:
        ticker = asyncio.create_task(progress.follow(runner, label))
    try:
        return await runner.run()
    finally:
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.remove_signal_handler(signal.SIGINT)
        if ticker is not None:
            ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await ticker


async def run_load(world: World, options: LoadOptions, *, progress: ProgressDisplay | None = None,
                   check: BalanceReader | None = None) -> Report:
    """Sign on, warm up (``options.warmup_s``), run the load, send the reversals still owed
    (for at most ``options.timeout_s``), and report. With ``check``, the balances of the
    cards and floats the run can move are read before and after, and compared with what
    the terminals saw approved (``Report.check``). ``UsageError`` if no terminal could sign
    on; ``CheckError`` if the opening balances cannot be read."""
    count = check_world(world, options)
    terminals = make_terminals(world, options, count)
    payers = payers_of(terminals, options.mix) if check is not None else []
    opening = await check.read(payers) if check is not None else {}
    if progress is not None:
        progress.start_signon(len(terminals))
    signed_on, signon = await sign_on_all(terminals, on_done=progress.signed_on if progress else None)
    if not signed_on:
        reasons = ", ".join(f"{reason} ({n})" for reason, n in signon["failures"].items())
        raise UsageError(f"no terminal could sign on: {reasons}")
    for terminal in signed_on:
        terminal.prepare(kind for kind, weight in options.mix.items() if weight)

    def report_of(runner: LoadRun, duration: float) -> Report:
        return build_report(runner.stats, mode="open" if options.rate else "closed", connect=options.connect,
                            terminals=len(signed_on), duration_s=duration, mix=options.mix,
                            faults=options.faults, rate=options.rate, signon=signon)

    money = MoneySeen()
    runner = LoadRun(signed_on, options, money)
    runner.stats.errors["signon_failures"] = signon["failed"]
    runner.stats.error_total += signon["failed"]
    warmup, duration = None, 0.0
    try:
        if options.warmup_s > 0:
            warm = LoadRun(signed_on, replace(options, duration_s=options.warmup_s), money)
            warmup = _warmup_summary(report_of(warm, await _drive(warm, progress, "warm-up")))
            warmup["ended_at"] = round(time.time(), 3)  # Unix time: the run's requests come after
            if warm.stopped:
                runner.stop()
        if not runner.stopped:
            duration = await _drive(runner, progress, "load")
    finally:
        for terminal in signed_on:
            terminal.close()
    await runner.faults.settle_owed(signed_on, options.timeout_s)
    await asyncio.sleep(0)  # let the closed connections go
    report = report_of(runner, duration)
    report.warmup = warmup
    if check is not None:
        try:
            report.check = check_report(opening, money, await check.read(payers))
        except CheckError as exc:
            report.check = {"ok": False, "error": str(exc)}
    return report
