-- The daily run of the agent network (gateway/jobs/agent_run.py): what each run
-- posted, keyed so that nothing is posted twice. A run of a local day inserts
-- the rows no earlier run of that day inserted (under an advisory lock per
-- day) and posts their money in the same database transaction.

-- Each run of a day; final once it started after the day (and its grace) ended.
CREATE TABLE agent_runs (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    day date NOT NULL,
    final boolean NOT NULL,
    started_at timestamptz NOT NULL,
    actor text NOT NULL
);
CREATE INDEX agent_runs_day ON agent_runs (day);

-- Every original (approved purchase; completions to come) shared, once: the
-- run's exactly-once key. base_agent is the merchant's own agent; the house's
-- part of the transaction is discount_fen less its agent_shares.
-- (The two large tables, a row per original and a row per share, carry no
-- foreign keys: millions of rows a day, each checked, would double the run's
-- time; the run writes both from the same rows in one statement.)
CREATE TABLE agent_share_txns (
    txn_id bigint PRIMARY KEY,
    day date NOT NULL,
    run_id bigint NOT NULL,
    tid text NOT NULL,
    mid text NOT NULL,
    base_agent text NOT NULL,
    amount_fen bigint NOT NULL,
    discount_fen bigint NOT NULL
);
CREATE INDEX agent_share_txns_day ON agent_share_txns (day, base_agent);

-- One row per original and agent with a share above 0. recipient: who was
-- paid (the agent itself; a redirect names another).
CREATE TABLE agent_shares (
    txn_id bigint NOT NULL,
    agent_code text NOT NULL,
    recipient text NOT NULL,
    share_fen bigint NOT NULL CHECK (share_fen > 0),
    PRIMARY KEY (txn_id, agent_code)
);

-- Every cancellation (void, reversal, a reversal of a void: negative; refunds
-- and completion voids to come) of a shared original, once, in the run of its
-- own day; cancelled_before_fen is the original's net cancelled amount before it.
CREATE TABLE agent_cancel_events (
    event_id bigint PRIMARY KEY REFERENCES gw_transactions (id),
    original_id bigint NOT NULL REFERENCES agent_share_txns (txn_id),
    day date NOT NULL,
    run_id bigint NOT NULL REFERENCES agent_runs (id),
    amount_fen bigint NOT NULL,
    cancelled_before_fen bigint NOT NULL
);
CREATE INDEX agent_cancel_events_original ON agent_cancel_events (original_id);
CREATE INDEX agent_cancel_events_day ON agent_cancel_events (day);

-- The clawback of one share by one cancellation: floor(share x cancelled after
-- / amount) - floor(share x cancelled before / amount); negative: shared again.
CREATE TABLE agent_clawbacks (
    event_id bigint NOT NULL REFERENCES agent_cancel_events (event_id),
    agent_code text NOT NULL,
    recipient text NOT NULL,
    clawback_fen bigint NOT NULL CHECK (clawback_fen <> 0),
    PRIMARY KEY (event_id, agent_code)
);

-- What a run posted to each agent, under the ledger key agent-run:<run>:<agent>.
CREATE TABLE agent_run_postings (
    run_id bigint NOT NULL REFERENCES agent_runs (id),
    day date NOT NULL,
    agent_code text NOT NULL,
    shares_fen bigint NOT NULL,
    reshares_fen bigint NOT NULL,
    clawbacks_fen bigint NOT NULL,
    clawed_from_profit_fen bigint NOT NULL,
    receivable_fen bigint NOT NULL,
    netted_fen bigint NOT NULL,
    PRIMARY KEY (run_id, agent_code)
);
CREATE INDEX agent_run_postings_agent ON agent_run_postings (agent_code, day);
