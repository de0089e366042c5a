"""The load generator's pure parts: option parsing, percentiles, the world, request
templates, the fast response reader, the report; and its command line's usage errors."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os

import pytest

from protocol import tlv
from protocol.crypto import cup_ecb_mac, x919_mac
from protocol.messages import decode_message
from sim import cli
from sim.load.cli import summary
from sim.load.frames import RequestTemplate, ResponseFormatError, field_spans, read_response
from sim.load.loops import LoadRun
from sim.load.options import LoadOptions, UsageError, parse_amount, parse_faults, parse_mix
from sim.load.stats import Stats, build_report, latency_summary, percentile
from sim.load.terminals import check_world, make_terminals
from sim.load.world import World
from sim.terminal import build_request

MAK = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")

DEMO_JSON = {
    "agents": [{"code": "DEMO"}],
    "terminals": [
        {"tid": "DEMO0001", "mid": "898100000000001", "tmk": "F25D08A1D594B5FE044C54073E047C58"},
        {"tid": "DEMO0002", "mid": "898100000000001", "tmk": "A49EA2D51F7F8901D9672C578CA4B345"},
        {"tid": "DEMO0003", "mid": "898100000000001", "tmk": "B6F22C3DFDA46E26C4BADA31628ABF1A"},
    ],
    "cards": [
        {"pan": "6222020000000015", "pin": "123456", "expiry": "3012"},
        {"pan": "6222020000000023", "pin": "123456", "expiry": "3012"},
        {"pan": "6222020000000031", "pin": "123456", "expiry": "3012"},
        {"pan": "6222020000000049", "pin": "123456", "expiry": "3012"},
        {"pan": "6222020000000056", "pin": "123456", "expiry": "3012"},
    ],
    "billers": [
        {"code": "ELEC01", "prepaid": False, "bills": [{"account": "E00001"}]},
        {"code": "PREPAID01", "prepaid": True, "meters": ["M00001", "M00002", "M00003"]},
    ],
}


# -- percentiles ------------------------------------------------------------------------


def test_percentile_is_nearest_rank():
    values = list(range(1, 101))  # 1..100
    assert percentile(values, 50) == 50
    assert percentile(values, 90) == 90
    assert percentile(values, 99) == 99
    assert percentile(values, 100) == 100
    assert percentile([7.0], 50) == 7.0
    assert percentile([1, 2, 3, 4], 50) == 2
    assert percentile([1, 2, 3, 4], 51) == 3
    assert percentile([], 50) is None
    with pytest.raises(ValueError):
        percentile([1], 0)


def test_latency_summary_is_in_milliseconds_with_max():
    seconds = [i / 1000 for i in range(1, 1001)]  # 1 ms .. 1000 ms, shuffled order does not matter
    assert latency_summary(reversed(seconds)) == {"p50": 500.0, "p90": 900.0, "p99": 990.0, "max": 1000.0}
    assert latency_summary([]) == {"p50": None, "p90": None, "p99": None, "max": None}


# -- option parsing -----------------------------------------------------------------------


def test_mix_parses_weights_and_drops_zeros():
    assert parse_mix("purchase=70,balance=10,bill-pay=20") == {"purchase": 70, "balance": 10, "bill-pay": 20}
    assert parse_mix("echo=100") == {"echo": 100}
    assert parse_mix("purchase=60,refund=10,preauth=30") == {"purchase": 60, "refund": 10, "preauth": 30}
    assert parse_mix(" purchase = 1 , bill-inquiry=0 ") == {"purchase": 1}


@pytest.mark.parametrize("text, message", [
    ("cashback=10", "unknown type"),
    ("refund=10,preauth=5", "refunds need purchases"),
    ("purchase=10,purchase=5", "twice"),
    ("purchase=x", "whole number"),
    ("purchase=-1", "whole number"),
    ("purchase=0", "at least one"),
    ("purchase", "NAME=VALUE"),
    ("", "at least one"),
])
def test_mix_rejects_bad_input(text, message):
    with pytest.raises(ValueError, match=message):
        parse_mix(text)


def test_faults_parse_percents():
    assert parse_faults("drop=1,repeat=2.5,badmac=0,garbage=10") == {"drop": 1.0, "repeat": 2.5, "garbage": 10.0}
    assert parse_faults("") == {}


@pytest.mark.parametrize("text, message", [
    ("lag=1", "unknown fault"),
    ("drop=101", "0 to 100"),
    ("drop=-1", "0 to 100"),
    ("drop=nan", "0 to 100"),
    ("drop=x", "a number"),
    ("drop=60,repeat=50", "more than 100"),
])
def test_faults_reject_bad_input(text, message):
    with pytest.raises(ValueError, match=message):
        parse_faults(text)


def test_amount_is_yuan_or_a_range_as_fen():
    assert parse_amount("0.50") == (50, 50)
    assert parse_amount("0.01-0.10") == (1, 10)
    assert parse_amount("12-12.34") == (1200, 1234)
    for bad in ("0", "0.001", "1-0.5", "abc", "1-"):
        with pytest.raises(ValueError):
            parse_amount(bad)


# -- the world ----------------------------------------------------------------------------


def test_world_reads_the_demo_json():
    world = World.from_json(DEMO_JSON)
    assert [t.tid for t in world.terminals] == ["DEMO0001", "DEMO0002", "DEMO0003"]
    assert world.terminals[0].tmk == bytes.fromhex("F25D08A1D594B5FE044C54073E047C58")
    assert world.terminals[0].mac_algorithm == "cup-ecb"
    assert world.cards[0].pan == "6222020000000015" and world.cards[0].expiry == "3012"
    assert world.biller == "PREPAID01" and world.meters == ("M00001", "M00002", "M00003")


def test_cards_go_round_robin_over_terminals():
    world = World.from_json(DEMO_JSON)
    # more cards than terminals: each terminal its own share, no card shared
    shares = [world.cards_for(i, 3) for i in range(3)]
    assert [[c.pan[-2:] for c in share] for share in shares] == [["15", "49"], ["23", "56"], ["31"]]
    # more terminals than cards: card i mod C
    assert [world.cards_for(i, 8)[0].pan[-2:] for i in range(8)] == ["15", "23", "31", "49", "56", "15", "23", "31"]
    assert world.meters_for(4, 5) == ("M00002",)


@pytest.mark.parametrize("change, message", [
    (lambda d: d["terminals"][0].update(tmk="XYZ"), "TMK"),
    (lambda d: d["terminals"][0].pop("mid"), "lacks"),
    (lambda d: d["terminals"][0].update(tid="SHORT"), "TID"),
    (lambda d: d["cards"][0].update(pin="12"), "PIN"),
    (lambda d: d["terminals"][0].update(mac_algorithm="md5"), "MAC algorithm"),
])
def test_world_rejects_bad_entries(change, message):
    data = json.loads(json.dumps(DEMO_JSON))
    change(data)
    with pytest.raises(UsageError, match=message):
        World.from_json(data)


def test_check_world_needs_what_the_mix_uses():
    world = World.from_json(DEMO_JSON)
    assert check_world(world, LoadOptions()) == 3
    assert check_world(world, LoadOptions(terminals=2)) == 2
    with pytest.raises(UsageError, match="has 3 terminals"):
        check_world(world, LoadOptions(terminals=4))
    no_cards = World.from_json({**DEMO_JSON, "cards": []})
    with pytest.raises(UsageError, match="no cards"):
        check_world(no_cards, LoadOptions())
    assert check_world(no_cards, LoadOptions(mix={"bill-pay": 1})) == 3
    no_biller = World.from_json({**DEMO_JSON, "billers": []})
    with pytest.raises(UsageError, match="prepaid biller"):
        check_world(no_biller, LoadOptions())
    with pytest.raises(UsageError, match="no prepaid biller NOPE"):
        World.from_json(DEMO_JSON, biller="NOPE")


# -- templates and the response reader -------------------------------------------------------


def _purchase():
    return build_request(
        "0200", pan="6222020000000015", processing_code="000000", amount="0" * 12, stan="000000",
        expiry="3012", entry_mode="021", condition_code="00", terminal_id="DEMO0001",
        merchant_id="898100000000001", currency="156", pin_block=bytes(range(8)),
        security_control="2600000000000000", txn_data="22000001000",
    )


@pytest.mark.parametrize("mac", [cup_ecb_mac, x919_mac])
def test_template_patches_stan_amount_and_mac(mac):
    template = RequestTemplate.of(_purchase())
    mac_of = lambda data: mac(MAK, data)  # noqa: E731
    frame, message = template.build(123456, 4321, mac_of)
    assert int.from_bytes(frame[:2], "big") == len(frame) - 2
    assert frame[2:13] == bytes.fromhex("6000010000603100000000") and frame[13:] == message
    decoded = decode_message(message)
    assert decoded.stan == "123456" and decoded.amount == "000000004321"
    assert decoded.pan == "6222020000000015" and decoded.pin_block == bytes(range(8))
    assert decoded.mac == mac_of(decoded.mac_input)
    _, again = template.build(7, 1, mac_of)
    assert decode_message(again).stan == "000007"
    _, bad = template.build(123456, 4321, mac_of, bad_mac=True)
    assert bad[:-8] == message[:-8] and bad[-8:] != message[-8:]


def test_template_without_amount():
    request = build_request("0200", processing_code="380000", stan="000000", terminal_id="DEMO0001",
                            merchant_id="898100000000001", currency="156", txn_data="40000001000",
                            bill_data=tlv.encode({tlv.BILLER: "PREPAID01", tlv.ACCOUNT: "M00001"}))
    template = RequestTemplate.of(request)
    assert template.amount_at == -1
    _, message = template.build(42, 999, lambda data: cup_ecb_mac(MAK, data))
    decoded = decode_message(message)
    assert decoded.stan == "000042" and decoded.amount is None


def _no_mac(data: bytes) -> bytes:
    raise AssertionError("an echo is not MAC'd")


def test_echo_template_is_an_unmacced_0820_301():
    world = World.from_json({**DEMO_JSON, "cards": [], "billers": []})
    options = LoadOptions(mix={"echo": 1}, batch=7)
    assert check_world(world, options) == 3  # an echo needs no cards nor meters
    terminal = make_terminals(world, options, 1)[0]
    template = terminal.template("echo")
    assert not template.macced and template.amount_at == -1
    frame, message = template.build(4242, 0, _no_mac, bad_mac=True)
    assert frame[13:] == message and int.from_bytes(frame[:2], "big") == len(frame) - 2
    decoded = decode_message(message)
    assert decoded.mti == "0820" and decoded.txn_data == "00000007301" and decoded.network_code == "301"
    assert decoded.stan == "004242" and decoded.terminal_id == "DEMO0001"
    assert decoded.mac is None and decoded.pan is None
    assert terminal.template("echo") is template


def test_prepare_encodes_before_the_run_every_template_the_run_takes():
    world = World.from_json({**DEMO_JSON, "cards": []})
    options = LoadOptions(mix={"bill-inquiry": 1, "echo": 1})
    terminal = make_terminals(world, options, 1)[0]
    terminal.prepare(["bill-inquiry", "echo"])
    prepared = dict(terminal._templates)
    assert sorted(prepared) == [("bill-inquiry", 0), ("bill-inquiry", 1), ("bill-inquiry", 2), ("echo", 0)]
    taken = [terminal.template("bill-inquiry") for _ in range(3)] + [terminal.template("echo")]
    assert terminal._templates == prepared  # nothing built on the clock
    assert {id(t) for t in taken} == {id(t) for t in prepared.values()}
    meters = {tlv.decode(decode_message(t.message).bill_data)[tlv.ACCOUNT] for t in taken[:3]}
    assert meters == {"M00001", "M00002", "M00003"}


async def test_echo_answered_00_without_a_mac_counts_as_approved():
    """A gateway answers an echo 0830 00 without a MAC (WIRE.md 4): approved, no MAC failure."""

    async def gateway(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            while True:
                length = int.from_bytes(await reader.readexactly(2), "big")
                body = await reader.readexactly(length)
                request = decode_message(body[11:])
                answer = build_request("0830", stan=request.stan, terminal_id=request.terminal_id,
                                       merchant_id=request.merchant_id, txn_data=request.txn_data,
                                       response_code="00").encode()
                writer.write((11 + len(answer)).to_bytes(2, "big") + body[:11] + answer)
        writer.close()

    server = await asyncio.start_server(gateway, "127.0.0.1", 0)
    try:
        port = server.sockets[0].getsockname()[1]
        world = World.from_json({**DEMO_JSON, "cards": [], "billers": []})
        options = LoadOptions(port=port, mix={"echo": 1}, duration_s=0.2, faults={"badmac": 50.0}, seed=1)
        terminals = make_terminals(world, options, 2)
        for terminal in terminals:
            terminal._mac_of = _no_mac  # signed on, as far as an echo cares
        runner = LoadRun(terminals, options)
        await runner.run()
        for terminal in terminals:
            terminal.close()
    finally:
        server.close()
        await server.wait_closed()
    stats = runner.stats
    assert stats.requests > 0 and stats.approved == stats.answered == stats.requests
    assert stats.by_code == {"00": stats.requests} and stats.error_total == 0
    assert stats.faults["badmac"]["injected"] == 0  # nothing to spoil on an echo


def _responses():
    common = {"stan": "000321", "terminal_id": "DEMO0001", "merchant_id": "898100000000001",
              "local_time": "120000", "local_date": "1124", "acquirer_id": "00000001", "rrn": "000000000001"}
    yield build_request("0210", pan="6222020000000015", processing_code="000000", amount="000000000100",
                        currency="156", txn_data="22000001000", auth_id="000001", response_code="00", **common), True
    yield build_request("0210", pan="6222020000000015", processing_code="310000", currency="156",
                        txn_data="01000001000", balance="1002156C000000012345", response_code="00", **common), True
    yield build_request("0210", processing_code="500000", amount="000000000100", currency="156",
                        txn_data="41000001000", response_code="00", additional_response="ok",
                        bill_data=tlv.encode({tlv.BILLER: "PREPAID01", tlv.ACCOUNT: "M00001",
                                              tlv.NAME: "电表户主", tlv.TOKEN: "1" * 20}), **common), True
    yield build_request("0210", processing_code="000000", currency="156", txn_data="22000001000",
                        response_code="A0", **common), False
    yield build_request("0810", txn_data="00000001003", response_code="00", key_data=os.urandom(40),
                        **common), False


@pytest.mark.parametrize("response, macced", list(_responses()))
def test_response_reader_agrees_with_the_decoder(response, macced):
    raw = response.encode_with_mac(lambda data: cup_ecb_mac(MAK, data)) if macced else response.encode()
    decoded = decode_message(raw)
    view = read_response(raw)
    assert view.code == decoded.response_code
    assert view.stan == decoded.stan == "000321"
    assert view.terminal_id == decoded.terminal_id
    assert view.mac == decoded.mac
    assert view.mac_input == decoded.mac_input
    spans = field_spans(raw)
    assert sorted(spans) == sorted(decoded.fields)


def test_response_reader_rejects_what_does_not_walk():
    raw = next(iter(_responses()))[0].encode()
    for bad in (raw[:-1], raw + b"\x00", raw[:5], raw[:2] + b"\x80" + raw[3:]):
        with pytest.raises(ResponseFormatError):
            read_response(bad)


# -- the report ----------------------------------------------------------------------------


def _stats():
    stats = Stats({"purchase": 70, "balance": 30})
    for code, latency in (("00", 0.010), ("00", 0.020), ("51", 0.030), ("94", 0.040)):
        stats.request("purchase")
        stats.answer("purchase", code, latency)
    stats.request("balance")
    stats.answer("balance", "00", 0.005)
    stats.request("balance")
    stats.error("timeouts")
    stats.faults["repeat"]["injected"] = 1
    stats.faults["repeat"]["matched"] = 1
    return stats


def test_report_counts_codes_types_errors_and_latency():
    report = build_report(_stats(), mode="closed", connect="persistent", terminals=2, duration_s=2.0,
                          mix={"purchase": 70, "balance": 30}, faults={"repeat": 5.0}, rate=None,
                          signon={"terminals": 2, "signed_on": 2, "failed": 0, "failures": {}}).to_dict()
    assert set(report) == {
        "mode", "connect", "terminals", "duration_s", "requests", "answered", "approved", "by_code", "by_type",
        "throughput_rps", "approved_rps", "latency_ms", "errors", "faults", "reversals", "open_loop", "mix",
        "signon", "errors_total", "warmup", "check",
    }
    assert report["requests"] == 6 and report["answered"] == 5 and report["approved"] == 3
    assert report["by_code"] == {"00": 3, "51": 1, "94": 1}
    assert list(report["by_code"]) == sorted(report["by_code"])
    assert report["throughput_rps"] == 3.0 and report["approved_rps"] == 1.5
    assert report["by_type"]["purchase"] == {
        "requests": 4, "approved": 2, "by_code": {"00": 2, "51": 1, "94": 1},
        "latency_ms": {"p50": 20.0, "p90": 40.0, "p99": 40.0, "max": 40.0},
    }
    assert report["by_type"]["balance"]["requests"] == 2
    assert report["latency_ms"] == {"p50": 20.0, "p90": 40.0, "p99": 40.0, "max": 40.0}
    # 51 is a business decline; 94 is an error; the timeout too
    assert report["errors"]["unexpected_codes"] == 1 and report["errors"]["timeouts"] == 1
    assert report["errors_total"] == 2
    assert set(report["errors"]) >= {"timeouts", "disconnects", "mac_failures", "unexpected_codes",
                                     "repeat_mismatches", "reversals_unanswered"}
    assert report["faults"]["repeat"] == {"percent": 5.0, "injected": 1, "matched": 1, "mismatched": 0,
                                          "skipped": 0, "failed": 0}
    assert set(report["faults"]) == {"drop", "repeat", "badmac", "garbage"}
    assert report["open_loop"] is None and report["warmup"] is None and report["check"] is None
    assert report["reversals"]["end_of_run"] == {"owed": 0, "sent": 0, "answered": 0, "left": 0, "seconds": 0.0}
    json.dumps(report)  # JSON-safe
    text = summary(report)
    assert "requests 6 (3.0/s), approved 3 (1.5/s)" in text and "unexpected_codes 1" in text


def test_open_loop_report_counts_late_and_dropped():
    stats = _stats()
    stats.slots, stats.scheduled, stats.late = 6, 10, 2
    report = build_report(stats, mode="open", connect="per-txn", terminals=2, duration_s=1.0, mix={"purchase": 1},
                          faults={}, rate=10.0, signon={}).to_dict()
    assert report["open_loop"]["scheduled"] == 10 and report["open_loop"]["sent"] == 6
    assert report["open_loop"]["dropped"] == 4 and report["open_loop"]["late"] == 2
    assert report["open_loop"]["rate_rps"] == 10.0


# -- command line ------------------------------------------------------------------------------


def test_load_usage_errors_exit_2(tmp_path, capsys):
    world = tmp_path / "world.json"
    world.write_text(json.dumps(DEMO_JSON))
    assert cli.main(["load", "--world", str(tmp_path / "missing.json"), "--quiet"]) == 2
    assert "missing.json" in capsys.readouterr().err
    assert cli.main(["load", "--world", str(world), "--terminals", "9", "--quiet"]) == 2
    assert "has 3 terminals" in capsys.readouterr().err
    for argv in (["--mix", "refund=1"], ["--faults", "drop=200"], ["--duration", "0"], ["--connect", "carrier"],
                 ["--warmup", "-1"], ["--warmup", "inf"], ["--warmup", "soon"]):
        with pytest.raises(SystemExit) as exit_info:
            cli.main(["load", "--world", str(world), *argv])
        assert exit_info.value.code == 2


def test_load_exits_2_when_no_terminal_can_sign_on(tmp_path, capsys, unused_tcp_port):
    world = tmp_path / "world.json"
    world.write_text(json.dumps(DEMO_JSON))
    code = cli.main(["load", "--world", str(world), "--port", str(unused_tcp_port), "--duration", "0.1",
                     "--timeout", "1", "--quiet"])
    assert code == 2
    assert "no terminal could sign on" in capsys.readouterr().err
