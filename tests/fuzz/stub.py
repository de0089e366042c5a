"""A gateway without a database, for fuzzing the request path.

``Services`` with a small fake pool, fake biller connectors and an in-memory
store (``World``: the port ``gateway.acquiring.store.TransactionStore``, whose
``load_terminal``, ``load_context`` and ``finish`` are the only database calls
of a request that matter). Everything else is the real code: decode, route,
the steps, the HSM, response building, MAC, framing.

The fakes behave like PostgreSQL where hostile input could tell them apart:
a text or jsonb value with a NUL character is refused with the error asyncpg
raises, and integers must fit the columns. Keys are real: every terminal has
working keys under ``TEST_LMK``, so a harness can MAC its requests
(``mac_of``) and get past the MAC check into the later steps.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from datetime import UTC, datetime
from typing import Any

import asyncpg

from gateway.acquiring.context import Services
from gateway.acquiring.context_cache import ContextCache
from gateway.acquiring.operations import Operation, TxnKey
from gateway.acquiring.outcomes import Outcome
from gateway.acquiring.processor import Processor
from gateway.acquiring.risk import LIMIT_NAMES, RiskHistory, load_defaults
from gateway.acquiring.store import FinishResult, OriginalPurchase, RequestContext, StoredAnswer
from gateway.domain.cards import CardRecord
from gateway.domain.registry import ACTIVE, FROZEN, TerminalRecord
from gateway.domain.vocabulary import Status
from gateway.keys import SoftHsm
from gateway.settings import DEFAULT_CONFIG_DIR, Settings
from gateway.upstream.billers import (
    AmountNotAccepted,
    Biller,
    BillInfo,
    BillNotFound,
    Connectors,
    PaymentAccepted,
    PaymentOrder,
)
from protocol import crypto

TEST_LMK = "2B7E151628AED2A6ABF7158809CF4F3C"  # as tests/conftest.py
LMK = bytes.fromhex(TEST_LMK)
TMK = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")
PIK = bytes.fromhex("042666B49184CF5C68DE9628D0397B36")
MAK = bytes.fromhex("0723C80DB5F4CD3D0723C80DB5F4CD3D")  # the MAK of the real vector with a MAC
TDK = bytes.fromhex("7CA110454A1A6E570131D9619DC1376E")
PIN = "123456"
FRAME_BYTES_MAX = 2048

# Terminals: the (TID, MID) of every real vector, so that mutated vectors get
# past "terminal known" and "merchant matches"; and a few in special states.
TERMINALS: dict[str, str] = {
    "TERM0001": "MERCHANT0000001",
    "00000001": "952718182217875",
    "10000019": "850100082410002",
    "10400067": "000000000000004",
    "20121206": "SpecRoute121206",
    "55555552": "000000000020984",
    "10020831": "308640041110003",
    "90361748": "923011753991695",
    "32901240": "329012400000001",
    "92336787": "847100053990002",
}
TID_X919 = "TERMX919"  # MACs with X9.19
TID_FROZEN = "TERMFROZ"  # terminal frozen (58)
TID_NO_KEYS = "TERMNOKY"  # never signed on (77)
TID_NO_PERMIT = "TERMNOPM"  # permitted nothing (58)
SPECIAL_MID = "MERCHANT0000002"
SETTLED_BATCH = 999  # any terminal's batch 999 is settled (12)

# Cards, all with PIN 123456, and the state each is in.
CARD_PANS = {
    "6224242900000113": ACTIVE,  # the real chip purchase
    "6217857600008050804": ACTIVE,  # the real unframed chip purchase
    "6222021234567890123": ACTIVE,
    "4012345678909": ACTIVE,
    "6222000000000000001": FROZEN,
    "6222000000000000002": "expired",
    "6222000000000000003": "pin_blocked",
    "6222000000000000004": "poor",  # balance too low for anything but 1 fen
}

VOIDABLE_PAN = "6222021234567890123"  # of the one purchase that can be voided

BILLER_POSTPAID = "WATER"
BILLER_PREPAID = "POWER"
BILL_ACCOUNT = "ACC001"
BILL_REFERENCE = "BR00000000000001"
METER = "MTR001"
METER_REFERENCE = "BR00000000000002"

_PG_INT_MAX = 2**31 - 1
_STORED_MAX = 20_000  # forget stored answers beyond this (a long fuzz run)


def _build(cls: type, **values: Any) -> Any:
    """A record dataclass from ``values``; a field added to it since this stub was
    written gets a neutral value (0 for a number, else None), so that the stub
    follows the schema as it grows."""
    for field in dataclasses.fields(cls):
        if field.name not in values and field.default is dataclasses.MISSING \
                and field.default_factory is dataclasses.MISSING:
            values[field.name] = 0 if "int" in str(field.type) else None
    return cls(**values)


def _pg_check(value: Any) -> None:
    """Refuse what PostgreSQL refuses in a query argument or a jsonb value."""
    if isinstance(value, str):
        if "\x00" in value:
            raise asyncpg.exceptions.CharacterNotInRepertoireError(
                'invalid byte sequence for encoding "UTF8": 0x00')
    elif isinstance(value, bool) or value is None or isinstance(value, (bytes, float, datetime)):
        return
    elif isinstance(value, int):
        if not -(2**63) <= value < 2**63:
            raise asyncpg.exceptions.NumericValueOutOfRangeError("bigint out of range")
    elif isinstance(value, dict):
        for key, item in value.items():
            _pg_check(key)
            _pg_check(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            _pg_check(item)


def _pg_int4(value: int | None) -> None:
    if value is not None and not -_PG_INT_MAX - 1 <= value <= _PG_INT_MAX:
        raise asyncpg.exceptions.NumericValueOutOfRangeError("integer out of range")


class FakePool:
    """What the steps may still ask of the pool directly: key updates (sign-on,
    sign-off, echo) and a biller look-up after a reversal."""

    def __init__(self) -> None:
        self.executed = 0

    async def execute(self, query: str, *args: Any) -> str:
        _pg_check(list(args))
        self.executed += 1
        return "UPDATE 1"

    async def fetchrow(self, query: str, *args: Any) -> None:
        _pg_check(list(args))
        return None

    async def fetchval(self, query: str, *args: Any) -> None:
        _pg_check(list(args))
        return None

    async def fetch(self, query: str, *args: Any) -> list[Any]:
        _pg_check(list(args))
        return []


class FakeRrns:
    def __init__(self) -> None:
        self._next = 0

    async def next(self) -> str:
        self._next += 1
        return f"{self._next % 10**12:012d}"


class FakeConnector:
    """One biller's system: one postpaid bill, and prepaid meters: any account
    that starts with MTR001 (as a utility's own system may answer for any)."""

    async def inquire(self, biller: Biller, account: str) -> BillInfo:
        _pg_check(account)
        if biller.prepaid and account.startswith(METER):
            return BillInfo(account, "李四", METER_REFERENCE)
        if not biller.prepaid and account == BILL_ACCOUNT:
            return BillInfo(account, "张三", BILL_REFERENCE, 12_345, "202401")
        raise BillNotFound(f"no bill for {account}")

    async def pay(self, biller: Biller, order: PaymentOrder) -> PaymentAccepted:
        _pg_check([order.account, order.reference])
        if biller.prepaid:
            if not order.account.startswith(METER) or order.reference not in (None, METER_REFERENCE):
                raise BillNotFound("not the meter's BR")
            return PaymentAccepted(name="李四", token="12345678901234567890", meter=order.account)
        if order.account != BILL_ACCOUNT or order.reference != BILL_REFERENCE:
            raise BillNotFound("BR does not name an open bill of this account")
        if biller.exact and order.amount_fen != 12_345:
            raise AmountNotAccepted("the biller wants exactly 12345 fen")
        return PaymentAccepted(name="张三", bill_id=1)

    async def cancel(self, biller: Biller, receipt: str) -> None:
        return None


class World:
    """The registry, cards, billers and stored answers, in memory."""

    def __init__(self) -> None:
        self.hsm = SoftHsm(LMK)
        self.expires = datetime(2100, 1, 1, tzinfo=UTC)
        self.terminals: dict[str, TerminalRecord] = {}
        for tid, mid in TERMINALS.items():
            self.terminals[tid] = self._terminal(tid, mid)
        self.terminals[TID_X919] = self._terminal(TID_X919, SPECIAL_MID, mac_algorithm="x9.19")
        self.terminals[TID_FROZEN] = self._terminal(TID_FROZEN, SPECIAL_MID, status=FROZEN)
        self.terminals[TID_NO_KEYS] = self._terminal(TID_NO_KEYS, SPECIAL_MID, keys=False)
        self.terminals[TID_NO_PERMIT] = self._terminal(TID_NO_PERMIT, SPECIAL_MID, permit=())
        self.cards: dict[bytes, tuple[CardRecord, str]] = {}
        for number, (pan, state) in enumerate(CARD_PANS.items(), start=1):
            card = _build(
                CardRecord,
                id=number,
                status=FROZEN if state == FROZEN else ACTIVE,
                expiry="2001" if state == "expired" else "9912",
                pin_blocked=state == "pin_blocked",
                pvv=self.hsm.pin_verification_value(pan, PIN),
                account_id=100 + number,
            )
            self.cards[self.hsm.pan_hash(pan)] = (card, state)
        self.billers = {
            BILLER_POSTPAID: _build(Biller, code=BILLER_POSTPAID, name="自来水公司", prepaid=False, exact=True,
                                    commission_bp=50, commission_fixed_fen=0, connector="builtin",
                                    connector_url=None, account_id=501),
            BILLER_PREPAID: _build(Biller, code=BILLER_PREPAID, name="电力公司", prepaid=True, exact=False,
                                   commission_bp=0, commission_fixed_fen=100, connector="http",
                                   connector_url="http://billing.invalid", account_id=502),
        }
        self.stored: dict[TxnKey, StoredAnswer] = {}
        self.purchases: dict[tuple[str, str, int, str, str], OriginalPurchase] = {}
        self._seed_purchases()
        self.risk_defaults = load_defaults(DEFAULT_CONFIG_DIR)
        assert set(self.risk_defaults) == set(LIMIT_NAMES)

    def reset(self) -> None:
        """Forget every answer stored and every purchase made since it was built."""
        self.stored.clear()
        self.purchases.clear()
        self._seed_purchases()

    def _seed_purchases(self) -> None:
        """One approved purchase a void can name: TERM0001, RRN 000000000001, batch 1, STAN 000001, 0101."""
        card_id = next(card.id for card, _ in self.cards.values()
                       if card.pvv == self.hsm.pin_verification_value(VOIDABLE_PAN, PIN))
        self.purchases[("TERM0001", "000000000001", 1, "000001", "0101")] = OriginalPurchase(
            1, Status.APPROVED, 100, card_id, 1)

    def _terminal(self, tid: str, mid: str, *, status: str = ACTIVE, keys: bool = True,
                  mac_algorithm: str = "cup-ecb", permit: tuple[str, ...] = ("purchase", "balance", "void", "bill"),
                  ) -> TerminalRecord:
        def under_lmk(key: bytes) -> bytes | None:
            return self.hsm.encrypt_key(key) if keys else None

        return _build(
            TerminalRecord,
            tid=tid, mid=mid, status=status, merchant_status=ACTIVE, agent_status=ACTIVE, agent_code="AG01",
            permit=permit, mac_algorithm=mac_algorithm, tmk_lmk=self.hsm.encrypt_key(TMK),
            pik_lmk=under_lmk(PIK), mak_lmk=under_lmk(MAK), tdk_lmk=under_lmk(TDK),
            keys_expire_at=self.expires if keys else None, batch=1, merchant_account_id=11, mdr_bp=60,
            agent_float_account_id=12, agent_commission_account_id=13,
            latitude=31.2304, longitude=121.4737, radius_km=None,
        )

    # -- what a harness needs ------------------------------------------------
    def mac_of(self, tid: str | None, data: bytes) -> bytes | None:
        """The MAC a terminal would send (None for a TID without keys)."""
        terminal = self.terminals.get(tid or "")
        if terminal is None or terminal.mak_lmk is None:
            return None
        return self.hsm.mac(terminal.mak_lmk, terminal.mac_algorithm, data)

    @staticmethod
    def pin_block_for(pan: str, pin: str = PIN) -> bytes:
        """A PIN block as a terminal sends it, under the PIK every terminal has."""
        return crypto.encrypt_pin_block(PIK, pin, pan)

    # -- the store (gateway.acquiring.store.TransactionStore) ----------------------------------
    async def load_terminal(self, tid: str) -> TerminalRecord | None:
        _pg_check(tid)
        return self.terminals.get(tid)

    async def load_context(self, key: TxnKey, pan_hash: bytes | None, void_ref: Any, biller_code: str | None,
                           day: Any, with_risk: bool) -> RequestContext | None:
        _pg_check([key.tid, key.stan, key.mti_class, biller_code])
        _pg_int4(key.batch)
        if void_ref is not None:
            _pg_check([void_ref.rrn, void_ref.stan, void_ref.local_date])
            _pg_int4(void_ref.batch)
        terminal = self.terminals.get(key.tid)
        if terminal is None:
            return None
        card = self.cards.get(pan_hash)[0] if pan_hash in self.cards else None
        original = None
        if void_ref is not None:
            original = self.purchases.get((key.tid, void_ref.rrn, void_ref.batch, void_ref.stan,
                                           void_ref.local_date))
        history = RiskHistory(None, None, 0, 0) if with_risk else None
        return _build(RequestContext, terminal=terminal, stored=self.stored.get(key), card=card, original=original,
                      biller=self.billers.get(biller_code or ""), batch_settled=key.batch == SETTLED_BATCH,
                      merchant_limits=None, terminal_limits=None, history=history)

    async def confirm_replicated(self) -> None:
        """No standby here: everything recorded is as safe as it gets."""

    async def find_refund_original(self, reference: Any) -> None:
        """No original a refund names is found here: a refund through the stub gets 25."""
        _pg_check([reference.mid, reference.rrn, reference.local_date, reference.stan])
        if reference.batch is not None:
            _pg_int4(reference.batch)
        return None

    async def find_preauth(self, reference: Any) -> None:
        """No pre-authorization is found here: cancels and completions through the stub get 25."""
        _pg_check([reference.mid, reference.tid, reference.auth_code, reference.local_date, reference.stan,
                   reference.rrn])
        return None

    async def find_completion(self, reference: Any) -> None:
        """No completion is found here: completion voids through the stub get 25."""
        return await self.find_preauth(reference)

    async def finish(self, operation: Operation, on_sent: Any = None) -> FinishResult:
        p = json.loads(json.dumps(operation.as_json()))  # what gw_finish gets: JSON, or a TypeError as with asyncpg
        if on_sent is not None:
            on_sent()
        _pg_check(p)
        _pg_int4(p["batch"])
        key = TxnKey(p["tid"], p["batch"], p["stan"], p["mti_class"])
        existing = self.stored.get(key)
        if existing is not None:
            if existing.content_hash == p["content"]:
                return FinishResult("repeat", True, existing.response)
            return FinishResult("conflict", False, {})
        answer, op, amount = p["response"], p["op"], p["amount"]
        card_state = next((state for card, state in self.cards.values() if card.id == p.get("card_id")), None)
        # What the recording functions decide, named as they name it; the gateway's
        # own code makes the response from it (gateway.acquiring.recording.response_fields).
        if p.get("pin") == "wrong":
            outcome = Outcome.PIN_INCORRECT
        elif op == "decline":
            outcome = Outcome(p["outcome"])
        elif op in ("purchase", "bill_payment") and amount and (amount > 10_000_000 or card_state == "poor"
                                                               and amount > 1):
            outcome = Outcome.INSUFFICIENT_FUNDS
        else:
            outcome = Outcome.APPROVED
        answer["outcome"] = outcome.value
        if outcome is Outcome.APPROVED:
            answer |= p.get("approval") or {}
            if op == "balance":
                answer["balance_fen"] = 10_000
            if op == "preauth":  # the auth code the database picks
                answer["auth_id"] = "123456"
            if op == "settlement":
                answer["batch_totals"] = {"debit_fen": 0, "debit_count": 0, "credit_fen": 0, "credit_count": 0,
                                          "balanced": False}
            if op == "bill_payment" and "float_account_id" in p["bill"]:
                answer["float_fen"] = 100_000
            if op == "purchase":
                self.purchases[(key.tid, answer["rrn"], key.batch, key.stan, answer["local_date"])] = (
                    OriginalPurchase(len(self.purchases) + 1, Status.APPROVED, amount, p.get("card_id"), key.batch))
            if op == "void":
                for ref, purchase in list(self.purchases.items()):
                    if purchase.id == p["original_id"]:
                        self.purchases[ref] = OriginalPurchase(purchase.id, Status.VOIDED, purchase.amount_fen,
                                                               purchase.card_id, purchase.batch)
        if len(self.stored) >= _STORED_MAX:
            self.reset()
        self.stored[key] = StoredAnswer(p["content"], answer)
        return FinishResult("new", True, answer)


def make_services(world: World) -> Services:
    settings = Settings(database_url=None, lmk=TEST_LMK, risk_enabled=True, frame_bytes_max=FRAME_BYTES_MAX,
                        biller_timeout_s=5.0, _env_file=None)
    pool = FakePool()
    connectors = Connectors(pool, settings.biller_timeout_s)  # type: ignore[arg-type]
    connectors._by_kind = {"builtin": FakeConnector(), "http": FakeConnector()}  # noqa: SLF001
    return Services(settings, pool, world.hsm, FakeRrns(), 1, connectors, world.risk_defaults,  # type: ignore[arg-type]
                    ContextCache(0), world)


class StubGateway:
    """A processor over the stub, driven from synchronous code (its own event loop)."""

    def __init__(self) -> None:
        self.world = World()
        self.services = make_services(self.world)
        self.processor = Processor(self.services)
        self.loop = asyncio.new_event_loop()

    def handle(self, frame: Any) -> bytes | None:
        return self.loop.run_until_complete(self.processor.handle(frame))

    def close(self) -> None:
        self.loop.close()


_gateway: StubGateway | None = None


def gateway() -> StubGateway:
    """The process's stub gateway (built once: key set-up takes a moment)."""
    global _gateway
    if _gateway is None:
        _gateway = StubGateway()
    return _gateway


