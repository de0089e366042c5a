-- Pre-authorizations (WIRE.md 9.3, 9.9): what finds one (merchant, card, its
-- 6-digit auth code, its date) and its hold in the ledger (hold_key: the key
-- that placed its current hold; a completion voided or reversed places a new
-- one, until expires_at). Its status is its gw_transactions row's.
CREATE TABLE gw_preauths (
    txn_id bigint PRIMARY KEY REFERENCES gw_transactions (id),
    mid text NOT NULL,
    card_id bigint NOT NULL REFERENCES cards (id),
    auth_code text NOT NULL CHECK (auth_code ~ '^[0-9]{6}$'),
    local_date text NOT NULL,
    amount_fen bigint NOT NULL CHECK (amount_fen > 0),
    hold_key text NOT NULL,
    expires_at timestamptz NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX gw_preauths_lookup ON gw_preauths (card_id, auth_code, local_date);
CREATE INDEX gw_preauths_hold ON gw_preauths (hold_key);
