-- Who changed what: one row per entity an operator's command (or the demo,
-- or later the back office and the daily jobs) changed, written by the
-- service layer in the same transaction as the change. `before` and `after`
-- are the entity's state as JSON objects ({} where it did not exist) and
-- never hold a secret (PIN, key, full PAN, password). Rows are never updated.
CREATE TABLE audit_events (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at timestamptz NOT NULL DEFAULT now(),
    actor text NOT NULL CHECK (actor <> ''),
    action text NOT NULL CHECK (action ~ '^[a-z]+\.[a-z_]+$'),
    entity text NOT NULL CHECK (entity ~ '^[a-z]+:.+$'),
    before jsonb NOT NULL CHECK (jsonb_typeof(before) = 'object'),
    after jsonb NOT NULL CHECK (jsonb_typeof(after) = 'object')
);
CREATE INDEX audit_events_at ON audit_events (at, id);
CREATE INDEX audit_events_entity ON audit_events (entity, at, id);
CREATE INDEX audit_events_actor ON audit_events (actor, at, id);
