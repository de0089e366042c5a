"""Money property of the agent's counter (WIRE.md 9.7): whatever sequence of
voucher sales, redemptions and reversals a terminal and the utility make, the
agent's float is its top-up less the face values of the sales that stand, its
commission the commission of those, every voucher's status follows, and the
ledger checks. Each example is a fresh agent and terminal on a real gateway."""

from __future__ import annotations

import asyncio
import itertools

from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from gateway.cli.main import main as cli_main
from gateway.keys import SoftHsm
from gateway.services import vouchers
from ledger.postings import basis_points_fen
from sim import counter
from sim.terminal import Terminal, bill_fields
from tests.conftest import TEST_TMK, running_gateway

FACES_FEN = (2000, 5000, 10000)
COMMISSION_BP = 150
TOPUP_FEN = 30000
STEPS = st.lists(st.one_of(st.tuples(st.just("sell"), st.sampled_from(FACES_FEN)),
                           st.tuples(st.just("redeem"), st.integers(0, 20)),
                           st.tuples(st.just("reverse"), st.integers(0, 20))), min_size=1, max_size=10)
_examples = itertools.count(1)


def run_cli(test_settings, *argv: str) -> None:
    assert cli_main(list(argv), test_settings) == 0, argv


async def replay(test_settings, steps) -> None:
    n = next(_examples)
    agent, mid, tid = f"AGP{n}", f"MERCHANTP{n:06d}", f"TP{n:06d}"
    cli = [("agent", "add", agent, "--name", "Prop"), ("merchant", "add", mid, "--name", "Shop", "--agent", agent),
           ("terminal", "add", tid, "--merchant", mid, "--tmk", TEST_TMK.hex()),
           ("agent", "topup", agent, f"{TOPUP_FEN / 100:.2f}")]
    if n == 1:
        cli = [("biller", "add", "PRE01", "--name", "Prepaid", "--prepaid", "--commission-bp", str(COMMISSION_BP)),
               ("meter", "add", "PRE01", "M0001", "--name", "Meter"),
               ("biller", "set", "PRE01", "--voucher-values", ",".join(str(f // 100) for f in FACES_FEN)), *cli]
    for argv in cli:
        await asyncio.to_thread(run_cli, test_settings, *argv)
    hsm = SoftHsm(bytes.fromhex(test_settings.lmk.get_secret_value()))
    float_fen, commission_fen = TOPUP_FEN, 0
    sold: list[tuple[object, dict[str, str], int]] = []  # (request, answer's 59, face)
    status: dict[str, str] = {}
    async with running_gateway(test_settings) as gateway:
        terminal = Terminal("127.0.0.1", gateway.server.port, tid, mid, TEST_TMK)
        assert (await terminal.sign_on()).response_code == "00"
        pool = gateway.services.pool
        for step in steps:
            match step:
                case ("sell", face):
                    response = await counter.voucher_sale(terminal, "PRE01", face)
                    if face > float_fen:
                        assert response.response_code == "51"
                        continue
                    assert response.response_code == "00"
                    fields = bill_fields(response)
                    assert int(fields["FB"]) == float_fen - face
                    float_fen -= face
                    commission_fen += basis_points_fen(face, COMMISSION_BP)
                    sold.append((terminal.last_request, fields, face))
                    status[fields["VS"]] = "valid"
                case ("redeem", which) if sold:
                    _, fields, face = sold[which % len(sold)]
                    async with pool.acquire() as conn:
                        try:
                            redeemed = await vouchers.redeem_voucher(conn, "prop", hsm, test_settings, fields["VS"],
                                                                     fields["VP"], "M0001")
                        except vouchers.VoucherRefused as refused:
                            assert status[fields["VS"]] == "void" and refused.status == 409
                        else:
                            assert status[fields["VS"]] in ("valid", "redeemed") and redeemed["amount_fen"] == face
                            status[fields["VS"]] = "redeemed"
                case ("reverse", which) if sold:
                    request, fields, face = sold[which % len(sold)]
                    assert (await terminal.reverse(request)).response_code == "00"
                    if status[fields["VS"]] == "valid":
                        status[fields["VS"]] = "void"
                        float_fen += face
                        commission_fen -= basis_points_fen(face, COMMISSION_BP)
            async with pool.acquire() as conn:
                balances = await conn.fetchrow(
                    """SELECT f.credits_posted - f.debits_posted AS float_fen,
                              c.credits_posted - c.debits_posted AS commission_fen
                         FROM agents a JOIN ledger_accounts f ON f.id = a.float_account_id
                         JOIN ledger_accounts c ON c.id = a.commission_account_id WHERE a.code = $1""", agent)
                assert (balances["float_fen"], balances["commission_fen"]) == (float_fen, commission_fen)
                stored = dict(await conn.fetch("SELECT serial, status FROM vouchers WHERE tid = $1", tid))
                assert stored == status
        await terminal.close()
    await asyncio.to_thread(run_cli, test_settings, "ledger", "check")


@hypothesis_settings(max_examples=12, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(steps=STEPS)
def test_any_sequence_of_sales_redemptions_and_reversals_keeps_float_commission_and_vouchers_exact(
        settings, steps):
    asyncio.run(replay(settings, steps))
