-- Transfers are immutable; they are grouped into postings, each posted
-- atomically under an idempotency key. A failed posting is recorded too, with
-- its result and no transfers, so that a retry returns the first result.
CREATE TABLE ledger_postings (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    idempotency_key text NOT NULL UNIQUE,
    content_md5 text NOT NULL,
    result text NOT NULL,
    reverses_posting_id bigint REFERENCES ledger_postings (id),
    created_at timestamptz NOT NULL DEFAULT now()
);
-- A posting is reversed at most once.
CREATE UNIQUE INDEX ledger_postings_reversed_once
    ON ledger_postings (reverses_posting_id) WHERE result = 'ok';

CREATE TABLE ledger_transfers (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    posting_id bigint NOT NULL REFERENCES ledger_postings (id),
    debit_account_id bigint NOT NULL REFERENCES ledger_accounts (id),
    credit_account_id bigint NOT NULL REFERENCES ledger_accounts (id),
    amount bigint NOT NULL CHECK (amount > 0),
    code text NOT NULL,
    reverses_transfer_id bigint UNIQUE REFERENCES ledger_transfers (id),
    created_at timestamptz NOT NULL DEFAULT now(),
    CHECK (debit_account_id <> credit_account_id)
);
CREATE INDEX ledger_transfers_posting ON ledger_transfers (posting_id);
