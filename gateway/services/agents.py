"""Agents: add, top up the float, freeze and unfreeze, and the agent network's changes
(policy, redirect, the daily run); each audited as ``agent.<verb>`` on ``agent:<code>``
(the run on ``agentrun:<date>``)."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

import asyncpg

from gateway.domain import policies, redirects, registry
from gateway.domain.validate import Problem
from gateway.jobs import agent_run
from gateway.services.audit import State, audited, status_action
from gateway.settings import Settings
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


async def set_policy(conn: asyncpg.Connection, actor: str, code: str, values: dict[str, int],
                     from_day: date) -> dict[str, Any]:
    """``agent policy CODE NAME=VALUE ... --from D``, audited as ``agent.policy`` (one record:
    the policy in force from D before and after). A broken invariant or a day a run has
    posted: ``PolicyError`` (exit 2), nothing changed."""

    async def state() -> State:
        return {"from": from_day.isoformat(), "policy": await policies.policy_in_force(conn, code, from_day)}

    return await audited(conn, actor, "agent.policy", agent_entity(code), state,
                         lambda: policies.set_policy(conn, code, values, from_day, actor))


async def set_redirect(conn: asyncpg.Connection, actor: str, code: str, to_code: str | None, until: date | None,
                       today: date) -> None:
    """``agent redirect CODE --to CODE2 [--until D]`` (``to_code`` None: ``--off``), from the
    day after ``today``; audited as ``agent.redirect`` (the redirect listed before and after)."""

    async def state() -> State:
        return {"redirect": await redirects.current(conn, code, today)}

    async def change() -> None:
        if to_code is None:
            await redirects.redirect_off(conn, code, today, actor)
        else:
            await redirects.set_redirect(conn, code, to_code, until, today, actor)

    await audited(conn, actor, "agent.redirect", agent_entity(code), state, change)


async def run_day(conn: asyncpg.Connection, actor: str, settings: Settings, day: date, *,
                  so_far: bool = False, now: datetime | None = None) -> dict[str, int | str]:
    """``agent run --date D [--now]`` at ``now`` (default the settings' clock, ``clock_offset_s``): the day's
    totals so far. Audited as ``agent.run`` on ``agentrun:<date>`` when it posted anything
    (the day's totals before and after); a day not over without ``so_far``: ``DayNotOver``."""

    async def state() -> State:
        return dict(await agent_run.day_totals(conn, day))

    return await audited(conn, actor, "agent.run", f"agentrun:{day.isoformat()}", state,
                         lambda: agent_run.run(conn, day, settings.tz, now=now or settings.now(), so_far=so_far,
                                               actor=actor, settings=settings))
