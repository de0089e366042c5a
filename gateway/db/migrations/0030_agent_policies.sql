-- Agent policies (CLI.md "Agent network"), versioned by the local day they take
-- effect. Rows are never updated or deleted: the table is the price-change log,
-- who set what from when. The policy in force on a day D is the row with the
-- latest from_day <= D (and of those, the last set); a value left out of a row
-- keeps what was in force before (the row holds the whole policy, merged).
-- cost_bp NULL: the agent has no settlement cost and earns no share.
CREATE TABLE agent_policies (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    agent_code text NOT NULL REFERENCES agents (code),
    from_day date NOT NULL,
    cost_bp integer CHECK (cost_bp BETWEEN 0 AND 10000),
    share_pct integer NOT NULL DEFAULT 100 CHECK (share_pct BETWEEN 0 AND 100),
    activation_reward_fen bigint NOT NULL DEFAULT 0 CHECK (activation_reward_fen >= 0),
    deposit_share_fen bigint NOT NULL DEFAULT 0 CHECK (deposit_share_fen >= 0),
    service_fee_share_fen bigint NOT NULL DEFAULT 0 CHECK (service_fee_share_fen >= 0),
    set_by text NOT NULL,
    set_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX agent_policies_in_force ON agent_policies (agent_code, from_day DESC, id DESC);

-- Two ledger accounts per agent for the network: its profit (shares and every
-- other credit; never below zero) and its receivable (what it owes the house
-- after a clawback its profit could not cover: debits - credits).
ALTER TABLE ledger_accounts DROP CONSTRAINT ledger_accounts_kind_check;
ALTER TABLE ledger_accounts ADD CONSTRAINT ledger_accounts_kind_check
    CHECK (kind IN ('card', 'agent_float', 'commission', 'merchant', 'biller', 'fee_income', 'cash',
                    'payout_clearing', 'agent_profit', 'agent_receivable'));

CREATE TABLE agent_accounts (
    agent_code text PRIMARY KEY REFERENCES agents (code),
    profit_account_id bigint NOT NULL UNIQUE REFERENCES ledger_accounts (id),
    receivable_account_id bigint NOT NULL UNIQUE REFERENCES ledger_accounts (id)
);
