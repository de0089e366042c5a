"""Agents: add, top up the float, freeze and unfreeze; each audited as ``agent.<verb>`` on ``agent:<code>``."""

from __future__ import annotations

import asyncpg

from gateway.domain import registry
from gateway.domain.validate import Problem
from gateway.services.audit import State, audited, status_action
from ledger import postings
from ledger.accounts import CASH_ACCOUNT_CODE, account_id


def agent_entity(code: str) -> str:
    return f"agent:{code}"


async def agent_state(conn: asyncpg.Connection, code: str) -> State:
    """What ``agent show`` shows: the float and commission balances too."""
    return await registry.find_agent(conn, code)


async def add_agent(conn: asyncpg.Connection, actor: str, code: str, name: str, parent: str | None) -> None:
    await audited(conn, actor, "agent.add", agent_entity(code), lambda: agent_state(conn, code),
                  lambda: registry.add_agent(conn, code, name, parent))


async def top_up(conn: asyncpg.Connection, actor: str, code: str, amount_fen: int) -> None:
    """Credit the agent's float from the cash account (money from outside), under
    the ledger key ``topup:<n>``, n from ``topup_seq``."""

    async def post() -> None:
        float_account = await registry.agent_float_account(conn, code)
        top_up_number = await conn.fetchval("SELECT nextval('topup_seq')")
        cash = await account_id(conn, CASH_ACCOUNT_CODE)
        result = await postings.post(conn, f"topup:{top_up_number}", [
            postings.Transfer(cash, float_account, amount_fen, "float_topup")])
        if result is not postings.PostResult.OK:
            raise Problem(f"top-up not posted: {result}")

    await audited(conn, actor, "agent.topup", agent_entity(code), lambda: agent_state(conn, code), post)


async def set_agent_status(conn: asyncpg.Connection, actor: str, code: str, status: str) -> None:
    """``agent.freeze`` or ``agent.unfreeze``: idempotent, and audited only when the status changes."""
    await audited(conn, actor, status_action("agent", status), agent_entity(code), lambda: agent_state(conn, code),
                  lambda: registry.set_agent_status(conn, code, status))
