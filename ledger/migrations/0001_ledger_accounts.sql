-- Ledger accounts, modelled on TigerBeetle: posted debits and credits, and a
-- flag that forbids the balance (credits - debits) going below zero, enforced
-- by a CHECK inside the very transaction that posts.
CREATE TABLE ledger_accounts (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind text NOT NULL CHECK (kind IN ('card', 'agent_float', 'commission', 'merchant',
                                       'biller', 'fee_income', 'cash')),
    code text NOT NULL UNIQUE,
    currency char(3) NOT NULL DEFAULT '156',
    debits_posted bigint NOT NULL DEFAULT 0 CHECK (debits_posted >= 0),
    credits_posted bigint NOT NULL DEFAULT 0 CHECK (credits_posted >= 0),
    debits_must_not_exceed_credits boolean NOT NULL DEFAULT false,
    created_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT ledger_accounts_no_overdraft
        CHECK (NOT debits_must_not_exceed_credits OR debits_posted <= credits_posted)
);

-- The system accounts every installation has.
INSERT INTO ledger_accounts (kind, code) VALUES ('cash', 'system:cash'), ('fee_income', 'system:fee_income');
