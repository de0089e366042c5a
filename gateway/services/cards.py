"""Prepaid cards: issue, freeze and unfreeze, unblock; each audited as
``card.<verb>`` on ``card:<pan_masked>``. No record holds the PAN or PIN."""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

from gateway.domain import cards
from gateway.keys import SoftHsm
from gateway.services.audit import State, audited, record_many, status_action


def card_entity(pan: str) -> str:
    return f"card:{cards.mask_pan(pan)}"


async def card_state(conn: asyncpg.Connection, hsm: SoftHsm, pan: str) -> State:
    """What ``card show`` shows: the masked PAN, status, PIN block, expiry and balance."""
    return await cards.find_card(conn, hsm, pan)


async def issue_card(conn: asyncpg.Connection, actor: str, hsm: SoftHsm, pan: str, pin: str, expiry: str,
                     balance_fen_opening: int) -> None:
    await audited(conn, actor, "card.issue", card_entity(pan), lambda: card_state(conn, hsm, pan),
                  lambda: cards.issue_card(conn, hsm, pan, pin, expiry, balance_fen_opening))


async def issue_cards(conn: asyncpg.Connection, actor: str, hsm: SoftHsm, new: Sequence[tuple[str, str, str]],
                      balance_fen_opening: int) -> None:
    """Issue a set of new cards (``cards.issue_cards``) in one transaction with
    their records, written in one statement (``card.issue``, one per card)."""
    async with conn.transaction():
        issued = await cards.issue_cards(conn, hsm, new, balance_fen_opening)
        await record_many(conn, actor, "card.issue", [(card_entity(pan), None, after)
                                                      for (pan, _, _), after in zip(new, issued, strict=True)])


async def set_card_status(conn: asyncpg.Connection, actor: str, hsm: SoftHsm, pan: str, status: str) -> None:
    await audited(conn, actor, status_action("card", status), card_entity(pan), lambda: card_state(conn, hsm, pan),
                  lambda: cards.set_card_status(conn, hsm, pan, status))


async def unblock_card(conn: asyncpg.Connection, actor: str, hsm: SoftHsm, pan: str) -> None:
    """Lift a PIN block (and the count of wrong PINs)."""
    await audited(conn, actor, "card.unblock", card_entity(pan), lambda: card_state(conn, hsm, pan),
                  lambda: cards.unblock_card(conn, hsm, pan))
