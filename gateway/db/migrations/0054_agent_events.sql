-- The agent network's events (gateway/jobs/agent_events.py; CLI.md rules
-- "Activation", "Deposits and fees", "Balances"): activations and their rewards,
-- deposits (押金) charged, refunded or forfeited, yearly service fees (流量费),
-- and the shares of forfeited deposits and of fees, all in the daily run's
-- database transaction, keyed so that nothing is posted twice.

-- Deposits held: one account (system:deposits_held) for every terminal's deposit,
-- never below zero, made by the first run that needs it (a fresh database has only
-- the cash and fee income accounts). Its balance is the deposits charged less
-- refunded less forfeited (a rule of `ledger check`).
ALTER TABLE ledger_accounts DROP CONSTRAINT ledger_accounts_kind_check;
ALTER TABLE ledger_accounts ADD CONSTRAINT ledger_accounts_kind_check
    CHECK (kind IN ('card', 'agent_float', 'commission', 'merchant', 'biller', 'fee_income', 'cash',
                    'payout_clearing', 'agent_profit', 'agent_receivable', 'deposit_held'));

-- A terminal's net volume of a local day, as the run of that day last saw it: the
-- day's originals shared (agent_share_txns) less the day's cancellations recorded
-- (agent_cancel_events). Rewritten by every run of the day; the activation and
-- deposit-refund windows sum these rows.
CREATE TABLE agent_terminal_days (
    tid text NOT NULL,
    day date NOT NULL,
    volume_fen bigint NOT NULL,
    originals integer NOT NULL,
    PRIMARY KEY (tid, day)
);

-- A terminal's activation, once (never undone): the approval that reached the volume.
CREATE TABLE agent_activations (
    tid text PRIMARY KEY REFERENCES terminals (tid),
    day date NOT NULL,
    run_id bigint NOT NULL REFERENCES agent_runs (id),
    txn_id bigint NOT NULL,
    activated_at timestamptz NOT NULL,
    mid text NOT NULL,
    owner_agent text NOT NULL,
    volume_fen bigint NOT NULL
);

-- A terminal's deposit: charged (as far as the merchant's balance goes) from the run
-- of its first purchase's day; then refunded or forfeited, once.
CREATE TABLE agent_deposits (
    tid text PRIMARY KEY REFERENCES terminals (tid),
    mid text NOT NULL,
    owner_agent text NOT NULL,
    first_day date NOT NULL,
    deposit_fen bigint NOT NULL CHECK (deposit_fen > 0),
    charged_fen bigint NOT NULL DEFAULT 0 CHECK (charged_fen BETWEEN 0 AND deposit_fen),
    status text NOT NULL DEFAULT 'held' CHECK (status IN ('held', 'refunded', 'forfeited')),
    settled_day date,
    CHECK ((status = 'held') = (settled_day IS NULL))
);

-- A terminal's service fee of one period (0: service_fee_free_days after binding,
-- then every 365 days), charged as far as the merchant's balance goes.
CREATE TABLE agent_service_fees (
    tid text NOT NULL REFERENCES terminals (tid),
    period integer NOT NULL CHECK (period >= 0),
    mid text NOT NULL,
    owner_agent text NOT NULL,
    due_day date NOT NULL,
    fee_fen bigint NOT NULL CHECK (fee_fen > 0),
    charged_fen bigint NOT NULL DEFAULT 0 CHECK (charged_fen BETWEEN 0 AND fee_fen),
    PRIMARY KEY (tid, period)
);

-- Every movement of a merchant's money by the events, one row per run, terminal,
-- kind and period, posted under the run's merchant postings.
CREATE TABLE agent_charge_events (
    run_id bigint NOT NULL REFERENCES agent_runs (id),
    day date NOT NULL,
    tid text NOT NULL,
    mid text NOT NULL,
    kind text NOT NULL CHECK (kind IN ('deposit_charge', 'deposit_refund', 'deposit_forfeit', 'service_fee')),
    period integer NOT NULL DEFAULT 0,
    amount_fen bigint NOT NULL CHECK (amount_fen > 0),
    PRIMARY KEY (run_id, tid, kind, period)
);
CREATE INDEX agent_charge_events_day ON agent_charge_events (day);
CREATE UNIQUE INDEX agent_charge_events_settled ON agent_charge_events (tid)
    WHERE kind IN ('deposit_refund', 'deposit_forfeit');

-- What an event pays each agent up the owner's chain: an activation reward, a
-- forfeited deposit's share, a service fee's share (its value less its child's).
-- recipient: who was paid. Exactly once per kind, terminal, period and agent.
CREATE TABLE agent_event_shares (
    kind text NOT NULL CHECK (kind IN ('activation', 'deposit', 'service_fee')),
    tid text NOT NULL,
    period integer NOT NULL DEFAULT 0,
    agent_code text NOT NULL,
    recipient text NOT NULL,
    day date NOT NULL,
    run_id bigint NOT NULL REFERENCES agent_runs (id),
    mid text NOT NULL,
    amount_fen bigint NOT NULL CHECK (amount_fen > 0),
    PRIMARY KEY (kind, tid, period, agent_code)
);
CREATE INDEX agent_event_shares_recipient ON agent_event_shares (recipient, day);
CREATE INDEX agent_event_shares_day ON agent_event_shares (day);

-- What the events of a run credited to each agent (posted under agent-events:<run>:agents),
-- and what it owed netted from it.
CREATE TABLE agent_event_postings (
    run_id bigint NOT NULL REFERENCES agent_runs (id),
    day date NOT NULL,
    agent_code text NOT NULL,
    credits_fen bigint NOT NULL,
    netted_fen bigint NOT NULL,
    PRIMARY KEY (run_id, agent_code)
);
CREATE INDEX agent_event_postings_day ON agent_event_postings (day);
