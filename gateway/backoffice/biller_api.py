"""The biller API (CLI.md "The back office"): the utility redeems a prepaid voucher
that its customer gives it by telephone, for a token on the customer's meter.

``POST /api/biller/v1/vouchers/redeem`` with ``Authorization: Bearer KEY`` (the
biller's key from ``posgw biller apikey``, kept hashed) and ``{"serial", "pin",
"meter"}`` → 200 ``{"token", "amount_fen", "meter"}``; errors as ``{"error": "..."}``:
401 bad key, 404 unknown voucher (another biller's too) or meter, 409 not valid,
422 wrong PIN (the fifth in a row blocks it: then 409), 400 a body that is not
that JSON object. The checks and their order are the CLI's (gateway.services.vouchers).

It is not a session route: no cookie, no CSRF token, no role; the key names the
biller, the actor of its audit records (``api:biller:<code>``). It is mounted as its
own router, so it is not in the back office's route table (access.ROUTE_ROLES).
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Mount, Route

from gateway.domain import vouchers as domain
from gateway.domain.validate import InvalidInput
from gateway.keys import SoftHsm, load_lmk
from gateway.services import vouchers
from gateway.settings import Settings

PREFIX = "/api/biller/v1"
_FIELDS = ("serial", "pin", "meter")


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def _hsm(request: Request, settings: Settings) -> SoftHsm:
    """The LMK's operations, made once per app (the LMK as the CLI finds it)."""
    hsm = getattr(request.app.state, "biller_api_hsm", None)
    if hsm is None:
        lmk = settings.lmk.get_secret_value() if settings.lmk else None
        hsm = request.app.state.biller_api_hsm = SoftHsm(load_lmk(lmk, settings.data_dir))
    return hsm


def _bearer(request: Request) -> str | None:
    scheme, _, key = request.headers.get("authorization", "").partition(" ")
    return key.strip() or None if scheme.lower() == "bearer" else None


async def _body(request: Request) -> dict[str, str] | None:
    try:
        body: Any = await request.json()
    except ValueError:
        return None
    if not isinstance(body, dict) or not all(isinstance(body.get(name), str) and body[name] for name in _FIELDS):
        return None
    return {name: body[name] for name in _FIELDS}


async def redeem(request: Request) -> JSONResponse:
    pool, settings = request.app.state.pool, request.app.state.settings
    key = _bearer(request)
    biller = await domain.biller_of_key(pool, key) if key else None
    if biller is None:
        return _error(401, "bad API key")
    body = await _body(request)
    if body is None:
        return _error(400, 'the body must be {"serial", "pin", "meter"}, strings')
    async with pool.acquire() as conn:
        try:
            redeemed = await vouchers.redeem_voucher(conn, f"api:biller:{biller}", _hsm(request, settings), settings,
                                                     body["serial"], body["pin"], body["meter"], biller_code=biller)
        except domain.VoucherRefused as refused:
            return _error(refused.status, str(refused))
        except InvalidInput as exc:
            return _error(400, str(exc))
    return JSONResponse({"token": redeemed["token"], "amount_fen": redeemed["amount_fen"],
                         "meter": redeemed["meter"]})


ROUTE = Mount(PREFIX, routes=[Route("/vouchers/redeem", redeem, methods=["POST"])])
