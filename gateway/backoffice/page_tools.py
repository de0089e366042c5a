"""Small things every page module of the back office needs: the settings, the local
day the web decides "today" with (``Settings.today()``, so ``clock_offset_s`` moves
it as it moves the gateway's), and a CSV download."""

from __future__ import annotations

from datetime import date
from typing import Any

from starlette.responses import Response

from gateway.backoffice.security import Page
from gateway.settings import Settings


def settings_of(page: Page) -> Settings:
    return page.request.app.state.settings


def today(page: Page) -> date:
    """The local day now, by this process's clock (``Settings.today()``: ``clock_offset_s`` included)."""
    return settings_of(page).today()


def csv_response(body: str, filename: str) -> Response:
    return Response(body, media_type="text/csv; charset=utf-8",
                    headers={"content-disposition": f'attachment; filename="{filename}"'})


def tz_of(page: Page) -> Any:
    return settings_of(page).tz
