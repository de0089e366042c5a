"""An async POS terminal: frames, MACs and sends requests over one TCP connection.

Speaks WIRE.md from the terminal's side. Used by ``posgw-sim``, tests and the
load generator; it knows the protocol package only, never the gateway.
"""

from __future__ import annotations

import asyncio
import hmac
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

from protocol import tlv
from protocol.crypto import cup_ecb_mac, encrypt_pin_block, key_check_value, unwrap_key, x919_mac
from protocol.framing import LENGTH_BYTES, Header, Tpdu, encode_frame, parse_frame_body
from protocol.messages import FIELD_NUMBERS, SECURITY_CONTROL, Message, decode_message

MAC_ALGORITHMS: dict[str, Callable[[bytes, bytes], bytes]] = {"cup-ecb": cup_ecb_mac, "x9.19": x919_mac}
KEY_NAMES_BY_NETWORK_CODE = {"003": ("pik", "mak"), "004": ("pik", "mak", "tdk")}
_WRAPPED_KEY_BYTES = 16
_CHECK_VALUE_BYTES = 4
_KEY_ENTRY_BYTES = _WRAPPED_KEY_BYTES + _CHECK_VALUE_BYTES
STAN_MAX = 999_999  # field 11: 000001 to 999999, then 000001 again
BATCH_MAX = 999_999  # 60.2, n6
AMOUNT_FEN_MAX = 10**12 - 1  # field 4 is n12
TPDU = bytes.fromhex("6000010000")
HEADER = bytes.fromhex("603100000000")
_SECRET_FIELDS = ("key_data", "pin_block", "mac")  # shown as their length only
CURRENCY = "156"
ENTRY_MODE_READ = "021"
_FINANCIAL_NETWORK_CODE = "000"
CONDITION_PREAUTH = "06"  # field 25 of the pre-authorization family (WIRE.md 9.1)
ZERO_ORIGINAL = "000000000000"  # 61's batch and STAN as most terminals send them for refunds and completions
# 60.1 of the transactions of WIRE.md 9.1 whose 0400 carries the original's 25, 38 and 61
VERSION_2_TYPES = frozenset({"10", "11", "20", "21", "24", "25"})
UPLOAD_RECORDS_MAX = 8  # records in one 0320 (WIRE.md 9.4)
_BALANCE_LENGTH = 20  # AA TT CCC S NNNNNNNNNNNN
_BALANCE_SIGNS = {"C": 1, "D": -1}


@dataclass
class WorkingKeys:
    """Clear working keys from the last successful sign-on."""

    pik: bytes
    mak: bytes
    tdk: bytes | None


class KeyCheckError(Exception):
    """Field 62 of an approved sign-on is malformed or a check value did not match."""


class ResponseMacError(Exception):
    """The response's MAC did not verify under the current MAK."""


class BalanceFormatError(Exception):
    """Field 54 of a response is not ``AA TT CCC S`` and 12 digits."""


def mask_pan(pan: str) -> str:
    """First 6 and last 4 digits with ``*`` between."""
    return f"{pan[:6]}*{pan[-4:]}"


@dataclass
class Response:
    """A decoded response frame and how long it took to arrive."""

    message: Message
    tpdu: bytes
    header: bytes
    latency_s: float

    @property
    def response_code(self) -> str:
        return self.message.response_code

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe view; never holds key material, a PIN block, a MAC or a full PAN."""
        out: dict[str, Any] = {"mti": self.message.mti, "response_code": self.response_code}
        for name in sorted(FIELD_NUMBERS, key=FIELD_NUMBERS.__getitem__):
            value = getattr(self.message, name)
            if value is None:
                continue
            if name in _SECRET_FIELDS:
                out[f"{name}_bytes"] = len(value)
            elif name == "pan":
                out[name] = mask_pan(value)
            elif name == "track2":
                out[name] = mask_pan(value.split("D", 1)[0]) + ("D*" if "D" in value else "")
            elif isinstance(value, bytes):
                out[name] = value.hex().upper()
            else:
                out[name] = value
        return out


def build_request(mti: str, **named_fields: str | bytes | None) -> Message:
    """A request from its MTI and fields by ``Message`` attribute name (None: absent)."""
    message = Message(mti)
    for name, value in named_fields.items():
        if name not in FIELD_NUMBERS:
            raise TypeError(f"unknown message field {name!r}")
        setattr(message, name, value)
    return message


class Terminal:
    """One terminal on one reusable TCP connection to the gateway."""

    def __init__(self, host: str, port: int, tid: str, mid: str, tmk: bytes, *,
                 mac_algorithm: str = "cup-ecb", tpdu: bytes = TPDU,
                 header: bytes = HEADER, batch: int = 1, last_stan: int = 0,
                 timeout_s: float = 10.0, ssl_context: ssl.SSLContext | None = None) -> None:
        if mac_algorithm not in MAC_ALGORITHMS:
            raise ValueError(f"MAC algorithm must be one of {', '.join(MAC_ALGORITHMS)}")
        self.host = host
        self.port = port
        self.tid = tid
        self.mid = mid
        self.tmk = tmk
        self.mac_algorithm = mac_algorithm
        self.tpdu = tpdu
        self.header = header
        self.batch = batch
        self.timeout_s = timeout_s
        self.ssl_context = ssl_context  # TLS to the gateway when set
        self.keys: WorkingKeys | None = None
        self.last_request: Message | None = None  # the last request sent, e.g. to reverse it
        self._stan = last_stan % (STAN_MAX + 1)  # next_stan() gives the one after it
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._lock = asyncio.Lock()  # one request/response on the connection at a time

    # -- connection ----------------------------------------------------------
    async def connect(self) -> None:
        """Open the TCP connection (TLS with ``ssl_context``), unless it is open."""
        if self._writer is None:
            async with asyncio.timeout(self.timeout_s):
                self._reader, self._writer = await asyncio.open_connection(self.host, self.port,
                                                                           ssl=self.ssl_context)

    async def close(self) -> None:
        """Close the connection, if open."""
        writer = self._drop()
        if writer is not None:
            try:
                await writer.wait_closed()
            except OSError:
                pass

    def _drop(self) -> asyncio.StreamWriter | None:
        """Forget the connection and start closing it; returns its writer."""
        writer, self._reader, self._writer = self._writer, None, None
        if writer is not None:
            writer.close()
        return writer

    # -- messages ------------------------------------------------------------
    @property
    def last_stan(self) -> int:
        """The STAN ``next_stan`` gave last (0 before the first)."""
        return self._stan

    def next_stan(self) -> str:
        """The next STAN: ``000001`` .. ``999999``, then ``000001`` again."""
        self._stan = self._stan % STAN_MAX + 1
        return f"{self._stan:06d}"

    def _mac_of(self, mak: bytes) -> Callable[[bytes], bytes]:
        return partial(MAC_ALGORITHMS[self.mac_algorithm], mak)

    async def exchange(self, request: Message, *, mac: bool) -> Response:
        """Send one request (MAC'd under the MAK when ``mac``) and read its response.

        The connection is closed on any failure, so the next call reconnects.
        Raises ``TimeoutError``, ``ConnectionError``, ``ResponseMacError``, and
        ``FramingError``/``FormatError`` for an unreadable response.
        """
        if mac:
            if self.keys is None:
                raise RuntimeError("no working keys: sign on first")
            raw = request.encode_with_mac(self._mac_of(self.keys.mak))
        else:
            raw = request.encode()
        return await self._exchange_encoded(request, raw)

    async def _exchange_encoded(self, request: Message, raw: bytes) -> Response:
        """``exchange`` of a request already encoded as ``raw`` (MTI first)."""
        frame = encode_frame(Tpdu(self.tpdu), Header(self.header), raw)
        async with self._lock:
            self.last_request = request
            await self.connect()
            assert self._reader is not None and self._writer is not None
            started = time.perf_counter()
            try:
                async with asyncio.timeout(self.timeout_s):
                    self._writer.write(frame)
                    await self._writer.drain()
                    length = int.from_bytes(await self._reader.readexactly(LENGTH_BYTES), "big")
                    body = await self._reader.readexactly(length)
            except asyncio.IncompleteReadError:
                self._drop()
                raise ConnectionError("the host closed the connection") from None
            except BaseException:
                self._drop()
                raise
            latency = time.perf_counter() - started
        try:
            answer = parse_frame_body(body)
            message = decode_message(answer.message)
        except Exception:
            await self.close()
            raise
        self._verify_mac(message)
        return Response(message, answer.tpdu.raw, answer.header.raw, latency)

    def _verify_mac(self, message: Message) -> None:
        if message.mac is None or self.keys is None:
            return
        expected = self._mac_of(self.keys.mak)(message.mac_input)
        if not hmac.compare_digest(expected, message.mac):
            raise ResponseMacError(f"MAC of the {message.mti} response did not verify")

    async def send(self, request: Message) -> Response:
        """Send a financial request, MAC'd under the MAK, and read its response."""
        return await self.exchange(request, mac=True)

    def _network_request(self, mti: str, network_code: str, stan: str | None) -> Message:
        return build_request(
            mti, stan=stan or self.next_stan(), terminal_id=self.tid, merchant_id=self.mid,
            txn_data=f"00{self.batch:06d}{network_code}",
        )

    def _financial_request(self, processing_code: str, txn_type: str, *, stan: str | None,
                           **fields: str | None) -> Message:
        """A 0200 with 3, 11, 41, 42, 49 and 60 (60.3 = ``000``), plus ``fields``."""
        return build_request(
            "0200", processing_code=processing_code, stan=stan or self.next_stan(), terminal_id=self.tid,
            merchant_id=self.mid, currency=CURRENCY,
            txn_data=f"{txn_type}{self.batch:06d}{_FINANCIAL_NETWORK_CODE}", **fields,
        )

    def _card_request(self, processing_code: str, txn_type: str, pan: str, pin: str, *,
                      stan: str | None, expiry: str | None, entry_mode: str,
                      **fields: str | None) -> Message:
        """A 0200 with the card fields of WIRE.md section 3 and the PIN block under the PIK."""
        return self._family_request("0200", processing_code, txn_type, pan, pin, stan=stan, expiry=expiry,
                                    entry_mode=entry_mode, condition_code="00", **fields)

    def _family_request(self, mti: str, processing_code: str, txn_type: str, pan: str, pin: str | None, *,
                        stan: str | None, expiry: str | None = None, entry_mode: str = ENTRY_MODE_READ,
                        condition_code: str = CONDITION_PREAUTH, **fields: str | None) -> Message:
        """A card request of WIRE.md 9.1 (``mti`` 0100, 0200 or 0220): the card fields, 25, 49,
        60 with 60.3 = ``000``, and the PIN block under the PIK when ``pin`` is given."""
        if self.keys is None:
            raise RuntimeError("no working keys: sign on first")
        pin_fields: dict[str, Any] = {}
        if pin is not None:
            pin_fields = {"pin_block": encrypt_pin_block(self.keys.pik, pin, pan),
                          "security_control": SECURITY_CONTROL}
        return build_request(
            mti, processing_code=processing_code, stan=stan or self.next_stan(), terminal_id=self.tid,
            merchant_id=self.mid, currency=CURRENCY, pan=pan, expiry=expiry, entry_mode=entry_mode,
            condition_code=condition_code, txn_data=f"{txn_type}{self.batch:06d}{_FINANCIAL_NETWORK_CODE}",
            **fields, **pin_fields,
        )

    # -- network management --------------------------------------------------
    async def sign_on(self, *, network_code: str = "003", stan: str | None = None) -> Response:
        """0800 sign-on; on 00 installs the working keys from field 62.

        Raises ``KeyCheckError`` if field 62 does not hold the keys the
        network code asks for, each with its matching check value.
        """
        if network_code not in KEY_NAMES_BY_NETWORK_CODE:
            raise ValueError(f"network code must be one of {', '.join(KEY_NAMES_BY_NETWORK_CODE)}")
        request = self._network_request("0800", network_code, stan)
        request.operator = "01"
        response = await self.exchange(request, mac=False)
        if response.response_code == "00":
            self.keys = unwrap_working_keys(self.tmk, response.message.key_data, network_code)
        return response

    async def sign_off(self) -> Response:
        """0820 sign-off; on 00 forgets the working keys."""
        response = await self.exchange(self._network_request("0820", "002", None), mac=False)
        if response.response_code == "00":
            self.keys = None
        return response

    async def echo(self, *, stan: str | None = None) -> Response:
        """0820 echo test."""
        return await self.exchange(self._network_request("0820", "301", stan), mac=False)

    # -- card transactions (MAC'd; ``stan`` defaults to ``next_stan()``) -------
    async def balance(self, pan: str, pin: str, *, stan: str | None = None, expiry: str | None = None,
                      entry_mode: str = ENTRY_MODE_READ) -> Response:
        """0200 balance inquiry; an approval carries field 54 (see ``balance_fen``)."""
        return await self.send(self._card_request(
            "310000", "01", pan, pin, stan=stan, expiry=expiry, entry_mode=entry_mode))

    async def purchase(self, pan: str, pin: str, amount_fen: int, *, stan: str | None = None,
                       expiry: str | None = None, entry_mode: str = ENTRY_MODE_READ) -> Response:
        """0200 purchase of ``amount_fen``."""
        return await self.send(self._card_request(
            "000000", "22", pan, pin, stan=stan, expiry=expiry, entry_mode=entry_mode,
            amount=f"{amount_fen:012d}"))

    async def void(self, pan: str, pin: str, amount_fen: int, *, original_rrn: str, original_batch: int,
                   original_stan: str, original_date: str, stan: str | None = None,
                   expiry: str | None = None, entry_mode: str = ENTRY_MODE_READ) -> Response:
        """0200 void of a purchase: its amount, its RRN (37), and in 61 its batch, STAN and 0210 date."""
        return await self.send(self._card_request(
            "200000", "23", pan, pin, stan=stan, expiry=expiry, entry_mode=entry_mode,
            amount=f"{amount_fen:012d}", rrn=original_rrn,
            original_txn=f"{original_batch:06d}{original_stan}{original_date}"))

    # -- bills (MAC'd; ``location`` is ``LAT,LON`` for tag LC) ---------------------
    async def bill_inquiry(self, biller: str, account: str, *, stan: str | None = None,
                           location: str | None = None) -> Response:
        """0200 bill inquiry; an approval carries the amount due in 4 and the bill in 59."""
        return await self.send(self._financial_request(
            "380000", "40", stan=stan, bill_data=_bill_data(biller, account, location=location)))

    async def bill_payment(self, biller: str, account: str, amount_fen: int, *, reference: str | None = None,
                           pan: str | None = None, pin: str | None = None, stan: str | None = None,
                           location: str | None = None) -> Response:
        """0200 bill payment of ``amount_fen``: in cash without ``pan``, else by card with its ``pin``.

        ``reference`` is the BR of the inquiry (needed for postpaid billers).
        """
        fields = {"amount": f"{amount_fen:012d}",
                  "bill_data": _bill_data(biller, account, reference=reference, location=location)}
        if pan is None and pin is None:
            request = self._financial_request("500000", "41", stan=stan, **fields)
        elif pan is not None and pin is not None:
            request = self._card_request("500000", "41", pan, pin, stan=stan, expiry=None,
                                         entry_mode=ENTRY_MODE_READ, **fields)
        else:
            raise ValueError("a card bill payment needs both the PAN and the PIN")
        return await self.send(request)

    # -- version 2 (WIRE.md 9.1-9.3); 61 is ``batch n6, STAN n6, date MMDD`` ------------------
    async def refund(self, pan: str, amount_fen: int, *, original_rrn: str, original_date: str,
                     original_batch: int = 0, original_stan: str = "000000", pin: str | None = None,
                     stan: str | None = None) -> Response:
        """0220 refund (60.1 25) of a purchase or completion named by its RRN, 0210 date and card
        (61's batch and STAN zeros unless given); the PIN is optional. An advice: see ``send_advice``."""
        return await self.send_advice(self.refund_request(
            pan, amount_fen, original_rrn=original_rrn, original_date=original_date, original_batch=original_batch,
            original_stan=original_stan, pin=pin, stan=stan))

    def refund_request(self, pan: str, amount_fen: int, *, original_rrn: str, original_date: str,
                       original_batch: int = 0, original_stan: str = "000000", pin: str | None = None,
                       stan: str | None = None) -> Message:
        """The 0220 of ``refund``."""
        return self._family_request(
            "0220", "200000", "25", pan, pin, stan=stan, condition_code="00", amount=f"{amount_fen:012d}",
            rrn=original_rrn, original_txn=f"{original_batch:06d}{original_stan}{original_date}")

    async def preauth(self, pan: str, pin: str, amount_fen: int, *, stan: str | None = None) -> Response:
        """0100 pre-authorization (60.1 10): a hold of ``amount_fen``; the answer's 38 names it."""
        return await self.send(self.preauth_request(pan, pin, amount_fen, stan=stan))

    def preauth_request(self, pan: str, pin: str, amount_fen: int, *, stan: str | None = None) -> Message:
        """The 0100 of ``preauth``."""
        return self._family_request("0100", "030000", "10", pan, pin, stan=stan, amount=f"{amount_fen:012d}")

    async def preauth_cancel(self, pan: str, amount_fen: int, *, auth_code: str, original_date: str,
                             pin: str | None = None, stan: str | None = None) -> Response:
        """0100 pre-authorization cancel (60.1 11) of the pre-authorization's whole amount."""
        return await self.send(self.preauth_cancel_request(pan, amount_fen, auth_code=auth_code,
                                                           original_date=original_date, pin=pin, stan=stan))

    def preauth_cancel_request(self, pan: str, amount_fen: int, *, auth_code: str, original_date: str,
                               pin: str | None = None, stan: str | None = None) -> Message:
        """The 0100 of ``preauth_cancel``."""
        return self._family_request("0100", "200000", "11", pan, pin, stan=stan, amount=f"{amount_fen:012d}",
                                    auth_id=auth_code, original_txn=f"{ZERO_ORIGINAL}{original_date}")

    def completion_request(self, pan: str, amount_fen: int, *, auth_code: str, original_date: str,
                           pin: str | None, advice: bool = False, stan: str | None = None) -> Message:
        """The 0200 completion request (60.1 20, with the PIN), or the 0220 completion advice
        (60.1 24, no PIN), of the pre-authorization ``auth_code`` approved on ``original_date``."""
        if advice:
            return self._family_request("0220", "000000", "24", pan, None, stan=stan, amount=f"{amount_fen:012d}",
                                        auth_id=auth_code, original_txn=f"{ZERO_ORIGINAL}{original_date}")
        if pin is None:
            raise ValueError("a completion request needs the PIN")
        return self._family_request("0200", "000000", "20", pan, pin, stan=stan, amount=f"{amount_fen:012d}",
                                    auth_id=auth_code, original_txn=f"{ZERO_ORIGINAL}{original_date}")

    async def send_advice(self, request: Message, *, tries: int = 3) -> Response:
        """An advice (0220) sent, then sent again with the same bytes while unanswered (no
        answer in time, the connection lost), as a terminal does, at most ``tries`` times in all;
        the last failure is raised. A repeat gets the stored answer (WIRE.md 9.1)."""
        if self.keys is None:
            raise RuntimeError("no working keys: sign on first")
        raw = request.encode_with_mac(self._mac_of(self.keys.mak))
        for attempt in range(1, tries + 1):
            try:
                return await self._exchange_encoded(request, raw)
            except (TimeoutError, ConnectionError):
                if attempt == tries:
                    raise
        raise ValueError("tries must be at least 1")

    async def completion_void(self, pan: str, amount_fen: int, *, original_rrn: str, original_batch: int,
                              original_stan: str, original_date: str, auth_code: str, pin: str | None = None,
                              stan: str | None = None) -> Response:
        """0200 completion void (60.1 21): the completion's RRN, its batch, STAN and 0210 date in 61,
        and the pre-authorization's auth code."""
        return await self.send(self._family_request(
            "0200", "200000", "21", pan, pin, stan=stan, amount=f"{amount_fen:012d}", rrn=original_rrn,
            auth_id=auth_code, original_txn=f"{original_batch:06d}{original_stan}{original_date}"))

    # -- batch upload (0320, no MAC; WIRE.md 9.4) ---------------------------------------------
    async def upload_records(self, batch: int, records: list[tuple[str, str, int]], *,
                             stan: str | None = None) -> Response:
        """One 0320 of up to 8 records (STAN, PAN or '' for none, amount in fen) of ``batch``."""
        if not 1 <= len(records) <= UPLOAD_RECORDS_MAX:
            raise ValueError(f"an upload carries 1 to {UPLOAD_RECORDS_MAX} records")
        digits = "".join(f"00{rec_stan}{pan.rjust(20, '0')}{amount:012d}" for rec_stan, pan, amount in records)
        return await self.exchange(build_request(
            "0320", stan=stan or self.next_stan(), terminal_id=self.tid, merchant_id=self.mid,
            settlement_totals=f"{len(records):02d}{digits}", txn_data=f"00{batch:06d}201"), mac=False)

    async def upload_advice_copy(self, advice: Message) -> Response:
        """The copy of an advice the terminal sent: MTI 0320, no PIN and no MAC."""
        fields = {number: value for number, value in advice.fields.items()
                  if number not in (FIELD_NUMBERS["pin_block"], FIELD_NUMBERS["security_control"],
                                    FIELD_NUMBERS["mac"])}
        return await self.exchange(Message("0320", fields), mac=False)

    async def upload_end(self, batch: int, count: int, *, stan: str | None = None) -> Response:
        """The end of the upload (60.3 202): 48 the number of records and copies sent; the answer's 48
        the number the gateway received."""
        return await self.exchange(build_request(
            "0320", stan=stan or self.next_stan(), terminal_id=self.tid, merchant_id=self.mid,
            settlement_totals=f"{count % 10_000:04d}", txn_data=f"00{batch:06d}202"), mac=False)

    async def settle(self, debit_fen: int, debit_count: int, *, credit_fen: int = 0, credit_count: int = 0,
                     stan: str | None = None) -> Response:
        """0500 batch settlement with the terminal's totals in 48 (30 digits); on 00 moves to the
        next batch."""
        totals = f"{debit_fen:012d}{debit_count % 1000:03d}{credit_fen:012d}{credit_count % 1000:03d}"
        response = await self.send(build_request(
            "0500", stan=stan or self.next_stan(), terminal_id=self.tid, merchant_id=self.mid,
            currency=CURRENCY, settlement_totals=totals, txn_data=f"00{self.batch:06d}201"))
        if response.response_code == "00":
            self.batch = (self.batch + 1) % 1_000_000
        return response

    async def reverse(self, original: Message, *, reason: str = "98") -> Response:
        """0400 reversal of the request ``original`` (e.g. ``last_request``), for ``reason`` in 39.

        Carries the original's card (2 or 35), 3, 4, 11, 41, 42, 49, 59 and 60
        with 60.3 = ``000``, and for a transaction of WIRE.md 9.1 its 25, 38 and 61; no PIN.
        """
        txn_data = original.txn_data
        if txn_data is None:
            raise ValueError("the original request has no field 60")
        version_2 = {}
        if txn_data[:2] in VERSION_2_TYPES:
            version_2 = {"condition_code": original.condition_code, "auth_id": original.auth_id,
                         "original_txn": original.original_txn}
        return await self.send(build_request(
            "0400", pan=original.pan, track2=original.track2, processing_code=original.processing_code,
            amount=original.amount, stan=original.stan, response_code=reason,
            terminal_id=original.terminal_id, merchant_id=original.merchant_id,
            currency=original.currency, bill_data=original.bill_data,
            txn_data=f"{txn_data[:8]}{_FINANCIAL_NETWORK_CODE}{txn_data[11:]}", **version_2,
        ))


def balance_fen(response: Response) -> int | None:
    """The balance in field 54 in fen, negative for sign ``D``; None without 54.

    Raises ``BalanceFormatError`` if 54 is not ``AA TT CCC S`` and 12 digits.
    """
    balance = response.message.balance
    if balance is None:
        return None
    sign, amount = balance[7:8], balance[8:]
    digits = amount.isascii() and amount.isdigit()
    if len(balance) != _BALANCE_LENGTH or sign not in _BALANCE_SIGNS or not digits:
        raise BalanceFormatError(f"field 54 {balance!r} is not AA TT CCC S and 12 digits")
    return _BALANCE_SIGNS[sign] * int(amount)


def _bill_data(biller: str, account: str, *, reference: str | None = None,
               location: str | None = None) -> str:
    """Field 59 of a bill request: BL, AC, then BR and LC when given."""
    tags = {tlv.BILLER: biller, tlv.ACCOUNT: account, tlv.REFERENCE: reference, tlv.LOCATION: location}
    return tlv.encode({tag: value for tag, value in tags.items() if value is not None})


def bill_fields(response: Response) -> dict[str, str]:
    """The tags of field 59 (tag → value); {} without 59.

    Raises ``tlv.TlvError`` if 59 is not a well-formed TLV sequence.
    """
    bill_data = response.message.bill_data
    return {} if bill_data is None else tlv.decode(bill_data)


def unwrap_working_keys(tmk: bytes, key_data: bytes | None, network_code: str) -> WorkingKeys:
    """Decrypt field 62 (key under TMK + 4-byte check value, per key) and check every key."""
    names = KEY_NAMES_BY_NETWORK_CODE[network_code]
    expected = len(names) * _KEY_ENTRY_BYTES
    if key_data is None or len(key_data) != expected:
        got = "no key data" if key_data is None else f"{len(key_data)} bytes of key data"
        raise KeyCheckError(f"sign-on {network_code} approved with {got}, expected {expected} bytes")
    keys: dict[str, bytes] = {}
    for index, name in enumerate(names):
        entry = key_data[index * _KEY_ENTRY_BYTES : (index + 1) * _KEY_ENTRY_BYTES]
        key = unwrap_key(tmk, entry[:_WRAPPED_KEY_BYTES])
        if not hmac.compare_digest(key_check_value(key, _CHECK_VALUE_BYTES), entry[_WRAPPED_KEY_BYTES:]):
            raise KeyCheckError(f"{name.upper()} check value does not match")
        keys[name] = key
    return WorkingKeys(pik=keys["pik"], mak=keys["mak"], tdk=keys.get("tdk"))
