"""The account kinds the database allows are the ledger's own (ledger.accounts.AccountKind).

Migrations that add kinds redefine the table's CHECK with the whole list; one written
without another's kind would leave that kind's accounts impossible to create."""

from __future__ import annotations

import re

from ledger.accounts import AccountKind


async def test_the_database_allows_exactly_the_account_kinds_the_ledger_names(db):
    definition = await db.fetchval(
        """SELECT pg_get_constraintdef(oid) FROM pg_constraint
            WHERE conrelid = 'ledger_accounts'::regclass AND conname = 'ledger_accounts_kind_check'""")
    allowed = set(re.findall(r"'([a-z_]+)'::text", definition))
    assert allowed == {kind.value for kind in AccountKind}
