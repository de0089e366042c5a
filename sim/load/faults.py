"""The faults a real field brings, injected into a load, and what a terminal does about
them: a connection dropped before the answer (then the reversal, repeated until
answered, and if the gateway is away, owed: sent again before the terminal's next
request and at the end of the run), a
repeated request (its answer must be the first one, byte for byte), a bad
MAC (answered A0), garbage bytes (the connection closed unanswered)."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Sequence

from protocol.codes import ResponseCode
from protocol.framing import FramingError
from protocol.messages import FormatError, decode_message
from sim.load.connection import Connection
from sim.load.frames import ResponseFormatError, read_response
from sim.load.money import CARD, FLOAT, MoneySeen, OwedReversal
from sim.load.options import MONEY_TYPES, LoadOptions
from sim.load.stats import Stats
from sim.load.terminals import LoadTerminal
from sim.terminal import ResponseMacError

REVERSAL_TRIES = 5
REVERSAL_RETRY_DELAY_S = 0.2
GARBAGE_WAIT_S = 5.0


class Faults:
    """The faults of a run, and the reversals after them, counted in the run's ``stats``.
    A reversal not answered at once is owed by its terminal (``LoadTerminal.owed``): sent
    again before the terminal's next request (``pay_owed``), and at the end of the run
    (``settle_owed``)."""

    def __init__(self, stats: Stats, options: LoadOptions, rng: random.Random, money: MoneySeen) -> None:
        self.stats = stats
        self.options = options
        self.rng = rng
        self.money = money

    async def no_answer(self, terminal: LoadTerminal, connection: Connection, kind: str, message: bytes,
                        error: str) -> None:
        """No usable answer: count it, drop the connection, and reverse what may have moved money."""
        self.stats.error(error)
        terminal.done_with(connection, broken=True)
        if kind in MONEY_TYPES:
            await self.reverse(terminal, message, error, reason="98")

    async def reverse(self, terminal: LoadTerminal, message: bytes, cause: str, *, reason: str) -> None:
        """The 0400 of a request, on a fresh connection, repeated until answered: ``REVERSAL_TRIES``
        now; if still unanswered, the terminal owes it."""
        reversals = self.stats.reversals
        reversals["sent"] += 1
        reversals["by_cause"][cause] = reversals["by_cause"].get(cause, 0) + 1
        original = decode_message(message)
        payer = (CARD, original.pan) if original.pan else (FLOAT, terminal.spec.agent)
        owed = OwedReversal(original, payer, cause, reason)
        for attempt in range(REVERSAL_TRIES):
            if attempt:
                await asyncio.sleep(REVERSAL_RETRY_DELAY_S)
            if await self._send(terminal, owed, self.options.timeout_s):
                return
        reversals["owed"] += 1
        terminal.owed.append(owed)

    async def pay_owed(self, terminal: LoadTerminal) -> bool:
        """Before a terminal's next request, as a real one does: each reversal it owes, once,
        oldest first, stopping at the first not answered. True when it owes nothing more."""
        while terminal.owed:
            if not await self._send(terminal, terminal.owed[0], self.options.timeout_s):
                return False
            terminal.owed.pop(0)
        return True

    async def _send(self, terminal: LoadTerminal, owed: OwedReversal, timeout_s: float) -> bool:
        """One attempt at an owed reversal; True once it is answered. A 96 (nothing decided:
        WIRE.md 7) is not an answer: the reversal is sent again. An answer other than 00 ends
        the repeats, but leaves the original in doubt."""
        reversals = self.stats.reversals
        reversals["attempts"] += 1
        sim = terminal.terminal
        try:
            async with asyncio.timeout(timeout_s):
                response = await sim.reverse(owed.original, reason=owed.reason)
        except ResponseMacError:
            self.stats.error("mac_failures")
            return False
        except (OSError, TimeoutError, FramingError, FormatError):
            return False
        finally:
            await sim.close()
        code = response.response_code
        if code == ResponseCode.SYSTEM_MALFUNCTION:
            reversals["answered_96"] += 1
            return False
        reversals["answered"] += 1
        reversals["by_code"][code] = reversals["by_code"].get(code, 0) + 1
        if code != ResponseCode.APPROVED:
            self.stats.error("unexpected_codes")
            self.money.doubt(owed.payer, owed.original.amount_fen or 0, owed.cause, code)
        return True

    async def settle_owed(self, terminals: Sequence[LoadTerminal], within_s: float) -> None:
        """At the end of a run: every reversal the ``terminals`` still owe, sent until answered,
        each terminal's in turn, for at most ``within_s`` seconds in all. Those left are counted
        unanswered, and their originals are in doubt."""
        end = self.stats.reversals["end_of_run"]
        owing = [terminal for terminal in terminals if terminal.owed]
        end["owed"] = sum(len(terminal.owed) for terminal in owing)
        started = time.monotonic()
        deadline = started + within_s

        async def drain(terminal: LoadTerminal) -> None:
            while terminal.owed and (remaining := deadline - time.monotonic()) > 0:
                end["sent"] += 1
                if await self._send(terminal, terminal.owed[0], remaining):
                    end["answered"] += 1
                    terminal.owed.pop(0)
                else:
                    await asyncio.sleep(min(REVERSAL_RETRY_DELAY_S, max(0.0, deadline - time.monotonic())))

        await asyncio.gather(*(drain(terminal) for terminal in owing))
        end["seconds"] = round(time.monotonic() - started, 3)
        for terminal in owing:
            for owed in terminal.owed:
                end["left"] += 1
                self.stats.reversals["unanswered"] += 1
                self.stats.error("reversals_unanswered")
                self.money.doubt(owed.payer, owed.original.amount_fen or 0, owed.cause, None)

    async def repeat(self, connection: Connection, frame: bytes, first: bytes, code: str) -> None:
        """Send the same request again: its answer must be the first one, byte for byte."""
        counts = self.stats.faults["repeat"]
        counts["injected"] += 1
        known = ResponseCode.of(code)
        if known is not None and not known.stored:  # a repeat of it is processed afresh (WIRE.md 8)
            counts["skipped"] += 1
            return
        try:
            second = await connection.exchange(frame, self.options.timeout_s)
        except (TimeoutError, ConnectionError, ResponseFormatError) as exc:
            counts["failed"] += 1
            self.stats.error(_error_key(exc))
            connection.abort()
            return
        if second == first:
            counts["matched"] += 1
        else:
            counts["mismatched"] += 1
            self.stats.error("repeat_mismatches")

    async def badmac(self, terminal: LoadTerminal, connection: Connection, frame: bytes) -> None:
        """A request with a wrong MAC must be answered A0 (without a MAC)."""
        counts = self.stats.faults["badmac"]
        counts["injected"] += 1
        try:
            body = await connection.exchange(frame, self.options.timeout_s)
            view = read_response(body[11:])
        except (TimeoutError, ConnectionError, ResponseFormatError) as exc:
            counts["failed"] += 1
            self.stats.error(_error_key(exc))
            terminal.done_with(connection, broken=True)
            return
        if view.code == ResponseCode.MAC_FAILED and view.mac is None:
            counts["rejected_a0"] += 1
        else:
            counts["accepted"] += 1
            self.stats.error("badmac_accepted")
        terminal.done_with(connection)

    def garbage_bytes(self) -> bytes:
        rng = self.rng
        if rng.random() < 0.5:  # a length no frame may have
            return bytes((rng.randint(0x09, 0xFF),)) + rng.randbytes(rng.randint(1, 62))
        length = rng.randint(21, 64)  # a whole frame, but its TPDU ID is not 60
        first = rng.choice([b for b in range(256) if b != 0x60])
        return length.to_bytes(2, "big") + bytes((first,)) + rng.randbytes(length - 1)

    async def garbage(self) -> None:
        """Random bytes on a connection of their own: the gateway must close it unanswered."""
        counts = self.stats.faults["garbage"]
        counts["injected"] += 1
        try:
            connection = await Connection.open(self.options.host, self.options.port, self.options.timeout_s)
        except (OSError, TimeoutError):
            self.stats.error("connect_failures")
            return
        connection.send_only(self.garbage_bytes())
        try:
            async with asyncio.timeout(min(self.options.timeout_s, GARBAGE_WAIT_S)):
                await asyncio.shield(connection.lost)
        except TimeoutError:
            counts["not_closed"] += 1
            self.stats.error("garbage_not_closed")
            connection.abort()
            return
        if connection.unsolicited:
            counts["answered"] += 1
            self.stats.error("garbage_not_closed")
        else:
            counts["closed"] += 1


def _error_key(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timeouts"
    if isinstance(exc, ConnectionError):
        return "disconnects"
    return "bad_responses"
