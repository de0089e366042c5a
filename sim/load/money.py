"""The money a load run saw move, as its terminals know it: per card and per agent's
float, the amounts of requests answered 00 with a verified MAC (and not reversed);
and the requests whose fate the simulator cannot know (their reversal was never
answered 00), which make a money-exact check impossible."""

from __future__ import annotations

from dataclasses import dataclass, field

from protocol.messages import Message
from sim.terminal import mask_pan

CARD, FLOAT = "card", "float"
# Whose money a request moves: (CARD, PAN), or (FLOAT, agent code) for a cash bill payment
# (None: the world does not say which agent the terminal's merchant belongs to).
Payer = tuple[str, str | None]


def payer_name(payer: Payer) -> str:
    """What the reports print for a payer: a card's masked PAN, or an agent's code."""
    kind, name = payer
    if kind == CARD:
        return f"card {mask_pan(name or '')}"
    return f"agent {name if name is not None else '(unknown)'} float"


@dataclass(frozen=True, slots=True)
class Doubt:
    """A money request whose reversal was not answered 00: whether it moved money is unknown."""

    payer: Payer
    amount_fen: int
    cause: str  # why it was reversed (drop, timeouts, ...)
    answer: str | None  # the reversal's answer (not 00), None if it never got one

    def to_dict(self) -> dict[str, object]:
        return {"payer": payer_name(self.payer), "amount_fen": self.amount_fen, "cause": self.cause,
                "reversal_answer": self.answer}


@dataclass
class MoneySeen:
    """What the terminals saw approved, per payer, in fen; and what is in doubt."""

    approved_fen: dict[Payer, int] = field(default_factory=dict)
    in_doubt: list[Doubt] = field(default_factory=list)

    def approved(self, payer: Payer, amount_fen: int) -> None:
        """A money request answered 00, its MAC verified."""
        self.approved_fen[payer] = self.approved_fen.get(payer, 0) + amount_fen

    def doubt(self, payer: Payer, amount_fen: int, cause: str, answer: str | None) -> None:
        self.in_doubt.append(Doubt(payer, amount_fen, cause, answer))


@dataclass(slots=True)
class OwedReversal:
    """A reversal a terminal owes (the 0400 of ``original``): sent until answered (not 96)."""

    original: Message
    payer: Payer  # whose money the original would have moved
    cause: str
    reason: str  # 39 of the 0400: 98 no answer, 06 other
