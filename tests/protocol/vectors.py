"""The shared test vectors (../shared/vectors), parsed."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

VECTORS_DIR = Path(__file__).resolve().parents[3] / "shared" / "vectors"


@dataclass(frozen=True)
class Vector:
    name: str
    framed: bool
    data: bytes


def _hex_file(name: str) -> bytes:
    return bytes.fromhex("".join((VECTORS_DIR / name).read_text().split()))


def all_vectors() -> list[Vector]:
    vectors = [
        Vector("real_0200_with_mac", True, _hex_file("real_0200_with_mac.hex")),
        Vector("real_0200_ic_purchase", True, _hex_file("real_0200_ic_purchase.hex")),
    ]
    for line in (VECTORS_DIR / "real_signon_and_others.txt").read_text().splitlines():
        if line.strip():
            name, framed, hex_data = line.split("|")
            vectors.append(Vector(name, framed == "1", bytes.fromhex(hex_data)))
    return vectors
