"""Chip terminals' lists (``posgw ic capk ...``, ``posgw ic aid ...``): add and
remove, each audited (CLI.md "Version 2 commands"; gateway.domain.ic does the work):

- ``ic.capk_add`` / ``ic.capk_remove`` on ``capk:<RID>/<index>`` (hex, upper
  case), the state ``rid``, ``index``, ``expiry`` and ``checksum``: what names
  the key, never its modulus or exponent;
- ``ic.aid_add`` / ``ic.aid_remove`` on ``aid:<AID>``, the state ``aid`` and
  ``tlv`` (its parameters, which are not secret).

A change that fails (an existing key or AID, a wrong check sum, removing an
unknown one) raises ``InvalidInput`` and writes no record.
"""

from __future__ import annotations

import asyncpg

from gateway.domain import ic
from gateway.services.audit import State, audited
from protocol.ic_lists import Capk


def capk_entity(rid: bytes, index: int) -> str:
    return f"capk:{rid.hex().upper()}/{index:02X}"


def aid_entity(aid: bytes) -> str:
    return f"aid:{aid.hex().upper()}"


def capk_view(capk: Capk) -> dict[str, str]:
    """What names a CAPK: ``rid``, ``index``, ``expiry`` (as ``ic capk list``) and its ``checksum`` (DF03)."""
    return {"rid": capk.rid.hex().upper(), "index": f"{capk.index:02X}", "expiry": capk.expiry,
            "checksum": capk.checksum.hex().upper()}


async def capk_state(conn: asyncpg.Connection, rid: bytes, index: int) -> State:
    capk = await ic.find_capk(conn, rid, index)
    return None if capk is None else capk_view(capk)


async def aid_state(conn: asyncpg.Connection, aid: bytes) -> State:
    """``aid`` and ``tlv`` as ``ic aid list`` shows them; None when not registered."""
    wanted = aid.hex().upper()
    return next((entry for entry in await ic.list_aids(conn) if entry["aid"] == wanted), None)


def _hex_or_none(value: str) -> bytes | None:
    try:
        return bytes.fromhex(value)
    except ValueError:
        return None


async def add_capk(conn: asyncpg.Connection, actor: str, capk: Capk) -> None:
    """Register a CAPK parsed by ``ic.parse_capk`` (check sum verified or computed)."""
    await audited(conn, actor, "ic.capk_add", capk_entity(capk.rid, capk.index),
                  lambda: capk_state(conn, capk.rid, capk.index), lambda: ic.add_capk(conn, capk))


async def remove_capk(conn: asyncpg.Connection, actor: str, rid: str, index: str) -> None:
    """Remove the CAPK (RID, index), both hex; a malformed or unknown one: ``InvalidInput``."""
    rid_raw, index_raw = _hex_or_none(rid), _hex_or_none(index)
    if rid_raw is None or index_raw is None or len(index_raw) != 1:
        await ic.remove_capk(conn, rid, index)  # raises InvalidInput, naming what is malformed
        return
    await audited(conn, actor, "ic.capk_remove", capk_entity(rid_raw, index_raw[0]),
                  lambda: capk_state(conn, rid_raw, index_raw[0]), lambda: ic.remove_capk(conn, rid, index))


async def add_aid(conn: asyncpg.Connection, actor: str, aid: bytes, parameters_tlv: bytes) -> None:
    """Register an AID and its parameter TLVs, as ``ic.parse_aid`` returns them."""
    await audited(conn, actor, "ic.aid_add", aid_entity(aid), lambda: aid_state(conn, aid),
                  lambda: ic.add_aid(conn, aid, parameters_tlv))


async def remove_aid(conn: asyncpg.Connection, actor: str, aid: str) -> None:
    """Remove the AID (hex); a malformed or unknown one: ``InvalidInput``."""
    aid_raw = _hex_or_none(aid)
    if aid_raw is None:
        await ic.remove_aid(conn, aid)  # raises InvalidInput
        return
    await audited(conn, actor, "ic.aid_remove", aid_entity(aid_raw), lambda: aid_state(conn, aid_raw),
                  lambda: ic.remove_aid(conn, aid))


async def seed_test_lists(conn: asyncpg.Connection, actor: str) -> dict[str, int]:
    """For ``posgw demo``: register the published test CAPKs and AIDs (``ic.published_test_lists``)
    not yet registered, each audited; a second run adds nothing. Returns how many were added."""
    capks, aids = ic.published_test_lists()
    added = {ic.CAPK: 0, ic.AID: 0}
    async with conn.transaction():
        for capk in capks:
            if await ic.find_capk(conn, capk.rid, capk.index) is None:
                await add_capk(conn, actor, capk)
                added[ic.CAPK] += 1
        for aid, tlv in aids:
            if await ic.aid_record(conn, aid) is None:
                await add_aid(conn, actor, aid, tlv)
                added[ic.AID] += 1
    return added
