"""An agent's bank details (``posgw agent set CODE --bank-account ...``): where its
withdrawals are paid, audited as ``agent.set`` on ``agent:<code>`` (CLI.md "Money out").

As for merchants (gateway.services.banking): the number is kept under the LMK,
the record holds the details as shown (``*`` and the last 4 digits) and their
version, and the same details again change nothing and write no record.
"""

from __future__ import annotations

from typing import Any

import asyncpg

from gateway.domain import banking, registry
from gateway.keys import SoftHsm
from gateway.services.agents import agent_entity
from gateway.services.audit import State, audited
from gateway.services.banking import bank_view

AGENT = "agent"


async def agent_bank_view(conn: asyncpg.Connection, code: str) -> dict[str, Any]:
    """What ``agent show`` adds: ``bank_account_masked``, ``bank_name``, ``account_name`` (each null when not set)."""
    return await bank_view(conn, AGENT, code)


async def agent_bank_state(conn: asyncpg.Connection, code: str) -> State:
    """The agent's status, its bank details masked and their version; None for an unknown agent."""
    agent = await registry.find_agent(conn, code)
    if agent is None:
        return None
    version = await conn.fetchval(
        "SELECT version FROM bank_details WHERE beneficiary_kind = $1 AND beneficiary = $2", AGENT, code)
    return {"code": code, "status": agent["status"]} | await agent_bank_view(conn, code) | {"bank_version": version}


async def set_agent_bank_details(conn: asyncpg.Connection, actor: str, hsm: SoftHsm, code: str, *,
                                 bank_account_number: str, bank_name: str,
                                 account_name: str) -> banking.BankDetailsChange:
    """Set where the agent's withdrawals are paid (the number kept under the LMK). An unknown
    agent or a malformed value: ``InvalidInput``, and nothing changed or recorded."""
    return await audited(
        conn, actor, "agent.set", agent_entity(code), lambda: agent_bank_state(conn, code),
        lambda: banking.set_bank_details(conn, hsm, AGENT, code, bank_account_number=bank_account_number,
                                         bank_name=bank_name, account_name=account_name))
