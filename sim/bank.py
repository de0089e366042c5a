"""The bank simulator (``posgw-sim bank``): reads a payout file (ISO 20022
pain.001) and writes the bank's answer, a pain.002.001.12 customer payment
status report: every credit transfer settled (``ACSC``) except those to the
account numbers it is told to reject, which are rejected (``RJCT``) with a
reason code (default ``AC04``, closed account; ``AC01`` is a wrong number).

For tests and demonstrations; it imports nothing of the gateway (it is the
other party), only lxml. Given ``created_at``, the same input gives the same bytes.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Collection
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from lxml import etree

PAIN001_NS = "urn:iso:std:iso:20022:tech:xsd:pain.001.001.09"
PAIN002_NS = "urn:iso:std:iso:20022:tech:xsd:pain.002.001.12"
SETTLED, REJECTED = "ACSC", "RJCT"
DEFAULT_REJECT_REASON = "AC04"  # ExternalStatusReason1Code: closed account number
EXIT_OK, EXIT_USAGE = 0, 2


class BankSimError(ValueError):
    """The input is not a pain.001.001.09 the simulator can answer."""


@dataclass(frozen=True, slots=True)
class Instruction:
    """One credit transfer of the payout file."""

    end_to_end_id: str
    instruction_id: str | None
    creditor_account: str


def _text(parent: etree._Element, path: str) -> str | None:
    return parent.findtext("/".join(f"{{{PAIN001_NS}}}{tag}" for tag in path.split("/")))


def read_pain001(data: bytes) -> tuple[str, str, str, list[tuple[str, list[Instruction]]]]:
    """The message id, creation time, number of transactions and each payment
    information block's id with its credit transfers."""
    parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False)
    try:
        root = etree.fromstring(data, parser)
    except etree.XMLSyntaxError as exc:
        raise BankSimError(f"not well-formed XML: {exc}") from None
    if root.tag != f"{{{PAIN001_NS}}}Document":
        raise BankSimError(f"not a pain.001.001.09 document (root {root.tag})")
    initiation = root.find(f"{{{PAIN001_NS}}}CstmrCdtTrfInitn")
    if initiation is None:
        raise BankSimError("no CstmrCdtTrfInitn")
    blocks = []
    for block in initiation.iterfind(f"{{{PAIN001_NS}}}PmtInf"):
        transfers = [Instruction(_text(t, "PmtId/EndToEndId") or "", _text(t, "PmtId/InstrId"),
                                 _text(t, "CdtrAcct/Id/Othr/Id") or _text(t, "CdtrAcct/Id/IBAN") or "")
                     for t in block.iterfind(f"{{{PAIN001_NS}}}CdtTrfTxInf")]
        blocks.append((_text(block, "PmtInfId") or "", transfers))
    return (_text(initiation, "GrpHdr/MsgId") or "", _text(initiation, "GrpHdr/CreDtTm") or "",
            _text(initiation, "GrpHdr/NbOfTxs") or "0", blocks)


def _sub(parent: etree._Element, tag: str, text: str | None = None) -> etree._Element:
    element = etree.SubElement(parent, f"{{{PAIN002_NS}}}{tag}")
    if text is not None:
        element.text = text
    return element


def _reason(parent: etree._Element, code: str) -> None:
    _sub(_sub(_sub(parent, "StsRsnInf"), "Rsn"), "Cd", code)


def answer(pain001: bytes, reject_accounts: Collection[str], *, reason_code: str = DEFAULT_REJECT_REASON,
           created_at: datetime | None = None) -> bytes:
    """The pain.002.001.12 answer to a pain.001.001.09: one status per credit
    transfer, and the group's: ``ACSC`` all settled, ``RJCT`` all rejected,
    ``PART`` some of each."""
    message_id, original_created, count, blocks = read_pain001(pain001)
    rejected = {t.end_to_end_id for _, transfers in blocks for t in transfers if t.creditor_account in reject_accounts}
    transfers_total = sum(len(transfers) for _, transfers in blocks)
    group_status = SETTLED if not rejected else REJECTED if len(rejected) == transfers_total else "PART"
    created_at = created_at or datetime.now(UTC)

    document = etree.Element(f"{{{PAIN002_NS}}}Document", nsmap={None: PAIN002_NS})
    report = _sub(document, "CstmrPmtStsRpt")
    header = _sub(report, "GrpHdr")
    _sub(header, "MsgId", f"SIMBANK-{message_id}"[:35])
    _sub(header, "CreDtTm", created_at.isoformat(timespec="seconds"))
    group = _sub(report, "OrgnlGrpInfAndSts")
    _sub(group, "OrgnlMsgId", message_id)
    _sub(group, "OrgnlMsgNmId", "pain.001.001.09")
    if original_created:
        _sub(group, "OrgnlCreDtTm", original_created)
    _sub(group, "OrgnlNbOfTxs", count)
    _sub(group, "GrpSts", group_status)
    for block_id, transfers in blocks:
        block = _sub(report, "OrgnlPmtInfAndSts")
        _sub(block, "OrgnlPmtInfId", block_id)
        for transfer in transfers:
            status = _sub(block, "TxInfAndSts")
            if transfer.instruction_id:
                _sub(status, "OrgnlInstrId", transfer.instruction_id)
            _sub(status, "OrgnlEndToEndId", transfer.end_to_end_id)
            if transfer.end_to_end_id in rejected:
                _sub(status, "TxSts", REJECTED)
                _reason(status, reason_code)
            else:
                _sub(status, "TxSts", SETTLED)
    return etree.tostring(document, xml_declaration=True, encoding="UTF-8", pretty_print=True)


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The bank simulator's options, on ``parser`` (its own, or ``posgw-sim``'s ``bank`` subcommand)."""
    parser.add_argument("--in", dest="input", required=True, type=Path, help="the pain.001 payout file")
    parser.add_argument("--out", type=Path, help="where to write the pain.002 answer (default stdout)")
    parser.add_argument("--reject", default="", metavar="ACCOUNTS",
                        help="account numbers to reject, comma-separated")
    parser.add_argument("--reason", default=DEFAULT_REJECT_REASON, type=_reason_code,
                        help="their reason code (default AC04, closed account; AC01 a wrong number)")
    return parser


def _reason_code(value: str) -> str:
    """An ISO 20022 external status reason code: 1 to 4 letters or digits (``AC04``)."""
    if not (1 <= len(value) <= 4 and value.isascii() and value.isalnum()):
        raise argparse.ArgumentTypeError("reason must be an ISO 20022 status reason code, like AC04")
    return value.upper()


def build_parser() -> argparse.ArgumentParser:
    return add_arguments(argparse.ArgumentParser(prog="posgw-sim bank", description=__doc__.split("\n\n")[0]))


def run(args: argparse.Namespace) -> int:
    """Answer the file ``args`` names: exit 0, or 2 for a file that cannot be read or is no pain.001.
    The rejected account numbers are never printed."""
    rejects = {account.strip() for account in args.reject.split(",") if account.strip()}
    try:
        output = answer(args.input.read_bytes(), rejects, reason_code=args.reason)
    except (OSError, BankSimError) as exc:
        print(f"posgw-sim bank: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.out is None:
        sys.stdout.buffer.write(output)
        sys.stdout.flush()
    else:
        try:
            args.out.write_bytes(output)
        except OSError as exc:
            print(f"posgw-sim bank: error: {args.out}: {exc.strerror or exc}", file=sys.stderr)
            return EXIT_USAGE
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    """``posgw-sim bank --in F [--out F] [--reject LIST] [--reason CODE]``: exit 0, or 2 for bad input."""
    return run(build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
