-- Holds: TigerBeetle's two-phase transfers (WIRE.md 9.3, issue 21). A hold
-- is a pending transfer: it reserves its amount on the debit account
-- (debits_pending) and the credit account (credits_pending) and moves no
-- money. It is then resolved exactly once: posted (fully, partly, or over by
-- the limit its poster gives), voided, or expired. An account's available
-- balance is credits_posted - debits_posted - debits_pending, and the
-- no-overdraft rule holds on it.
ALTER TABLE ledger_accounts
    ADD COLUMN debits_pending bigint NOT NULL DEFAULT 0 CHECK (debits_pending >= 0),
    ADD COLUMN credits_pending bigint NOT NULL DEFAULT 0 CHECK (credits_pending >= 0);
ALTER TABLE ledger_accounts DROP CONSTRAINT ledger_accounts_no_overdraft;
ALTER TABLE ledger_accounts ADD CONSTRAINT ledger_accounts_no_overdraft
    CHECK (NOT debits_must_not_exceed_credits OR debits_posted + debits_pending <= credits_posted);

-- A posting that resolves a hold (its post, void or expiry) names it; a hold
-- is resolved by one successful posting at most.
CREATE TABLE ledger_holds (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    posting_id bigint NOT NULL UNIQUE REFERENCES ledger_postings (id),  -- the posting that placed it
    debit_account_id bigint NOT NULL REFERENCES ledger_accounts (id),
    credit_account_id bigint NOT NULL REFERENCES ledger_accounts (id),
    amount bigint NOT NULL CHECK (amount > 0),
    code text NOT NULL,
    status text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'posted', 'voided', 'expired')),
    expires_at timestamptz,  -- NULL: never
    posted_amount bigint CHECK (posted_amount > 0),
    created_at timestamptz NOT NULL DEFAULT now(),
    resolved_at timestamptz,
    CHECK (debit_account_id <> credit_account_id),
    CHECK ((status = 'posted') = (posted_amount IS NOT NULL)),
    CHECK ((status = 'pending') = (resolved_at IS NULL))
);
CREATE INDEX ledger_holds_expiring ON ledger_holds (expires_at) WHERE status = 'pending';
CREATE INDEX ledger_holds_debit_pending ON ledger_holds (debit_account_id) WHERE status = 'pending';

ALTER TABLE ledger_postings ADD COLUMN resolves_hold_id bigint REFERENCES ledger_holds (id);
CREATE UNIQUE INDEX ledger_postings_resolves_hold_once
    ON ledger_postings (resolves_hold_id) WHERE result = 'ok';
