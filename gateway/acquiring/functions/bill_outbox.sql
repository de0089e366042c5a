-- The engine's side of the biller outbox (docs/bills.md, "The states of a
-- payment"): what a bill payment's and a reversal's recording functions
-- (gw_finish.sql) queue for a biller in the very transaction that moves, or
-- does not move, the money. The table and the forwarder: migration 0035 and
-- gateway/upstream/outbox.py.
--
-- A payment to a biller that is not built in is armed before the biller is
-- asked (BillRecord.cancel_armed: a cancel of its receipt queued and committed,
-- due only after the request's time limit). Its recording then decides:
--   stands    the armed cancel deleted with the postings (gw_bill_disarm); a
--             notice queued for a biller with `notify`;
--   claimed   the cancel already taken by a forwarder: nothing posted, 91;
--   fails     (51, the outcome unknown, a reversal that came first, a closed
--             bill, a risk limit) the cancel due now (gw_bill_cancel_due).
-- A reversal of a standing payment queues its cancel (gw_bill_reversed).

-- Queue a message in the caller's transaction (replaces migration 0035's
-- text): a new pending message due after `p_delay_s` seconds; an existing one
-- never claimed (attempts 0: an armed cancel) becomes due no later than that,
-- its payload updated with this one's (the reason the cancel is now due);
-- one a forwarder has claimed keeps its lease or backoff (making it due at once
-- would let a second forwarder send it while the first still is); a done one
-- is left as it is. Returns the message's id.
CREATE OR REPLACE FUNCTION biller_outbox_enqueue(p_biller text, p_kind text, p_receipt text,
                                                 p_payload jsonb DEFAULT '{}',
                                                 p_delay_s double precision DEFAULT 0) RETURNS bigint
LANGUAGE sql AS $$
    INSERT INTO biller_outbox AS o (biller_code, kind, receipt, payload, next_attempt_at)
    VALUES (p_biller, p_kind, p_receipt, coalesce(p_payload, '{}'),
            clock_timestamp() + make_interval(secs => p_delay_s))
    ON CONFLICT (biller_code, kind, receipt) DO UPDATE
        SET next_attempt_at = CASE WHEN o.status = 'pending' AND o.attempts = 0
                                   THEN least(o.next_attempt_at, EXCLUDED.next_attempt_at)
                                   ELSE o.next_attempt_at END,
            payload = CASE WHEN o.status = 'pending' AND o.attempts = 0 THEN o.payload || EXCLUDED.payload
                           ELSE o.payload END
    RETURNING o.id
$$;

-- A bill payment that does not stand: its armed cancel due now (the biller
-- may have accepted it). Nothing for a payment that was not armed (a built-in
-- biller's side rolls back with the money).
CREATE OR REPLACE FUNCTION gw_bill_cancel_due(p_bill jsonb, p_reason text) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    IF (p_bill->>'cancel_armed')::boolean THEN
        PERFORM biller_outbox_enqueue(p_bill->>'biller_code', 'cancel', p_bill->>'receipt',
                                      jsonb_build_object('reason', p_reason), 0);
    END IF;
END $$;

-- A bill payment about to stand: take its armed cancel back (delete it).
-- False when a forwarder has claimed it (or it is gone): the biller is being
-- told to cancel, so the money must not move. The row lock orders this
-- against a forwarder's claim (FOR UPDATE SKIP LOCKED) either way. True for a
-- payment that was not armed.
CREATE OR REPLACE FUNCTION gw_bill_disarm(p_bill jsonb) RETURNS boolean
LANGUAGE plpgsql AS $$
BEGIN
    IF NOT coalesce((p_bill->>'cancel_armed')::boolean, false) THEN
        RETURN true;
    END IF;
    DELETE FROM biller_outbox
     WHERE biller_code = p_bill->>'biller_code' AND kind = 'cancel' AND receipt = p_bill->>'receipt'
       AND status = 'pending' AND attempts = 0;
    RETURN FOUND;
END $$;

-- A bill payment that stands: a notice for a biller that wants one (`notify`).
CREATE OR REPLACE FUNCTION gw_bill_notice(p jsonb) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    v_bill jsonb := p->'bill';
BEGIN
    IF EXISTS (SELECT 1 FROM billers WHERE code = v_bill->>'biller_code' AND notify) THEN
        PERFORM biller_outbox_enqueue(v_bill->>'biller_code', 'notice', v_bill->>'receipt',
                                      jsonb_strip_nulls(jsonb_build_object(
                                          'account', v_bill->>'account', 'amount_fen', (p->>'amount')::bigint,
                                          'token', v_bill->>'token', 'tid', p->>'tid')), 0);
    END IF;
END $$;

-- A standing bill payment reversed: its cancel queued, unless its biller is
-- built in (its bill and token were put back in the reversal's transaction).
CREATE OR REPLACE FUNCTION gw_bill_reversed(p_biller text, p_receipt text) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM billers WHERE code = p_biller AND connector <> 'builtin') THEN
        PERFORM biller_outbox_enqueue(p_biller, 'cancel', p_receipt, '{"reason": "reversed"}', 0);
    END IF;
END $$;

-- A payment whose recording did not take it (a repeat's or another decline's
-- answer, a request abandoned): its armed cancel due now, if it is still armed
-- (never claimed). An update only: a cancel a standing payment took back stays
-- gone. Returns whether one was made due.
CREATE OR REPLACE FUNCTION gw_bill_cancel_now(p_biller text, p_receipt text) RETURNS boolean
LANGUAGE sql AS $$
    WITH due AS (
        UPDATE biller_outbox SET next_attempt_at = clock_timestamp()
         WHERE biller_code = p_biller AND kind = 'cancel' AND receipt = p_receipt
           AND status = 'pending' AND attempts = 0 AND next_attempt_at > clock_timestamp()
        RETURNING 1)
    SELECT EXISTS (SELECT 1 FROM due)
$$;
