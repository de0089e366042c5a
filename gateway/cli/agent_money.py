"""``posgw agent set`` (where an agent's withdrawals are paid) and ``posgw agent withdraw``
(CLI.md "Agent network" and "Money out"), registered into the ``agent`` group by
gateway.cli.agents."""

from __future__ import annotations

import argparse
from typing import Any

from gateway.cli.common import Context, Subcommands, add_bank_flags, add_command, bank_flags
from gateway.domain import registry, validate
from gateway.services import agent_banking, withdrawals


async def agent_bank_show(ctx: Context, code: str) -> dict[str, Any]:
    """The agent as ``agent show`` has it, and where its withdrawals go, the account masked (null when not set)."""
    return await registry.show_agent(ctx.conn, code) | await agent_banking.agent_bank_view(ctx.conn, code)


async def agent_set(args: argparse.Namespace, ctx: Context) -> dict[str, Any]:
    """Set where the agent's withdrawals are paid: the three bank flags together."""
    number, bank_name, account_name = bank_flags(args)
    await agent_banking.set_agent_bank_details(ctx.conn, ctx.actor, ctx.hsm, args.code,
                                               bank_account_number=number, bank_name=bank_name,
                                               account_name=account_name)
    return await agent_bank_show(ctx, args.code)


async def agent_withdraw(args: argparse.Namespace, ctx: Context) -> dict[str, Any]:
    """A withdrawal from the agent's profit balance: ``gross_fen``, ``tax_fen``, ``fee_fen``, ``net_fen``,
    ``payout_id`` (and ``code``, ``profit_fen`` after)."""
    return await withdrawals.withdraw(ctx.conn, ctx.actor, ctx.settings, args.code, validate.amount_fen(args.amount))


def register(agent: Subcommands) -> None:
    """``set`` and ``withdraw`` in the ``agent`` group."""
    p = add_command(agent, "set", agent_set, help="set where the agent's withdrawals are paid")
    p.add_argument("code")
    add_bank_flags(p)
    p = add_command(agent, "withdraw", agent_withdraw,
                    help="withdraw from the profit balance (paid by the next payout run)")
    p.add_argument("code")
    p.add_argument("amount", help="yuan, the gross: tax and fee are withheld from it")
