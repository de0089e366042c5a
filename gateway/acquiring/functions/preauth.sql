-- The pre-authorization family's recording functions (WIRE.md 9.3, 9.9),
-- called by gw_finish's dispatcher under its locks: re-applied by
-- `posgw db migrate` whenever this file changes. A pre-authorization's hold
-- is the ledger's (ledger/functions/holds.sql), placed under its request's
-- key; gw_preauths names its current hold. Every status change goes through
-- gw_set_status. Lock order: the gw_transactions rows (the original first),
-- then the ledger's holds, then its accounts.

-- A pre-authorization: unless its reversal came first, a hold of its amount
-- from the card for the merchant until expires_at, under a fresh 6-digit
-- auth code no pre-authorization of the card still within its hold days has
-- (values.auth_id); the card's available balance short: insufficient_funds.
CREATE OR REPLACE FUNCTION gw_record_preauth(p jsonb, p_key text, p_reversed_first boolean) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    v_card_id bigint := (p->>'card_id')::bigint;
    v_code text;
    v_result text;
BEGIN
    IF p_reversed_first THEN
        RETURN '{"outcome": "original_not_found"}';
    END IF;
    PERFORM pg_advisory_xact_lock(hashtextextended('preauth:card:' || v_card_id::text, 0));
    LOOP
        v_code := lpad(floor(random() * 1000000)::integer::text, 6, '0');
        EXIT WHEN NOT EXISTS (SELECT 1 FROM gw_preauths
                               WHERE card_id = v_card_id AND auth_code = v_code AND expires_at > now());
    END LOOP;
    v_result := ledger_hold(p_key, (p->>'card_account_id')::bigint, (p->>'merchant_account_id')::bigint,
                            (p->>'amount')::bigint, 'preauth', (p->>'expires_at')::timestamptz);
    IF v_result = 'exceeds_credits' THEN
        RETURN '{"outcome": "insufficient_funds"}';
    ELSIF v_result <> 'ok' THEN
        RAISE EXCEPTION 'pre-authorization hold failed: %', v_result;
    END IF;
    RETURN jsonb_build_object('outcome', 'approved', 'values', jsonb_build_object('auth_id', v_code));
END $$;

-- An approved pre-authorization, once recorded (p_txn_id): what finds it.
CREATE OR REPLACE FUNCTION gw_preauth_placed(p jsonb, p_txn_id bigint, p_key text, p_answer jsonb) RETURNS void
LANGUAGE sql AS $$
    INSERT INTO gw_preauths (txn_id, mid, card_id, auth_code, local_date, amount_fen, hold_key, expires_at)
    VALUES (p_txn_id, p->>'mid', (p->>'card_id')::bigint, p_answer->>'auth_id', p_answer->>'local_date',
            (p->>'amount')::bigint, p_key, (p->>'expires_at')::timestamptz)
$$;

-- The pre-authorization p_id, locked, with its hold's accounts; NULL fields
-- when there is none.
CREATE OR REPLACE FUNCTION gw_lock_preauth(p_id bigint) RETURNS TABLE (
    id bigint, status text, card_id bigint, amount_fen bigint, hold_key text, expires_at timestamptz,
    card_account_id bigint, merchant_account_id bigint)
LANGUAGE sql AS $$
    SELECT o.id, o.status, o.card_id, a.amount_fen, a.hold_key, a.expires_at, h.debit_account_id,
           h.credit_account_id
      FROM gw_transactions o
      JOIN gw_preauths a ON a.txn_id = o.id
      JOIN ledger_postings lp ON lp.idempotency_key = a.hold_key
      JOIN ledger_holds h ON h.posting_id = lp.id
     WHERE o.id = p_id AND o.kind = 'preauth'
       FOR UPDATE OF o
$$;

-- A pre-authorization whose hold a resolution found expired: expired too.
CREATE OR REPLACE FUNCTION gw_preauth_expired(p_id bigint) RETURNS jsonb
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM gw_set_status(p_id, 'approved', 'expired');
    RETURN jsonb_build_object('outcome', 'original_not_found', 'original_id', p_id);
END $$;

-- The pre-authorization p_id (locked, just made approved again) holds its
-- amount once more, under p_key, until its original expiry: 'ok'; past it,
-- 'expired' (it stays expired); the card's available balance short,
-- 'not_covered' (not restored: expired, for the operator's exceptions).
CREATE OR REPLACE FUNCTION gw_preauth_hold_again(p_id bigint, p_key text) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    v_preauth record;
    v_result text;
BEGIN
    SELECT * INTO v_preauth FROM gw_lock_preauth(p_id);
    IF v_preauth.expires_at <= now() THEN
        PERFORM gw_set_status(p_id, 'approved', 'expired');
        RETURN 'expired';
    END IF;
    v_result := ledger_hold(p_key, v_preauth.card_account_id, v_preauth.merchant_account_id, v_preauth.amount_fen,
                            'preauth', v_preauth.expires_at);
    IF v_result = 'ok' THEN
        UPDATE gw_preauths SET hold_key = p_key WHERE txn_id = p_id;
        RETURN 'ok';
    ELSIF v_result = 'exceeds_credits' THEN
        PERFORM gw_set_status(p_id, 'approved', 'expired');
        RETURN 'not_covered';
    END IF;
    RAISE EXCEPTION 'pre-authorization hold again failed: %', v_result;
END $$;

-- A cancel: the open pre-authorization (else original_not_found) of the
-- same amount (else amount_mismatch, not stored), its hold voided.
CREATE OR REPLACE FUNCTION gw_record_preauth_cancel(p jsonb, p_key text, p_reversed_first boolean) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    v_preauth record;
    v_result text;
BEGIN
    IF p_reversed_first THEN
        RETURN '{"outcome": "original_not_found"}';
    END IF;
    SELECT * INTO v_preauth FROM gw_lock_preauth((p->>'original_id')::bigint);
    IF v_preauth.status IS DISTINCT FROM 'approved' OR v_preauth.card_id IS DISTINCT FROM (p->>'card_id')::bigint THEN
        RETURN jsonb_build_object('outcome', 'original_not_found', 'original_id', v_preauth.id);
    ELSIF v_preauth.amount_fen <> (p->>'amount')::bigint THEN
        RETURN '{"outcome": "amount_mismatch", "unstored": true}';
    END IF;
    v_result := ledger_void_hold(p_key, v_preauth.hold_key);
    IF v_result = 'hold_expired' THEN
        RETURN gw_preauth_expired(v_preauth.id);
    ELSIF v_result <> 'ok' THEN
        RAISE EXCEPTION 'cancel failed: %', v_result;
    END IF;
    PERFORM gw_set_status(v_preauth.id, 'approved', 'cancelled');
    RETURN jsonb_build_object('outcome', 'approved', 'original_id', v_preauth.id);
END $$;

-- A completion (request or advice): the open pre-authorization (else
-- original_not_found), the amount up to amount_max (else amount_mismatch, not
-- stored), a counted risk limit; its hold posted as the transfers
-- (insufficient_funds when the excess over the hold is not available).
CREATE OR REPLACE FUNCTION gw_record_completion(p jsonb, p_key text, p_reversed_first boolean) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    v_preauth record;
    v_risk jsonb;
    v_result text;
BEGIN
    IF p_reversed_first THEN
        RETURN '{"outcome": "original_not_found"}';
    END IF;
    SELECT * INTO v_preauth FROM gw_lock_preauth((p->>'original_id')::bigint);
    IF v_preauth.status IS DISTINCT FROM 'approved' OR v_preauth.card_id IS DISTINCT FROM (p->>'card_id')::bigint THEN
        RETURN jsonb_build_object('outcome', 'original_not_found', 'original_id', v_preauth.id);
    ELSIF (p->>'amount')::bigint > (p->>'amount_max')::bigint THEN
        RETURN '{"outcome": "amount_mismatch", "unstored": true}';
    END IF;
    IF p ? 'risk' THEN
        v_risk := gw_risk_check(p->'risk', (p->>'amount')::bigint);
        IF v_risk IS NOT NULL THEN
            RETURN jsonb_build_object('outcome', v_risk->>'outcome', 'risk', v_risk);
        END IF;
    END IF;
    v_result := ledger_post_hold(p_key, v_preauth.hold_key, p->'transfers', (p->>'amount_max')::bigint);
    IF v_result = 'hold_expired' THEN
        RETURN gw_preauth_expired(v_preauth.id);
    ELSIF v_result = 'exceeds_credits' THEN
        RETURN jsonb_build_object('outcome', 'insufficient_funds', 'original_id', v_preauth.id);
    ELSIF v_result <> 'ok' THEN
        RAISE EXCEPTION 'completion posting failed: %', v_result;
    END IF;
    PERFORM gw_set_status(v_preauth.id, 'approved', 'completed');
    RETURN jsonb_build_object('outcome', 'approved', 'posting_key', p_key, 'original_id', v_preauth.id);
END $$;

-- A completion void: the approved completion (else original_not_found), its
-- posting reversed (insufficient_funds when the merchant's account is
-- short), its counters given back; its pre-authorization open again with a
-- hold until its original expiry (not restored: the exception says why).
CREATE OR REPLACE FUNCTION gw_record_completion_void(p jsonb, p_key text) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    v_completion record;
    v_result text;
    v_hold text;
BEGIN
    SELECT id, tid, status, posting_key, original_id, card_id, amount_fen, risk_day INTO v_completion
      FROM gw_transactions WHERE id = (p->>'original_id')::bigint FOR UPDATE;
    IF v_completion.status IS DISTINCT FROM 'approved' THEN
        RETURN jsonb_build_object('outcome', 'original_not_found', 'original_id', v_completion.id);
    END IF;
    PERFORM 1 FROM gw_lock_preauth(v_completion.original_id);
    v_result := ledger_reverse(p_key, v_completion.posting_key);
    IF v_result = 'exceeds_credits' THEN
        RETURN jsonb_build_object('outcome', 'insufficient_funds', 'original_id', v_completion.id);
    ELSIF v_result <> 'ok' THEN
        RAISE EXCEPTION 'completion void posting failed: %', v_result;
    END IF;
    PERFORM gw_set_status(v_completion.id, 'approved', 'voided');
    IF v_completion.risk_day IS NOT NULL THEN
        PERFORM gw_risk_count(v_completion.tid, v_completion.card_id, v_completion.risk_day,
                              v_completion.amount_fen, -1);
    END IF;
    PERFORM gw_set_status(v_completion.original_id, 'completed', 'approved');
    v_hold := gw_preauth_hold_again(v_completion.original_id, p_key || ':hold');
    RETURN jsonb_strip_nulls(jsonb_build_object(
        'outcome', 'approved', 'posting_key', p_key, 'original_id', v_completion.id,
        'exception', CASE WHEN v_hold = 'not_covered' THEN 'preauth_hold_not_restored' END));
END $$;

-- A reversal of the family (called by gw_record_reversal for an approved
-- original, locked, of one of its kinds): of a pre-authorization, its hold
-- voided; of a cancel, the hold placed again; of a completion, its money
-- back to the card and the pre-authorization open again; of a completion
-- void, the completion standing again (its money moved again, the hold it
-- had re-opened voided). Approved whatever happens; what could not be done
-- is an exception.
CREATE OR REPLACE FUNCTION gw_reverse_preauth_family(p_key text, p_original_id bigint) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    v_original record;
    v_preauth record;
    v_completion record;
    v_result text;
    v_exception text;
BEGIN
    SELECT id, tid, kind, posting_key, original_id, card_id, amount_fen, risk_day INTO v_original
      FROM gw_transactions WHERE id = p_original_id;
    IF v_original.kind = 'preauth' THEN
        SELECT * INTO v_preauth FROM gw_lock_preauth(v_original.id);
        v_result := ledger_void_hold(p_key, v_preauth.hold_key);
        IF v_result = 'hold_expired' THEN
            PERFORM gw_set_status(v_original.id, 'approved', 'expired');
        ELSIF v_result = 'ok' THEN
            PERFORM gw_set_status(v_original.id, 'approved', 'reversed');
        ELSE
            RAISE EXCEPTION 'pre-authorization reversal failed: %', v_result;
        END IF;
    ELSIF v_original.kind = 'preauth_cancel' THEN
        PERFORM 1 FROM gw_lock_preauth(v_original.original_id);
        PERFORM gw_set_status(v_original.id, 'approved', 'reversed');
        PERFORM gw_set_status(v_original.original_id, 'cancelled', 'approved');
        v_result := gw_preauth_hold_again(v_original.original_id, p_key);
        v_exception := CASE WHEN v_result = 'not_covered' THEN 'preauth_hold_not_restored' END;
    ELSIF v_original.kind IN ('completion', 'completion_advice') THEN
        PERFORM 1 FROM gw_lock_preauth(v_original.original_id);
        v_result := ledger_reverse(p_key, v_original.posting_key);
        IF v_result = 'exceeds_credits' THEN
            RETURN jsonb_build_object('outcome', 'approved', 'original_id', v_original.id,
                                      'exception', 'completion_reversal_not_covered');
        ELSIF v_result <> 'ok' THEN
            RAISE EXCEPTION 'completion reversal failed: %', v_result;
        END IF;
        PERFORM gw_set_status(v_original.id, 'approved', 'reversed');
        IF v_original.risk_day IS NOT NULL THEN
            PERFORM gw_risk_count(v_original.tid, v_original.card_id, v_original.risk_day, v_original.amount_fen, -1);
        END IF;
        PERFORM gw_set_status(v_original.original_id, 'completed', 'approved');
        v_result := gw_preauth_hold_again(v_original.original_id, p_key || ':hold');
        v_exception := CASE WHEN v_result = 'not_covered' THEN 'preauth_hold_not_restored' END;
    ELSIF v_original.kind = 'completion_void' THEN
        SELECT id, status, original_id, posting_key INTO v_completion FROM gw_transactions
         WHERE id = v_original.original_id FOR UPDATE;
        SELECT * INTO v_preauth FROM gw_lock_preauth(v_completion.original_id);
        IF v_preauth.status <> 'approved' THEN
            -- Opened again, then completed, cancelled or expired since: nothing to undo.
            RETURN jsonb_build_object('outcome', 'approved', 'original_id', v_original.id,
                                      'exception', 'completion_void_reversal_superseded');
        END IF;
        v_result := ledger_void_hold(p_key || ':release', v_preauth.hold_key);
        IF v_result NOT IN ('ok', 'hold_expired') THEN
            RAISE EXCEPTION 'completion void reversal failed: %', v_result;
        END IF;
        v_result := ledger_reverse(p_key, v_original.posting_key);
        IF v_result = 'exceeds_credits' THEN
            -- The card can no longer cover the completion: it stays voided, the
            -- pre-authorization open with its hold placed again.
            PERFORM gw_preauth_hold_again(v_preauth.id, p_key || ':hold');
            RETURN jsonb_build_object('outcome', 'approved', 'original_id', v_original.id,
                                      'exception', 'completion_void_reversal_not_covered');
        ELSIF v_result <> 'ok' THEN
            RAISE EXCEPTION 'completion void reversal posting failed: %', v_result;
        END IF;
        PERFORM gw_set_status(v_original.id, 'approved', 'reversed');
        PERFORM gw_set_status(v_completion.id, 'voided', 'approved');
        UPDATE gw_transactions SET posting_key = p_key WHERE id = v_completion.id;
        PERFORM gw_set_status(v_preauth.id, 'approved', 'completed');
    END IF;
    RETURN jsonb_strip_nulls(jsonb_build_object('outcome', 'approved', 'original_id', v_original.id,
                                                'posting_key', p_key, 'exception', v_exception));
END $$;

-- Expire up to p_limit open pre-authorizations whose hold's time has come at
-- p_now, each once however many gateways run this at the same time: their
-- rows locked first (those another transaction holds are skipped: it is
-- completing, cancelling or expiring them), then their holds expired in the
-- ledger, then their status. Returns how many expired.
CREATE OR REPLACE FUNCTION gw_expire_preauths(p_now timestamptz, p_limit integer) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    v_due record;
    v_expired text[];
BEGIN
    SELECT array_agg(o.id) AS ids, array_agg(a.hold_key) AS keys INTO v_due
      FROM (SELECT o.id FROM gw_transactions o JOIN gw_preauths a ON a.txn_id = o.id
             WHERE a.expires_at <= p_now AND o.status = 'approved' AND o.kind = 'preauth'
             ORDER BY a.expires_at, o.id LIMIT p_limit
               FOR UPDATE OF o SKIP LOCKED) o
      JOIN gw_preauths a ON a.txn_id = o.id;
    IF v_due.ids IS NULL THEN
        RETURN 0;
    END IF;
    v_expired := ledger_expire_holds_by_key(v_due.keys, p_now);
    PERFORM gw_set_status(a.txn_id, 'approved', 'expired')
       FROM gw_preauths a WHERE a.txn_id = ANY (v_due.ids) AND a.hold_key = ANY (v_expired);
    RETURN coalesce(cardinality(v_expired), 0);
END $$;
