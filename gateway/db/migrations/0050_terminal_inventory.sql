-- Terminal inventory (CLI.md "Agent network", rule "Terminals"): a terminal has an
-- owning agent; it is in stock (no merchant) until bound to a merchant of its owner
-- or of the owner's descendants. bound_at is when it was bound (the activation
-- window and the service fee count from its local day); activated_at when the
-- approval that reached the activation volume was made (never undone).
-- Terminals bound before version 2 count as activated, with no deposit or fee
-- (pre_network).
ALTER TABLE terminals ALTER COLUMN mid DROP NOT NULL;
ALTER TABLE terminals ADD COLUMN owner_agent text REFERENCES agents (code);
ALTER TABLE terminals ADD COLUMN bound_at timestamptz;
ALTER TABLE terminals ADD COLUMN activated_at timestamptz;
ALTER TABLE terminals ADD COLUMN pre_network boolean NOT NULL DEFAULT false;

UPDATE terminals t
   SET owner_agent = m.agent_code, bound_at = t.created_at, activated_at = t.created_at, pre_network = true
  FROM merchants m
 WHERE m.mid = t.mid;

ALTER TABLE terminals ALTER COLUMN owner_agent SET NOT NULL;

-- A terminal added with its merchant is owned by the merchant's agent and bound at
-- once, unless the insert says otherwise.
CREATE FUNCTION terminals_fill_owner() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.mid IS NOT NULL THEN
        IF NEW.owner_agent IS NULL THEN
            SELECT agent_code INTO NEW.owner_agent FROM merchants WHERE mid = NEW.mid;
        END IF;
        NEW.bound_at := COALESCE(NEW.bound_at, now());
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER terminals_fill_owner BEFORE INSERT ON terminals
    FOR EACH ROW EXECUTE FUNCTION terminals_fill_owner();
ALTER TABLE terminals ADD CONSTRAINT terminals_bound_check CHECK ((mid IS NULL) = (bound_at IS NULL));
ALTER TABLE terminals ADD CONSTRAINT terminals_activated_bound_check CHECK (activated_at IS NULL OR mid IS NOT NULL);
CREATE INDEX terminals_owner_agent ON terminals (owner_agent);
