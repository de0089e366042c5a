"""Fixtures of the card tests: the demo card (CARD_PAN, 100 yuan) and a terminal
signed on with it there."""

from __future__ import annotations

import pytest

from tests.e2e.helpers import CARD_PAN, CARD_PIN, terminal_for


@pytest.fixture
async def card(cli, world):
    result = await cli("card", "issue", CARD_PAN, "--pin", CARD_PIN, "--expiry", "3012", "--balance", "100",
                       "--json")
    assert result.code == 0, result.stderr
    return CARD_PAN


@pytest.fixture
async def terminal(gateway, world, card):
    t = terminal_for(gateway, world)
    assert (await t.sign_on()).response_code == "00"
    yield t
    await t.close()
