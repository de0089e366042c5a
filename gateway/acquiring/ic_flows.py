"""Chip terminals' messages (WIRE.md 9.5, 9.9): IC list queries (372/382),
downloads (370/380), download ends (371/381) and the status upload (362).

They are answered like an echo: 97 for an unregistered terminal, 58 for a
frozen one, no keys and no MAC; so their pipelines are the echo's checks
(``steps.identify_terminal``, ``steps.check_merchant``, ``steps.check_not_frozen``)
then one step of this module, which puts the answer's 62 in ``txn.reply``
(sent with 00 only). A malformed 62: 30.

``IC_MESSAGES`` lists them by (MTI, 60.3), all with 60.1 = ``00``, for the
router; ``processing_requirement`` is the header digit of every answer.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from gateway.acquiring.context import Services, Transaction
from gateway.acquiring.outcomes import Decline, Outcome
from gateway.domain import ic
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
IC_MESSAGES: dict[tuple[str, str], tuple[str, Step]] = {
    ("0820", ic_lists.CAPK_QUERY): ("ic_capk_query", query_list(ic.CAPK)),
    ("0820", ic_lists.AID_QUERY): ("ic_aid_query", query_list(ic.AID)),
    ("0800", ic_lists.CAPK_DOWNLOAD): ("ic_capk_download", download(ic.CAPK)),
    ("0800", ic_lists.AID_DOWNLOAD): ("ic_aid_download", download(ic.AID)),
    ("0800", ic_lists.CAPK_END): ("ic_capk_end", end_download(ic.CAPK)),
    ("0800", ic_lists.AID_END): ("ic_aid_end", end_download(ic.AID)),
    ("0820", ic_lists.STATUS_UPLOAD): ("status_upload", upload_status),
}


async def processing_requirement(txn: Transaction, svc: Services, code: ResponseCode) -> str:
    """The header's processing-requirement digit of an answer (WIRE.md 9.5, 9.9): 3 with 77, A0
    and 99; else, for a known terminal, 4 or 5 while a list it queried changed since its last
    completed round; else 0. One query (``ic.prompt_digit``) when the terminal is known."""
    if code.asks_sign_on:
        return "3"
    if txn.terminal is None:
        return ic.PROMPT_NONE
    try:
        return await ic.prompt_digit(svc.pool, txn.terminal.tid)
    except Exception:  # the database gone: the answer still goes out, without a prompt
        return ic.PROMPT_NONE
