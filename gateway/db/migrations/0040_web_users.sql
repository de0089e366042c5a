-- The back office's users (posgw user ..., posgw web). A password is kept only
-- as its argon2id hash; a TOTP secret (RFC 6238) only where the user has one.
-- An agent user belongs to exactly one agent and sees only that agent's subtree.
-- failed_logins counts wrong passwords or codes in a row; locked_until is set
-- once they reach the limit (lock-out), and a good login resets both.
CREATE TABLE web_users (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name text NOT NULL UNIQUE CHECK (name ~ '^[A-Za-z0-9_.@-]{1,64}$'),
    role text NOT NULL CHECK (role IN ('admin', 'operator', 'auditor', 'agent')),
    agent_code text REFERENCES agents (code),
    password_hash text NOT NULL,
    totp_secret bytea,
    disabled boolean NOT NULL DEFAULT false,
    failed_logins integer NOT NULL DEFAULT 0,
    locked_until timestamptz,
    created_at timestamptz NOT NULL DEFAULT now(),
    CHECK ((role = 'agent') = (agent_code IS NOT NULL))
);
