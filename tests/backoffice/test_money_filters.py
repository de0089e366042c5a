"""The new pages' filters as properties (hypothesis): whatever a person types is a
filter within its bounds or InvalidInput (400), never anything else; a bills filter
survives its own query string (the CSV link)."""

from __future__ import annotations

import urllib.parse
from datetime import date

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.backoffice.money_pages import payout_filter, saf_filter
from gateway.backoffice.money_queries import BILL_STATUSES, BillFilter
from gateway.backoffice.network_pages import PERIOD_DAYS_MAX, period
from gateway.domain.validate import InvalidInput
from gateway.jobs.payouts import STATUSES

ANY_TEXT = st.one_of(st.none(), st.text(max_size=40), st.sampled_from(["open", "paid", "all", "pending", " paid "]),
                     st.from_regex(r"\d{4}-\d{2}-\d{2}", fullmatch=True))
NOW = date(2026, 12, 8)


@settings(max_examples=300, deadline=None)
@given(st.fixed_dictionaries({"status": ANY_TEXT, "account": ANY_TEXT}))
def test_any_bills_filter_input_is_a_filter_or_invalid_input_and_survives_its_query_string(params):
    try:
        where = BillFilter.parse(params)
    except InvalidInput:
        return
    assert where.status in (None, *BILL_STATUSES)
    assert where.account is None or (0 < len(where.account) <= 40 and where.account.isascii()
                                     and where.account.isprintable() and " " not in where.account)
    assert BillFilter.parse(dict(urllib.parse.parse_qsl(where.query_string()))) == where


@settings(max_examples=300, deadline=None)
@given(st.fixed_dictionaries({"biller": ANY_TEXT, "which": ANY_TEXT}))
def test_any_saf_filter_input_is_a_filter_or_invalid_input(params):
    try:
        biller, include_done = saf_filter(params)
    except InvalidInput:
        return
    assert biller is None or 0 < len(biller) <= 16
    assert include_done == ((params["which"] or "").strip() == "all")


@settings(max_examples=300, deadline=None)
@given(st.fixed_dictionaries({"date": ANY_TEXT, "status": ANY_TEXT}))
def test_any_payout_filter_input_is_a_filter_or_invalid_input(params):
    try:
        day, status = payout_filter(params, NOW)
    except InvalidInput:
        return
    assert status in (None, *STATUSES)
    raw = (params["date"] or "").strip()
    if raw == "all":
        assert day is None
    elif not raw:
        assert day == date(2026, 12, 7)  # yesterday: T+1
    else:
        assert day == date.fromisoformat(raw)


@settings(max_examples=300, deadline=None)
@given(st.fixed_dictionaries({"from": ANY_TEXT, "to": ANY_TEXT}))
def test_any_earnings_period_is_a_period_of_at_most_a_year_or_invalid_input(params):
    try:
        first, last = period(params, NOW)
    except InvalidInput:
        return
    assert first <= last and (last - first).days < PERIOD_DAYS_MAX
