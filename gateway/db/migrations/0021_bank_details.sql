-- Where a beneficiary's payouts go (`merchant set`, later `agent set`). The
-- account number is stored only encrypted under the LMK, with its last four
-- digits beside it for the masked view (`*1234`). The version counts changes:
-- a payout returned by the bank is paid again only once the details have
-- changed since (a payout keeps the version it was sent to).
CREATE TABLE bank_details (
    beneficiary_kind text NOT NULL CHECK (beneficiary_kind IN ('merchant', 'agent')),
    beneficiary text NOT NULL,
    account_name text NOT NULL CHECK (length(account_name) BETWEEN 1 AND 140),
    bank_name text NOT NULL CHECK (length(bank_name) BETWEEN 1 AND 140),
    bank_account_lmk bytea NOT NULL,
    bank_account_last4 text NOT NULL CHECK (bank_account_last4 ~ '^[0-9]{4}$'),
    version integer NOT NULL DEFAULT 1 CHECK (version >= 1),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (beneficiary_kind, beneficiary)
);
