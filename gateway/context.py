"""What a pipeline step sees: the transaction in progress and the services."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import asyncpg

from gateway.keys import SoftHsm
from gateway.registry import TerminalRecord
from gateway.rrn import RrnAllocator
from gateway.settings import Settings
from protocol.framing import Frame
from protocol.messages import Message


@dataclass(slots=True)
class Services:
    settings: Settings
    pool: asyncpg.Pool
    hsm: SoftHsm
    rrns: RrnAllocator


@dataclass(slots=True)
class Transaction:
    frame: Frame
    request: Message
    now: datetime  # gateway local time (settings.timezone)
    kind: str = "unknown"  # a name for logs and metrics: signon, echo, purchase, ...
    terminal: TerminalRecord | None = None
    mac_verified: bool = False
    reply: dict[str, Any] = field(default_factory=dict)  # extra response fields, by name

    @property
    def terminal_record(self) -> TerminalRecord:
        assert self.terminal is not None, "identify_terminal must run first"
        return self.terminal
