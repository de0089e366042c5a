"""Fixtures shared by the gateway's tests."""

from __future__ import annotations

from datetime import datetime

import pytest


@pytest.fixture
def today(settings):
    """Today in the gateway's timezone; a test that crosses local midnight is skipped, not failed."""
    day = datetime.now(settings.tz).date()
    yield day
    if datetime.now(settings.tz).date() != day:
        pytest.skip("crossed local midnight during the test")
