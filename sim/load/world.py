"""The world a load runs in: terminals, cards and a prepaid biller's meters, as
``posgw demo --json`` prints them."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sim.load.options import UsageError
from sim.terminal import MAC_ALGORITHMS


@dataclass(frozen=True)
class TerminalSpec:
    tid: str
    mid: str
    tmk: bytes
    mac_algorithm: str = "cup-ecb"
    agent: str | None = None  # the agent of its merchant, whose float cash bill payments draw on


@dataclass(frozen=True)
class CardSpec:
    pan: str
    pin: str
    expiry: str | None = None


@dataclass(frozen=True)
class World:
    """Terminals, cards and a prepaid biller's meters, as ``posgw demo --json`` prints them."""

    terminals: tuple[TerminalSpec, ...]
    cards: tuple[CardSpec, ...]
    biller: str | None = None
    meters: tuple[str, ...] = ()

    @classmethod
    def from_json(cls, data: Any, *, biller: str | None = None) -> World:
        """Read the demo JSON: ``terminals`` (tid, mid, tmk hex, optional mac_algorithm),
        ``cards`` (pan, pin, optional expiry), ``billers`` (a prepaid one's ``meters``) and
        ``merchants`` (mid and ``agent``: whose float a terminal's cash bill payments draw on)."""
        if not isinstance(data, dict):
            raise UsageError("world: expected a JSON object with terminals, cards and billers")
        try:
            agents = {str(m["mid"]): str(m["agent"]) for m in data.get("merchants", ()) or ()
                      if isinstance(m, dict) and m.get("agent")}
            terminals = tuple(
                TerminalSpec(str(t["tid"]), str(t["mid"]), _tmk(str(t["tmk"])),
                             str(t.get("mac_algorithm") or "cup-ecb"), agents.get(str(t["mid"])))
                for t in data.get("terminals", ())
            )
            cards = tuple(CardSpec(str(c["pan"]), str(c["pin"]), c.get("expiry"))
                          for c in data.get("cards", ()))
        except (KeyError, TypeError) as exc:
            raise UsageError(f"world: a terminal or card lacks {exc}") from None
        for terminal in terminals:
            if len(terminal.tid) != 8 or len(terminal.mid) != 15:
                raise UsageError(f"world: terminal {terminal.tid!r}: TID must be 8 characters and MID 15")
            if terminal.mac_algorithm not in MAC_ALGORITHMS:
                raise UsageError(
                    f"world: terminal {terminal.tid}: unknown MAC algorithm {terminal.mac_algorithm!r}")
        for card in cards:
            if not (13 <= len(card.pan) <= 19 and card.pan.isdigit() and 4 <= len(card.pin) <= 12
                    and card.pin.isdigit()):
                raise UsageError("world: a card's PAN must be 13 to 19 digits and its PIN 4 to 12")
        chosen_biller, meters = None, ()
        for entry in data.get("billers", ()) or ():
            if not isinstance(entry, dict) or not entry.get("prepaid") or not entry.get("meters"):
                continue
            if biller is None or entry.get("code") == biller:
                chosen_biller, meters = str(entry["code"]), tuple(str(m) for m in entry["meters"])
                break
        if biller is not None and chosen_biller is None:
            raise UsageError(f"world: no prepaid biller {biller} with meters")
        return cls(terminals, cards, chosen_biller, meters)

    def cards_for(self, index: int, terminals: int) -> tuple[CardSpec, ...]:
        """The cards terminal ``index`` of ``terminals`` uses: round-robin, so that terminals
        running at once use different cards while there are enough of them."""
        if not self.cards:
            return ()
        if len(self.cards) <= terminals:
            return (self.cards[index % len(self.cards)],)
        return self.cards[index::terminals]

    def meters_for(self, index: int, terminals: int) -> tuple[str, ...]:
        if not self.meters:
            return ()
        if len(self.meters) <= terminals:
            return (self.meters[index % len(self.meters)],)
        return self.meters[index::terminals]


def _tmk(value: str) -> bytes:
    try:
        key = bytes.fromhex(value)
    except ValueError:
        key = b""
    if len(key) != 16:
        raise UsageError("world: a terminal's TMK must be 32 hex digits")
    return key


def load_world(source: str, *, biller: str | None = None) -> World:
    """The world from a file, or from stdin for ``-``."""
    try:
        text = sys.stdin.read() if source == "-" else Path(source).read_text(encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"world: {source}: {exc.strerror or exc}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(f"world: {source}: not JSON ({exc})") from None
    return World.from_json(data, biller=biller)
