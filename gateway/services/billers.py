"""Billers, their postpaid bills and prepaid meters: each addition audited as
``biller.add`` on ``biller:<code>``, ``bill.add`` on ``bill:<reference>``,
``meter.add`` on ``meter:<biller>/<meter>``."""

from __future__ import annotations

from typing import Any

import asyncpg

from gateway.domain import bills
from gateway.services.audit import State, audited


async def biller_state(conn: asyncpg.Connection, code: str) -> State:
    """What ``biller add`` prints (not the connector's URL, which may carry credentials)."""
    biller = await bills.load_biller(conn, code)
    return None if biller is None else bills.biller_view(biller)


async def add_biller(conn: asyncpg.Connection, actor: str, code: str, name: str, *, prepaid: bool, exact: bool,
                     commission_bp: int, commission_fixed_fen: int, connector: str,
                     connector_url: str | None, notify: bool = False) -> dict[str, Any]:
    """Register a biller with its ledger account; returns it as ``biller add`` prints it.
    ``notify``: a notice of each payment that stands (``biller add --notify``), in the record."""
    return await audited(conn, actor, "biller.add", f"biller:{code}", lambda: biller_state(conn, code),
                         lambda: bills.add_biller(conn, code, name, prepaid=prepaid, exact=exact,
                                                  commission_bp=commission_bp,
                                                  commission_fixed_fen=commission_fixed_fen, connector=connector,
                                                  connector_url=connector_url, notify=notify))


async def add_bill(conn: asyncpg.Connection, actor: str, biller_code: str, account: str, name: str, amount_fen: int,
                   period: str, due: str | None) -> dict[str, Any]:
    """An open postpaid bill, under a new reference; returns it as ``bill add`` prints it."""
    reference = bills.new_reference()
    return await audited(conn, actor, "bill.add", f"bill:{reference}", lambda: bills.find_bill(conn, reference),
                         lambda: bills.add_bill(conn, biller_code, account, name, amount_fen, period, due, reference))


async def add_meter(conn: asyncpg.Connection, actor: str, biller_code: str, meter: str, name: str) -> dict[str, Any]:
    return await audited(conn, actor, "meter.add", f"meter:{biller_code}/{meter}",
                         lambda: bills.find_meter(conn, biller_code, meter),
                         lambda: bills.add_meter(conn, biller_code, meter, name))
