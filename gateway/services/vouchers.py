"""Vouchers and the biller link (CLI.md "Vouchers and the biller link", rule
"Vouchers"): a prepaid biller's face values (``biller.set``), a voucher's
redemption (``voucher.redeem``) and unblocking (``voucher.unblock``), each
audited on ``biller:<code>`` or ``voucher:<serial>``; a biller's API key
(printed once, kept hashed, never audited).

A redemption runs in its own transaction: a wrong PIN is counted (and
audited) although the redemption fails, the one exception to "a failing
command changes nothing"; the voucher's row lock makes concurrent
redemptions of one voucher give one token."""

from __future__ import annotations

from datetime import date
from typing import Any

import asyncpg

from gateway.domain import bills
from gateway.domain import vouchers as domain
from gateway.domain.validate import InvalidInput
from gateway.domain.vouchers import NOT_FOUND, NOT_VALID, WRONG_PIN, VoucherRefused
from gateway.keys import SoftHsm
from gateway.services.audit import audited, record_many
from gateway.settings import Settings
from gateway.upstream.billers import Biller, new_token


async def _biller(conn: asyncpg.Connection, code: str) -> Biller:
    biller = await bills.load_biller(conn, code)
    if biller is None:
        raise InvalidInput(f"unknown biller {code}")
    return biller


async def set_voucher_values(conn: asyncpg.Connection, actor: str, code: str, values_fen: list[int]
                             ) -> dict[str, Any]:
    """Replace the face values a voucher of this prepaid biller may have (not prepaid: exit 2)."""
    biller = await _biller(conn, code)
    if not biller.prepaid:
        raise InvalidInput(f"biller {code} is not prepaid: it sells no vouchers")

    async def change() -> None:
        await conn.execute("UPDATE billers SET voucher_values_fen = $2 WHERE code = $1", code,
                           sorted(set(values_fen)))

    async def snapshot() -> dict[str, Any] | None:
        found = await bills.load_biller(conn, code)
        return None if found is None else bills.biller_view(found)

    await audited(conn, actor, "biller.set", f"biller:{code}", snapshot, change)
    return bills.biller_view(await _biller(conn, code))


async def new_api_key(conn: asyncpg.Connection, code: str) -> dict[str, str]:
    """A new API key for the biller, returned once and kept hashed; the old one stops working.
    Not audited (CLI.md: API keys are printed once and never audited)."""
    await _biller(conn, code)
    key = domain.new_api_key()
    await domain.set_api_key(conn, code, key)
    return {"biller": code, "api_key": key}


def _today(settings: Settings) -> date:
    return settings.today()


async def show_voucher(conn: asyncpg.Connection, settings: Settings, serial: str) -> dict[str, Any]:
    voucher = await domain.load(conn, serial)
    if voucher is None:
        raise InvalidInput(f"unknown voucher {serial}")
    return domain.view(voucher, _today(settings), settings.voucher_days_max, settings.tz)


async def redeem_voucher(conn: asyncpg.Connection, actor: str, hsm: SoftHsm, settings: Settings, serial: str,
                         pin: str, meter: str, *, biller_code: str | None = None) -> dict[str, Any]:
    """Redeem the voucher for a token on the meter: ``token``, ``amount_fen``, ``meter``.

    Checks, in order: unknown (404) → not valid (409) → PIN (422; the fifth
    wrong in a row blocks it) → meter of its biller (404). The same serial,
    PIN and meter after a success: the same token. ``biller_code`` (the biller
    API): a voucher of another biller is unknown."""
    async with conn.transaction():
        result = await _redeem(conn, actor, hsm, settings, serial, pin, meter, biller_code)
    if isinstance(result, VoucherRefused):
        raise result  # after the commit: a wrong PIN stays counted
    return result


async def _redeem(conn: asyncpg.Connection, actor: str, hsm: SoftHsm, settings: Settings, serial: str, pin: str,
                  meter: str, biller_code: str | None) -> dict[str, Any] | VoucherRefused:
    voucher = await domain.load(conn, serial, lock=True)
    if voucher is None or (biller_code is not None and voucher.biller_code != biller_code):
        return VoucherRefused(f"unknown voucher {serial}", NOT_FOUND)
    pin_right = hsm.voucher_pin_hash(serial, pin) == voucher.pin_hash
    if voucher.status == "redeemed" and pin_right and voucher.meter == meter:
        return {"serial": serial, "token": voucher.token, "amount_fen": voucher.amount_fen, "meter": meter}
    status = voucher.status_on(_today(settings), settings.voucher_days_max)
    if status != "valid":
        return VoucherRefused(f"voucher {serial} is {status}", NOT_VALID)
    entity = f"voucher:{serial}"
    if not pin_right:
        tries = voucher.pin_tries + 1
        await conn.execute("UPDATE vouchers SET pin_tries = $2 WHERE serial = $1", serial, tries)
        after = await domain.load(conn, serial)
        await record_many(conn, actor, "voucher.redeem", [(entity, domain.state(voucher), domain.state(after))])
        blocked = "; 5 wrong in a row: blocked" if tries >= domain.PIN_TRIES_MAX else ""
        return VoucherRefused(f"wrong PIN for voucher {serial}{blocked}", WRONG_PIN)
    if not await domain.meter_known(conn, voucher.biller_code, meter):
        return VoucherRefused(f"unknown meter {meter} of biller {voucher.biller_code}", NOT_FOUND)
    token = new_token()

    async def change() -> None:
        await conn.execute(
            """UPDATE vouchers SET status = 'redeemed', meter = $2, token = $3, redeemed_at = $4, pin_tries = 0
                WHERE serial = $1""", serial, meter, token, settings.now())
        await conn.execute(
            """INSERT INTO tokens (token, biller_code, meter, amount_fen, receipt, txn_id)
               VALUES ($1, $2, $3, $4, $5, $6)""",
            token, voucher.biller_code, meter, voucher.amount_fen, voucher.receipt, voucher.txn_id)

    async def snapshot() -> dict[str, Any] | None:
        return domain.state(await domain.load(conn, serial))

    await audited(conn, actor, "voucher.redeem", entity, snapshot, change)
    return {"serial": serial, "token": token, "amount_fen": voucher.amount_fen, "meter": meter}


async def unblock_voucher(conn: asyncpg.Connection, actor: str, serial: str) -> dict[str, Any]:
    """Reset the count of wrong PINs (idempotent: nothing to reset writes no record)."""
    if await domain.load(conn, serial) is None:
        raise InvalidInput(f"unknown voucher {serial}")

    async def snapshot() -> dict[str, Any] | None:
        return domain.state(await domain.load(conn, serial))

    async def change() -> None:
        await conn.execute("UPDATE vouchers SET pin_tries = 0 WHERE serial = $1 AND pin_tries <> 0", serial)

    await audited(conn, actor, "voucher.unblock", f"voucher:{serial}", snapshot, change)
    return {"serial": serial}
