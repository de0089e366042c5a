"""Framing of WIRE.md section 1: length prefix, TPDU, header. Sans-IO.

A frame on the wire is ``length(2) | TPDU(5) | header(6) | message``. The
decoder takes bytes in any chunking and yields whole frames; it never touches
a socket. Anything that makes the stream unreadable raises ``FramingError``:
the caller closes the connection without answering.
"""

from __future__ import annotations

from dataclasses import dataclass

LENGTH_BYTES = 2
TPDU_BYTES = 5
HEADER_BYTES = 6
PREFIX_BYTES = TPDU_BYTES + HEADER_BYTES
MESSAGE_MIN_BYTES = 2 + 8  # MTI and primary bitmap
FRAME_MIN_LENGTH = PREFIX_BYTES + MESSAGE_MIN_BYTES  # 21, the smallest length value
TPDU_ID = 0x60
PROCESSING_DIGIT_INDEX = 5  # header digit: processing requirement


class FramingError(Exception):
    """The byte stream cannot be read as frames: close, do not answer."""


@dataclass(frozen=True, slots=True)
class Tpdu:
    """TPDU: ID ``60``, destination and source addresses (4 BCD digits each)."""

    raw: bytes

    @property
    def destination(self) -> str:
        return self.raw[1:3].hex()

    @property
    def source(self) -> str:
        return self.raw[3:5].hex()

    def swapped(self) -> Tpdu:
        """The TPDU of the response: destination and source swapped."""
        return Tpdu(self.raw[:1] + self.raw[3:5] + self.raw[1:3])


@dataclass(frozen=True, slots=True)
class Header:
    """The 12-digit header: application type, software version, terminal
    status, processing requirement, software sub-version."""

    raw: bytes

    @property
    def digits(self) -> str:
        return self.raw.hex()

    @property
    def application_type(self) -> str:
        return self.digits[0:2]

    @property
    def software_version(self) -> str:
        return self.digits[2:4]

    @property
    def terminal_status(self) -> str:
        return self.digits[4]

    @property
    def processing_requirement(self) -> str:
        return self.digits[PROCESSING_DIGIT_INDEX]

    def with_processing_requirement(self, digit: str) -> Header:
        """The header echoed in a response, with the processing digit set."""
        digits = self.digits
        i = PROCESSING_DIGIT_INDEX
        return Header(bytes.fromhex(digits[:i] + digit + digits[i + 1 :]))


@dataclass(frozen=True, slots=True)
class Frame:
    tpdu: Tpdu
    header: Header
    message: bytes  # from the MTI to the end

    def encode(self) -> bytes:
        return encode_frame(self.tpdu, self.header, self.message)


def encode_frame(tpdu: Tpdu, header: Header, message: bytes) -> bytes:
    body_length = PREFIX_BYTES + len(message)
    return body_length.to_bytes(LENGTH_BYTES, "big") + tpdu.raw + header.raw + message


def parse_frame_body(body: bytes) -> Frame:
    """Split a frame body (the bytes after the length) into its parts.

    Raises ``FramingError`` for a TPDU ID other than 60 or an MTI that is not
    four BCD digits: both close the connection unanswered (WIRE.md 8).
    """
    if len(body) < FRAME_MIN_LENGTH:
        raise FramingError(f"frame body of {len(body)} bytes, at least {FRAME_MIN_LENGTH} needed")
    if body[0] != TPDU_ID:
        raise FramingError(f"TPDU ID {body[0]:02X}, expected 60")
    message = body[PREFIX_BYTES:]
    if not message[:2].hex().isdigit():
        raise FramingError(f"MTI {message[:2].hex().upper()} is not four BCD digits")
    return Frame(Tpdu(body[:TPDU_BYTES]), Header(body[TPDU_BYTES:PREFIX_BYTES]), message)


class FrameDecoder:
    """Incremental decoder: ``feed`` bytes, get back every whole frame body.

    The length is checked as soon as its two bytes are in: a value outside
    ``FRAME_MIN_LENGTH..frame_bytes_max`` raises ``FramingError`` before any
    more of the frame is read.
    """

    __slots__ = ("_buffer", "_frame_bytes_max", "_expected")

    def __init__(self, frame_bytes_max: int = 2048) -> None:
        if frame_bytes_max < FRAME_MIN_LENGTH:
            raise ValueError(f"frame_bytes_max must be at least {FRAME_MIN_LENGTH}")
        self._buffer = bytearray()
        self._frame_bytes_max = frame_bytes_max
        self._expected: int | None = None

    @property
    def buffered(self) -> int:
        """Bytes received and not yet returned as a frame."""
        return len(self._buffer)

    @property
    def mid_frame(self) -> bool:
        """Whether part of a frame has been received."""
        return bool(self._buffer)

    def feed(self, data: bytes) -> list[bytes]:
        """Add received bytes; return the bodies of every frame now complete."""
        self._buffer += data
        frames: list[bytes] = []
        while True:
            if self._expected is None:
                if len(self._buffer) < LENGTH_BYTES:
                    return frames
                length = int.from_bytes(self._buffer[:LENGTH_BYTES], "big")
                if not FRAME_MIN_LENGTH <= length <= self._frame_bytes_max:
                    raise FramingError(
                        f"frame length {length} outside {FRAME_MIN_LENGTH}..{self._frame_bytes_max}"
                    )
                del self._buffer[:LENGTH_BYTES]
                self._expected = length
            if len(self._buffer) < self._expected:
                return frames
            frames.append(bytes(self._buffer[: self._expected]))
            del self._buffer[: self._expected]
            self._expected = None
