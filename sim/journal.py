"""The terminal's batch journal (``posgw-sim --journal FILE``): what a real terminal keeps
between transactions, kept in a file between commands: its open batch, its last STAN,
and the batch's approved transactions, from which ``settle`` counts its totals (gross or
the version 1 way, WIRE.md 9.6) and, when the answer says out of balance, uploads its
records and the copies of its advices (9.4). Advices not answered yet (a refund, a
completion advice) stay in it, sent again before the next command, as a terminal does.

The file holds the cards' numbers, as a terminal's memory does: it is written readable by
its owner only, and nothing here prints a full PAN.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from protocol.messages import FIELD_NUMBERS, Message, decode_message
from sim.terminal import BATCH_MAX, STAN_MAX, UPLOAD_RECORDS_MAX

DEBIT_KINDS = frozenset({"purchase", "completion", "completion_advice", "bill"})
CREDIT_KINDS = frozenset({"void", "refund", "completion_void"})
ADVICE_KINDS = frozenset({"refund", "completion_advice"})  # sent as 0220, uploaded as copies
COUNTS = ("gross", "v1")
_FILE_MODE = 0o600
_PIN_FIELDS = (FIELD_NUMBERS["pin_block"], FIELD_NUMBERS["security_control"])
_MAC_FIELD = FIELD_NUMBERS["mac"]


def kept_request(request: Message, *, advice: bool) -> str:
    """What the journal keeps of a request (hex, MTI first): an advice whole but its MAC (a resend
    must have the same content), any other without its PIN block and MAC (a reversal repeats neither)."""
    dropped = (_MAC_FIELD,) if advice else (_MAC_FIELD, *_PIN_FIELDS)
    return Message(request.mti, {n: v for n, v in request.fields.items() if n not in dropped}).encode().hex()


class JournalError(Exception):
    """The journal file cannot be read as one."""


@dataclass
class Entry:
    """One transaction of the batch the terminal holds as done."""

    kind: str  # purchase, void, refund, preauth, cancel, completion, completion_advice, completion_void, bill
    batch: int
    stan: str
    pan: str  # "" for a cash bill payment
    amount_fen: int
    txn_type: str  # its 60.1, to match a reversal
    rrn: str | None = None
    date: str | None = None
    auth_code: str | None = None
    original_stan: str | None = None  # a void's purchase, a completion void's completion
    answered: bool = True  # False: an advice still being sent
    reversed: bool = False
    request_hex: str | None = None  # an advice: its 0220 as sent (MTI first), for resending and its copy


@dataclass(frozen=True, slots=True)
class Totals:
    """A batch's totals as the terminal counts them (field 48 of its 0500)."""

    debit_fen: int = 0
    debit_count: int = 0
    credit_fen: int = 0
    credit_count: int = 0


@dataclass
class Journal:
    """The journal of one terminal; ``path`` None keeps it in memory only."""

    path: Path | None
    batch: int = 1
    last_stan: int = 0
    entries: list[Entry] = field(default_factory=list)

    @classmethod
    def open(cls, path: str | None) -> Journal:
        """The journal in ``path`` (a new one if the file does not exist), or one in memory."""
        if path is None:
            return cls(None)
        file = Path(path)
        if not file.exists():
            return cls(file)
        try:
            data = json.loads(file.read_text(encoding="utf-8"))
            return cls(file, int(data["batch"]), int(data["last_stan"]), [Entry(**e) for e in data["entries"]])
        except OSError as exc:
            raise JournalError(f"{path}: {exc.strerror or exc}") from None
        except (ValueError, KeyError, TypeError):
            raise JournalError(f"{path}: not a terminal journal") from None

    def save(self) -> None:
        """Write the file (owner-only), replacing it whole."""
        if self.path is None:
            return
        data: dict[str, Any] = {"batch": self.batch, "last_stan": self.last_stan,
                                "entries": [asdict(e) for e in self.entries]}
        temporary = self.path.with_name(self.path.name + ".tmp")
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, _FILE_MODE)
        with os.fdopen(descriptor, "w", encoding="utf-8") as out:
            json.dump(data, out, indent=1)
        os.replace(temporary, self.path)

    def add(self, entry: Entry) -> None:
        self.entries.append(entry)

    def pending_advices(self) -> list[Entry]:
        return [e for e in self.entries if not e.answered and e.request_hex is not None]

    def request_of(self, batch: int, stan: str, txn_type: str) -> Message | None:
        """The request of the entry with that batch, STAN and 60.1, as kept, if the journal has it."""
        for entry in self.entries:
            if (entry.batch, entry.stan, entry.txn_type) == (batch, stan, txn_type) and entry.request_hex:
                return decode_message(bytes.fromhex(entry.request_hex))
        return None

    def mark_reversed(self, batch: int, stan: str, txn_type: str) -> None:
        """The entry a reversal answered 00 undid (found as the gateway finds it: batch, STAN, 60.1)."""
        for entry in self.entries:
            if (entry.batch, entry.stan, entry.txn_type) == (batch, stan, txn_type):
                entry.reversed = True

    def counted(self, batch: int, count: str) -> list[Entry]:
        """The entries of ``batch`` its totals count: ``gross`` every debit and credit not reversed
        (a voided purchase among the debits, its void a credit); ``v1`` the same less each purchase
        voided and its void."""
        live = [e for e in self.entries if e.batch == batch and not e.reversed
                and e.kind in DEBIT_KINDS | CREDIT_KINDS]
        if count == "gross":
            return live
        voided = {e.original_stan for e in live if e.kind == "void"}
        return [e for e in live if not (e.kind == "void" or (e.kind == "purchase" and e.stan in voided))]

    def totals(self, batch: int, count: str) -> Totals:
        counted = self.counted(batch, count)
        debits = [e.amount_fen for e in counted if e.kind in DEBIT_KINDS]
        credits = [e.amount_fen for e in counted if e.kind in CREDIT_KINDS]
        return Totals(sum(debits), len(debits), sum(credits), len(credits))

    def upload(self, batch: int) -> tuple[list[list[tuple[str, str, int]]], list[Entry]]:
        """What the terminal uploads for ``batch``: its records (STAN, PAN, amount), in messages of
        up to 8, and its advices (sent as copies)."""
        held = self.counted(batch, "gross")
        records = [(e.stan, e.pan, e.amount_fen) for e in held if e.kind not in ADVICE_KINDS]
        messages = [records[at:at + UPLOAD_RECORDS_MAX] for at in range(0, len(records), UPLOAD_RECORDS_MAX)]
        return messages, [e for e in held if e.kind in ADVICE_KINDS and e.request_hex is not None]

    def settled(self, batch: int, next_batch: int) -> None:
        """After the 0510 (and the upload): the batch leaves the journal, the next one is open."""
        self.entries = [e for e in self.entries if e.batch != batch]
        self.batch = next_batch % (BATCH_MAX + 1)

    def next_stan(self) -> str:
        self.last_stan = self.last_stan % STAN_MAX + 1
        return f"{self.last_stan:06d}"
