-- The biller outbox (store-and-forward): messages to billers whose effect must
-- happen after our commit, written in the same transaction that decides them,
-- and sent by the forwarder (gateway.upstream.outbox) until the biller
-- acknowledges. At most one message per (biller, kind, receipt): queuing it
-- again changes nothing but, for a pending one, makes it due at once.
--
-- `next_attempt_at` is both the backoff and the lease: a forwarder claims a
-- due message by moving it past the end of its send (FOR UPDATE SKIP LOCKED),
-- so that gateways sharing this database never send one message at once; a
-- forwarder killed in the middle of a send leaves it due again after the lease.
CREATE TABLE biller_outbox (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    biller_code text NOT NULL REFERENCES billers (code),
    kind text NOT NULL CHECK (kind IN ('cancel', 'notice')),
    receipt text NOT NULL,
    payload jsonb NOT NULL DEFAULT '{}',
    status text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'done')),
    attempts integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    last_error text,
    created_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    next_attempt_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    done_at timestamptz,
    UNIQUE (biller_code, kind, receipt),
    CHECK ((status = 'done') = (done_at IS NOT NULL))
);
-- The forwarder's claim: due pending messages, oldest due first.
CREATE INDEX biller_outbox_due ON biller_outbox (next_attempt_at, id) WHERE status = 'pending';
-- Messages of one receipt go in the order they were queued (a notice before a later cancel).
CREATE INDEX biller_outbox_receipt ON biller_outbox (biller_code, receipt, id) WHERE status = 'pending';

-- Queue a message in the caller's transaction (the engine's PL/pgSQL can call
-- it beside the money, in the same round trip): a new pending message due
-- after `p_delay_s` seconds; an existing pending one becomes due no later than
-- that; a done one is left as it is. Returns the message's id.
CREATE FUNCTION biller_outbox_enqueue(p_biller text, p_kind text, p_receipt text, p_payload jsonb DEFAULT '{}',
                                      p_delay_s double precision DEFAULT 0) RETURNS bigint
LANGUAGE sql AS $$
    INSERT INTO biller_outbox AS o (biller_code, kind, receipt, payload, next_attempt_at)
    VALUES (p_biller, p_kind, p_receipt, coalesce(p_payload, '{}'),
            clock_timestamp() + make_interval(secs => p_delay_s))
    ON CONFLICT (biller_code, kind, receipt) DO UPDATE
        SET next_attempt_at = CASE WHEN o.status = 'pending'
                                   THEN least(o.next_attempt_at, EXCLUDED.next_attempt_at)
                                   ELSE o.next_attempt_at END
    RETURNING o.id
$$;
