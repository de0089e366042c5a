"""Billers and their connectors: how the gateway asks a utility about a bill
and tells it of a payment.

A connector has five calls: ``inquire`` (what is due on an account),
``pay`` (accept a payment before the money moves), ``cancel`` (undo a
payment whose money did not move, or was reversed), ``notify`` (tell the
biller a payment stands, for billers that want a notice) and ``payments``
(the biller's book of a day, for reconciliation). Every call is idempotent at
the biller by our receipt (RN): ``cancel`` and ``notify`` are sent through the
outbox (``gateway.upstream.outbox``), which resends until the biller
acknowledges. Two are built in:

- ``builtin``: the bills, meters and tokens tables of this database. Its
  ``pay`` checks the bill and prepares the change; the change itself (bill
  paid, token issued) commits in the same transaction as the money.
- ``http``: a utility's billing system over HTTP/JSON (``connector_url``),
  through an asyncio HTTP client per biller that keeps its connections.
  A real utility's ISO 8583 or SOAP link would be another class with the
  same calls, registered in ``Connectors``.

Every call runs under ``biller_timeout_s``; a timeout or any failure of the
connector is ``BillerUnavailable`` (response 91), and no money moves.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import urllib.parse
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any, Protocol, TypeVar

import asyncpg
import httpx

from ledger.postings import basis_points_fen

T = TypeVar("T")
TOKEN_DIGITS = 20


@dataclass(frozen=True, slots=True)
class Biller:
    code: str
    name: str
    prepaid: bool
    exact: bool
    commission_bp: int
    commission_fixed_fen: int
    connector: str
    connector_url: str | None
    account_id: int
    notify: bool = False  # a notice of each payment that stands (biller add --notify)
    voucher_values_fen: Sequence[int] = ()  # a prepaid biller's voucher face values (WIRE.md 9.7)

    def commission_fen(self, amount_fen: int) -> int:
        """What the agent earns on a payment: a fixed amount, or basis points rounded half up."""
        if self.commission_fixed_fen:
            return self.commission_fixed_fen
        return basis_points_fen(amount_fen, self.commission_bp)


BILLER_FIELDS = ("code", "name", "prepaid", "exact", "commission_bp", "commission_fixed_fen", "connector",
                 "connector_url", "account_id", "notify", "voucher_values_fen")


@dataclass(frozen=True, slots=True)
class BillInfo:
    """An account's bill as the biller sees it (prepaid: the meter, no amount)."""

    account: str
    name: str
    reference: str
    amount_fen: int | None = None
    period: str | None = None


@dataclass(frozen=True, slots=True)
class PaymentOrder:
    account: str
    reference: str | None
    amount_fen: int
    receipt: str


@dataclass(frozen=True, slots=True)
class PaymentAccepted:
    """The biller accepts the payment; ``bill_id`` and ``meter`` name what the
    built-in biller changes when the money moves."""

    name: str | None = None
    token: str | None = None
    bill_id: int | None = None
    meter: str | None = None


@dataclass(frozen=True, slots=True)
class BillerPayment:
    """A payment in the biller's book: ``status`` is ``paid`` or ``cancelled``."""

    receipt: str
    account: str
    amount_fen: int
    status: str


BILLER_PAYMENT_STATUSES = ("paid", "cancelled")


class BillNotFound(Exception):
    """No such account, meter or open bill, or not the bill named (25)."""


class AmountNotAccepted(Exception):
    """The biller wants the amount due, exactly (13)."""


class BillerUnavailable(Exception):
    """The biller did not answer in time, or failed (91)."""


class Connector(Protocol):
    async def inquire(self, biller: Biller, account: str) -> BillInfo: ...

    async def pay(self, biller: Biller, order: PaymentOrder) -> PaymentAccepted: ...

    async def cancel(self, biller: Biller, receipt: str) -> None: ...

    async def notify(self, biller: Biller, receipt: str, notice: dict[str, Any]) -> None: ...

    async def payments(self, biller: Biller, day: date) -> list[BillerPayment]: ...


def new_token() -> str:
    """A 20-digit prepaid-meter token from the system's CSPRNG."""
    return f"{secrets.randbelow(10**TOKEN_DIGITS):0{TOKEN_DIGITS}d}"


class BuiltinConnector:
    """Bills, meters and tokens kept in this database."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def inquire(self, biller: Biller, account: str) -> BillInfo:
        if biller.prepaid:
            row = await self.pool.fetchrow(
                "SELECT name, reference FROM meters WHERE biller_code = $1 AND meter = $2", biller.code, account)
            if row is None:
                raise BillNotFound(f"meter {account} is not registered")
            return BillInfo(account, row["name"], row["reference"])
        row = await self.pool.fetchrow(
            """SELECT name, reference, amount_fen, period FROM bills
                WHERE biller_code = $1 AND account = $2 AND status = 'open'
                ORDER BY period, id LIMIT 1""", biller.code, account)
        if row is None:
            raise BillNotFound(f"no open bill for account {account}")
        return BillInfo(account, row["name"], row["reference"], row["amount_fen"], row["period"])

    async def pay(self, biller: Biller, order: PaymentOrder) -> PaymentAccepted:
        if biller.prepaid:
            row = await self.pool.fetchrow(
                "SELECT name, reference FROM meters WHERE biller_code = $1 AND meter = $2",
                biller.code, order.account)
            if row is None:
                raise BillNotFound(f"meter {order.account} is not registered")
            if order.reference is not None and order.reference != row["reference"]:
                raise BillNotFound("BR is not the meter's")
            return PaymentAccepted(name=row["name"], token=new_token(), meter=order.account)
        row = await self.pool.fetchrow(
            """SELECT id, name, amount_fen, status, account FROM bills
                WHERE biller_code = $1 AND reference = $2""", biller.code, order.reference)
        if row is None or row["account"] != order.account or row["status"] != "open":
            raise BillNotFound("BR does not name an open bill of this account")
        if biller.exact and order.amount_fen != row["amount_fen"]:
            raise AmountNotAccepted(f"the biller wants exactly {row['amount_fen']} fen")
        return PaymentAccepted(name=row["name"], bill_id=row["id"])

    async def cancel(self, biller: Biller, receipt: str) -> None:
        """Nothing to undo: the built-in biller's side commits or rolls back with the money."""

    async def notify(self, biller: Biller, receipt: str, notice: dict[str, Any]) -> None:
        """Nothing to tell: the built-in biller's book is this database."""

    async def payments(self, biller: Biller, day: date) -> list[BillerPayment]:
        raise BillerUnavailable(f"biller {biller.code} is built in: its book is ours, there is nothing to ask")


class HttpConnector:
    """A utility's billing system over HTTP/JSON, through one asyncio HTTP client
    per biller (httpx), which keeps its connections open between calls, at most
    ``connections_max`` of them, each call under ``socket_timeout_s``:

    - ``GET  {url}/bills?account=A`` → 200 ``{name, reference, amount_fen?, period?}``, 404 unknown
    - ``POST {url}/payments`` ``{account, reference, amount_fen, receipt}`` → 200 ``{name?, token?}``,
      404 no such bill, 422 amount not accepted
    - ``POST {url}/payments/{receipt}/cancel`` → 200
    - ``POST {url}/payments/{receipt}/confirm`` ``{...notice}`` → 200 (billers that want a notice)
    - ``GET  {url}/payments?date=YYYY-MM-DD`` → 200 ``{payments: [{receipt, account, amount_fen, status}]}``,
      status ``paid`` or ``cancelled`` (the day's book, for reconciliation)

    The contract with the biller: **every call is idempotent by our receipt
    (RN)**. A ``pay`` repeated with a receipt the biller already holds answers
    as the first did (the same token), and takes no second payment; a repeated
    ``cancel`` or ``confirm`` answers 200 again. A ``cancel`` of a receipt the
    biller never saw answers 200 and bars that receipt, so that a ``pay`` still
    in flight that arrives after its cancel is refused. That is what lets the
    outbox (``gateway.upstream.outbox``) resend until the biller acknowledges:
    a resend is harmless.
    """

    def __init__(self, socket_timeout_s: float, connections_max: int = 10) -> None:
        self.socket_timeout_s = socket_timeout_s
        self.connections_max = connections_max
        self._clients: dict[tuple[str, str], httpx.AsyncClient] = {}

    async def inquire(self, biller: Biller, account: str) -> BillInfo:
        body = await self._call(biller, "GET", "/bills", params={"account": account})
        return BillInfo(account, body["name"], body["reference"], body.get("amount_fen"), body.get("period"))

    async def pay(self, biller: Biller, order: PaymentOrder) -> PaymentAccepted:
        body = await self._call(biller, "POST", "/payments", {
            "account": order.account, "reference": order.reference, "amount_fen": order.amount_fen,
            "receipt": order.receipt})
        return PaymentAccepted(name=body.get("name"), token=body.get("token"))

    async def cancel(self, biller: Biller, receipt: str) -> None:
        await self._call(biller, "POST", f"/payments/{_path_part(receipt)}/cancel", {})

    async def notify(self, biller: Biller, receipt: str, notice: dict[str, Any]) -> None:
        await self._call(biller, "POST", f"/payments/{_path_part(receipt)}/confirm", notice)

    async def payments(self, biller: Biller, day: date) -> list[BillerPayment]:
        body = await self._call(biller, "GET", "/payments", params={"date": day.isoformat()})
        try:
            return [BillerPayment(str(p["receipt"]), str(p["account"]), int(p["amount_fen"]), str(p["status"]))
                    for p in body["payments"]]
        except (KeyError, TypeError, ValueError) as exc:
            raise BillerUnavailable(f"the biller's payments list is malformed: {exc!r}") from None

    async def close(self) -> None:
        """Close every biller's client and its connections."""
        clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            await client.aclose()

    def client(self, biller: Biller) -> httpx.AsyncClient:
        """The biller's client, made on first use (one per biller and URL: a changed URL gets a new one)."""
        if not biller.connector_url:
            raise BillerUnavailable(f"biller {biller.code} has no connector URL")
        key = (biller.code, biller.connector_url)
        client = self._clients.get(key)
        if client is None:
            client = self._clients[key] = httpx.AsyncClient(
                base_url=biller.connector_url.rstrip("/"), timeout=httpx.Timeout(self.socket_timeout_s),
                limits=httpx.Limits(max_connections=self.connections_max,
                                    max_keepalive_connections=self.connections_max),
                headers={"Content-Type": "application/json"})
        return client

    async def _call(self, biller: Biller, method: str, path: str, payload: dict[str, Any] | None = None,
                    params: dict[str, str] | None = None) -> Any:
        client = self.client(biller)
        try:
            response = await client.request(method, path, params=params,
                                            content=json.dumps(payload).encode() if payload is not None else None)
        except httpx.HTTPError as exc:  # connect, read, write, pool timeouts; refused or dropped connections
            raise BillerUnavailable(f"{type(exc).__name__}: {exc}") from None
        if response.status_code == 404:
            raise BillNotFound(response.reason_phrase)
        if response.status_code == 422:
            raise AmountNotAccepted(response.reason_phrase)
        if response.status_code != 200:
            raise BillerUnavailable(f"HTTP {response.status_code}")
        try:
            return json.loads(response.content or b"{}")
        except ValueError as exc:
            raise BillerUnavailable(f"the biller's answer is not JSON: {exc}") from None


def _path_part(text: str) -> str:
    return urllib.parse.quote(text, safe="")


class Connectors:
    """The connector of each kind, and the time limit on every call. ``close``
    closes the HTTP connections (``Gateway.stop``)."""

    def __init__(self, pool: asyncpg.Pool, timeout_s: float, connections_max: int = 10) -> None:
        self.timeout_s = timeout_s
        self.http = HttpConnector(socket_timeout_s=timeout_s, connections_max=connections_max)
        self._by_kind: dict[str, Connector] = {"builtin": BuiltinConnector(pool), "http": self.http}

    async def close(self) -> None:
        await self.http.close()

    def __getitem__(self, biller: Biller) -> Connector:
        return self._by_kind[biller.connector]

    async def call(self, operation: Awaitable[T]) -> T:
        """Await a connector call; a timeout or unexpected failure is ``BillerUnavailable``."""
        try:
            async with asyncio.timeout(self.timeout_s):
                return await operation
        except (BillNotFound, AmountNotAccepted, BillerUnavailable):
            raise
        except TimeoutError:
            raise BillerUnavailable(f"no answer within {self.timeout_s} s") from None
        except Exception as exc:
            raise BillerUnavailable(f"{type(exc).__name__}: {exc}") from None
