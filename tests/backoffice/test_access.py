"""Every route of the back office × every role, over HTTP: allowed (200, or 303
after an action) or 403, exactly as gateway.backoffice.access.ROUTE_ROLES says;
and an agent user confined to its own subtree."""

from __future__ import annotations

import pytest

from gateway.backoffice.access import ROUTE_ROLES
from tests.backoffice.conftest import ROLE_USER

# Path parameters of entities inside agent1's subtree (AG01), so that only the role decides.
PARAMS = {"{tid}": "TERM0002", "{code}": "AG02", "{name}": "auditor", "{mid}": "MERCHANT0000002",
          "{stock_tid}": "STOCK001", "{biller}": "EPOWER"}
FORMS = {
    "/terminals/{tid}/status": {"status": "frozen"},
    "/agents/{code}/topup": {"amount": "12.50"},
    "/agents/{code}/status": {"status": "frozen"},
    "/users": {"name": "newcomer", "role": "operator", "password": "another long password"},
    "/merchants/{mid}/status": {"status": "frozen"},
    "/terminals/{tid}/settings": {"permit": "purchase", "mac": "x9.19", "location": "31.2,121.5"},
    "/terminals/{tid}/limits": {"txn_amount_max_fen": "500000"},
    # in the table's order: AG01's STOCK001 down to AG02, back, then bound to AG02's merchant
    "/inventory/{stock_tid}/allocate": {"to": "AG02"},
    "/inventory/{stock_tid}/recall": {"to": "AG01"},
    "/inventory/{stock_tid}/bind": {"merchant": "MERCHANT0000002"},
}
QUERIES = {"/reports/remittance.csv": {"biller": "EPOWER"}}


def concrete(path: str, world=None) -> str:
    for template, value in PARAMS.items():
        path = path.replace(template, value)
    if world is not None:
        path = path.replace("{txn_id:int}", str(world.txn_ids["TERM0002"]))
        path = path.replace("{message_id:int}", str(world.saf_id))
    return path


@pytest.mark.parametrize("role", ["admin", "operator", "auditor", "agent"])
async def test_each_route_answers_each_role_as_the_table_says(web_world, browse, role):
    browser = await browse(ROLE_USER[role])
    wrong = []
    for (method, path), roles in ROUTE_ROLES.items():
        if method == "GET":
            response = await browser.get(concrete(path, web_world), params=QUERIES.get(path))
            expected = 200 if role in roles else 403
        else:
            response = await browser.post(concrete(path, web_world), FORMS.get(path, {}))
            expected = (200 if path.endswith("/totp") else 303) if role in roles else 403
        if response.status_code != expected:
            wrong.append(f"{method} {path}: {response.status_code}, expected {expected}")
    assert not wrong, "\n".join(wrong)


async def test_every_route_of_the_app_is_in_the_table(web_app):
    guarded = {(method, route.path) for route in web_app.routes for method in (getattr(route, "methods", None) or ())
               if method != "HEAD"}
    public = {("GET", "/"), ("GET", "/login"), ("POST", "/login"), ("POST", "/logout"), ("GET", "/healthz"),
              ("GET", "/metrics")}
    assert guarded - public == set(ROUTE_ROLES)


async def test_without_a_session_pages_go_to_the_login_and_actions_are_401(web_world, browse):
    browser = await browse()
    for (method, path) in ROUTE_ROLES:
        if method == "GET":
            response = await browser.get(concrete(path, web_world))
            assert (response.status_code, response.headers.get("location")) == (303, "/login"), path
        else:
            assert (await browser.post(concrete(path, web_world), FORMS.get(path, {}))).status_code == 401, path


async def test_an_agent_sees_its_subtree_and_gets_403_outside_it(web_world, browse):
    agent = await browse("agent1")
    for path in ("/terminals/TERM0001", "/terminals/TERM0002", "/agents/AG01", "/agents/AG02"):
        assert (await agent.get(path)).status_code == 200, path
    for path in ("/terminals/TERM0003", "/agents/AG03", "/terminals/NOSUCH01", "/agents/NOSUCH"):
        assert (await agent.get(path)).status_code == 403, path  # unknown ones too: nothing is told
    listing = (await agent.get("/terminals")).text
    assert "TERM0001" in listing and "TERM0002" in listing and "TERM0003" not in listing
    csv_rows = (await agent.get("/terminals.csv")).text.splitlines()
    assert [row.split(",")[0] for row in csv_rows] == ["tid", "STOCK001", "TERM0001", "TERM0002"]  # STOCK001: in AG01's stock
    tree = (await agent.get("/agents")).text
    assert "AG02" in tree and "AG03" not in tree
    portal = (await agent.get("/portal")).text
    assert "MERCHANT0000002" in portal and "MERCHANT0000003" not in portal


async def test_an_agent_filtering_by_another_agent_gets_nothing(web_world, browse):
    agent = await browse("agent1")
    csv_rows = (await agent.get("/terminals.csv", params={"agent": "AG03"})).text.splitlines()
    assert csv_rows == ["tid,mid,merchant,agent,status,signed_on,last_seen,location"]


async def test_staff_see_every_agent_and_get_404_for_unknown_ones(web_world, browse):
    auditor = await browse("auditor")
    assert [row.split(",")[0] for row in (await auditor.get("/terminals.csv")).text.splitlines()] == [
        "tid", "STOCK001", "TERM0001", "TERM0002", "TERM0003"]
    assert (await auditor.get("/terminals/NOSUCH01")).status_code == 404
    assert (await auditor.get("/agents/NOSUCH")).status_code == 404
