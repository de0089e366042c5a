"""Payment files exchanged with the bank: the payout instructions we send and
the bank's answer we read (CLI.md "Money out").

- Instructions: CSV (``CSV_COLUMNS``) or ISO 20022 ``pain.001.001.09``
  (customer credit transfer initiation) in CNY, amounts in yuan with 2
  decimals, ``EndToEndId`` = payout id. Made with lxml from the payouts
  alone, so a file made again is the same bytes.
- Answers: CSV ``payout_id,status,reason`` (``paid`` or ``returned``) or an
  ISO 20022 ``pain.002`` status report of any version (``ACSC``/``ACCC``
  paid, ``RJCT`` returned; other statuses are not final and change nothing).

The official XSDs are in ``schemas/`` (see its README); ``validate`` checks a
file against one. Nothing here touches the database or logs: the files carry
full bank account numbers.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from functools import lru_cache
from pathlib import Path

from lxml import etree

from gateway.domain.validate import InvalidInput

SCHEMA_DIR = Path(__file__).resolve().parent / "schemas"
PAIN001_SCHEMA = "pain.001.001.09.xsd"
PAIN002_SCHEMA = "pain.002.001.12.xsd"
PAIN001_NS = "urn:iso:std:iso:20022:tech:xsd:pain.001.001.09"
PAIN002_NS_PREFIX = "urn:iso:std:iso:20022:tech:xsd:pain.002.001."
CURRENCY = "CNY"
CLEARING_SYSTEM = "CNAPS"  # China National Advanced Payment System: the payer's bank code is its member id

CSV_COLUMNS = ("payout_id", "beneficiary_kind", "beneficiary", "account_name", "bank_name", "bank_account",
               "amount_fen", "reference")
STATUS_CSV_COLUMNS = ("payout_id", "status", "reason")
PAID, RETURNED = "paid", "returned"
# pain.002 transaction statuses (ExternalPaymentTransactionStatus1Code) that are final for us.
PAIN002_FINAL_STATUS = {"ACSC": PAID, "ACCC": PAID, "RJCT": RETURNED}


class BankFileError(InvalidInput):
    """A bank file that cannot be read, or a file that is not valid against its schema (exit 2)."""


class EmptyPaymentFile(Exception):
    """No payouts to put in a pain.001 file: the message needs at least one (the CLI exits 1)."""


@dataclass(frozen=True, slots=True)
class PayoutLine:
    """One payout as the bank is told of it."""

    payout_id: int
    beneficiary_kind: str
    beneficiary: str
    account_name: str
    bank_name: str
    bank_account: str
    amount_fen: int
    reference: str


@dataclass(frozen=True, slots=True)
class Payer:
    """Who pays: settings ``payer_name``, ``payer_account``, ``payer_bank_code``."""

    name: str
    account: str
    bank_code: str


@dataclass(frozen=True, slots=True)
class StatusLine:
    """The bank's word on one payout: ``paid``, ``returned``, or None (not final yet)."""

    payout_id: int
    status: str | None
    reason: str


def yuan_text(amount_fen: int) -> str:
    """Fen as yuan with 2 decimals, integers only: 123456 → ``1234.56``."""
    if amount_fen < 0:
        raise ValueError("a payout amount is never negative")
    return f"{amount_fen // 100}.{amount_fen % 100:02d}"


# -- instructions ------------------------------------------------------------------------------


def payouts_csv(lines: Sequence[PayoutLine]) -> bytes:
    """The CSV instructions: a header, then one row per payout in the order given."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for line in lines:
        writer.writerow((line.payout_id, line.beneficiary_kind, line.beneficiary, line.account_name,
                         line.bank_name, line.bank_account, line.amount_fen, line.reference))
    return out.getvalue().encode()


def _sub(parent: etree._Element, tag: str, text: str | None = None, **attributes: str) -> etree._Element:
    element = etree.SubElement(parent, f"{{{PAIN001_NS}}}{tag}", attributes)
    if text is not None:
        element.text = text
    return element


def _path(parent: etree._Element, tags: str, text: str) -> etree._Element:
    """Nested elements ``A/B/C`` with text in the last."""
    for tag in tags.split("/"):
        parent = _sub(parent, tag)
    parent.text = text
    return parent


def pain001(lines: Sequence[PayoutLine], payer: Payer, *, message_id: str, created_at: datetime,
            execution_date: date) -> bytes:
    """ISO 20022 pain.001.001.09: one payment information block debiting the
    payer's account, one credit transfer per payout (``EndToEndId`` its id),
    amounts in CNY yuan with 2 decimals. The same arguments give the same bytes.
    No payouts: ``EmptyPaymentFile`` (a pain.001 needs at least one)."""
    if not lines:
        raise EmptyPaymentFile(f"no payouts for {execution_date.isoformat()}: a pain.001 file needs at least one")
    count, total_fen = str(len(lines)), sum(line.amount_fen for line in lines)
    document = etree.Element(f"{{{PAIN001_NS}}}Document", nsmap={None: PAIN001_NS})
    initiation = _sub(document, "CstmrCdtTrfInitn")
    header = _sub(initiation, "GrpHdr")
    _sub(header, "MsgId", message_id)
    _sub(header, "CreDtTm", created_at.isoformat(timespec="seconds"))
    _sub(header, "NbOfTxs", count)
    _sub(header, "CtrlSum", yuan_text(total_fen))
    _path(header, "InitgPty/Nm", payer.name)

    block = _sub(initiation, "PmtInf")
    _sub(block, "PmtInfId", message_id)
    _sub(block, "PmtMtd", "TRF")
    _sub(block, "NbOfTxs", count)
    _sub(block, "CtrlSum", yuan_text(total_fen))
    _path(block, "ReqdExctnDt/Dt", execution_date.isoformat())
    _path(block, "Dbtr/Nm", payer.name)
    debtor_account = _sub(block, "DbtrAcct")
    _path(debtor_account, "Id/Othr/Id", payer.account)
    _sub(debtor_account, "Ccy", CURRENCY)
    member = _path(block, "DbtrAgt/FinInstnId/ClrSysMmbId/ClrSysId/Cd", CLEARING_SYSTEM).getparent().getparent()
    _sub(member, "MmbId", payer.bank_code)
    _sub(block, "ChrgBr", "DEBT")  # the payer bears the charges: the beneficiary gets the whole amount

    for line in lines:
        transfer = _sub(block, "CdtTrfTxInf")
        payment_id = _sub(transfer, "PmtId")
        _sub(payment_id, "InstrId", str(line.payout_id))
        _sub(payment_id, "EndToEndId", str(line.payout_id))
        _path(transfer, "Amt/InstdAmt", yuan_text(line.amount_fen)).set("Ccy", CURRENCY)
        _path(transfer, "CdtrAgt/FinInstnId/Nm", line.bank_name)
        _path(transfer, "Cdtr/Nm", line.account_name)
        _path(transfer, "CdtrAcct/Id/Othr/Id", line.bank_account)
        _path(transfer, "RmtInf/Ustrd", line.reference)
    return etree.tostring(document, xml_declaration=True, encoding="UTF-8", pretty_print=True)


# -- schemas -----------------------------------------------------------------------------------


@lru_cache(maxsize=4)
def schema(name: str) -> etree.XMLSchema:
    """An XSD of ``schemas/``, parsed once."""
    return etree.XMLSchema(etree.parse(str(SCHEMA_DIR / name)))


def validate(document: bytes, schema_name: str) -> None:
    """Raise ``BankFileError`` naming the first error unless ``document`` is valid against the XSD."""
    xsd = schema(schema_name)
    if not xsd.validate(_parse_xml(document)):
        error = xsd.error_log.last_error
        raise BankFileError(f"not valid against {schema_name}: line {error.line}: {error.message}")


# -- answers -----------------------------------------------------------------------------------


def _parse_xml(data: bytes) -> etree._Element:
    """Parse XML from outside: no entities resolved, nothing fetched from the network."""
    parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False)
    try:
        return etree.fromstring(data, parser)
    except etree.XMLSyntaxError as exc:
        raise BankFileError(f"not well-formed XML: {exc}") from None


def read_status_file(data: bytes) -> list[StatusLine]:
    """The bank's answer, CSV or pain.002 (told apart by a leading ``<``), in file order."""
    if data.lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"<"):
        return read_pain002(data)
    return read_status_csv(data)


def _payout_id(text: str | None, where: str) -> int:
    if text is None or not text.strip().isdigit():
        raise BankFileError(f"{where}: the payout id must be a whole number: {text!r}")
    return int(text.strip())


def read_status_csv(data: bytes) -> list[StatusLine]:
    """CSV with the header ``payout_id,status,reason``; status ``paid`` or ``returned``."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise BankFileError("the CSV answer is not UTF-8") from None
    rows = list(csv.reader(io.StringIO(text)))
    if not rows or tuple(cell.strip() for cell in rows[0]) != STATUS_CSV_COLUMNS:
        raise BankFileError(f"the CSV answer's header must be {','.join(STATUS_CSV_COLUMNS)}")
    lines = []
    for number, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue
        if len(row) != len(STATUS_CSV_COLUMNS):
            raise BankFileError(f"line {number}: {len(STATUS_CSV_COLUMNS)} columns expected, {len(row)} found")
        payout_id, status, reason = (cell.strip() for cell in row)
        if status not in (PAID, RETURNED):
            raise BankFileError(f"line {number}: status must be {PAID} or {RETURNED}: {status!r}")
        lines.append(StatusLine(_payout_id(payout_id, f"line {number}"), status, reason))
    return lines


def _reason(element: etree._Element, ns: str) -> str:
    """The first status reason: its code (or proprietary reason), then any additional information."""
    info = element.find(f"{{{ns}}}StsRsnInf")
    if info is None:
        return ""
    parts = [code.text for code in info.iterfind(f"{{{ns}}}Rsn/*") if code.text]
    parts += [text.text for text in info.iterfind(f"{{{ns}}}AddtlInf") if text.text]
    return " ".join(part.strip() for part in parts)


def read_pain002(data: bytes) -> list[StatusLine]:
    """The transaction statuses of a pain.002 (any version): ``OrgnlEndToEndId``
    is the payout id; a transaction without its own ``TxSts`` takes its payment
    information block's status. A report with no transaction status at all
    (a whole file accepted or rejected at group level) is refused: it names no
    payout."""
    root = _parse_xml(data)
    ns = etree.QName(root).namespace or ""
    if not ns.startswith(PAIN002_NS_PREFIX) or etree.QName(root).localname != "Document":
        raise BankFileError(f"not a pain.002 status report (root {root.tag})")
    lines = []
    for block in root.iterfind(f"{{{ns}}}CstmrPmtStsRpt/{{{ns}}}OrgnlPmtInfAndSts"):
        block_status = block.findtext(f"{{{ns}}}PmtInfSts")
        for transaction in block.iterfind(f"{{{ns}}}TxInfAndSts"):
            payout_id = _payout_id(transaction.findtext(f"{{{ns}}}OrgnlEndToEndId"), "TxInfAndSts/OrgnlEndToEndId")
            code = transaction.findtext(f"{{{ns}}}TxSts") or block_status
            reason = _reason(transaction, ns) or _reason(block, ns)
            lines.append(StatusLine(payout_id, PAIN002_FINAL_STATUS.get((code or "").strip()), reason))
    if not lines:
        group_status = root.findtext(f"{{{ns}}}CstmrPmtStsRpt/{{{ns}}}OrgnlGrpInfAndSts/{{{ns}}}GrpSts")
        raise BankFileError(f"the status report names no transaction (group status {group_status}): "
                            "nothing to apply; ask the bank for a report per transaction")
    return lines
