"""Chip terminals' messages (WIRE.md 9.5, 9.9): IC list queries (372/382),
downloads (370/380), download ends (371/381) and the status upload (362).

They are answered like an echo: 97 for an unregistered terminal, 58 for a
frozen one, no keys and no MAC; so their routes (``gateway.acquiring.router``)
are the echo's checks (``steps.identify_terminal``, ``steps.check_merchant``,
``steps.check_not_frozen``) then one step of this module, which puts the
answer's 62 in ``txn.reply`` (sent with 00 only). A malformed 62: 30.

``IC_MESSAGES`` lists them by (MTI, 60.3), all with 60.1 = ``00``, for the
router; ``processing_requirement`` is the header digit of every answer, which
the processor asks for after the steps ran (so an end message's answer already
says ``0``).

**What the digit costs** (``PromptStates``): a financial request whose context
was read for it gets the digit's inputs in that same statement (the store's
context query joins ``ic_terminal_state`` by primary key and the one row of
``ic_list_versions``): no extra round trip. Network messages (sign-on, echo,
these) read it with one query after their steps: a terminal sends a few a day.
A financial request checked against cached records (the context cache, risk
rules off) uses the terminal's state as this process last read it, for up to
``PROMPT_STATE_TTL_S``, then one query, kept again: at most one extra round
trip per terminal per ``PROMPT_STATE_TTL_S``. A change (a CAPK added, a round
ended on another process) shows within that time there.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from gateway.acquiring.context import Services, Transaction
from gateway.acquiring.outcomes import Decline, Outcome
from gateway.domain import ic
from gateway.domain.vocabulary import Kind
from protocol import ic_lists
from protocol.codes import ResponseCode

Step = Callable[[Transaction, Services], Awaitable[None]]

TXN_TYPE = "00"  # 60.1 of every message here
KEY_DATA = "key_data"  # field 62 in ``txn.reply``


def _format_error(exc: ic_lists.IcListError) -> Decline:
    return Decline(Outcome.FORMAT_ERROR, f"field 62: {exc}")


def query_list(which: str) -> Step:
    """List query (0820, 372 CAPK / 382 AID): the entries after the NN the terminal has,
    as many as fit in 512 bytes; NN = 00 starts the terminal's round."""

    async def step(txn: Transaction, svc: Services) -> None:
        try:
            have_count = ic_lists.parse_query(txn.request.key_data)
        except ic_lists.IcListError as exc:
            raise _format_error(exc) from None
        async with svc.pool.acquire() as conn:
            await ic.note_query(conn, txn.terminal_record.tid, which, have_count)
            entries = await (ic.capk_entries(conn) if which == ic.CAPK else ic.aid_entries(conn))
        txn.reply[KEY_DATA] = ic_lists.query_answer(entries, have_count)

    step.__name__ = f"query_{which}_list"
    return step


def download(which: str) -> Step:
    """Download (0800, 370 CAPK / 380 AID): ``1`` and the whole record, or ``0`` when unknown."""

    async def step(txn: Transaction, svc: Services) -> None:
        data = txn.request.key_data
        try:
            if which == ic.CAPK:
                record = await ic.capk_record(svc.pool, *ic_lists.parse_capk_download(data))
            else:
                record = await ic.aid_record(svc.pool, ic_lists.parse_aid_download(data))
        except ic_lists.IcListError as exc:
            raise _format_error(exc) from None
        txn.reply[KEY_DATA] = ic_lists.download_answer(record)

    step.__name__ = f"download_{which}"
    return step


def end_download(which: str) -> Step:
    """Download end (0800, 371 CAPK / 381 AID): the terminal now holds the version its round started at."""

    async def step(txn: Transaction, svc: Services) -> None:
        await ic.note_end(svc.pool, txn.terminal_record.tid, which)

    step.__name__ = f"end_{which}_download"
    return step


async def upload_status(txn: Transaction, svc: Services) -> None:
    """Status upload (0820, 362): kept, replacing the last; always 00 (what does not parse is kept raw)."""
    await ic.keep_device_status(svc.pool, txn.terminal_record.tid, ic_lists.parse_status(txn.request.key_data))


# (MTI, 60.3) -> (kind, the step after the echo's checks); 60.1 is "00".
IC_MESSAGES: dict[tuple[str, str], tuple[Kind, Step]] = {
    ("0820", ic_lists.CAPK_QUERY): (Kind.IC_CAPK_QUERY, query_list(ic.CAPK)),
    ("0820", ic_lists.AID_QUERY): (Kind.IC_AID_QUERY, query_list(ic.AID)),
    ("0800", ic_lists.CAPK_DOWNLOAD): (Kind.IC_CAPK_DOWNLOAD, download(ic.CAPK)),
    ("0800", ic_lists.AID_DOWNLOAD): (Kind.IC_AID_DOWNLOAD, download(ic.AID)),
    ("0800", ic_lists.CAPK_END): (Kind.IC_CAPK_END, end_download(ic.CAPK)),
    ("0800", ic_lists.AID_END): (Kind.IC_AID_END, end_download(ic.AID)),
    ("0820", ic_lists.STATUS_UPLOAD): (Kind.STATUS_UPLOAD, upload_status),
}

PROMPT_STATE_TTL_S = 5.0  # how long a cached-context request trusts the terminal's list state last read
PROMPT_READ_TIMEOUT_S = 0.5  # the digit's own query: past this the answer goes out with 0
SIGN_ON_DIGIT = "3"


class PromptStates:
    """Each terminal's list state (``ic.ListState``) as this process last read it, with when;
    at most ``size`` terminals (the one kept longest ago goes first)."""

    __slots__ = ("size", "ttl_s", "entries")

    def __init__(self, size: int, ttl_s: float = PROMPT_STATE_TTL_S) -> None:
        self.size, self.ttl_s = max(size, 1), ttl_s
        self.entries: dict[str, tuple[ic.ListState, float]] = {}

    def get(self, tid: str, now_s: float) -> ic.ListState | None:
        entry = self.entries.get(tid)
        return entry[0] if entry is not None and now_s - entry[1] < self.ttl_s else None

    def keep(self, tid: str, state: ic.ListState, now_s: float) -> None:
        self.entries.pop(tid, None)
        if len(self.entries) >= self.size:
            del self.entries[next(iter(self.entries))]
        self.entries[tid] = (state, now_s)


async def processing_requirement(txn: Transaction, svc: Services, code: ResponseCode,
                                 states: PromptStates | None = None) -> str:
    """The header's processing-requirement digit of an answer (WIRE.md 9.5, 9.9): 3 with 77, A0
    and 99; else, for a known terminal, 4 or 5 while a list it queried changed since its last
    completed round; else 0. Its cost: see the module's docstring. A 96 asks nothing more of
    the database, and a read that fails or is slow gives 0: the answer goes out all the same."""
    if code.asks_sign_on:
        return SIGN_ON_DIGIT
    if txn.terminal is None or code is ResponseCode.SYSTEM_MALFUNCTION:
        return ic.PROMPT_NONE
    tid, now_s = txn.terminal.tid, time.monotonic()
    context = txn.context
    if context is not None and context.lists is not None:  # read with the terminal, for this request
        state = context.lists
    elif context is not None and states is not None and (kept := states.get(tid, now_s)) is not None:
        return ic.prompt_digit_from(kept)  # a cached context: the state last read, within its TTL
    else:
        try:
            state = await asyncio.wait_for(ic.list_state(svc.pool, tid), PROMPT_READ_TIMEOUT_S)
        except Exception:  # the database gone or slow: the answer still goes out, without a prompt
            return ic.PROMPT_NONE
    if states is not None:
        states.keep(tid, state, now_s)
    return ic.prompt_digit_from(state)
