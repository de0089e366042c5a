"""An async POS terminal: frames, MACs and sends requests over one TCP connection.

Speaks WIRE.md from the terminal's side. Used by ``posgw-sim``, tests and the
load generator; it knows the protocol package only, never the gateway.
"""

from __future__ import annotations

import asyncio
import hmac
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

from protocol.crypto import cup_ecb_mac, key_check_value, unwrap_key, x919_mac
from protocol.framing import LENGTH_BYTES, Header, Tpdu, encode_frame, parse_frame_body
from protocol.messages import FIELD_NUMBERS, Message, decode_message

MAC_ALGORITHMS: dict[str, Callable[[bytes, bytes], bytes]] = {"cup-ecb": cup_ecb_mac, "x9.19": x919_mac}
KEY_NAMES_BY_NETWORK_CODE = {"003": ("pik", "mak"), "004": ("pik", "mak", "tdk")}
_WRAPPED_KEY_BYTES = 16
_CHECK_VALUE_BYTES = 4
_KEY_ENTRY_BYTES = _WRAPPED_KEY_BYTES + _CHECK_VALUE_BYTES
_STAN_MAX = 999_999
_SECRET_FIELDS = ("key_data", "pin_block", "mac")  # shown as their length only


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
                 mac_algorithm: str = "cup-ecb", tpdu: bytes = bytes.fromhex("6000010000"),
                 header: bytes = bytes.fromhex("603100000000"), batch: int = 1,
                 timeout_s: float = 10.0) -> None:
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
        self.keys: WorkingKeys | None = None
        self._stan = 0
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._lock = asyncio.Lock()  # one request/response on the connection at a time

    # -- connection ----------------------------------------------------------
    async def connect(self) -> None:
        """Open the TCP connection, unless it is open."""
        if self._writer is None:
            async with asyncio.timeout(self.timeout_s):
                self._reader, self._writer = await asyncio.open_connection(self.host, self.port)

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
    def next_stan(self) -> str:
        """The next STAN: ``000001`` .. ``999999``, then ``000001`` again."""
        self._stan = self._stan % _STAN_MAX + 1
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
        frame = encode_frame(Tpdu(self.tpdu), Header(self.header), raw)
        async with self._lock:
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

    def _network_request(self, mti: str, network_code: str) -> Message:
        return build_request(
            mti, stan=self.next_stan(), terminal_id=self.tid, merchant_id=self.mid,
            txn_data=f"00{self.batch:06d}{network_code}",
        )

    # -- network management --------------------------------------------------
    async def sign_on(self, *, network_code: str = "003") -> Response:
        """0800 sign-on; on 00 installs the working keys from field 62.

        Raises ``KeyCheckError`` if field 62 does not hold the keys the
        network code asks for, each with its matching check value.
        """
        if network_code not in KEY_NAMES_BY_NETWORK_CODE:
            raise ValueError(f"network code must be one of {', '.join(KEY_NAMES_BY_NETWORK_CODE)}")
        request = self._network_request("0800", network_code)
        request.operator = "01"
        response = await self.exchange(request, mac=False)
        if response.response_code == "00":
            self.keys = unwrap_working_keys(self.tmk, response.message.key_data, network_code)
        return response

    async def sign_off(self) -> Response:
        """0820 sign-off; on 00 forgets the working keys."""
        response = await self.exchange(self._network_request("0820", "002"), mac=False)
        if response.response_code == "00":
            self.keys = None
        return response

    async def echo(self) -> Response:
        """0820 echo test."""
        return await self.exchange(self._network_request("0820", "301"), mac=False)


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
