"""``posgw-sim``'s STANs (``signon`` and ``ic-download`` send the one given) and the
terminal's journal: its totals counted gross and the version 1 way (WIRE.md 9.6),
what it uploads (9.4), and what it keeps of a request."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from protocol.crypto import encrypt_pin_block
from protocol.messages import Message, decode_message
from sim.journal import Entry, Journal, Totals, kept_request
from sim.terminal import Terminal, WorkingKeys
from tests.sim.test_terminal import MAK, PIK, FakeHost, answer, cli_args, run_cli, sign_on_answer

PAN = "6225880123456789"


async def test_signon_sends_the_stan_given() -> None:
    async with FakeHost(sign_on_answer(PIK, MAK)) as host:
        code, _, _ = await run_cli(*cli_args("signon", host.port, "--stan", "004242"))
    assert code == 0
    [(_, request)] = host.requests
    assert (request.mti, request.stan) == ("0800", "004242")


async def test_ic_download_starts_at_the_stan_given() -> None:
    def nothing_listed(request: Message) -> Message:  # both lists empty: "0" after NN entries
        return answer(request, key_data=b"0") if request.mti == "0820" else answer(request)
    async with FakeHost(nothing_listed) as host:
        code, _, err = await run_cli(*cli_args("ic-download", host.port, "--stan", "000500"))
    assert code == 0, err
    assert [request.stan for _, request in host.requests][:2] == ["000500", "000501"]


def entry(kind: str, stan: str, amount_fen: int, original_stan: str | None = None, batch: int = 1) -> Entry:
    return Entry(kind, batch, stan, PAN, amount_fen, "", original_stan=original_stan)


def worked_batch() -> Journal:
    """Purchases of 10.00 and 20.00, the 20.00 voided; a completion of 46.00 voided; a refund
    of 3.00; a pre-authorization (not counted); a purchase reversed; one of another batch."""
    journal = Journal(None)
    for e in (entry("purchase", "000001", 1000), entry("purchase", "000002", 2000),
              entry("void", "000003", 2000, original_stan="000002"), entry("completion", "000004", 4600),
              entry("completion_void", "000005", 4600, original_stan="000004"), entry("refund", "000006", 300),
              entry("preauth", "000007", 9999), entry("purchase", "000008", 700), entry("purchase", "000009", 5,
                                                                                          batch=2)):
        journal.add(e)
    journal.mark_reversed(1, "000008", "")
    return journal


def test_the_gross_count_keeps_a_voided_purchase_and_counts_its_void_a_credit() -> None:
    assert worked_batch().totals(1, "gross") == Totals(1000 + 2000 + 4600, 3, 2000 + 4600 + 300, 3)


def test_the_version_1_count_leaves_out_a_purchase_and_its_void_only() -> None:
    assert worked_batch().totals(1, "v1") == Totals(1000 + 4600, 2, 4600 + 300, 2)


def test_the_upload_holds_the_records_of_the_gross_count_and_the_advices_as_copies() -> None:
    journal = worked_batch()
    journal.entries[5].request_hex = "00"  # the refund's 0220, as kept
    messages, advices = journal.upload(1)
    assert messages == [[("000001", PAN, 1000), ("000002", PAN, 2000), ("000003", PAN, 2000),
                         ("000004", PAN, 4600), ("000005", PAN, 4600)]]
    assert [a.stan for a in advices] == ["000006"]


def test_nine_records_go_in_two_messages_and_settling_empties_the_batch() -> None:
    journal = Journal(None)
    for n in range(1, 10):
        journal.add(entry("purchase", f"{n:06d}", n))
    messages, _ = journal.upload(1)
    assert [len(m) for m in messages] == [8, 1]
    journal.settled(1, 2)
    assert (journal.entries, journal.batch) == ([], 2)


def test_the_journal_keeps_a_request_without_its_pin_block_but_an_advice_whole_and_never_its_mac() -> None:
    terminal = Terminal("127.0.0.1", 1, "TERM0001", "MERCHANT0000001", bytes(16))
    terminal.keys = WorkingKeys(pik=PIK, mak=MAK, tdk=None)
    refund = terminal.refund_request(PAN, 500, original_rrn="000000000042", original_date="1207", pin="1234",
                                     stan="000010")
    refund.encode_with_mac(lambda body: b"M" * 8)
    whole = decode_message(bytes.fromhex(kept_request(refund, advice=True)))
    plain = decode_message(bytes.fromhex(kept_request(refund, advice=False)))
    assert whole.pin_block == encrypt_pin_block(PIK, "1234", PAN) and whole.mac is None
    assert plain.pin_block is None and plain.security_control is None and plain.mac is None
    assert whole.original_txn == plain.original_txn == "0000000000001207" and plain.rrn == "000000000042"


async def test_a_file_that_is_no_journal_exits_2_and_says_so(tmp_path) -> None:
    bad = tmp_path / "journal.json"
    bad.write_text("[1, 2]")
    code, _, err = await run_cli(*cli_args("echo", 1, "--journal", str(bad)))
    assert code == 2 and "not a terminal journal" in err


@st.composite
def batches(draw: st.DrawFn) -> tuple[Journal, int]:
    """A batch of purchases (some voided, some reversed), completions, completion voids and
    refunds; and the amount of the purchases voided and not reversed."""
    journal, voided_fen, stan = Journal(None), 0, 0
    for kind, amount in draw(st.lists(st.tuples(st.sampled_from(["purchase", "completion", "refund",
                                                                 "completion_void", "preauth"]),
                                                st.integers(1, 10**6)), max_size=20)):
        stan += 1
        journal.add(entry(kind, f"{stan:06d}", amount))
        journal.entries[-1].request_hex = "00" if kind == "refund" else None  # an advice keeps its 0220
        if kind == "purchase" and draw(st.booleans()):
            stan += 1
            journal.add(entry("void", f"{stan:06d}", amount, original_stan=f"{stan - 1:06d}"))
            if draw(st.booleans()):
                journal.mark_reversed(1, f"{stan:06d}", "")  # the void reversed: the purchase stands
            else:
                voided_fen += amount
    return journal, voided_fen


@given(batches())
def test_the_two_counts_differ_by_the_voided_purchases_on_each_side(batch: tuple[Journal, int]) -> None:
    journal, voided_fen = batch
    gross, v1 = journal.totals(1, "gross"), journal.totals(1, "v1")
    assert gross.debit_fen - v1.debit_fen == gross.credit_fen - v1.credit_fen == voided_fen
    assert gross.debit_count - v1.debit_count == gross.credit_count - v1.credit_count
    messages, advices = journal.upload(1)
    uploaded = sum(amount for message in messages for _, _, amount in message) + sum(a.amount_fen for a in advices)
    assert uploaded == gross.debit_fen + gross.credit_fen
    assert all(1 <= len(message) <= 8 for message in messages)
