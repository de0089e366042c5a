-- Risk controls: per-merchant and per-terminal overrides of the limits in
-- config/risk.toml, the daily counters the limits are checked against (in
-- the same transaction that posts), and every decline by a rule.
CREATE TABLE risk_limits (
    scope text NOT NULL CHECK (scope IN ('merchant', 'terminal')),
    owner text NOT NULL,  -- MID or TID
    name text NOT NULL,
    value bigint NOT NULL CHECK (value >= 0),
    PRIMARY KEY (scope, owner, name)
);

CREATE TABLE risk_counters (
    scope text NOT NULL CHECK (scope IN ('terminal', 'card')),
    owner text NOT NULL,  -- TID or card id
    day date NOT NULL,    -- local day of the timezone setting
    count integer NOT NULL DEFAULT 0,
    amount_fen bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (scope, owner, day)
);

CREATE TABLE risk_events (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    created_at timestamptz NOT NULL DEFAULT now(),
    tid text NOT NULL,
    card_hash text,
    rule text NOT NULL,
    response_code text NOT NULL,
    risk_values jsonb NOT NULL
);
CREATE INDEX risk_events_time ON risk_events (created_at);

-- Where a card was used (for the travel rule), and the day whose counters an
-- approval consumed (a void or reversal gives them back).
ALTER TABLE gw_transactions
    ADD COLUMN latitude double precision,
    ADD COLUMN longitude double precision,
    ADD COLUMN risk_day date;
CREATE INDEX gw_transactions_card ON gw_transactions (card_id, created_at);
-- The card's last approved use with a known position (travel rule): without
-- this, a card never seen with a position would be scanned in full each time.
CREATE INDEX gw_transactions_card_position ON gw_transactions (card_id, created_at)
    WHERE status = 'approved' AND latitude IS NOT NULL;

-- The daily report reads the day's transfers.
CREATE INDEX ledger_transfers_created ON ledger_transfers (created_at);
