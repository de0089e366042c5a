"""Batch upload (批上送, 0320; WIRE.md 9.4, 9.9) end to end: records, advice
copies, IC TC records and the end message, none moving money, accepted in a
settled batch; the differences kept per batch and shown by ``posgw batch
diff`` and ``batch list --unbalanced``; and ``posgw preauth list``."""

from __future__ import annotations

from gateway.domain.demo import demo_pan
from protocol.messages import Message
from sim.terminal import Terminal, build_request
from tests.e2e.helpers import CARD_PAN as PAN
from tests.e2e.helpers import CARD_PIN as PIN
from tests.e2e.test_preauth import approved, preauth
from tests.e2e.test_refunds import refund_request
from tests.e2e.test_settlement_v2 import settle, totals

OTHER_PAN = demo_pan(8)


def record(stan: str, amount_fen: int, pan: str = PAN) -> str:
    """One record of 48: card organisation 00, STAN, PAN n20 (zeros on the left), amount n12."""
    return f"00{stan}{pan.rjust(20, '0')}{amount_fen:012d}"


def upload(terminal: Terminal, network_code: str, batch: int, **fields) -> Message:
    return build_request("0320", stan=terminal.next_stan(), terminal_id=terminal.tid, merchant_id=terminal.mid,
                         txn_data=f"00{batch:06d}{network_code}", **fields)


async def send(terminal: Terminal, request: Message):
    return await terminal.exchange(request, mac=False)


async def records(terminal: Terminal, batch: int, *items: str):
    return await send(terminal, upload(terminal, "201", batch, settlement_totals=f"{len(items):02d}" + "".join(items)))


async def end(terminal: Terminal, batch: int, count: int):
    return await send(terminal, upload(terminal, "202", batch, settlement_totals=str(count)))


async def ledger_rows(db) -> list[tuple]:
    return [tuple(r) for r in await db.fetch(
        "SELECT id, debits_posted, credits_posted, debits_pending FROM ledger_accounts ORDER BY id")]


async def out_of_balance_batch(terminal: Terminal) -> tuple[Message, Message]:
    """Batch 1: purchases of 10.00 and 20.00, settled by a terminal that counted only 10.00."""
    first = (await terminal.purchase(PAN, PIN, 1000)).message
    second = (await terminal.purchase(PAN, PIN, 2000)).message
    response = await settle(terminal, totals(1000, 1, 0, 0))
    assert response.message.settlement_totals.endswith("2")
    return first, second


async def test_records_are_answered_00_without_a_mac_kept_once_and_move_no_money(terminal, db):
    first, second = await out_of_balance_batch(terminal)
    before = await ledger_rows(db)
    answer = await records(terminal, 1, record(first.stan, 1000), record("000777", 555))
    assert answer.response_code == "00"
    assert answer.message.mti == "0330" and answer.message.mac is None and len(answer.message.rrn) == 12
    assert answer.message.settlement_totals is None  # 48 only in the end's answer
    assert (await records(terminal, 1, record("000777", 999))).response_code == "00"  # a repeat: the first wins
    assert await db.fetchval("SELECT amount_fen FROM gw_upload_records WHERE stan = '000777'") == 555
    assert await db.fetchval("SELECT count(*) FROM gw_upload_records") == 2
    assert PAN not in str([tuple(r) for r in await db.fetch("SELECT * FROM gw_upload_records")])
    assert await ledger_rows(db) == before


async def test_a_batch_upload_whose_records_differ_from_the_hosts_is_shown_by_batch_diff(terminal, cli):
    first, second = await out_of_balance_batch(terminal)
    # The terminal holds the first with another amount, and one the gateway never approved; not the second.
    assert (await records(terminal, 1, record(first.stan, 1001), record("000777", 555))).response_code == "00"
    answer = await end(terminal, 1, 2)
    assert answer.response_code == "00"
    assert answer.message.settlement_totals == "0002"

    shown = await cli("batch", "diff", terminal.tid, "1", "--json")

    assert shown.code == 1
    masked = PAN[:6] + "******" + PAN[-4:]
    assert shown.json["terminal_only"] == [{"stan": "000777", "pan_masked": masked, "amount_fen": 555}]
    assert shown.json["gateway_only"] == [{"stan": second.stan, "rrn": second.rrn, "kind": "purchase",
                                           "amount_fen": 2000}]
    assert shown.json["amount_differs"] == [{"stan": first.stan, "terminal_fen": 1001, "gateway_fen": 1000,
                                             "terminal_pan_masked": masked, "gateway_pan_masked": masked}]
    listed = await cli("batch", "list", "--unbalanced", "--json")
    [batch] = listed.json["batches"]
    assert batch["differences"]["gateway_only"][0]["stan"] == second.stan


async def test_a_record_with_another_card_is_listed_under_amount_differs(terminal, cli):
    first, second = await out_of_balance_batch(terminal)
    await records(terminal, 1, record(first.stan, 1000, OTHER_PAN), record(second.stan, 2000))
    await end(terminal, 1, 2)
    shown = await cli("batch", "diff", terminal.tid, "1", "--json")
    assert shown.code == 1
    [differs] = shown.json["amount_differs"]
    assert (differs["stan"], differs["terminal_fen"], differs["gateway_fen"]) == (first.stan, 1000, 1000)
    assert differs["terminal_pan_masked"] == OTHER_PAN[:6] + "******" + OTHER_PAN[-4:]


async def test_an_upload_that_agrees_with_the_host_exits_0_and_before_an_end_batch_diff_exits_2(terminal, cli):
    first, second = await out_of_balance_batch(terminal)
    assert (await cli("batch", "diff", terminal.tid, "1", "--json")).code == 2
    await records(terminal, 1, record(first.stan, 1000), record(second.stan, 2000))
    assert (await end(terminal, 1, 2)).message.settlement_totals == "0002"
    shown = await cli("batch", "diff", terminal.tid, "1", "--json")
    assert shown.code == 0, shown.stderr
    assert shown.json == {"tid": terminal.tid, "batch": 1, "terminal_only": [], "gateway_only": [],
                          "amount_differs": []}


async def test_an_advice_copy_is_matched_with_its_0220_and_one_never_approved_is_kept_as_terminal_only(
        terminal, cli, db):
    purchase = (await terminal.purchase(PAN, PIN, 3000)).message
    refund = refund_request(terminal, 1000, purchase)
    assert (await terminal.send(refund)).response_code == "00"
    copy = Message("0320", dict(refund.fields))
    copy.mac = None
    assert (await send(terminal, copy)).response_code == "00"
    never = refund_request(terminal, 700, purchase)  # never sent as a 0220
    never.mti = "0320"
    assert (await send(terminal, never)).response_code == "00"
    rows = {r["stan"]: r["found"] for r in await db.fetch("SELECT stan, found FROM gw_upload_records")}
    assert rows == {refund.stan: True, never.stan: False}
    await records(terminal, 1, record(purchase.stan, 3000))
    await end(terminal, 1, 3)
    shown = await cli("batch", "diff", terminal.tid, "1", "--json")
    assert [d["stan"] for d in shown.json["terminal_only"]] == [never.stan]
    assert shown.json["gateway_only"] == [] and shown.json["amount_differs"] == []


async def test_ic_records_need_field_4_and_count_in_the_ends_48(terminal, db):
    assert (await send(terminal, upload(terminal, "203", 1))).response_code == "30"
    assert (await send(terminal, upload(terminal, "205", 1, amount="000000000100"))).response_code == "00"
    assert (await send(terminal, upload(terminal, "204", 1, amount="000000000200"))).response_code == "00"
    answer = await send(terminal, upload(terminal, "207", 1, settlement_totals="0002"))
    assert answer.message.settlement_totals == "0002"
    assert await db.fetchval("SELECT count(*) FROM gw_upload_records WHERE kind = 'ic'") == 2


async def test_a_bad_48_gets_30_and_an_unknown_60_3_gets_12(terminal):
    assert (await records(terminal, 1)).response_code == "30"  # NN = 00
    too_short = upload(terminal, "201", 1, settlement_totals="01" + record("000001", 1)[:-1])
    assert (await send(terminal, too_short)).response_code == "30"
    nine = upload(terminal, "201", 1, settlement_totals="09" + record("000001", 1) * 7)  # 9: more than fits
    assert (await send(terminal, nine)).response_code == "30"
    assert (await send(terminal, upload(terminal, "208", 1))).response_code == "12"
    assert (await send(terminal, upload(terminal, "202", 1, settlement_totals="12345"))).response_code == "30"


async def test_a_batch_upload_needs_no_keys_and_is_accepted_in_a_settled_batch(gateway, world, terminal):
    await out_of_balance_batch(terminal)
    fresh = Terminal("127.0.0.1", gateway.server.port, world.tid, world.mid, world.tmk)  # never signed on
    try:
        assert (await records(fresh, 1, record("000001", 1000))).response_code == "00"
    finally:
        await fresh.close()


async def test_preauth_list_shows_the_holds_by_status_card_and_terminal(terminal, cli):
    p = await approved(terminal, preauth(terminal, 2500))
    listed = await cli("preauth", "list", "--json")
    assert listed.code == 0, listed.stderr
    [shown] = listed.json["preauths"]
    assert {k: shown[k] for k in ("tid", "rrn", "auth_code", "pan_masked", "amount_fen", "completed_fen",
                                  "status")} == {
        "tid": terminal.tid, "rrn": p.rrn, "auth_code": p.auth_id, "pan_masked": PAN[:6] + "******" + PAN[-4:],
        "amount_fen": 2500, "completed_fen": 0, "status": "open"}
    assert shown["expires_at"]
    assert (await cli("preauth", "list", "--status", "completed", "--json")).json["preauths"] == []
    assert len((await cli("preauth", "list", "--card", PAN, "--tid", terminal.tid, "--json")).json["preauths"]) == 1
