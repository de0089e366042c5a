"""A utility's billing system over HTTP/JSON, with faults: the other end of
``gateway.upstream.billers.HttpConnector`` for tests and demonstrations.

It speaks the connector's protocol (``GET /bills``, ``POST /payments``,
``POST /payments/{receipt}/cancel``, ``POST /payments/{receipt}/confirm``,
``GET /payments?date=``) over HTTP/1.1 with keep-alive, keeps its own book of
payments, and is idempotent by receipt: a repeated pay answers as the first
did (the same token), a repeated cancel or confirm answers 200 again, and a
cancel of a receipt it never saw bars that receipt (a later pay of it: 409).

Faults, set at start or changed at run time (``POST /control`` with a JSON
object of the same names; ``GET /control`` shows them with the counters):

- ``delay_s``: every answer of the protocol comes this much later (slow biller);
- ``drop``: the next N requests of the protocol have their connection closed
  before they are read through (nothing done);
- ``fail_after_accept``: the next N pays and cancels are done (booked), then
  their connection is closed without an answer;
- ``down_s``: the biller is down for that many seconds: its port is closed
  (connections refused) and every open connection dropped, then it comes back.

``GET /control`` also counts: ``connections`` (accepted since start),
``requests`` (by operation), and ``calls`` (by operation and receipt), which
the tests read to prove a message reached the biller once.

Run it: ``python -m sim.biller --port 8601 [--prepaid] [--bill ACCOUNT=AMOUNT_FEN ...] [--delay-s S]
[--drop N] [--fail-after-accept N] [--down-s S]``. Standard library only (sim imports protocol only).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import secrets
import signal
import sys
import time
import urllib.parse
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

HEADER_BYTES_MAX = 16384
BODY_BYTES_MAX = 1 << 20
IDLE_TIMEOUT_S = 60.0
TOKEN_DIGITS = 20
CHINA_TZ = timezone(timedelta(hours=8))  # the biller's book is kept by its local day (Beijing time)

_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed", 409: "Conflict",
            422: "Unprocessable Entity", 500: "Internal Server Error"}


@dataclass
class Bill:
    account: str
    name: str
    amount_fen: int | None
    reference: str
    period: str | None = None


@dataclass
class Payment:
    receipt: str
    account: str
    amount_fen: int
    status: str  # paid, cancelled
    day: str  # YYYY-MM-DD, the biller's local day of the payment
    answer: dict[str, Any] = field(default_factory=dict)  # what the pay answered, answered again to a repeat
    confirmed: bool = False


@dataclass
class Faults:
    delay_s: float = 0.0
    drop: int = 0
    fail_after_accept: int = 0
    down_s: float = 0.0


class _Drop(Exception):
    """Close the connection without an answer."""


class BillerSimulator:
    """The simulator in this event loop: ``await start()``, ``url``, ``await stop()``."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, prepaid: bool = False, exact: bool = False,
                 bills: dict[str, int] | None = None, faults: Faults | None = None,
                 tz: timezone = CHINA_TZ) -> None:
        self.host, self.port = host, port
        self.prepaid, self.exact, self.tz = prepaid, exact, tz
        self.bills = {account: Bill(account, f"Customer {account}", amount, f"R{account}")
                      for account, amount in (bills or {}).items()}
        self.faults = faults or Faults()
        self.book: dict[str, Payment] = {}
        self.barred: set[str] = set()  # receipts cancelled before any pay of them arrived
        self.connections = 0
        self.requests: Counter[str] = Counter()
        self.calls: Counter[tuple[str, str]] = Counter()  # (operation, receipt)
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._handlers: set[asyncio.Task[None]] = set()
        self._up_again: asyncio.TimerHandle | None = None
        self.down = False

    # -- lifecycle --------------------------------------------------------------------------------
    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, self.host, self.port, reuse_address=True)
        self.port = self._server.sockets[0].getsockname()[1]
        if self.faults.down_s:
            await self.go_down(self.faults.down_s)

    async def stop(self) -> None:
        if self._up_again is not None:
            self._up_again.cancel()
        await self._close_listener()
        self._drop_all()
        handlers, self._handlers = list(self._handlers), set()
        for task in handlers:
            task.cancel()
        await asyncio.gather(*handlers, return_exceptions=True)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def go_down(self, for_s: float | None = None) -> None:
        """Close the port and every connection; come back after ``for_s`` (None: at ``come_up``)."""
        self.down = True
        self.faults.down_s = 0.0
        await self._close_listener()
        self._drop_all()
        if self._up_again is not None:
            self._up_again.cancel()
            self._up_again = None
        if for_s:
            self._up_again = asyncio.get_running_loop().call_later(
                for_s, lambda: asyncio.ensure_future(self.come_up()))

    async def come_up(self) -> None:
        if self._up_again is not None:
            self._up_again.cancel()
            self._up_again = None
        if self._server is None:
            self._server = await asyncio.start_server(self._serve, self.host, self.port, reuse_address=True)
        self.down = False

    async def _close_listener(self) -> None:
        if self._server is not None:
            server, self._server = self._server, None
            server.close()

    def _drop_all(self) -> None:
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    # -- the book, for tests and the control endpoint --------------------------------------------
    def add_payment(self, receipt: str, account: str, amount_fen: int, status: str = "paid",
                    day: str | None = None) -> None:
        """A payment booked as if a pay had come (reconciliation tests: payments we never sent)."""
        self.book[receipt] = Payment(receipt, account, amount_fen, status, day or self.today(), {"name": None})

    def today(self) -> str:
        return datetime.now(self.tz).date().isoformat()

    def paid_receipts(self) -> set[str]:
        return {p.receipt for p in self.book.values() if p.status == "paid"}

    def state(self) -> dict[str, Any]:
        return {"faults": asdict(self.faults), "down": self.down, "connections": self.connections,
                "requests": dict(self.requests),
                "calls": [{"op": op, "receipt": receipt, "count": count}
                          for (op, receipt), count in sorted(self.calls.items())],
                "paid_fen": sum(p.amount_fen for p in self.book.values() if p.status == "paid")}

    # -- HTTP/1.1 ---------------------------------------------------------------------------------
    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writers.add(writer)
        task = asyncio.current_task()
        if task is not None:
            self._handlers.add(task)
        try:
            while True:
                request = await asyncio.wait_for(_read_request(reader), IDLE_TIMEOUT_S)
                if request is None:
                    return
                method, target, headers, body = request
                status, answer = await self._handle(method, target, body)
                payload = json.dumps(answer, ensure_ascii=False).encode()
                keep_alive = headers.get("connection", "").lower() != "close"
                writer.write(
                    f"HTTP/1.1 {status} {_REASONS.get(status, 'Status')}\r\nContent-Type: application/json\r\n"
                    f"Content-Length: {len(payload)}\r\nConnection: {'keep-alive' if keep_alive else 'close'}"
                    "\r\n\r\n".encode() + payload)
                await writer.drain()
                if not keep_alive:
                    return
        except (_Drop, TimeoutError, ConnectionError, asyncio.IncompleteReadError, ValueError):
            writer.transport.abort()
        except asyncio.CancelledError:  # stop(): ended here, not propagated to asyncio's stream callback
            writer.transport.abort()
        finally:
            self._writers.discard(writer)
            self._handlers.discard(task)  # type: ignore[arg-type]
            writer.close()

    async def _handle(self, method: str, target: str, body: bytes) -> tuple[int, dict[str, Any]]:
        parts = urllib.parse.urlsplit(target)
        path, query = parts.path.rstrip("/"), dict(urllib.parse.parse_qsl(parts.query))
        if path == "/control":
            return self._control(method, body)
        op = _operation(method, path)
        self.requests[op] += 1
        if self.faults.drop > 0:
            self.faults.drop -= 1
            raise _Drop
        if self.faults.delay_s:
            await asyncio.sleep(self.faults.delay_s)
        try:
            data = json.loads(body) if body else {}
        except ValueError:
            return 400, {"error": "the body is not JSON"}
        if op == "inquire":
            return self._inquire(query.get("account", ""))
        if op == "pay":
            return self._after_accept(self._pay(data))
        if op in ("cancel", "confirm"):
            receipt = urllib.parse.unquote(path.split("/")[2])
            self.calls[(op, receipt)] += 1
            if op == "cancel":
                return self._after_accept(self._cancel(receipt))
            return self._confirm(receipt)
        if op == "payments":
            day = query.get("date", "")
            return 200, {"date": day, "payments": [
                {"receipt": p.receipt, "account": p.account, "amount_fen": p.amount_fen, "status": p.status}
                for p in self.book.values() if p.day == day]}
        return 404, {"error": f"no such endpoint: {method} {path}"}

    def _after_accept(self, result: tuple[int, dict[str, Any]]) -> tuple[int, dict[str, Any]]:
        """Done and booked; with ``fail_after_accept``, the answer is lost."""
        if self.faults.fail_after_accept > 0:
            self.faults.fail_after_accept -= 1
            raise _Drop
        return result

    def _inquire(self, account: str) -> tuple[int, dict[str, Any]]:
        bill = self._bill(account)
        if bill is None:
            return 404, {"error": f"no account {account}"}
        answer: dict[str, Any] = {"name": bill.name, "reference": bill.reference}
        if bill.amount_fen is not None and not self.prepaid:
            answer |= {"amount_fen": bill.amount_fen, "period": bill.period or "202612"}
        return 200, answer

    def _bill(self, account: str) -> Bill | None:
        """A registered account, or (no accounts registered) any account at all."""
        if account in self.bills:
            return self.bills[account]
        if not self.bills and account:
            return Bill(account, f"Customer {account}", None, f"R{account}")
        return None

    def _pay(self, data: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        receipt, account, amount = str(data.get("receipt", "")), str(data.get("account", "")), data.get("amount_fen")
        if not receipt or not isinstance(amount, int) or amount <= 0:
            return 400, {"error": "receipt and a positive amount_fen are required"}
        self.calls[("pay", receipt)] += 1
        if receipt in self.barred:
            return 409, {"error": f"receipt {receipt} was cancelled"}
        if receipt in self.book:  # idempotent by receipt: the first answer again
            payment = self.book[receipt]
            if payment.status == "cancelled":
                return 409, {"error": f"receipt {receipt} was cancelled"}
            return 200, payment.answer
        bill = self._bill(account)
        if bill is None:
            return 404, {"error": f"no account {account}"}
        if data.get("reference") not in (None, bill.reference):
            return 404, {"error": "the reference is not the account's"}
        if self.exact and bill.amount_fen is not None and amount != bill.amount_fen:
            return 422, {"error": f"the amount due is {bill.amount_fen}"}
        answer: dict[str, Any] = {"name": bill.name}
        if self.prepaid:
            answer["token"] = f"{secrets.randbelow(10**TOKEN_DIGITS):0{TOKEN_DIGITS}d}"
        self.book[receipt] = Payment(receipt, account, amount, "paid", self.today(), answer)
        return 200, answer

    def _cancel(self, receipt: str) -> tuple[int, dict[str, Any]]:
        payment = self.book.get(receipt)
        if payment is None:
            self.barred.add(receipt)
        else:
            payment.status = "cancelled"
        return 200, {"receipt": receipt, "status": "cancelled"}

    def _confirm(self, receipt: str) -> tuple[int, dict[str, Any]]:
        payment = self.book.get(receipt)
        if payment is None:
            return 404, {"error": f"no payment {receipt}"}
        payment.confirmed = True
        return 200, {"receipt": receipt, "status": payment.status}

    def _control(self, method: str, body: bytes) -> tuple[int, dict[str, Any]]:
        if method == "GET":
            return 200, self.state()
        if method != "POST":
            return 405, {"error": "GET or POST"}
        try:
            changes = json.loads(body or b"{}")
            for name, value in changes.items():
                if name == "down_s":
                    asyncio.get_running_loop().call_soon(
                        lambda s=float(value): asyncio.ensure_future(self.go_down(s)))
                elif name == "payments":
                    for p in value:
                        self.add_payment(str(p["receipt"]), str(p["account"]), int(p["amount_fen"]),
                                         p.get("status", "paid"), p.get("date"))
                elif name in ("delay_s",):
                    self.faults.delay_s = float(value)
                elif name in ("drop", "fail_after_accept"):
                    setattr(self.faults, name, int(value))
                else:
                    return 400, {"error": f"unknown control {name!r}"}
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            return 400, {"error": f"bad control request: {exc}"}
        return 200, self.state()


def _operation(method: str, path: str) -> str:
    parts = path.split("/")
    if method == "GET" and path == "/bills":
        return "inquire"
    if method == "POST" and path == "/payments":
        return "pay"
    if method == "GET" and path == "/payments":
        return "payments"
    if method == "POST" and len(parts) == 4 and parts[1] == "payments" and parts[3] in ("cancel", "confirm"):
        return parts[3]
    return "other"


async def _read_request(reader: asyncio.StreamReader) -> tuple[str, str, dict[str, str], bytes] | None:
    """One request (None at a clean end of the connection)."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        if not exc.partial:
            return None
        raise
    except asyncio.LimitOverrunError:
        raise ValueError("headers too long") from None
    if len(head) > HEADER_BYTES_MAX:
        raise ValueError("headers too long")
    lines = head.decode("latin-1").split("\r\n")
    method, target, _version = lines[0].split(" ", 2)
    headers = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0"))
    if not 0 <= length <= BODY_BYTES_MAX:
        raise ValueError("body too long")
    body = await reader.readexactly(length) if length else b""
    return method, target, headers, body


# -- the command ------------------------------------------------------------------------------------


def _bill_argument(text: str) -> tuple[str, int]:
    account, sep, amount = text.partition("=")
    if not sep or not account or not amount.isdigit() or int(amount) <= 0:
        raise argparse.ArgumentTypeError("--bill is ACCOUNT=AMOUNT_FEN")
    return account, int(amount)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The simulator's options (``python -m sim.biller``, and ``posgw-sim biller`` once wired there)."""
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8601)
    p.add_argument("--prepaid", action="store_true", help="answer each payment with a 20-digit token")
    p.add_argument("--exact", action="store_true", help="a bill must be paid in full (else 422)")
    p.add_argument("--bill", type=_bill_argument, action="append", default=[], metavar="ACCOUNT=AMOUNT_FEN",
                   help="an account and its amount due (none: any account is accepted)")
    p.add_argument("--delay-s", type=float, default=0.0)
    p.add_argument("--drop", type=int, default=0, help="drop the next N requests unanswered")
    p.add_argument("--fail-after-accept", type=int, default=0, help="book the next N pays and cancels, then drop")
    p.add_argument("--down-s", type=float, default=0.0, help="start down for that many seconds")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m sim.biller", description="an HTTP biller with faults")
    add_arguments(p)
    return p


async def _main(args: argparse.Namespace) -> None:
    sim = BillerSimulator(args.host, args.port, prepaid=args.prepaid, exact=args.exact, bills=dict(args.bill),
                          faults=Faults(args.delay_s, args.drop, args.fail_after_accept, args.down_s))
    await sim.start()
    print(json.dumps({"listening": sim.url, "started_at": time.strftime("%Y-%m-%dT%H:%M:%S")}), flush=True)
    stopped = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stopped.set)
    await stopped.wait()
    await sim.stop()


def run(args: argparse.Namespace) -> int:
    """Serve until SIGINT or SIGTERM; print one JSON line with the URL once listening."""
    asyncio.run(_main(args))
    return 0


def main(argv: list[str] | None = None) -> int:
    return run(build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
