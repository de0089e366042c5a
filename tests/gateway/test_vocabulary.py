"""One vocabulary: every route's kind is a Kind, every operation records a
kind of its own name (or declines any), and the statuses the database allows
today are Status values."""

from __future__ import annotations

import re

from gateway.acquiring import operations, router
from gateway.domain.vocabulary import Kind, Status


def test_every_route_is_of_a_kind_and_every_financial_kind_has_a_route():
    routes = [value for value in vars(router).values() if isinstance(value, router.Route)]
    assert all(isinstance(route.kind, Kind) for route in routes)
    assert {route.kind for route in routes} == set(Kind) - {Kind.UNDECODABLE}


def test_every_operation_but_the_decline_is_named_as_its_kind():
    ops = {cls.op for cls in vars(operations).values()
           if isinstance(cls, type) and issubclass(cls, operations.Operation) and cls is not operations.Operation}
    assert ops - {"decline"} <= set(Kind)
    assert ops == {"decline", "balance", "purchase", "void", "reversal", "bill_inquiry", "bill_payment", "settlement",
                   "refund", "preauth", "preauth_cancel", "completion", "completion_void", "voucher_sale"}


async def test_the_statuses_gw_transactions_allows_are_statuses(db):
    check = await db.fetchval("""SELECT pg_get_constraintdef(oid) FROM pg_constraint
                                  WHERE conrelid = 'gw_transactions'::regclass AND contype = 'c'
                                    AND pg_get_constraintdef(oid) LIKE '%status%'""")
    allowed = set(re.findall(r"'(\w+)'", check))
    assert allowed == set(Status)  # version 2 (migration 0046): every status
