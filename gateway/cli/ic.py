"""``posgw ic capk add|list|remove``, ``posgw ic aid add|list|remove``: the lists
chip terminals download (CLI.md "Version 2 commands"; WIRE.md 9.5)."""

from __future__ import annotations

import argparse
from typing import Any

from gateway.cli.common import Context, Subcommands, add_command, add_group
from gateway.domain import ic
from gateway.services import ic as ic_services


async def capk_add(args: argparse.Namespace, ctx: Context) -> dict[str, Any]:
    """Register a CAPK; prints it with its check sum (verified when given, computed when not)."""
    capk = ic.parse_capk(args.rid, args.index, args.modulus, args.exponent, args.expiry, args.checksum)
    await ic_services.add_capk(ctx.conn, ctx.actor, capk)
    return ic_services.capk_view(capk)


async def capk_list(args: argparse.Namespace, ctx: Context) -> dict[str, Any]:
    return {"capks": await ic.list_capks(ctx.conn)}


async def capk_remove(args: argparse.Namespace, ctx: Context) -> dict[str, Any]:
    await ic_services.remove_capk(ctx.conn, ctx.actor, args.rid, args.index)
    return {"rid": args.rid.upper(), "index": args.index.upper(), "removed": True}


async def aid_add(args: argparse.Namespace, ctx: Context) -> dict[str, Any]:
    aid, parameters_tlv = ic.parse_aid(args.aid, args.tlv)
    await ic_services.add_aid(ctx.conn, ctx.actor, aid, parameters_tlv)
    return {"aid": aid.hex().upper(), "tlv": parameters_tlv.hex().upper()}


async def aid_list(args: argparse.Namespace, ctx: Context) -> dict[str, Any]:
    return {"aids": await ic.list_aids(ctx.conn)}


async def aid_remove(args: argparse.Namespace, ctx: Context) -> dict[str, Any]:
    await ic_services.remove_aid(ctx.conn, ctx.actor, args.aid)
    return {"aid": args.aid.upper(), "removed": True}


def register(groups: Subcommands) -> Subcommands:
    chip = add_group(groups, "ic", "chip terminals' lists: CAPKs and AIDs")
    capk = chip.add_parser("capk", help="certification authority public keys").add_subparsers(
        dest="list_action", required=True)
    p = add_command(capk, "add", capk_add, help="register a CAPK (hash and key algorithms 01)")
    p.add_argument("--rid", required=True, help="5 bytes, hex")
    p.add_argument("--index", required=True, help="1 byte, hex")
    p.add_argument("--modulus", required=True, help="hex")
    p.add_argument("--exponent", required=True, help="03 or 010001")
    p.add_argument("--expiry", required=True, help="YYYYMMDD")
    p.add_argument("--checksum", help="DF03, the SHA-1 of RID, index, modulus and exponent (hex); verified")
    add_command(capk, "list", capk_list)
    p = add_command(capk, "remove", capk_remove)
    p.add_argument("rid")
    p.add_argument("index")
    aid = chip.add_parser("aid", help="applications and their parameters").add_subparsers(
        dest="list_action", required=True)
    p = add_command(aid, "add", aid_add, help="register an AID with its parameter TLVs (after 9F06)")
    p.add_argument("aid")
    p.add_argument("--tlv", help="BER-TLV, hex")
    add_command(aid, "list", aid_list)
    add_command(aid, "remove", aid_remove).add_argument("aid")
    return chip
