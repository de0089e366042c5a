"""What an operator sees of a running gateway: /metrics scraped for real and
parsed as Prometheus text, /healthz while its database goes away and comes
back, and the logs of a real `posgw serve` over every kind of transaction,
which must never hold a PAN, a PIN block, track 2 or a key."""

from __future__ import annotations

import asyncio
import base64
import json
import re
import signal
import time
import urllib.request
from collections.abc import Callable

import asyncpg
import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway.acquiring.processor import processing_code_label
from gateway.acquiring.risk import LIMIT_NAMES
from gateway.cli.main import main as cli_main
from gateway.db.migrate import migrate
from gateway.domain.demo import demo_pan
from protocol import crypto, tlv
from protocol.framing import encode_frame
from sim.terminal import Terminal, bill_fields, build_request
from tests.conftest import TEST_TMK, make_settings, running_gateway
from tests.e2e.helpers import HEADER, TPDU, closed_without_answer, framed, read_frame, terminal_for
from tests.e2e.test_processes import BIN, env_for, free_port, http_get, run

PAN, PIN = demo_pan(41), "246810"
ROUTED_PROCESSING_CODES = {"000000", "310000", "200000", "380000", "500000", "030000",  # 030000: pre-authorization (9.1)
                           "520000", "390000"}  # the voucher sale and the bill history (9.7)
ALLOWED_LABELS = {"mti", "kind", "processing_code", "response_code", "op", "reason", "result", "le",
                  "device",  # device: reader or printer (posgw_terminals_device_broken)
                  "rule"}  # a risk rule's name (posgw_risk_declines_total)
RISK_RULES = frozenset(LIMIT_NAMES) | {"location", "travel", "spike"}

Samples = dict[tuple[str, frozenset], float]


def scrape_text(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        assert response.status == 200
        return response.read().decode()


async def scrape(port: int) -> Samples:
    """Every posgw_ sample of a real scrape, parsed as Prometheus text."""
    samples: Samples = {}
    for family in text_string_to_metric_families(await asyncio.to_thread(scrape_text, port)):
        for sample in family.samples:
            if sample.name.startswith("posgw_"):
                samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


async def eventually(check: Callable[[], object], timeout_s: float, what: str, interval_s: float = 0.1):
    """Await ``check()`` until it returns something true, at most ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout_s} s: {what}")
        await asyncio.sleep(interval_s)


def assert_labels_bounded(samples: Samples, secrets: set[str]) -> None:
    for name, labels in samples:
        labels = dict(labels)
        assert set(labels) <= ALLOWED_LABELS, (name, labels)
        assert not secrets & set(labels.values()), (name, labels)
        if "processing_code" in labels:
            assert labels["processing_code"] in ROUTED_PROCESSING_CODES | {"other", "none"}, (name, labels)
        if "rule" in labels:
            assert labels["rule"] in RISK_RULES, (name, labels)


def test_processing_codes_not_routed_are_other_and_absent_ones_none():
    assert {code: processing_code_label(code) for code in ("000000", "310000", "990000", "31000", None)} == {
        "000000": "000000", "310000": "310000", "990000": "other", "31000": "other", None: "none"}


# -- /metrics ------------------------------------------------------------------------


@pytest.fixture
async def card(cli, world):
    result = await cli("card", "issue", PAN, "--pin", PIN, "--expiry", "3012", "--balance", "1000")
    assert result.code == 0, result.stderr


async def test_a_real_scrape_parses_and_moves_as_transactions_happen(gateway, world, card, db):
    port = gateway.metrics_port
    before = await scrape(port)
    terminal = terminal_for(gateway, world)
    assert (await terminal.sign_on()).response_code == "00"
    connected = await scrape(port)
    assert value(connected, "posgw_connections_open") == value(before, "posgw_connections_open") + 1
    assert (await terminal.purchase(PAN, PIN, 1500)).response_code == "00"
    assert (await terminal.balance(PAN, PIN)).response_code == "00"
    unknown = build_request("0200", pan=PAN, processing_code="990000", stan=terminal.next_stan(),
                            terminal_id=terminal.tid, merchant_id=terminal.mid, currency="156",
                            txn_data="22000001000")
    assert (await terminal.send(unknown)).response_code == "12"
    assert (await terminal.settle(1499, 1)).response_code == "00"  # the gateway counts 1500: unbalanced
    after = await scrape(port)

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert moved("posgw_requests_total", mti="0800", kind="signon", response_code="00") == 1
    assert moved("posgw_requests_total", mti="0200", kind="purchase", response_code="00") == 1
    assert moved("posgw_sign_ons_total", response_code="00") == 1
    by_code = {
        ("0800", "none", "00"): 1,        # sign-on: no processing code
        ("0200", "000000", "00"): 1,      # purchase
        ("0200", "310000", "00"): 1,      # balance
        ("0200", "other", "12"): 1,       # a processing code nobody routes stays a bounded label
        ("0500", "none", "00"): 1,        # settlement
    }
    for (mti, code, rc), count in by_code.items():
        assert moved("posgw_requests_by_code_total", mti=mti, processing_code=code, response_code=rc) == count
    for kind in ("signon", "purchase", "balance", "unknown", "settlement"):
        assert moved("posgw_request_latency_seconds_count", kind=kind) == 1, kind
        assert moved("posgw_request_latency_seconds_sum", kind=kind) > 0, kind
        assert moved("posgw_request_latency_seconds_bucket", kind=kind, le="+Inf") == 1, kind
    for op in ("purchase", "balance", "decline", "settlement"):  # the unknown code is recorded as a decline
        assert moved("posgw_ledger_posting_latency_seconds_count", op=op) == 1, op
    assert value(after, "posgw_batches_unbalanced") == 1
    assert value(after, "posgw_requests_in_flight") == 0
    assert_labels_bounded(after, {PAN, world.tid, world.mid, terminal.mid})

    # A purchase held up in the ledger (its merchant's account locked): in flight
    # while it waits, and the ledger posting latency shows the wait.
    held_s = 0.5
    async with db.transaction():
        await db.execute("""SELECT 1 FROM ledger_accounts
                             WHERE id = (SELECT account_id FROM merchants WHERE mid = $1) FOR UPDATE""", world.mid)
        purchase = asyncio.create_task(terminal.purchase(PAN, PIN, 700))
        await eventually(lambda: scrape_in_flight(port, 1), 10, "one request in flight")
        # Its posting waits for the lock from here on (the in-flight count starts earlier, at the frame).
        await eventually(lambda: db.fetchval("SELECT count(*) FROM pg_locks WHERE NOT granted"), 10,
                         "the purchase's posting waiting for the merchant's account", interval_s=0.01)
        await asyncio.sleep(held_s)
    assert (await purchase).response_code == "00"
    await eventually(lambda: scrape_in_flight(port, 0), 10, "nothing in flight")
    last = await scrape(port)
    assert value(last, "posgw_ledger_posting_latency_seconds_sum", op="purchase") \
        - value(after, "posgw_ledger_posting_latency_seconds_sum", op="purchase") >= held_s

    def slow_postings(samples: Samples) -> float:  # purchase postings above 0.25 s
        bucket = "posgw_ledger_posting_latency_seconds_bucket"
        return value(samples, bucket, op="purchase", le="+Inf") - value(samples, bucket, op="purchase", le="0.25")

    # One slow posting: the held one. (It may follow a quick one that found its
    # cached terminal changed by the settlement: gateway.acquiring.context_cache.)
    assert slow_postings(last) == slow_postings(after) + 1

    await terminal.close()
    await eventually(lambda: scrape_connections(port, value(before, "posgw_connections_open")), 10,
                     "the connection counted closed")


async def scrape_in_flight(port: int, expected: float) -> bool:
    return value(await scrape(port), "posgw_requests_in_flight") == expected


async def scrape_connections(port: int, expected: float) -> bool:
    return value(await scrape(port), "posgw_connections_open") == expected


# -- /healthz --------------------------------------------------------------------------


def health(port: int) -> int:
    return http_get(port, "/healthz")[0]


def cli_in(settings, *argv: str) -> None:
    assert cli_main(list(argv), settings) == 0, argv


@pytest.mark.slow
async def test_health_goes_503_while_the_database_is_down_and_200_again_without_a_restart(tmp_path):
    """A PostgreSQL of its own, stopped and started under a running gateway."""
    from gateway.db.pool import embedded_server

    server = await asyncio.to_thread(embedded_server, tmp_path / "own-pg")
    from pgserver._commands import pg_ctl

    pgdata, user = server.pgdata, server.system_user
    socket_dir = server.get_postmaster_info().socket_dir
    url = server.get_uri()
    try:
        conn = await asyncpg.connect(url)
        try:
            await migrate(conn)
        finally:
            await conn.close()
        settings = make_settings(url, tmp_path)
        for argv in (("agent", "add", "AG01", "--name", "Agent"),
                     ("merchant", "add", "MERCHANT0000001", "--name", "Shop", "--agent", "AG01"),
                     ("terminal", "add", "TERM0001", "--merchant", "MERCHANT0000001", "--tmk", TEST_TMK.hex())):
            await asyncio.to_thread(cli_in, settings, *argv)

        async with running_gateway(settings) as gateway:
            port = gateway.metrics_port
            terminal = Terminal("127.0.0.1", gateway.server.port, "TERM0001", "MERCHANT0000001", TEST_TMK)
            assert await asyncio.to_thread(health, port) == 200
            assert (await terminal.sign_on()).response_code == "00"

            await asyncio.to_thread(pg_ctl, ["-w", "-m", "fast", "stop"], pgdata=pgdata, user=user)
            await eventually(lambda: asyncio.to_thread(lambda: health(port) == 503), 30, "health 503")
            # Meanwhile a request is answered 96 on a connection that lives on, and a scrape still works.
            assert (await terminal.sign_on()).response_code == "96"
            assert await scrape(port)

            await asyncio.to_thread(pg_ctl, ["-w", "-o", f'-h "" -k {socket_dir}', "-l", str(server.log), "start"],
                                    pgdata=pgdata, user=user)
            await eventually(lambda: asyncio.to_thread(lambda: health(port) == 200), 60, "health 200 again")
            assert (await terminal.sign_on()).response_code == "00"
            assert (await terminal.echo()).response_code == "00"
            await terminal.close()
    finally:
        try:
            await asyncio.to_thread(pg_ctl, ["-w", "-m", "immediate", "stop"], pgdata=pgdata, user=user)
        except Exception:
            pass  # already stopped


# -- logs ------------------------------------------------------------------------------------


def forms(secret: bytes | str) -> set[str]:
    """The ways a secret could show up in a log line: as text; bytes as hex (any case:
    compared in lower case), as Python's repr and as base64."""
    if isinstance(secret, str):
        return {secret.lower()}
    return {secret.hex(), repr(secret)[2:-1].lower(), json.dumps(repr(secret)[2:-1])[1:-1].lower(),
            base64.b64encode(secret).decode().lower()}


@pytest.mark.slow
async def test_logs_of_a_full_run_hold_no_pan_pin_block_track_2_or_key(db_url, tmp_path):
    env = env_for(db_url, tmp_path) | {"POSGW_LOG_LEVEL": "debug"}
    code, out, err = await run(str(BIN / "posgw"), "demo", "--terminals", "1", "--cards", "2", "--json", env=env)
    assert code == 0, err
    demo = json.loads(out)
    tid, mid, tmk_hex = (demo["terminals"][0][k] for k in ("tid", "mid", "tmk"))
    (pan, pin), (other_pan, other_pin) = ((c["pan"], c["pin"]) for c in demo["cards"])
    port, metrics_port = free_port(), free_port()
    server = await asyncio.create_subprocess_exec(
        str(BIN / "posgw"), "serve", "--host", "127.0.0.1", "--port", str(port), "--metrics-port", str(metrics_port),
        env=env, stderr=asyncio.subprocess.PIPE)
    lines: list[str] = []

    async def drain() -> None:  # read stderr all along: a full pipe would stall the gateway
        while line := await server.stderr.readline():
            lines.append(line.decode())

    secrets: set[bytes | str] = {pan, other_pan, bytes.fromhex(tmk_hex), tmk_hex}
    try:
        lines.append((await asyncio.wait_for(server.stderr.readline(), 30)).decode())
        assert json.loads(lines[0])["event"] == "listening"
        drainer = asyncio.create_task(drain())
        t = Terminal("127.0.0.1", port, tid, mid, bytes.fromhex(tmk_hex))

        def pin_block_sent() -> None:
            secrets.add(t.last_request.pin_block)

        signon = await t.sign_on(network_code="004")  # PIK, MAK and TDK
        assert signon.response_code == "00"
        secrets.update({t.keys.pik, t.keys.mak, t.keys.tdk, signon.message.key_data})
        assert (await t.echo()).response_code == "00"
        assert (await t.balance(pan, pin)).response_code == "00"
        pin_block_sent()
        track2 = f"{pan}D3012101"
        secrets.add(track2)
        by_track = build_request("0200", track2=track2, processing_code="310000", stan=t.next_stan(),
                                 entry_mode="021", condition_code="00", terminal_id=tid, merchant_id=mid,
                                 currency="156", pin_block=crypto.encrypt_pin_block(t.keys.pik, pin, pan),
                                 security_control="2600000000000000", txn_data="01000001000")
        assert (await t.send(by_track)).response_code == "00"
        pin_block_sent()
        purchase = await t.purchase(pan, pin, 1234)
        assert purchase.response_code == "00"
        pin_block_sent()
        m = purchase.message
        assert (await t.void(pan, pin, 1234, original_rrn=m.rrn, original_batch=1, original_stan=m.stan,
                             original_date=m.local_date)).response_code == "00"
        pin_block_sent()
        assert (await t.purchase(pan, pin, 2000)).response_code == "00"
        pin_block_sent()
        assert (await t.reverse(t.last_request)).response_code == "00"
        assert (await t.purchase(pan, "999999", 100)).response_code == "55"  # a wrong PIN
        pin_block_sent()
        inquiry = await t.bill_inquiry("ELEC01", "E00001")
        assert inquiry.response_code == "00"
        reference = bill_fields(inquiry)[tlv.REFERENCE]
        assert (await t.bill_payment("ELEC01", "E00001", 12345, reference=reference)).response_code == "00"
        assert (await t.bill_payment("PREPAID01", "M00001", 5000, pan=pan, pin=pin)).response_code == "00"
        pin_block_sent()
        assert (await t.settle(12345 + 5000, 2)).response_code == "00"

        # A wrong MAC, an undecodable message, and a frame that breaks the framing: each
        # carrying the other card's PAN and PIN block.
        reader, writer = await asyncio.open_connection("127.0.0.1", port)

        def card_request() -> object:
            request = build_request(
                "0200", pan=other_pan, processing_code="000000", amount="000000000100", stan=t.next_stan(),
                entry_mode="021", condition_code="00", terminal_id=tid, merchant_id=mid, currency="156",
                pin_block=crypto.encrypt_pin_block(t.keys.pik, other_pin, other_pan),
                security_control="2600000000000000", txn_data=f"22{t.batch:06d}000")
            secrets.add(request.pin_block)
            return request

        wrong_mac = card_request()
        wrong_mac.encode_with_mac(lambda data: b"WRONGMAC")
        writer.write(framed(wrong_mac.raw))
        assert (await read_frame(reader))[1].response_code == "A0"
        undecodable = card_request().encode_with_mac(lambda data: bytes(8))[:-3]  # field 64 cut short
        writer.write(framed(undecodable))
        assert (await read_frame(reader))[1].response_code == "30"
        bad_tpdu = bytearray(encode_frame(TPDU, HEADER, card_request().encode_with_mac(lambda data: bytes(8))))
        bad_tpdu[2] = 0x61  # TPDU ID not 60: a protocol violation
        writer.write(bytes(bad_tpdu))
        assert await closed_without_answer(reader)
        writer.close()

        samples = await scrape(metrics_port)
        server.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(server.wait(), 30) == 0
        await asyncio.wait_for(drainer, 10)
        await t.close()
    finally:
        if server.returncode is None:
            server.kill()
            await server.wait()

    log = "".join(lines)
    records = [json.loads(line) for line in lines]  # every line is one JSON object
    lowered = log.lower()
    for secret in secrets:
        for form in forms(secret):
            assert form not in lowered, f"a secret appears in the logs as {form!r}"

    txns = [r for r in records if r["event"] == "txn"]
    assert {r["kind"] for r in txns} >= {"signon", "echo", "balance", "purchase", "void", "reversal",
                                         "bill_inquiry", "bill_payment", "settlement", "undecodable"}
    assert {r["rc"] for r in txns} >= {"00", "55", "A0", "30"}
    for r in txns:
        assert {"tid", "stan", "kind", "rc", "latency_ms", "pan"} <= set(r), r
        assert r["pan"] is None or re.fullmatch(r"\d{6}\*+\d{4}", r["pan"]), r
    masked = pan[:6] + "*" * (len(pan) - 10) + pan[-4:]
    assert sum(r["pan"] == masked for r in txns) >= 8  # track 2 alone is logged masked too
    assert any(r["event"] == "protocol_violation" for r in records)

    # The scrape of that process saw exactly this run.
    assert value(samples, "posgw_sign_ons_total", response_code="00") == 1
    assert value(samples, "posgw_requests_total", mti="0200", kind="purchase", response_code="00") == 2
    assert value(samples, "posgw_requests_by_code_total", mti="0200", processing_code="000000",
                 response_code="55") == 1
    assert value(samples, "posgw_requests_by_code_total", mti="0200", processing_code="000000",
                 response_code="A0") == 1
    assert value(samples, "posgw_requests_total", mti="0200", kind="undecodable", response_code="30") == 1
    assert value(samples, "posgw_requests_by_code_total", mti="0400", processing_code="000000",
                 response_code="00") == 1
    assert value(samples, "posgw_connections_closed_total", reason="violation") == 1
    assert_labels_bounded(samples, {pan, other_pan, tid, mid})
