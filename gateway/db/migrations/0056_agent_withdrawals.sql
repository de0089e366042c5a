-- Agent withdrawals (issue 24, CLI.md "Rules of the version 2 commands":
-- Withdrawals) paid as payouts (issue 25). A withdrawal takes its gross from the
-- agent's profit balance at once: the net to the payout clearing account as a
-- payout (pending, no date until the next payout run sends it), the tax withheld
-- to the house's withholding tax account, the fee to the house's fee income. The
-- payout keeps the three parts, so that a returned withdrawal gives the gross
-- back, and the local days it was made and returned on (the earnings rows).
ALTER TABLE payouts
    ADD COLUMN gross_fen bigint,
    ADD COLUMN tax_fen bigint,
    ADD COLUMN fee_fen bigint,
    ADD COLUMN requested_day date,
    ADD COLUMN returned_day date,
    ADD CONSTRAINT payouts_withdrawal_parts CHECK (
        CASE WHEN beneficiary_kind = 'agent'
             THEN gross_fen IS NOT NULL AND tax_fen >= 0 AND fee_fen >= 0 AND requested_day IS NOT NULL
                  AND gross_fen = amount_fen + tax_fen + fee_fen
             ELSE gross_fen IS NULL AND tax_fen IS NULL AND fee_fen IS NULL END);
-- The withdrawals the next payout run sends.
CREATE INDEX payouts_unsent ON payouts (id) WHERE payout_date IS NULL;

-- The tax withheld from withdrawals: owed to the tax authority, the house's until it pays it.
ALTER TABLE ledger_accounts DROP CONSTRAINT ledger_accounts_kind_check;
ALTER TABLE ledger_accounts ADD CONSTRAINT ledger_accounts_kind_check
    CHECK (kind IN ('card', 'agent_float', 'commission', 'merchant', 'biller', 'fee_income', 'cash',
                    'payout_clearing', 'agent_profit', 'agent_receivable', 'deposit_held', 'tax_payable'));
