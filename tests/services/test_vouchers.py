"""The biller commands of the agent's counter (CLI.md "Vouchers and the biller
link", rule "Vouchers"): face values, biller show, notify in biller add's audit."""

from __future__ import annotations


async def test_biller_add_audits_notify_and_set_replaces_the_face_values(cli):
    added = await cli("biller", "add", "PRE01", "--name", "Prepaid", "--prepaid", "--notify", "--json")
    assert added.code == 0 and added.json["notify"] is True, added.stderr
    events = (await cli("audit", "list", "--entity", "biller:PRE01", "--json")).json["events"]
    assert events[0]["action"] == "biller.add" and events[0]["after"]["notify"] is True
    assert (await cli("biller", "set", "PRE01", "--voucher-values", "100,50,100")).code == 0
    assert (await cli("biller", "set", "PRE01", "--voucher-values", "20,50")).code == 0  # replaces the list
    shown = (await cli("biller", "show", "PRE01", "--json")).json
    assert shown == {"code": "PRE01", "name": "Prepaid", "prepaid": True, "exact": False, "commission_bp": 0,
                     "voucher_values_fen": [2000, 5000], "connector": "builtin", "notify": True}
    events = (await cli("audit", "list", "--entity", "biller:PRE01", "--json")).json["events"]
    assert [e["after"]["voucher_values_fen"] for e in events[1:]] == [[5000, 10000], [2000, 5000]]


async def test_face_values_of_a_biller_not_prepaid_exit_2_and_a_fixed_commission_shows_in_fen(cli):
    assert (await cli("biller", "add", "ELEC01", "--name", "Power", "--commission-fixed", "0.30")).code == 0
    refused = await cli("biller", "set", "ELEC01", "--voucher-values", "50")
    assert refused.code == 2 and "not prepaid" in refused.stderr.splitlines()[-1]
    shown = (await cli("biller", "show", "ELEC01", "--json")).json
    assert shown["commission_fen"] == 30 and "commission_bp" not in shown and shown["voucher_values_fen"] == []
    assert (await cli("biller", "show", "NOPE")).code == 2
    assert (await cli("voucher", "show", "123")).code == 2
    assert (await cli("voucher", "show", "123456789012")).code == 2
