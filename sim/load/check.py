"""``posgw-sim load --check``: after the run, the money the simulator saw approved
compared with the ledger. Each card's available balance (its balance less its open
holds) must be its opening one less the purchases, completions and holds its
terminals saw approved, plus the refunds and the holds cancelled or completed (the
completion spending instead), and each agent's float its opening float less
the cash bill payments they saw approved; every difference is listed, and so is any
request left in doubt (a reversal never answered 00), since then the ledger cannot be
checked to the fen.

The balances come from the operator CLI, run as a subprocess (``posgw card show PAN
--json``, ``posgw agent show CODE --json``): the simulator imports only the protocol,
never the gateway, and it cannot find a card in the database by its PAN (cards are
found by a hash keyed under the LMK). The check assumes nothing else moves money on
those cards and floats during the run.
"""

from __future__ import annotations

import asyncio
import json
import os
import shlex
import shutil
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from sim.load.money import CARD, FLOAT, MoneySeen, Payer, payer_name
from sim.load.options import UsageError
from sim.load.terminals import LoadTerminal

READ_CONCURRENCY = 4  # operator CLI processes at once
READ_TIMEOUT_S = 60.0  # one `posgw ... show`


class CheckError(Exception):
    """A balance could not be read (the operator CLI failed or printed no balance)."""


class BalanceReader(Protocol):
    async def read(self, payers: Iterable[Payer]) -> dict[Payer, int]:
        """The balance in fen of each payer: a card's ``balance_fen``, an agent's ``float_fen``."""
        ...


def default_command() -> list[str]:
    """``posgw`` beside this Python (the same virtual environment), else on the PATH."""
    beside = Path(sys.executable).parent / "posgw"
    if beside.is_file() and os.access(beside, os.X_OK):
        return [str(beside)]
    found = shutil.which("posgw")
    if found is None:
        raise UsageError("--check: no posgw command beside this Python or on the PATH (give --check-command)")
    return [found]


def parse_command(text: str) -> list[str]:
    """``--check-command``: a command line (``posgw``, or e.g. ``docker compose exec -T gateway posgw``)."""
    words = shlex.split(text)
    if not words:
        raise ValueError("--check-command is empty")
    return words


class OperatorCli:
    """Balances read through the operator CLI, a few processes at once."""

    def __init__(self, command: Sequence[str], *, env: Mapping[str, str] | None = None,
                 concurrency: int = READ_CONCURRENCY) -> None:
        self.command = list(command)
        self.env = None if env is None else dict(env)
        self.concurrency = concurrency

    async def read(self, payers: Iterable[Payer]) -> dict[Payer, int]:
        gate = asyncio.Semaphore(self.concurrency)

        async def one(payer: Payer) -> int:
            async with gate:
                return await self._balance(payer)

        ordered = list(dict.fromkeys(payers))
        return dict(zip(ordered, await asyncio.gather(*(one(p) for p in ordered)), strict=True))

    async def _balance(self, payer: Payer) -> int:
        kind, name = payer
        if name is None:
            raise CheckError(f"{payer_name(payer)}: the world does not say which agent it is")
        group, key = ("card", "available_fen") if kind == CARD else ("agent", "float_fen")
        shown = payer_name(payer)  # never the full PAN
        try:
            process = await asyncio.create_subprocess_exec(
                *self.command, group, "show", name, "--json", env=self.env,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        except OSError as exc:
            raise CheckError(f"{shown}: cannot run {self.command[0]}: {exc.strerror or exc}") from None
        try:
            async with asyncio.timeout(READ_TIMEOUT_S):
                out, err = await process.communicate()
        except TimeoutError:
            process.kill()
            await process.wait()
            raise CheckError(f"{shown}: `{group} show` took more than {READ_TIMEOUT_S:.0f} s") from None
        if process.returncode != 0:
            lines = err.decode("utf-8", "replace").strip().splitlines()
            reason = lines[-1] if lines else "no message"
            if kind == CARD and name:
                reason = reason.replace(name, payer_name(payer).removeprefix("card "))
            raise CheckError(f"{shown}: `{group} show` exited {process.returncode}: {reason}")
        try:
            shown_json = json.loads(out)
            if key == "available_fen" and key not in shown_json:  # a gateway without holds
                key = "balance_fen"
            value = shown_json[key]
        except (ValueError, KeyError, TypeError, AttributeError):
            raise CheckError(f"{shown}: `{group} show --json` printed no {key}") from None
        if not isinstance(value, int):
            raise CheckError(f"{shown}: {key} is not a whole number of fen")
        return value


def payers_of(terminals: Sequence[LoadTerminal], mix: Mapping[str, int]) -> list[Payer]:
    """Whose money the run can move: the cards of the terminals (purchases), and the
    floats of their agents (cash bill payments), the ``MONEY_TYPES`` of the load; ``UsageError`` if the world does not
    say a terminal's agent while the mix has bill payments."""
    payers: list[Payer] = []
    if any(kind in mix for kind in ("purchase", "refund", "preauth")):
        payers += [(CARD, card.pan) for terminal in terminals for card in terminal.cards]
    if "bill-pay" in mix:
        for terminal in terminals:
            if terminal.spec.agent is None:
                raise UsageError(f"--check: the world does not say the agent of terminal {terminal.spec.tid}'s "
                                 f"merchant (its merchants list, as posgw demo --json prints it)")
            payers.append((FLOAT, terminal.spec.agent))
    return list(dict.fromkeys(payers))


@dataclass(frozen=True, slots=True)
class Difference:
    """A payer whose ledger balance is not its opening balance less what the simulator saw approved."""

    payer: Payer
    opening_fen: int
    approved_fen: int
    ledger_fen: int

    @property
    def expected_fen(self) -> int:
        return self.opening_fen - self.approved_fen

    def to_dict(self) -> dict[str, Any]:
        return {"payer": payer_name(self.payer), "opening_fen": self.opening_fen, "approved_fen": self.approved_fen,
                "expected_fen": self.expected_fen, "ledger_fen": self.ledger_fen,
                "difference_fen": self.ledger_fen - self.expected_fen}


def compare(opening: Mapping[Payer, int], seen: MoneySeen, closing: Mapping[Payer, int]) -> list[Difference]:
    """Each payer whose closing balance is not its opening balance less what was seen approved."""
    differences = []
    for payer, opening_fen in opening.items():
        approved = seen.approved_fen.get(payer, 0)
        if closing[payer] != opening_fen - approved:
            differences.append(Difference(payer, opening_fen, approved, closing[payer]))
    return differences


def check_report(opening: Mapping[Payer, int], seen: MoneySeen, closing: Mapping[Payer, int]) -> dict[str, Any]:
    """The ``check`` of the load report: ``ok`` exactly when no payer differs and nothing is in doubt."""
    differences = compare(opening, seen, closing)
    approved = {kind: sum(fen for (k, _), fen in seen.approved_fen.items() if k == kind) for kind in (CARD, FLOAT)}
    return {
        "ok": not differences and not seen.in_doubt,
        "cards": sum(1 for kind, _ in opening if kind == CARD),
        "agents": sum(1 for kind, _ in opening if kind == FLOAT),
        "approved_fen": {"cards": approved[CARD], "floats": approved[FLOAT]},
        "differences": [d.to_dict() for d in differences],
        "in_doubt": [d.to_dict() for d in seen.in_doubt],
    }


def _yuan(fen: int) -> str:
    return f"{'-' if fen < 0 else ''}{abs(fen) // 100}.{abs(fen) % 100:02d}"


def check_text(check: Mapping[str, Any]) -> list[str]:
    """The check as lines of text: one line if exact, else one per difference and per doubt."""
    if check.get("error"):
        return [f"check: not done: {check['error']}"]
    counted = f"{check['cards']} cards and {check['agents']} agent floats"
    if check["ok"]:
        return [f"check: {counted} exact (approved: cards {_yuan(check['approved_fen']['cards'])}, "
                f"floats {_yuan(check['approved_fen']['floats'])} yuan)"]
    lines = [f"check: FAILED over {counted}: {len(check['differences'])} differences, "
             f"{len(check['in_doubt'])} requests in doubt"]
    for d in check["differences"]:
        lines.append(f"  {d['payer']}: opening {_yuan(d['opening_fen'])}, approved {_yuan(d['approved_fen'])}, "
                     f"expected {_yuan(d['expected_fen'])}, ledger {_yuan(d['ledger_fen'])} "
                     f"(difference {'+' if d['difference_fen'] > 0 else '-'}{_yuan(abs(d['difference_fen']))})")
    for d in check["in_doubt"]:
        answer = d["reversal_answer"]
        lines.append(f"  in doubt: {d['payer']}, {_yuan(d['amount_fen'])} yuan after {d['cause']}: its reversal "
                     + ("was never answered" if answer is None else f"was answered {answer}"))
    return lines
