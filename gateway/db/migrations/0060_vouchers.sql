-- The agent's counter (WIRE.md 9.7, 9.9; CLI.md "Vouchers and the biller link").
-- A prepaid biller's voucher face values (`biller set --voucher-values`), and
-- the hash of its API key for the biller API (`biller apikey`: the key is
-- printed once and kept only as this SHA-256, hex).
ALTER TABLE billers
    ADD COLUMN voucher_values_fen bigint[] NOT NULL DEFAULT '{}' CHECK (0 < ALL (voucher_values_fen)),
    ADD COLUMN api_key_hash text UNIQUE;

-- Prepaid vouchers (充值卡) sold at an agent's terminal: one per approved
-- voucher sale (txn_id), its PIN kept only as a keyed hash (HMAC under a key
-- derived from the LMK). `valid` until redeemed once for a token on a meter
-- of its biller, or voided by the sale's reversal; `expired` and `blocked`
-- are read from sold_on (voucher_days_max local days, the first included)
-- and pin_tries (5 wrong in a row), not stored as statuses.
CREATE TABLE vouchers (
    serial text PRIMARY KEY CHECK (serial ~ '^[0-9]{12}$'),
    biller_code text NOT NULL REFERENCES billers (code),
    amount_fen bigint NOT NULL CHECK (amount_fen > 0),
    pin_hash bytea NOT NULL,
    status text NOT NULL DEFAULT 'valid' CHECK (status IN ('valid', 'redeemed', 'void')),
    pin_tries integer NOT NULL DEFAULT 0 CHECK (pin_tries >= 0),
    tid text NOT NULL,
    receipt text NOT NULL,
    txn_id bigint NOT NULL UNIQUE REFERENCES gw_transactions (id),
    sold_at timestamptz NOT NULL,
    sold_on date NOT NULL,  -- the sale's local day
    meter text,
    token text,
    redeemed_at timestamptz,
    CHECK ((status = 'redeemed') = (token IS NOT NULL AND meter IS NOT NULL AND redeemed_at IS NOT NULL))
);

-- `voucher` joins the permits of a terminal registered without --permit
-- (WIRE.md 9.8), as 0046 did for refund and preauth: the default, and the
-- terminals that had the whole of it.
ALTER TABLE terminals ALTER COLUMN permit SET DEFAULT '{purchase,balance,void,bill,refund,preauth,voucher}';
UPDATE terminals SET permit = permit || '{voucher}'::text[]
 WHERE permit @> '{purchase,balance,void,bill,refund,preauth}'::text[] AND NOT permit @> '{voucher}'::text[];
