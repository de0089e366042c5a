"""``posgw-sim`` speaking version 2 (WIRE.md 9.1-9.6) to a real gateway over a real
socket, through its command-line entry point, with the terminal's journal kept in a
file between commands: refund, the pre-authorization family, settle counted both
ways, and out of balance, the batch upload that leaves ``posgw batch diff`` empty."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest

from sim.cli import main as sim_main
from sim.journal import Journal
from tests.e2e.helpers import CARD_PAN as PAN
from tests.e2e.helpers import CARD_PIN as PIN


class Sim:
    """``posgw-sim COMMAND`` against the test gateway as the world's terminal, with one journal."""

    def __init__(self, gateway, world, journal: Path) -> None:
        self.common = ["--port", str(gateway.server.port), "--tid", world.tid, "--mid", world.mid,
                       "--tmk", world.tmk.hex(), "--journal", str(journal)]

    async def __call__(self, command: str, *argv: str, json_out: bool = True) -> tuple[int, Any]:
        def call() -> tuple[int, str]:
            out, err = io.StringIO(), io.StringIO()
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                code = sim_main([command, *self.common, *argv, *(["--json"] if json_out else [])])
            return code, out.getvalue() + err.getvalue()
        code, text = await asyncio.to_thread(call)
        return code, json.loads(text) if json_out and text.startswith("{") else text


@pytest.fixture
async def sim(gateway, world, card, tmp_path):
    return Sim(gateway, world, tmp_path / "terminal.json")


async def shown(cli) -> tuple[int, int, int]:
    card = (await cli("card", "show", PAN, "--json")).json
    return card["balance_fen"], card["available_fen"], card["holds_fen"]


async def bought(sim, amount: str) -> dict[str, Any]:
    code, out = await sim("purchase", "--pan", PAN, "--pin", PIN, "--amount", amount)
    assert code == 0, out
    return out


async def test_a_partial_refund_then_one_beyond_the_rest_gets_64(sim, cli, tmp_path):
    purchase = await bought(sim, "30")
    code, out = await sim("refund", "--pan", PAN, "--amount", "10", "--rrn", purchase["rrn"],
                          "--orig-date", purchase["local_date"])
    assert code == 0 and out["mti"] == "0230" and out["response_code"] == "00", out
    assert len(out["auth_code"]) == 6 and out["pan"] == PAN[:6] + "*" + PAN[-4:]
    assert (await shown(cli))[0] == 10000 - 3000 + 1000
    code, out = await sim("refund", "--pan", PAN, "--amount", "20.01", "--rrn", purchase["rrn"],
                          "--orig-date", purchase["local_date"])
    assert code == 1 and out["response_code"] == "64"
    journal = Journal.open(str(tmp_path / "terminal.json"))
    assert [e.kind for e in journal.entries] == ["purchase", "refund"]
    assert stat.S_IMODE(os.stat(tmp_path / "terminal.json").st_mode) == 0o600


async def test_the_text_output_of_a_refund_names_its_stan_batch_rrn_and_auth_code(sim):
    purchase = await bought(sim, "5")
    code, text = await sim("refund", "--pan", PAN, "--amount", "5", "--rrn", purchase["rrn"],
                           "--orig-date", purchase["local_date"], json_out=False)
    assert code == 0, text
    first, second = text.splitlines()
    assert first.startswith("refund: 0230 response 00 (approved) in ")
    assert second.startswith(f"stan {purchase['stan'][:4]}") or second.startswith("stan ")
    assert " batch 1 rrn " in second and " auth code " in second and PAN not in text


async def test_preauth_holds_then_a_completion_over_the_hold_and_its_void_reopen_it(sim, cli):
    code, held = await sim("preauth", "--pan", PAN, "--pin", PIN, "--amount", "40")
    assert code == 0 and held["mti"] == "0110", held
    assert await shown(cli) == (10000, 6000, 4000)
    naming = ("--auth-code", held["auth_code"], "--orig-date", held["local_date"])
    code, out = await sim("complete", "--pan", PAN, "--pin", PIN, "--amount", "46.01", *naming)
    assert code == 1 and out["response_code"] == "64"  # over by more than 15 %
    code, done = await sim("complete", "--pan", PAN, "--pin", PIN, "--amount", "46", *naming)
    assert code == 0 and done["mti"] == "0210" and done["auth_code"] == held["auth_code"], done
    assert await shown(cli) == (5400, 5400, 0)
    code, out = await sim("complete-void", "--pan", PAN, "--amount", "46", "--rrn", done["rrn"],
                          "--orig-stan", done["stan"], "--orig-date", done["local_date"], *naming[:2])
    assert code == 0 and out["response_code"] == "00", out
    assert await shown(cli) == (10000, 6000, 4000)  # the money back, the hold again
    code, out = await sim("preauth-cancel", "--pan", PAN, "--amount", "40", *naming)
    assert code == 0 and out["response_code"] == "00", out
    assert await shown(cli) == (10000, 10000, 0)
    code, out = await sim("preauth-cancel", "--pan", PAN, "--amount", "40", *naming)
    assert code == 1 and out["response_code"] == "25"


async def test_a_completion_advice_is_answered_0230_and_needs_no_pin(sim, cli):
    code, held = await sim("preauth", "--pan", PAN, "--pin", PIN, "--amount", "10")
    assert code == 0, held
    code, out = await sim("complete", "--advice", "--pan", PAN, "--amount", "11.50",
                          "--auth-code", held["auth_code"], "--orig-date", held["local_date"])
    assert code == 0 and out["mti"] == "0230", out
    assert await shown(cli) == (10000 - 1150, 10000 - 1150, 0)


class AdviceDropper:
    """A proxy before the gateway that closes the connection on the first ``drops`` 0220s it
    reads (the advice lost on the way), and passes everything else through."""

    def __init__(self, gateway_port: int, drops: int) -> None:
        self.gateway_port = gateway_port
        self.drops = drops
        self.advices_seen = 0
        self.server: asyncio.Server | None = None

    async def __aenter__(self) -> int:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self.server.sockets[0].getsockname()[1]

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.gateway_port)
        try:
            while True:
                head = await reader.readexactly(2)
                body = await reader.readexactly(int.from_bytes(head, "big"))
                if body[11:13] == bytes.fromhex("0220"):  # after the TPDU (5) and the header (6)
                    self.advices_seen += 1
                    if self.drops > 0:
                        self.drops -= 1
                        return
                up_writer.write(head + body)
                answer_head = await up_reader.readexactly(2)
                writer.write(answer_head + await up_reader.readexactly(int.from_bytes(answer_head, "big")))
        except (asyncio.IncompleteReadError, ConnectionError):
            return
        finally:
            writer.close()
            up_writer.close()


async def test_an_advice_lost_once_is_sent_again_with_the_same_stan_and_refunds_once(sim, cli, gateway, world,
                                                                                     tmp_path):
    purchase = await bought(sim, "20")
    dropper = AdviceDropper(gateway.server.port, drops=1)
    async with dropper as port:
        lossy = Sim(gateway, world, tmp_path / "terminal.json")
        lossy.common[1] = str(port)
        code, out = await lossy("refund", "--pan", PAN, "--amount", "5", "--rrn", purchase["rrn"],
                                "--orig-date", purchase["local_date"])
    assert code == 0 and out["response_code"] == "00", out
    assert dropper.advices_seen == 2
    assert (await shown(cli))[0] == 10000 - 2000 + 500


async def test_an_advice_never_answered_is_kept_and_sent_again_before_the_next_command(sim, cli, gateway, world,
                                                                                      tmp_path):
    purchase = await bought(sim, "20")
    journal_path = tmp_path / "terminal.json"
    async with AdviceDropper(gateway.server.port, drops=2) as port:
        lossy = Sim(gateway, world, journal_path)
        lossy.common[1] = str(port)
        code, out = await lossy("refund", "--pan", PAN, "--amount", "5", "--rrn", purchase["rrn"],
                                "--orig-date", purchase["local_date"], "--tries", "2")
    assert code == 2 and "error" in out
    [pending] = Journal.open(str(journal_path)).pending_advices()
    assert pending.kind == "refund" and pending.amount_fen == 500
    assert (await shown(cli))[0] == 10000 - 2000
    code, out = await sim("balance", "--pan", PAN, "--pin", PIN)  # the refund goes first
    assert code == 0 and out["balance_fen"] == 10000 - 2000 + 500
    assert not Journal.open(str(journal_path)).pending_advices()


@pytest.mark.parametrize("count", ["gross", "v1"])
async def test_settle_counts_a_voided_purchase_either_way_and_is_balanced(sim, cli, count):
    await bought(sim, "10")
    second = await bought(sim, "20")
    code, out = await sim("void", "--pan", PAN, "--pin", PIN, "--amount", "20", "--rrn", second["rrn"],
                          "--orig-stan", second["stan"], "--orig-date", second["local_date"])
    assert code == 0, out
    refunded = await bought(sim, "8")
    code, out = await sim("refund", "--pan", PAN, "--amount", "3", "--rrn", refunded["rrn"],
                          "--orig-date", refunded["local_date"])
    assert code == 0, out
    code, out = await sim("settle", "--count", count)
    assert code == 0 and out["balanced"] is True and "upload" not in out, out
    sent = {"gross": "000000003800003000000002300002", "v1": "000000001800002000000000300001"}[count]
    assert out["settlement_totals"] == sent + "1"
    code, out = await sim("purchase", "--pan", PAN, "--pin", PIN, "--amount", "1")
    assert out["batch"] == 2  # the journal moved to the next batch


async def test_settle_out_of_balance_uploads_the_batch_and_batch_diff_is_then_empty(sim, cli, world):
    await bought(sim, "10")
    second = await bought(sim, "20")
    code, out = await sim("refund", "--pan", PAN, "--amount", "5", "--rrn", second["rrn"],
                          "--orig-date", second["local_date"])
    assert code == 0, out
    # a terminal that miscounted its debits: the answer says out of balance
    code, out = await sim("settle", "--debit-amount", "10", "--debit-count", "1")
    assert code == 0 and out["balanced"] is False, out
    assert out["upload"] == {"records": 2, "advice_copies": 1, "received": 3}
    diff = await cli("batch", "diff", world.tid, "1", "--json")
    assert diff.code == 0, diff.stdout + diff.stderr
    assert diff.json["terminal_only"] == diff.json["gateway_only"] == diff.json["amount_differs"] == []


async def test_signon_and_status_upload_use_the_stan_given(sim, gateway, cli, world):
    code, out = await sim("signon", "--stan", "004242")
    assert code == 0 and out["stan"] == "004242", out
    code, out = await sim("status-upload", "--stan", "004243", "--status", "01=1,02=1,03=1,04=0,05=1")
    assert code == 0 and out["stan"] == "004243" and out["mti"] == "0830", out
    shown_terminal = (await cli("terminal", "show", world.tid, "--json")).json
    assert shown_terminal["device_status"]["04"] == "0"


async def test_reverse_of_a_preauth_in_the_journal_repeats_its_25_38_and_61_and_releases_the_hold(sim, cli):
    code, held = await sim("preauth", "--pan", PAN, "--pin", PIN, "--amount", "25")
    assert code == 0 and (await shown(cli))[2] == 2500, held
    code, out = await sim("reverse", "--pan", PAN, "--amount", "25", "--orig-stan", held["stan"],
                          "--processing-code", "030000", "--txn-type", "10")
    assert code == 0 and out["mti"] == "0410" and out["response_code"] == "00", out
    assert await shown(cli) == (10000, 10000, 0)
    code, out = await sim("settle")
    assert code == 0 and out["balanced"] is True  # a pre-authorization is not counted



async def test_settle_prints_the_hosts_totals_and_the_upload(sim):
    await bought(sim, "12.34")
    code, text = await sim("settle", "--debit-amount", "1", "--debit-count", "1", json_out=False)
    assert code == 0, text
    lines = text.splitlines()
    assert lines[0].startswith("settle: 0510 response 00 (approved) in ")
    assert lines[1:] == ["host's totals: debits 12.34 (1), credits 0.00 (0)",
                         "out of balance: batch upload of 1 records and 0 advice copies, 1 received"]
