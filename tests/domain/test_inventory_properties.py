"""Property test of the terminal inventory's rules (hypothesis) over random agent
trees, merchants, terminals and sequences of allocations, recalls and bindings:
each command is accepted exactly when a plain Python model of CLI.md's rule
"Terminals" says so, moves all its terminals or none, writes one audit record
per terminal moved, and a bound terminal's owner is always on its merchant's
path. Each example runs in a transaction of its own, rolled back."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import asyncpg
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.domain import registry
from gateway.domain.inventory import InventoryError
from gateway.keys import SoftHsm
from gateway.services import terminals
from tests.conftest import TEST_LMK, TEST_TMK

NOW = datetime(2026, 12, 8, 2, 0, tzinfo=UTC)
NO_OPTIONS = {"permit": None, "mac_algorithm": None, "location": None, "radius_km": None}


@st.composite
def worlds(draw):
    # mostly chains (the parent the agent added before), some trees, a second root now and then
    parents = [None] + [draw(st.sampled_from([n - 1, n - 1, None]) | st.integers(0, n - 1))
                        for n in range(1, draw(st.integers(2, 7)))]
    agents = st.integers(0, len(parents) - 1)
    merchants = draw(st.lists(agents, min_size=1, max_size=3))  # each merchant's agent
    owners = draw(st.lists(st.just(0) | agents, min_size=1, max_size=4))  # each terminal's owner, often the top
    activated = draw(st.sets(st.integers(0, len(owners) - 1)))  # activated once bound (as the run would)
    tids = st.lists(st.integers(0, len(owners) - 1), min_size=1, max_size=2, unique=True)
    ops = draw(st.lists(st.one_of(
        st.tuples(st.just("allocate"), tids, st.just(len(parents) - 1) | agents),  # often the deepest of a chain
        st.tuples(st.just("recall"), tids, st.just(0) | agents),  # often the top
        st.tuples(st.just("bind"), st.integers(0, len(owners) - 1), st.integers(0, len(merchants) - 1))),
        max_size=10))
    return parents, merchants, owners, activated, ops


def ancestors(parents: list[int | None], agent: int) -> list[int]:
    """The agent and every agent above it."""
    chain = [agent]
    while parents[chain[-1]] is not None:
        chain.append(parents[chain[-1]])
    return chain


class Model:
    """CLI.md's rule "Terminals", over indices: owner and merchant (None: in stock) of each terminal."""

    def __init__(self, parents, merchants, owners) -> None:
        self.parents, self.merchants = parents, merchants
        self.owner = list(owners)
        self.mid: list[int | None] = [None] * len(owners)
        self.activated: set[int] = set()

    def below(self, agent: int, other: int) -> bool:
        """``agent`` is strictly below ``other``."""
        return agent != other and other in ancestors(self.parents, agent)

    def allocate(self, tids: list[int], to: int) -> bool:
        ok = all(self.below(to, self.owner[t]) and (self.mid[t] is None or
                                                    to in ancestors(self.parents, self.merchants[self.mid[t]]))
                 for t in tids)
        if ok:
            for t in tids:
                self.owner[t] = to
        return ok

    def recall(self, tids: list[int], to: int) -> bool:
        ok = all(t not in self.activated and self.mid[t] is None and self.below(self.owner[t], to) for t in tids)
        if ok:
            for t in tids:
                self.owner[t] = to
        return ok

    def bind(self, tid: int, merchant: int) -> bool:
        ok = self.mid[tid] is None and self.owner[tid] in ancestors(self.parents, self.merchants[merchant])
        if ok:
            self.mid[tid] = merchant
        return ok


def agent(i: int) -> str:
    return f"AG{i:02d}"


def merchant(i: int) -> str:
    return f"MERCHANT{i:07d}"


def terminal(i: int) -> str:
    return f"TERM{i:04d}"


async def build(db: asyncpg.Connection, parents, merchants, owners) -> None:
    hsm = SoftHsm(bytes.fromhex(TEST_LMK))
    for i, parent in enumerate(parents):
        await registry.add_agent(db, agent(i), agent(i), None if parent is None else agent(parent))
    for i, of in enumerate(merchants):
        await registry.add_merchant(db, merchant(i), merchant(i), agent(of), 60)
    for i, owner in enumerate(owners):
        await registry.add_terminal(db, hsm, terminal(i), registry.Placement(None, agent(owner)), TEST_TMK,
                                    **NO_OPTIONS)


async def state(db: asyncpg.Connection) -> list[tuple[str, str, str | None]]:
    return [tuple(r) for r in await db.fetch("SELECT tid, owner_agent, mid FROM terminals ORDER BY tid")]


async def check_example(db: asyncpg.Connection, parents, merchants, owners, activated, ops) -> None:
    await build(db, parents, merchants, owners)
    model = Model(parents, merchants, owners)
    for kind, subject, target in ops:
        records = await db.fetchval("SELECT count(*) FROM audit_events")
        try:
            if kind == "bind":
                await terminals.bind_terminal(db, "test", terminal(subject), merchant(target), NOW)
                moved = 1
            else:
                move = terminals.allocate_terminals if kind == "allocate" else terminals.recall_terminals
                await move(db, "test", [terminal(t) for t in subject], agent(target))
                moved = len(subject)
            accepted = True
        except InventoryError:
            accepted, moved = False, 0
        expected = getattr(model, kind)(subject, target)
        assert accepted == expected, (kind, subject, target)
        assert await db.fetchval("SELECT count(*) FROM audit_events") == records + moved
        assert await state(db) == [(terminal(t), agent(model.owner[t]),
                                    None if model.mid[t] is None else merchant(model.mid[t]))
                                   for t in range(len(owners))]
        if kind == "bind" and accepted and subject in activated:  # activated as soon as bound
            await db.execute("UPDATE terminals SET activated_at = $2 WHERE tid = $1", terminal(subject), NOW)
            model.activated.add(subject)
    for t in range(len(owners)):  # a bound terminal's owner is always on its merchant's path
        if model.mid[t] is not None:
            assert model.owner[t] in ancestors(parents, merchants[model.mid[t]])


async def example(db_url: str, world) -> None:
    db = await asyncpg.connect(db_url)
    tx = db.transaction()
    await tx.start()
    try:
        await check_example(db, *world)
    finally:
        await tx.rollback()
        await db.close()


@settings(max_examples=60, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(world=worlds())
def test_random_moves_are_accepted_exactly_as_the_rule_says_and_all_or_none(db_url, world):
    asyncio.run(example(db_url, world))
