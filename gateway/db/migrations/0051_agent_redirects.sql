-- Redirects of the agent network (CLI.md "Agent network": `agent redirect`; rule
-- "Redirect"): from from_day through until_day (NULL: no end), the shares and
-- rewards agent_code would earn on transactions of merchants in to_code's subtree
-- go to to_code (a descendant of agent_code), the others to the house. Rows are
-- never changed: `--off` is a row with to_code NULL. The redirect in force on a
-- day D is the last row set (highest id) with from_day <= D, if its to_code is
-- set and D <= until_day.
CREATE TABLE agent_redirects (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    agent_code text NOT NULL REFERENCES agents (code),
    to_code text REFERENCES agents (code),
    from_day date NOT NULL,
    until_day date,
    set_by text NOT NULL,
    set_at timestamptz NOT NULL DEFAULT now(),
    CHECK (to_code IS DISTINCT FROM agent_code),
    CHECK (until_day IS NULL OR (to_code IS NOT NULL AND until_day >= from_day))
);
CREATE INDEX agent_redirects_in_force ON agent_redirects (agent_code, from_day DESC, id DESC);
