"""``posgw preauth list`` and ``posgw batch diff`` (CLI.md, "Card transactions and
batches"; WIRE.md 9.3, 9.4): the pre-authorizations and their holds, and the
differences a batch upload found between a terminal and the gateway."""

from __future__ import annotations

import argparse
from typing import Any

from gateway.cli.common import Context, Subcommands, add_command, add_group, print_result
from gateway.domain import validate
from gateway.domain.validate import InvalidInput, Problem
from gateway.reports.card_batches import PREAUTH_STATUSES, batch_differences, list_preauths


async def preauth_list(args: argparse.Namespace, ctx: Context) -> dict[str, Any]:
    card_hash = ctx.hsm.pan_hash(validate.pan(args.card)) if args.card else None
    status = PREAUTH_STATUSES[args.status] if args.status else None
    return {"preauths": await list_preauths(ctx.conn, card_hash=card_hash, tid=args.tid, status=status)}


async def batch_diff(args: argparse.Namespace, ctx: Context) -> dict[str, Any] | None:
    """Exit 0 when the terminal's upload and the gateway's approvals agree, 1 (printed in
    full) on any difference, 2 before an upload of the batch ended."""
    if not args.batch.isdigit():
        raise InvalidInput(f"BATCH must be a number, got {args.batch!r}")
    differences = await batch_differences(ctx.conn, args.tid, int(args.batch))
    if differences is None:
        raise InvalidInput(f"no batch upload of {args.tid} batch {args.batch} has ended")
    result = {"tid": args.tid, "batch": int(args.batch), **differences}
    if any(differences.values()):
        print_result(result, args.json)
        raise Problem(f"batch {args.batch} of {args.tid}: "
                      + ", ".join(f"{len(v)} {k}" for k, v in differences.items() if v))
    return result


def register(groups: Subcommands) -> None:
    preauth = add_group(groups, "preauth", "pre-authorizations and their holds")
    p = add_command(preauth, "list", preauth_list, help="pre-authorizations, oldest first")
    p.add_argument("--card", metavar="PAN")
    p.add_argument("--tid")
    p.add_argument("--status", choices=tuple(PREAUTH_STATUSES))


def register_batch_diff(batch: Subcommands) -> None:
    """``batch diff TID BATCH``, in the ``batch`` group of gateway.cli.reports."""
    p = add_command(batch, "diff", batch_diff, help="what a batch upload found against the gateway's approvals")
    p.add_argument("tid")
    p.add_argument("batch")
