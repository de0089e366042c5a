-- Money out (issue 25): the ledger accounts payouts move through. A payout
-- run moves each payout from its owner's account (a merchant's, later an
-- agent's) to the payout clearing account; the bank's answer moves it on to
-- the bank (paid) or back to its owner (returned). The clearing account's
-- balance is the money sent to the bank and not yet confirmed (the payouts
-- rule of `posgw ledger check`), so it can never go below zero. The bank
-- account is, like the cash account, the outside world: money that left.
-- Both are made by the first payout run that needs them (gateway/jobs/payouts.py):
-- a fresh database has only the cash and fee income accounts.
ALTER TABLE ledger_accounts DROP CONSTRAINT ledger_accounts_kind_check;
ALTER TABLE ledger_accounts ADD CONSTRAINT ledger_accounts_kind_check
    CHECK (kind IN ('card', 'agent_float', 'commission', 'merchant', 'biller', 'fee_income', 'cash',
                    'payout_clearing'));

