"""The seed corpus of each fuzz target: the real vectors, and one well-formed
request of every kind (MAC'd under the stub's keys).

``python -m tests.fuzz.seeds`` (re)writes them to ``tests/fuzz/corpus/<target>/``;
``test_regressions`` checks that every seed is there and replays the corpus.
"""

from __future__ import annotations

from pathlib import Path

from protocol import emv, ic_lists
from protocol.framing import FrameDecoder, encode_frame, parse_frame_body
from tests.fuzz import requests, stub
from tests.fuzz.fuzz_targets import CONTROL_FIX_MAC, CORPUS_DIR
from tests.protocol.vectors import all_vectors


def _frame_body(data: bytes, framed: bool) -> bytes:
    """A vector as a frame body (TPDU, header, message): as sent, or wrapped in ours."""
    if framed:
        (body,) = FrameDecoder(frame_bytes_max=65535).feed(data)
        return body
    return requests.frame_body(data)


def seed_inputs() -> dict[str, dict[str, bytes]]:
    """Target name -> seed name -> input."""
    world = stub.World()
    bodies = {f"vector-{v.name}": _frame_body(v.data, v.framed) for v in all_vectors()}
    for number, kind in enumerate(requests.KINDS, start=2):
        message = requests.request(kind, stan=f"{number:06d}")
        raw = message.encode() if message.mti in ("0800", "0820") else requests.with_mac(message, world)
        bodies[f"request-{kind}"] = requests.frame_body(raw)

    long_meter = requests.request("bill_inquiry", stan="000099",
                                  bill={"BL": stub.BILLER_PREPAID, "AC": stub.METER + "9" * 500})
    bodies["request-bill_inquiry-long-meter"] = requests.frame_body(requests.with_mac(long_meter, world))

    def framed(body: bytes) -> bytes:
        frame = parse_frame_body(body)
        return encode_frame(frame.tpdu, frame.header, frame.message)

    frame_seeds = {name: b"\x00" + framed(body) for name, body in bodies.items() if name.startswith("vector-")}
    vector_frames = list(frame_seeds.values())
    frame_seeds["two-frames-chunked"] = b"\x1b" + vector_frames[0][1:] + vector_frames[2][1:]
    frame_seeds["length-too-small"] = b"\x00" + (20).to_bytes(2, "big") + bytes(20)
    frame_seeds["length-too-large"] = b"\x00" + (2049).to_bytes(2, "big") + bytes(40)
    frame_seeds["incomplete"] = b"\x03" + vector_frames[1][1:-5]
    return {
        "frame": frame_seeds,
        "message": {name: body[11:] for name, body in bodies.items()},
        "processor": {name: bytes([CONTROL_FIX_MAC]) + body for name, body in bodies.items()},
        "field62": field62_seeds(),
    }


def field62_seeds() -> dict[str, bytes]:
    """Field 62 of each chip-terminal message and answer, byte 0 picking its parser (tests/fuzz/field62.py)."""
    capk = ic_lists.Capk(bytes.fromhex("A000000333"), 8, "20301231", bytes.fromhex("C1" * 16), b"\x03",
                         emv.capk_checksum(bytes.fromhex("A000000333"), 8, bytes.fromhex("C1" * 16), b"\x03"))
    aid = bytes.fromhex("A000000333010101")
    record = ic_lists.capk_record(capk)
    answer = ic_lists.query_answer([ic_lists.capk_entry(capk)] * 30, 0)
    return {
        "tlv-capk-record": b"\x00" + record,
        "tlv-long-forms": b"\x00" + bytes.fromhex("9F068105A000000333DF0282000103"),
        "query-start": b"\x01" + ic_lists.encode_query(0), "query-22": b"\x01" + ic_lists.encode_query(22),
        "query-answer-more": b"\x02" + answer, "query-answer-none": b"\x02" + b"0",
        "capk-download": b"\x03" + ic_lists.encode_capk_download(capk.rid, capk.index),
        "aid-download": b"\x04" + ic_lists.encode_aid_download(aid),
        "download-answer-capk": b"\x05" + ic_lists.download_answer(record),
        "download-answer-aid": b"\x05" + ic_lists.download_answer(
            ic_lists.aid_record(aid, bytes.fromhex("9F08020020"))),
        "status": b"\x06" + b"011021030040051", "status-raw": b"\x06" + b"0310x\xff",
    }


def write(corpus_dir: Path = CORPUS_DIR) -> int:
    count = 0
    for target, seeds in seed_inputs().items():
        directory = corpus_dir / target
        directory.mkdir(parents=True, exist_ok=True)
        for name, data in seeds.items():
            (directory / name).write_bytes(data)
            count += 1
    return count


if __name__ == "__main__":
    print(f"wrote {write()} seed files under {CORPUS_DIR}")
