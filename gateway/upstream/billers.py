"""Billers and their connectors: how the gateway asks a utility about a bill
and tells it of a payment.

A connector has three calls: ``inquire`` (what is due on an account),
``pay`` (accept a payment before the money moves) and ``cancel`` (undo a
payment whose money did not move, or was reversed). Two are built in:

- ``builtin``: the bills, meters and tokens tables of this database. Its
  ``pay`` checks the bill and prepares the change; the change itself (bill
  paid, token issued) commits in the same transaction as the money.
- ``http``: a utility's billing system over HTTP/JSON (``connector_url``).
  A real utility's ISO 8583 or SOAP link would be another class with the
  same three calls, registered in ``CONNECTORS``.

Every call runs under ``biller_timeout_s``; a timeout or any failure of the
connector is ``BillerUnavailable`` (response 91), and no money moves.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import asyncpg

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

    def commission_fen(self, amount_fen: int) -> int:
        """What the agent earns on a payment: a fixed amount, or basis points rounded half up."""
        if self.commission_fixed_fen:
            return self.commission_fixed_fen
        return basis_points_fen(amount_fen, self.commission_bp)


BILLER_FIELDS = ("code", "name", "prepaid", "exact", "commission_bp", "commission_fixed_fen", "connector",
                 "connector_url", "account_id")


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


class HttpConnector:
    """A utility's billing system over HTTP/JSON:

    - ``GET  {url}/bills?account=A`` → 200 ``{name, reference, amount_fen?, period?}``, 404 unknown
    - ``POST {url}/payments`` ``{account, reference, amount_fen, receipt}`` → 200 ``{name?, token?}``,
      404 no such bill, 422 amount not accepted
    - ``POST {url}/payments/{receipt}/cancel`` → 200
    """

    def __init__(self, socket_timeout_s: float) -> None:
        self.socket_timeout_s = socket_timeout_s

    async def inquire(self, biller: Biller, account: str) -> BillInfo:
        body = await self._call(biller, "GET", "/bills?" + urllib.parse.urlencode({"account": account}))
        return BillInfo(account, body["name"], body["reference"], body.get("amount_fen"), body.get("period"))

    async def pay(self, biller: Biller, order: PaymentOrder) -> PaymentAccepted:
        body = await self._call(biller, "POST", "/payments", {
            "account": order.account, "reference": order.reference, "amount_fen": order.amount_fen,
            "receipt": order.receipt})
        return PaymentAccepted(name=body.get("name"), token=body.get("token"))

    async def cancel(self, biller: Biller, receipt: str) -> None:
        await self._call(biller, "POST", f"/payments/{urllib.parse.quote(receipt)}/cancel", {})

    async def _call(self, biller: Biller, method: str, path: str, payload: dict[str, Any] | None = None) -> Any:
        if not biller.connector_url:
            raise BillerUnavailable(f"biller {biller.code} has no connector URL")
        request = urllib.request.Request(
            biller.connector_url.rstrip("/") + path, method=method,
            data=json.dumps(payload).encode() if payload is not None else None,
            headers={"Content-Type": "application/json"})
        return await asyncio.to_thread(self._send, request)

    def _send(self, request: urllib.request.Request) -> Any:
        try:
            with urllib.request.urlopen(request, timeout=self.socket_timeout_s) as response:
                return json.loads(response.read() or b"{}")
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                raise BillNotFound(exc.reason) from None
            if exc.code == 422:
                raise AmountNotAccepted(exc.reason) from None
            raise BillerUnavailable(f"HTTP {exc.code}") from None
        except (OSError, ValueError) as exc:
            raise BillerUnavailable(f"{type(exc).__name__}: {exc}") from None


class Connectors:
    """The connector of each kind, and the time limit on every call."""

    def __init__(self, pool: asyncpg.Pool, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self._by_kind: dict[str, Connector] = {"builtin": BuiltinConnector(pool),
                                               "http": HttpConnector(socket_timeout_s=timeout_s)}

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
