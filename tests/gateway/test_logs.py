"""Log lines are written whole: each JSON line, newline included, in one write."""

from __future__ import annotations

import io
import json

import structlog

from gateway.logs import configure


class RecordedWrites(io.RawIOBase):
    """A raw stream that keeps each write call's bytes."""

    def __init__(self) -> None:
        self.calls: list[bytes] = []

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:  # type: ignore[override]
        self.calls.append(bytes(data))
        return len(data)


def test_each_json_line_goes_out_whole_in_one_write():
    # As stderr is under PYTHONUNBUFFERED (the container's setting): text written
    # through to the raw file. The workers of `serve --workers N` share it, and a
    # line written as text, then newline, could have another's land in between.
    raw = RecordedWrites()
    stream = io.TextIOWrapper(raw, encoding="utf-8", write_through=True)
    try:
        configure("info", "json", stream)
        log = structlog.get_logger("posgw.test_logs")
        log.info("txn", tid="DEMO0001", rc="00")
        log.warning("protocol_violation", reason="x" * 10_000)  # longer than any buffer
    finally:
        configure("warning", "json")  # as tests/conftest.py set it
    assert len(raw.calls) == 2
    for call in raw.calls:
        assert call.endswith(b"\n") and call.count(b"\n") == 1
    first, second = (json.loads(call) for call in raw.calls)
    assert (first["event"], first["tid"], first["level"]) == ("txn", "DEMO0001", "info")
    assert (second["event"], len(second["reason"])) == ("protocol_violation", 10_000)
