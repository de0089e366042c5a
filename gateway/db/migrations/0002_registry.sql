-- Who may talk to the gateway: agents, their merchants, their terminals.
CREATE TABLE agents (
    code text PRIMARY KEY,
    name text NOT NULL,
    parent_code text REFERENCES agents (code),
    status text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'frozen')),
    float_account_id bigint NOT NULL REFERENCES ledger_accounts (id),
    commission_account_id bigint NOT NULL REFERENCES ledger_accounts (id),
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE merchants (
    mid text PRIMARY KEY CHECK (length(mid) = 15),
    name text NOT NULL,
    agent_code text NOT NULL REFERENCES agents (code),
    status text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'frozen')),
    mdr_bp integer NOT NULL DEFAULT 0 CHECK (mdr_bp BETWEEN 0 AND 10000),
    account_id bigint NOT NULL REFERENCES ledger_accounts (id),
    created_at timestamptz NOT NULL DEFAULT now()
);

-- Keys are stored only encrypted under the local master key (LMK).
CREATE TABLE terminals (
    tid text PRIMARY KEY CHECK (length(tid) = 8),
    mid text NOT NULL REFERENCES merchants (mid),
    status text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'frozen')),
    permit text[] NOT NULL DEFAULT '{purchase,balance,void,bill}',
    mac_algorithm text NOT NULL DEFAULT 'cup-ecb' CHECK (mac_algorithm IN ('cup-ecb', 'x9.19')),
    latitude double precision,
    longitude double precision,
    radius_km double precision,
    tmk_lmk bytea NOT NULL,
    tmk_kcv bytea NOT NULL,
    pik_lmk bytea,
    mak_lmk bytea,
    tdk_lmk bytea,
    keys_expire_at timestamptz,
    signed_on_at timestamptz,
    batch integer NOT NULL DEFAULT 1,
    last_seen timestamptz,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX terminals_mid ON terminals (mid);

-- Retrieval reference numbers are handed out in blocks of 1000 per gateway
-- process, so that several gateways never hand out the same one.
CREATE SEQUENCE rrn_block_seq MINVALUE 1;
