"""Bank files: pain.001 and CSV instructions, CSV and pain.002 answers, the bank simulator."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

import pytest
from lxml import etree

from gateway.upstream import bank_files
from gateway.upstream.bank_files import (
    PAIN001_SCHEMA,
    PAIN002_SCHEMA,
    BankFileError,
    EmptyPaymentFile,
    Payer,
    PayoutLine,
    StatusLine,
)
from sim import bank

NS = {"p": bank_files.PAIN001_NS}
PAYER = Payer("Posgw Payments Ltd", "11001234567890", "102100099996")
CREATED = datetime(2026, 12, 8, 0, 5, 7, tzinfo=timezone(timedelta(hours=8)))
LINES = [
    PayoutLine(17, "merchant", "MERCHANT0000001", "Lucky Noodles", "Bank of Example, Shanghai branch",
               "6222020200112233445", 1_234_56, "posgw payout 2026-12-07 #17"),
    PayoutLine(18, "merchant", "MERCHANT0000002", "张三 & Sons <Ltd>", "Example Rural Bank",
               "62170000000000000001", 100, "posgw payout 2026-12-07 #18"),
]


def make_pain001(lines=LINES) -> bytes:
    return bank_files.pain001(lines, PAYER, message_id="POSGW-PAYOUTS-20261207", created_at=CREATED,
                              execution_date=date(2026, 12, 8))


@pytest.mark.parametrize("fen, text", [(0, "0.00"), (1, "0.01"), (100, "1.00"), (123456, "1234.56"),
                                       (999_999_999_999, "9999999999.99")])
def test_yuan_text_has_two_decimals(fen, text):
    assert bank_files.yuan_text(fen) == text


def test_pain001_is_valid_against_the_official_xsd_and_says_what_the_payouts_say():
    document = make_pain001()
    bank_files.validate(document, PAIN001_SCHEMA)
    root = etree.fromstring(document)
    assert root.xpath("string(p:CstmrCdtTrfInitn/p:GrpHdr/p:NbOfTxs)", namespaces=NS) == "2"
    assert root.xpath("string(p:CstmrCdtTrfInitn/p:GrpHdr/p:CtrlSum)", namespaces=NS) == "1235.56"
    assert root.xpath("string(p:CstmrCdtTrfInitn/p:GrpHdr/p:CreDtTm)", namespaces=NS) == "2026-12-08T00:05:07+08:00"
    block = root.find("p:CstmrCdtTrfInitn/p:PmtInf", NS)
    assert block.findtext("p:ReqdExctnDt/p:Dt", namespaces=NS) == "2026-12-08"
    assert block.findtext("p:DbtrAcct/p:Id/p:Othr/p:Id", namespaces=NS) == "11001234567890"
    assert block.findtext("p:DbtrAgt/p:FinInstnId/p:ClrSysMmbId/p:MmbId", namespaces=NS) == "102100099996"
    transfers = block.findall("p:CdtTrfTxInf", NS)
    assert [t.findtext("p:PmtId/p:EndToEndId", namespaces=NS) for t in transfers] == ["17", "18"]
    amounts = [t.find("p:Amt/p:InstdAmt", NS) for t in transfers]
    assert [(a.text, a.get("Ccy")) for a in amounts] == [("1234.56", "CNY"), ("1.00", "CNY")]
    assert transfers[1].findtext("p:Cdtr/p:Nm", namespaces=NS) == "张三 & Sons <Ltd>"
    assert transfers[1].findtext("p:CdtrAcct/p:Id/p:Othr/p:Id", namespaces=NS) == "62170000000000000001"
    assert b"&amp; Sons &lt;Ltd&gt;" in document


def test_pain001_made_again_is_the_same_bytes():
    assert make_pain001() == make_pain001()
    assert bank_files.payouts_csv(LINES) == bank_files.payouts_csv(list(LINES))


def test_the_xsd_refuses_what_it_should():
    document = make_pain001().replace(b"<PmtMtd>TRF</PmtMtd>", b"<PmtMtd>XXX</PmtMtd>")
    with pytest.raises(BankFileError, match="PmtMtd"):
        bank_files.validate(document, PAIN001_SCHEMA)
    too_long = PayoutLine(1, "merchant", "M", "x" * 141, "bank", "12345678", 1, "ref")
    with pytest.raises(BankFileError, match="Nm"):
        bank_files.validate(make_pain001([too_long]), PAIN001_SCHEMA)


def test_no_payouts_make_no_pain001_and_a_csv_of_its_header():
    with pytest.raises(EmptyPaymentFile):
        make_pain001([])
    assert bank_files.payouts_csv([]) == (
        b"payout_id,beneficiary_kind,beneficiary,account_name,bank_name,bank_account,amount_fen,reference\n")


def test_csv_instructions_have_the_columns_of_cli_md():
    assert bank_files.payouts_csv(LINES).decode().splitlines() == [
        "payout_id,beneficiary_kind,beneficiary,account_name,bank_name,bank_account,amount_fen,reference",
        "17,merchant,MERCHANT0000001,Lucky Noodles,\"Bank of Example, Shanghai branch\",6222020200112233445,"
        "123456,posgw payout 2026-12-07 #17",
        "18,merchant,MERCHANT0000002,张三 & Sons <Ltd>,Example Rural Bank,62170000000000000001,100,"
        "posgw payout 2026-12-07 #18",
    ]


def test_a_csv_answer_is_read_in_order():
    data = "\ufeffpayout_id,status,reason\r\n17,paid,\r\n18,returned,account closed\r\n\r\n".encode()
    assert bank_files.read_status_file(data) == [StatusLine(17, "paid", ""), StatusLine(18, "returned",
                                                                                          "account closed")]


@pytest.mark.parametrize("data, message", [
    (b"id,status\n1,paid\n", "header"),
    (b"payout_id,status,reason\n1,settled,\n", "status must be"),
    (b"payout_id,status,reason\nx1,paid,\n", "whole number"),
    (b"payout_id,status,reason\n1,paid\n", "columns"),
    (b"<Document><oops></Document>", "well-formed"),
    (b"<Document xmlns='urn:iso:std:iso:20022:tech:xsd:pain.001.001.09'/>", "not a pain.002"),
])
def test_a_bad_answer_is_refused(data, message):
    with pytest.raises(BankFileError, match=message):
        bank_files.read_status_file(data)


PAIN002_V10 = b"""<?xml version="1.0" encoding="UTF-8"?>
<Document xmlns="urn:iso:std:iso:20022:tech:xsd:pain.002.001.10">
 <CstmrPmtStsRpt>
  <GrpHdr><MsgId>STS-1</MsgId><CreDtTm>2026-12-08T10:00:00+08:00</CreDtTm></GrpHdr>
  <OrgnlGrpInfAndSts><OrgnlMsgId>POSGW-PAYOUTS-20261207</OrgnlMsgId><OrgnlMsgNmId>pain.001.001.09</OrgnlMsgNmId>
   <GrpSts>PART</GrpSts></OrgnlGrpInfAndSts>
  <OrgnlPmtInfAndSts><OrgnlPmtInfId>POSGW-PAYOUTS-20261207</OrgnlPmtInfId>
   <TxInfAndSts><OrgnlEndToEndId>17</OrgnlEndToEndId><TxSts>ACSC</TxSts></TxInfAndSts>
   <TxInfAndSts><OrgnlEndToEndId>18</OrgnlEndToEndId><TxSts>RJCT</TxSts>
    <StsRsnInf><Rsn><Cd>AC01</Cd></Rsn><AddtlInf>no such account</AddtlInf></StsRsnInf></TxInfAndSts>
   <TxInfAndSts><OrgnlEndToEndId>19</OrgnlEndToEndId><TxSts>ACCC</TxSts></TxInfAndSts>
   <TxInfAndSts><OrgnlEndToEndId>20</OrgnlEndToEndId><TxSts>PDNG</TxSts></TxInfAndSts>
  </OrgnlPmtInfAndSts>
  <OrgnlPmtInfAndSts><OrgnlPmtInfId>B2</OrgnlPmtInfId><PmtInfSts>RJCT</PmtInfSts>
   <StsRsnInf><Rsn><Prtry>CLOSED</Prtry></Rsn></StsRsnInf>
   <TxInfAndSts><OrgnlEndToEndId>21</OrgnlEndToEndId></TxInfAndSts>
  </OrgnlPmtInfAndSts>
 </CstmrPmtStsRpt>
</Document>
"""


def test_a_pain002_of_another_version_is_read_per_transaction():
    assert bank_files.read_status_file(PAIN002_V10) == [
        StatusLine(17, "paid", ""),
        StatusLine(18, "returned", "AC01 no such account"),
        StatusLine(19, "paid", ""),
        StatusLine(20, None, ""),  # pending at the bank: not final, changes nothing
        StatusLine(21, "returned", "CLOSED"),  # no TxSts of its own: its block's status
    ]


def test_a_pain002_without_transaction_statuses_is_refused():
    group_only = PAIN002_V10.split(b"<OrgnlPmtInfAndSts>")[0] + b"</CstmrPmtStsRpt></Document>"
    with pytest.raises(BankFileError, match="names no transaction"):
        bank_files.read_status_file(group_only)


def test_a_pain002_with_an_external_entity_does_not_read_it(tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("42")
    hostile = PAIN002_V10.replace(b"<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n",
                                  f'<?xml version="1.0"?>\n<!DOCTYPE d [<!ENTITY x SYSTEM "file://{secret}">]>\n'
                                  .encode()).replace(b"<OrgnlEndToEndId>17<", b"<OrgnlEndToEndId>&x;<")
    with pytest.raises(BankFileError, match="whole number"):
        bank_files.read_status_file(hostile)


# -- the bank simulator ----------------------------------------------------------------------------


def test_the_bank_simulator_answers_a_valid_pain002_rejecting_the_accounts_it_is_told():
    answer = bank.answer(make_pain001(), {"62170000000000000001"}, created_at=CREATED)
    bank_files.validate(answer, PAIN002_SCHEMA)
    assert bank_files.read_status_file(answer) == [StatusLine(17, "paid", ""), StatusLine(18, "returned", "AC04")]
    root = etree.fromstring(answer)
    ns = {"s": bank.PAIN002_NS}
    assert root.xpath("string(s:CstmrPmtStsRpt/s:OrgnlGrpInfAndSts/s:GrpSts)", namespaces=ns) == "PART"
    assert root.xpath("string(s:CstmrPmtStsRpt/s:OrgnlGrpInfAndSts/s:OrgnlMsgId)", namespaces=ns) == \
        "POSGW-PAYOUTS-20261207"
    assert bank.answer(make_pain001(), {"62170000000000000001"}, created_at=CREATED) == answer


@pytest.mark.parametrize("rejects, group_status", [(set(), "ACSC"), ({"6222020200112233445",
                                                                       "62170000000000000001"}, "RJCT")])
def test_the_bank_simulators_group_status(rejects, group_status):
    answer = bank.answer(make_pain001(), rejects, reason_code="AC01", created_at=CREATED)
    bank_files.validate(answer, PAIN002_SCHEMA)
    assert etree.fromstring(answer).xpath("string(//s:GrpSts)", namespaces={"s": bank.PAIN002_NS}) == group_status


def test_the_bank_simulator_command_writes_its_answer(tmp_path, capsys):
    (tmp_path / "out.xml").write_bytes(make_pain001())
    assert bank.main(["--in", str(tmp_path / "out.xml"), "--out", str(tmp_path / "in.xml"),
                      "--reject", "6222020200112233445", "--reason", "AC01"]) == 0
    assert bank_files.read_status_file((tmp_path / "in.xml").read_bytes()) == [
        StatusLine(17, "returned", "AC01"), StatusLine(18, "paid", "")]
    (tmp_path / "bad.xml").write_bytes(b"<Document/>")
    assert bank.main(["--in", str(tmp_path / "bad.xml")]) == 2
    assert "not a pain.001.001.09" in capsys.readouterr().err
