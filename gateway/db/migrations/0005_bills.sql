-- Utility billers, their open bills (postpaid), meters and tokens (prepaid).
CREATE TABLE billers (
    code text PRIMARY KEY,
    name text NOT NULL,
    prepaid boolean NOT NULL DEFAULT false,
    exact boolean NOT NULL DEFAULT false,
    commission_bp integer NOT NULL DEFAULT 0 CHECK (commission_bp BETWEEN 0 AND 10000),
    commission_fixed_fen bigint NOT NULL DEFAULT 0 CHECK (commission_fixed_fen >= 0),
    connector text NOT NULL DEFAULT 'builtin' CHECK (connector IN ('builtin', 'http')),
    connector_url text,
    account_id bigint NOT NULL REFERENCES ledger_accounts (id),
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE bills (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    biller_code text NOT NULL REFERENCES billers (code),
    account text NOT NULL,
    name text NOT NULL,
    period text NOT NULL CHECK (period ~ '^[0-9]{4}(0[1-9]|1[0-2])$'),
    amount_fen bigint NOT NULL CHECK (amount_fen > 0),
    due date,
    status text NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'paid')),
    reference text NOT NULL UNIQUE,
    paid_txn_id bigint REFERENCES gw_transactions (id),
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX bills_open ON bills (biller_code, account, period, id) WHERE status = 'open';

CREATE TABLE meters (
    biller_code text NOT NULL REFERENCES billers (code),
    meter text NOT NULL,
    name text NOT NULL,
    reference text NOT NULL UNIQUE,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (biller_code, meter)
);

CREATE TABLE tokens (
    token text PRIMARY KEY CHECK (token ~ '^[0-9]{20}$'),
    biller_code text NOT NULL REFERENCES billers (code),
    meter text NOT NULL,
    amount_fen bigint NOT NULL,
    receipt text NOT NULL,
    status text NOT NULL DEFAULT 'valid' CHECK (status IN ('valid', 'void')),
    txn_id bigint NOT NULL REFERENCES gw_transactions (id),
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX tokens_meter ON tokens (meter);

-- What a bill payment was, for statements, remittances and reversals.
ALTER TABLE gw_transactions
    ADD COLUMN biller_code text,
    ADD COLUMN bill_account text,
    ADD COLUMN receipt text,
    ADD COLUMN commission_fen bigint,
    ADD COLUMN agent_code text,
    ADD COLUMN paid_in_cash boolean;
CREATE INDEX gw_transactions_biller ON gw_transactions (biller_code, created_at) WHERE biller_code IS NOT NULL;

-- Statements and the ledger check read transfers by account and day; reports
-- find the transaction behind a posting.
CREATE INDEX ledger_transfers_debit ON ledger_transfers (debit_account_id, created_at);
CREATE INDEX ledger_transfers_credit ON ledger_transfers (credit_account_id, created_at);
CREATE INDEX gw_transactions_posting ON gw_transactions (posting_key) WHERE posting_key IS NOT NULL;
