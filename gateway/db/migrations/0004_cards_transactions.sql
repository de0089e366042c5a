-- Prepaid cards. No clear PAN and no clear PIN: a keyed hash of the PAN for
-- look-up, the PAN encrypted under the LMK, and a PIN verification value.
CREATE TABLE cards (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    pan_hash bytea NOT NULL UNIQUE,
    pan_lmk bytea NOT NULL,
    pan_masked text NOT NULL,
    pvv bytea NOT NULL,
    expiry text NOT NULL CHECK (expiry ~ '^[0-9]{2}(0[1-9]|1[0-2])$'),
    status text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'frozen')),
    pin_tries integer NOT NULL DEFAULT 0,
    pin_blocked boolean NOT NULL DEFAULT false,
    account_id bigint NOT NULL REFERENCES ledger_accounts (id),
    created_at timestamptz NOT NULL DEFAULT now()
);

-- Every financial request that got a storable answer, under its key
-- (terminal, batch, STAN, MTI class), with the response fields sent, so that
-- a repeat gets the same bytes back.
CREATE TABLE gw_transactions (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tid text NOT NULL,
    batch integer NOT NULL,
    stan text NOT NULL,
    mti_class text NOT NULL,
    kind text NOT NULL,
    processing_code text,
    content_hash text NOT NULL,
    response jsonb NOT NULL,
    response_code text NOT NULL,
    -- approved, declined; an approved original later becomes voided or reversed
    status text NOT NULL CHECK (status IN ('approved', 'declined', 'voided', 'reversed')),
    amount_fen bigint,
    card_id bigint REFERENCES cards (id),
    rrn text NOT NULL,
    local_date text NOT NULL,
    posting_key text,
    original_id bigint REFERENCES gw_transactions (id),
    exception text,
    created_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tid, batch, stan, mti_class)
);
CREATE INDEX gw_transactions_rrn ON gw_transactions (tid, rrn);
CREATE INDEX gw_transactions_created ON gw_transactions (created_at);

-- Numbers the idempotency keys of operator top-ups.
CREATE SEQUENCE topup_seq;
