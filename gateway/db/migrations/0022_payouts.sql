-- Payouts: money on its way to a beneficiary's bank account. A merchant's
-- payout is made by the payout run of its date, at most one per merchant and
-- date; an agent's withdrawal (later) is a payout made at once, without a
-- date until the next run sends it. `account_id` is the owner's ledger
-- account: where the money came from and where a returned payout goes back.
-- The bank details are copied at the run, so that a file made again is the
-- same, whatever changed since.
CREATE TABLE payouts (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    payout_date date,
    beneficiary_kind text NOT NULL CHECK (beneficiary_kind IN ('merchant', 'agent')),
    beneficiary text NOT NULL,
    account_id bigint NOT NULL REFERENCES ledger_accounts (id),
    amount_fen bigint NOT NULL CHECK (amount_fen > 0),
    status text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'paid', 'returned')),
    account_name text,
    bank_name text,
    bank_account_lmk bytea,
    bank_account_last4 text,
    bank_version integer,
    reason text,
    created_at timestamptz NOT NULL DEFAULT now(),
    sent_at timestamptz,
    paid_at timestamptz,
    returned_at timestamptz,
    CHECK ((sent_at IS NULL) = (payout_date IS NULL)),
    CHECK (sent_at IS NOT NULL OR status = 'pending'),
    CHECK (sent_at IS NULL OR bank_account_lmk IS NOT NULL)
);
-- Once per date and merchant, whatever is rerun or crashes half-way.
CREATE UNIQUE INDEX payouts_merchant_once_a_day ON payouts (payout_date, beneficiary)
    WHERE beneficiary_kind = 'merchant';
CREATE INDEX payouts_date ON payouts (payout_date, id);
CREATE INDEX payouts_beneficiary ON payouts (beneficiary_kind, beneficiary, id);
CREATE INDEX payouts_unconfirmed ON payouts (id) WHERE status = 'pending';

-- One row per date whose run has finished: its totals and what it skipped,
-- so that a rerun prints the same, and the files' creation time.
CREATE TABLE payout_runs (
    payout_date date PRIMARY KEY,
    payouts integer NOT NULL,
    total_fen bigint NOT NULL,
    skipped jsonb NOT NULL,
    finished_at timestamptz NOT NULL DEFAULT now()
);
