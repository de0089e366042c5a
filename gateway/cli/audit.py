"""``posgw audit list``: who changed what, when, before and after (CLI.md, "Version 2 commands")."""

from __future__ import annotations

import argparse
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from gateway.cli.common import Context, Subcommands, add_command, add_group
from gateway.domain.validate import InvalidInput
from gateway.services.audit import list_events


def parse_since(value: str | None, tz: ZoneInfo) -> datetime | None:
    """ISO 8601 (a date, or a date and time); without an offset, local time of ``tz``."""
    if value is None:
        return None
    try:
        since = datetime.fromisoformat(value)
    except ValueError:
        raise InvalidInput(f"--since must be ISO 8601 (2026-12-07 or 2026-12-07T10:00:00+08:00): {value!r}") from None
    return since if since.tzinfo is not None else since.replace(tzinfo=tz)


def entity(value: str | None) -> str | None:
    if value is not None and not (value.partition(":")[0] and value.partition(":")[2]):
        raise InvalidInput(f"--entity must be KIND:ID (terminal:DEMO0001): {value!r}")
    return value


async def audit_list(args: argparse.Namespace, ctx: Context) -> dict[str, Any]:
    tz = ctx.settings.tz
    events = await list_events(ctx.conn, since=parse_since(args.since, tz), actor=args.by,
                               entity=entity(args.entity))
    return {"events": [event.as_json(tz) for event in events]}


def register(groups: Subcommands) -> None:
    audit = add_group(groups, "audit", "the audit trail of changes")
    p = add_command(audit, "list", audit_list, help="changes, oldest first")
    p.add_argument("--since", help="ISO 8601; without an offset, local time")
    # dest differs from the global --actor's (who runs this command), which a subcommand's default would overwrite
    p.add_argument("--actor", dest="by", help="only this actor's changes")
    p.add_argument("--entity", help="only changes of this entity, KIND:ID")
