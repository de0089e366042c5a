-- The gateway's transaction function: re-applied by `posgw db migrate` whenever this file changes.

-- A request's keys, the same wherever they are built: its ledger posting's
-- idempotency key, the advisory lock that serialises it with its repeats and
-- its reversal, and its batch's lock. (The planner inlines them: their bodies
-- are immutable, hence the explicit ::text.)
CREATE OR REPLACE FUNCTION gw_posting_key(p_tid text, p_batch integer, p_stan text, p_class text) RETURNS text
LANGUAGE sql IMMUTABLE AS $$ SELECT p_tid || ':' || p_batch::text || ':' || p_stan || ':' || p_class $$;

CREATE OR REPLACE FUNCTION gw_request_lock(p_tid text, p_batch integer, p_stan text) RETURNS bigint
LANGUAGE sql IMMUTABLE AS $$ SELECT hashtextextended(p_tid || ':' || p_batch::text || ':' || p_stan, 0) $$;

CREATE OR REPLACE FUNCTION gw_batch_lock(p_tid text, p_batch integer) RETURNS bigint
LANGUAGE sql IMMUTABLE AS $$ SELECT hashtextextended('batch:' || p_tid || ':' || p_batch::text, 0) $$;

-- Change a recorded transaction's status from p_from to p_to: a change the
-- one transition table (gw_status_transitions) allows, of a row in p_from;
-- anything else raises, and the request's whole recording with it.
CREATE OR REPLACE FUNCTION gw_set_status(p_id bigint, p_from text, p_to text) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM gw_status_transitions WHERE from_status = p_from AND to_status = p_to) THEN
        RAISE EXCEPTION 'no status transition from % to % (gw_transactions %)', p_from, p_to, p_id
              USING ERRCODE = 'check_violation';
    END IF;
    UPDATE gw_transactions SET status = p_to WHERE id = p_id AND status = p_from;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'gw_transactions % is not %', p_id, p_from USING ERRCODE = 'check_violation';
    END IF;
END $$;

-- Record a financial request's outcome, moving its money, in one round trip:
-- the dispatcher. It takes the locks, answers a repeat (or a conflict) from
-- what is stored under the key, turns a request into a decline when its
-- batch was settled meanwhile, records what a PIN check leaves, and hands
-- the operation to its recording function (gw_record_<op>), which decides:
-- it returns {outcome (a name of gateway.acquiring.outcomes: approved,
-- insufficient_funds, ...), posting_key, original_id, exception, values (raw
-- values the answer carries on approval: balance_fen, float_fen,
-- batch_totals), risk (the rule that declined it), reversed, unstored}. The
-- dispatcher stores the answer and the row.
--
-- p: an operation of gateway.acquiring.operations, as its as_json() sends it
--    (one dataclass per op: decline, balance, purchase, void, reversal,
--    bill_inquiry, bill_payment, settlement; each documents its keys).
-- Returns {status: new|repeat|conflict, stored: bool, response: the answer
-- [, reversed: {kind, biller_code, receipt}][, risk_rule]}. The answer, as
-- stored in gw_transactions.response: the stamp (rrn, local_time,
-- local_date), the outcome, and on approval the operation's approval fields
-- and the values; the gateway makes the response from it (its code from the
-- outcome, fields 54, 48 and the FB tag from the values), the first time
-- and for every repeat. (Answers stored before outcomes were named carry a
-- response_code and the fields as sent, and are sent as stored.)
--
-- An advisory lock on (terminal, batch, STAN) serialises a request with its
-- repeats and with its reversal, so a repeat waits for its original and a
-- reversal racing its original sees it either wholly done or not at all.
CREATE OR REPLACE FUNCTION gw_finish(p jsonb) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    v_tid text := p->>'tid';
    v_batch integer := (p->>'batch')::integer;
    v_stan text := p->>'stan';
    v_class text := p->>'mti_class';
    v_op text := p->>'op';
    v_amount bigint := (p->>'amount')::bigint;
    v_card_id bigint := (p->>'card_id')::bigint;
    v_key text := gw_posting_key(v_tid, v_batch, v_stan, v_class);
    v_batch_lock bigint := gw_batch_lock(v_tid, v_batch);
    v_bill jsonb := p->'bill';
    v_existing record;
    v_outcome text;  -- a decline's, when the dispatcher decides it
    v_tries integer;
    v_d jsonb;
    v_answer jsonb;
    v_risk jsonb;
    v_risk_day date;
    v_txn_id bigint;
BEGIN
    -- The request's own lock, then its batch's: shared, but taken alone by the
    -- batch's settlement, so that a request racing the settlement is either in
    -- its totals or sees the batch settled.
    PERFORM pg_advisory_xact_lock(gw_request_lock(v_tid, v_batch, v_stan)),
            CASE WHEN v_op = 'settlement' THEN pg_advisory_xact_lock(v_batch_lock)
                 ELSE pg_advisory_xact_lock_shared(v_batch_lock) END;
    -- Under both locks (this statement's snapshot is taken after them): an
    -- earlier answer under the key, a reversal that overtook its original,
    -- and the batch's settlement.
    SELECT tx.content_hash, tx.response,
           v_op IN ('purchase', 'bill_payment', 'refund', 'preauth', 'preauth_cancel', 'completion',
                    'voucher_sale') AND EXISTS (
               SELECT 1 FROM gw_transactions r
                WHERE r.tid = v_tid AND r.batch = v_batch AND r.stan = v_stan AND r.mti_class = '0400'
                  AND r.processing_code = p->>'processing_code') AS reversed_first,
           EXISTS (SELECT 1 FROM gw_batches WHERE tid = v_tid AND batch = v_batch) AS batch_settled
      INTO v_existing
      FROM (VALUES (1)) one
      LEFT JOIN gw_transactions tx
             ON tx.tid = v_tid AND tx.batch = v_batch AND tx.stan = v_stan AND tx.mti_class = v_class;
    IF v_existing.content_hash IS NOT NULL THEN
        IF v_existing.content_hash = p->>'content' THEN
            -- a WAL record, so that this transaction's COMMIT waits for the
            -- synchronous standby, and with it the stored answer's own COMMIT
            -- (Store.confirm_replicated says why)
            PERFORM pg_logical_emit_message(true, 'posgw', 'repeat');
            RETURN jsonb_build_object('status', 'repeat', 'stored', true, 'response', v_existing.response);
        END IF;
        RETURN jsonb_build_object('status', 'conflict', 'stored', false);
    END IF;
    IF v_op <> 'decline' AND v_existing.batch_settled THEN
        v_op := 'decline';  -- the batch was settled while this request was on its way
        v_outcome := 'batch_settled';
    END IF;

    -- A right PIN restarts the count; the third wrong one in a row blocks the PIN.
    IF p->>'pin' = 'ok' THEN
        UPDATE cards SET pin_tries = 0 WHERE id = v_card_id AND pin_tries <> 0;
    ELSIF p->>'pin' = 'wrong' THEN
        UPDATE cards SET pin_tries = pin_tries + 1, pin_blocked = pin_blocked OR pin_tries + 1 >= 3
         WHERE id = v_card_id RETURNING pin_tries INTO v_tries;
        v_outcome := CASE WHEN v_tries >= 3 THEN 'pin_tries_exceeded' ELSE 'pin_incorrect' END;
    END IF;

    v_d := CASE v_op
        WHEN 'decline' THEN gw_record_decline(p, coalesce(v_outcome, p->>'outcome'))
        WHEN 'balance' THEN gw_record_balance(p)
        WHEN 'purchase' THEN gw_record_purchase(p, v_key, v_existing.reversed_first)
        WHEN 'void' THEN gw_record_void(p, v_key)
        WHEN 'reversal' THEN gw_record_reversal(p, v_key)
        WHEN 'bill_inquiry' THEN gw_record_bill_inquiry(p)
        WHEN 'bill_payment' THEN gw_record_bill_payment(p, v_key, v_existing.reversed_first)
        WHEN 'voucher_sale' THEN gw_record_voucher_sale(p, v_key, v_existing.reversed_first)  -- vouchers.sql
        WHEN 'settlement' THEN gw_record_settlement(p)
        WHEN 'refund' THEN gw_record_refund(p, v_key, v_existing.reversed_first)
        WHEN 'preauth' THEN gw_record_preauth(p, v_key, v_existing.reversed_first)
        WHEN 'preauth_cancel' THEN gw_record_preauth_cancel(p, v_key, v_existing.reversed_first)
        WHEN 'completion' THEN gw_record_completion(p, v_key, v_existing.reversed_first)
        WHEN 'completion_void' THEN gw_record_completion_void(p, v_key)
    END;
    IF v_d IS NULL THEN
        RAISE EXCEPTION 'unknown op %', v_op;
    END IF;
    v_outcome := v_d->>'outcome';
    v_answer := p->'response' || jsonb_build_object('outcome', v_outcome);
    IF v_d ? 'unstored' THEN
        RETURN jsonb_build_object('status', 'new', 'stored', false, 'response', v_answer);
    END IF;

    IF v_outcome = 'approved' THEN
        v_answer := v_answer || coalesce(p->'approval', '{}') || coalesce(v_d->'values', '{}');
        IF p ? 'risk' AND v_op IN ('purchase', 'bill_payment', 'completion', 'voucher_sale') THEN
            v_risk_day := (p->'risk'->>'day')::date;
            PERFORM gw_risk_count(v_tid, v_card_id, v_risk_day, v_amount, 1);
        END IF;
    END IF;
    v_risk := v_d->'risk';
    IF v_risk IS NOT NULL THEN
        INSERT INTO risk_events (tid, card_hash, rule, response_code, risk_values)
        VALUES (v_tid, coalesce(v_risk->>'card_hash', p->'risk'->>'card_hash'), v_risk->>'rule',
                gw_response_code(v_outcome), coalesce(v_risk->'values', '{}'));
    END IF;
    INSERT INTO gw_transactions (tid, batch, stan, mti_class, kind, processing_code, content_hash, response,
                                 response_code, status, amount_fen, card_id, rrn, local_date, posting_key,
                                 original_id, exception, biller_code, bill_account, receipt, commission_fen,
                                 agent_code, paid_in_cash, latitude, longitude, risk_day)
    VALUES (v_tid, v_batch, v_stan, v_class, p->>'kind', p->>'processing_code', p->>'content', v_answer,
            gw_response_code(v_outcome), CASE WHEN v_outcome = 'approved' THEN 'approved' ELSE 'declined' END,
            v_amount, v_card_id, v_answer->>'rrn', v_answer->>'local_date', v_d->>'posting_key',
            (v_d->>'original_id')::bigint, v_d->>'exception', v_bill->>'biller_code', v_bill->>'account',
            v_bill->>'receipt', (v_bill->>'commission_fen')::bigint, v_bill->>'agent_code',
            v_bill ? 'float_account_id', (p->'position'->>'lat')::double precision,
            (p->'position'->>'lon')::double precision, v_risk_day)
    RETURNING id INTO v_txn_id;

    IF v_op = 'bill_payment' AND v_outcome = 'approved' THEN
        PERFORM gw_bill_paid(p, v_txn_id);
    ELSIF v_op = 'voucher_sale' AND v_outcome = 'approved' THEN
        PERFORM gw_voucher_sold(p, v_txn_id);
    ELSIF v_op = 'preauth' AND v_outcome = 'approved' THEN
        PERFORM gw_preauth_placed(p, v_txn_id, v_key, v_answer);
    END IF;
    RETURN jsonb_build_object('status', 'new', 'stored', true, 'response', v_answer, 'reversed', v_d->'reversed',
                              'risk_rule', v_risk->>'rule');
END $$;

-- The recording functions, one per operation, called by gw_finish under its
-- locks once the request is known to be new (their decision: see gw_finish).

-- A decline the gateway decided (or the dispatcher: a PIN, a settled batch),
-- with the risk rule that declined it, if one did.
CREATE OR REPLACE FUNCTION gw_record_decline(p jsonb, p_outcome text) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT jsonb_strip_nulls(jsonb_build_object('outcome', p_outcome, 'risk', p->'risk_event'))
$$;

-- A balance inquiry: the card account's available balance (its balance less
-- its open holds, WIRE.md 9.8).
CREATE OR REPLACE FUNCTION gw_record_balance(p jsonb) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object('outcome', 'approved', 'values', jsonb_build_object('balance_fen',
                              credits_posted - debits_posted - debits_pending))
      FROM ledger_accounts WHERE id = (p->>'card_account_id')::bigint
$$;

-- A purchase: its transfers posted, unless its reversal came first or a
-- counted risk limit declines it; the card short of the amount: insufficient_funds.
CREATE OR REPLACE FUNCTION gw_record_purchase(p jsonb, p_key text, p_reversed_first boolean) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    v_risk jsonb;
    v_result text;
BEGIN
    IF p_reversed_first THEN
        RETURN '{"outcome": "original_not_found"}';  -- its reversal came first
    END IF;
    v_risk := CASE WHEN p ? 'risk' THEN gw_risk_check(p->'risk', (p->>'amount')::bigint) END;
    IF v_risk IS NOT NULL THEN
        RETURN jsonb_build_object('outcome', v_risk->>'outcome', 'risk', v_risk);
    END IF;
    v_result := ledger_post(p_key, p->'transfers');
    IF v_result = 'ok' THEN
        RETURN jsonb_build_object('outcome', 'approved', 'posting_key', p_key);
    ELSIF v_result = 'exceeds_credits' THEN
        RETURN '{"outcome": "insufficient_funds"}';
    END IF;
    RAISE EXCEPTION 'purchase posting failed: %', v_result;
END $$;

-- A void: the approved purchase's posting reversed, its counters given back.
CREATE OR REPLACE FUNCTION gw_record_void(p jsonb, p_key text) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    v_original record;
    v_result text;
BEGIN
    SELECT id, tid, status, posting_key, card_id, amount_fen, risk_day INTO v_original FROM gw_transactions
     WHERE id = (p->>'original_id')::bigint FOR UPDATE;
    IF v_original.status <> 'approved' THEN
        RETURN jsonb_build_object('outcome', 'original_not_found', 'original_id', v_original.id);
    END IF;
    v_result := ledger_reverse(p_key, v_original.posting_key);
    IF v_result <> 'ok' THEN
        RAISE EXCEPTION 'void posting failed: %', v_result;
    END IF;
    PERFORM gw_set_status(v_original.id, 'approved', 'voided');
    IF v_original.risk_day IS NOT NULL THEN
        PERFORM gw_risk_count(v_original.tid, v_original.card_id, v_original.risk_day, v_original.amount_fen, -1);
    END IF;
    RETURN jsonb_build_object('outcome', 'approved', 'posting_key', p_key, 'original_id', v_original.id);
END $$;

-- A refund (WIRE.md 9.2): unless its reversal came first, its original
-- locked, and checked again under the lock (requests on one original are
-- serialised, 9.9): still a refundable purchase or completion (else
-- original_not_found), the amount within what its approved refunds left
-- (else amount_mismatch, not stored); its transfers, merchant to card,
-- posted (insufficient_funds when the merchant's account is short); the
-- original marked refunded.
CREATE OR REPLACE FUNCTION gw_record_refund(p jsonb, p_key text, p_reversed_first boolean) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    v_original record;
    v_refunded bigint;
    v_result text;
BEGIN
    IF p_reversed_first THEN
        RETURN '{"outcome": "original_not_found"}';  -- its reversal came first
    END IF;
    SELECT id, status, amount_fen, card_id INTO v_original FROM gw_transactions
     WHERE id = (p->>'original_id')::bigint FOR UPDATE;
    IF v_original.status NOT IN ('approved', 'refunded') OR v_original.card_id IS DISTINCT FROM (p->>'card_id')::bigint
    THEN
        RETURN jsonb_build_object('outcome', 'original_not_found', 'original_id', v_original.id);
    END IF;
    SELECT coalesce(sum(amount_fen), 0) INTO v_refunded FROM gw_transactions
     WHERE original_id = v_original.id AND kind = 'refund' AND status = 'approved';
    IF (p->>'amount')::bigint > v_original.amount_fen - v_refunded THEN
        RETURN '{"outcome": "amount_mismatch", "unstored": true}';
    END IF;
    v_result := ledger_post(p_key, p->'transfers');
    IF v_result = 'exceeds_credits' THEN
        RETURN jsonb_build_object('outcome', 'insufficient_funds', 'original_id', v_original.id);
    ELSIF v_result <> 'ok' THEN
        RAISE EXCEPTION 'refund posting failed: %', v_result;
    END IF;
    IF v_original.status = 'approved' THEN
        PERFORM gw_set_status(v_original.id, 'approved', 'refunded');
    END IF;
    RETURN jsonb_build_object('outcome', 'approved', 'posting_key', p_key, 'original_id', v_original.id);
END $$;

-- A reversal: approved whatever it finds. The request under its key (MTI
-- class 0200), if approved, is undone: its posting reversed, its counters
-- given back, a bill payment's bill open again and its token void (and
-- named in 'reversed', for the biller's connector), a void's purchase
-- standing again. An amount that is not the original's: amount_mismatch,
-- not stored (the terminal may send the same STAN again).
CREATE OR REPLACE FUNCTION gw_record_reversal(p jsonb, p_key text) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    v_tid text := p->>'tid';
    v_original record;
    v_purchase record;
    v_result text;
    v_reversed jsonb;
BEGIN
    SELECT id, tid, kind, status, amount_fen, posting_key, original_id, biller_code, receipt, card_id, risk_day
      INTO v_original FROM gw_transactions
     WHERE tid = v_tid AND batch = (p->>'batch')::integer AND stan = p->>'stan'
       AND mti_class = coalesce(p->>'original_class', '0200') AND processing_code = p->>'processing_code'
       FOR UPDATE;
    IF NOT FOUND THEN
        RETURN '{"outcome": "approved"}';
    END IF;
    IF v_original.amount_fen IS NOT NULL AND v_original.amount_fen IS DISTINCT FROM (p->>'amount')::bigint THEN
        RETURN '{"outcome": "amount_mismatch", "unstored": true}';
    END IF;
    IF v_original.status = 'refunded' THEN
        -- An original with refunds (WIRE.md 9.9): 00, nothing moved, an exception.
        RETURN jsonb_build_object('outcome', 'approved', 'original_id', v_original.id,
                                  'exception', 'reversal_of_refunded_original');
    ELSIF v_original.status <> 'approved' THEN
        RETURN jsonb_build_object('outcome', 'approved', 'original_id', v_original.id);
    ELSIF v_original.kind IN ('preauth', 'preauth_cancel', 'completion', 'completion_advice', 'completion_void') THEN
        RETURN gw_reverse_preauth_family(p_key, v_original.id);  -- functions/preauth.sql
    ELSIF v_original.kind = 'voucher_sale' AND gw_voucher_redeemed(v_original.id) THEN
        -- A redeemed voucher (WIRE.md 9.7): 00, nothing moved, an exception.
        RETURN jsonb_build_object('outcome', 'approved', 'original_id', v_original.id,
                                  'exception', 'reversal_of_redeemed_voucher');
    END IF;
    IF v_original.posting_key IS NULL THEN
        PERFORM gw_set_status(v_original.id, 'approved', 'reversed');
        RETURN jsonb_build_object('outcome', 'approved', 'original_id', v_original.id);
    END IF;
    v_result := ledger_reverse(p_key, v_original.posting_key);
    IF v_result = 'exceeds_credits' THEN
        -- A void's (or a refund's) reversal the card can no longer cover:
        -- approved, the purchase stays voided (the refund stands), the
        -- operator sees it in the daily report.
        RETURN jsonb_build_object('outcome', 'approved', 'original_id', v_original.id,
                                  'exception', CASE WHEN v_original.kind = 'refund' THEN 'refund_reversal_not_covered'
                                                    ELSE 'void_reversal_not_covered' END);
    ELSIF v_result <> 'ok' THEN
        RAISE EXCEPTION 'reversal posting failed: %', v_result;
    END IF;
    PERFORM gw_set_status(v_original.id, 'approved', 'reversed');
    IF v_original.risk_day IS NOT NULL THEN  -- give back the counters it used
        PERFORM gw_risk_count(v_original.tid, v_original.card_id, v_original.risk_day, v_original.amount_fen, -1);
    END IF;
    IF v_original.kind = 'bill_payment' THEN  -- the bill is open again, its token void
        UPDATE bills SET status = 'open', paid_txn_id = NULL WHERE paid_txn_id = v_original.id;
        UPDATE tokens SET status = 'void' WHERE txn_id = v_original.id;
        PERFORM gw_bill_reversed(v_original.biller_code, v_original.receipt);  -- its cancel, for the biller
        v_reversed := jsonb_build_object('kind', v_original.kind, 'biller_code', v_original.biller_code,
                                         'receipt', v_original.receipt);
    END IF;
    IF v_original.kind = 'voucher_sale' THEN  -- an unredeemed voucher: void
        UPDATE vouchers SET status = 'void' WHERE txn_id = v_original.id AND status = 'valid';
    END IF;
    IF v_original.kind = 'refund' THEN
        -- Its original is refundable again by what it took, and approved
        -- again once none of its refunds stands.
        PERFORM gw_set_status(o.id, 'refunded', 'approved') FROM gw_transactions o
          WHERE o.id = v_original.original_id AND o.status = 'refunded'
            AND NOT EXISTS (SELECT 1 FROM gw_transactions r WHERE r.original_id = o.id AND r.kind = 'refund'
                                                            AND r.status = 'approved');
    END IF;
    IF v_original.kind = 'void' THEN
        -- The purchase stands again, its money now moved by this posting,
        -- which is what a later void of it reverses.
        PERFORM gw_set_status(v_original.original_id, 'voided', 'approved');
        UPDATE gw_transactions SET posting_key = p_key WHERE id = v_original.original_id
        RETURNING risk_day, card_id, amount_fen INTO v_purchase;
        IF v_purchase.risk_day IS NOT NULL THEN  -- it counts again
            PERFORM gw_risk_count(v_tid, v_purchase.card_id, v_purchase.risk_day, v_purchase.amount_fen, 1);
        END IF;
    END IF;
    RETURN jsonb_strip_nulls(jsonb_build_object('outcome', 'approved', 'posting_key', p_key,
                                                'original_id', v_original.id, 'reversed', v_reversed));
END $$;

-- A bill inquiry: the biller's answer is the operation's approval.
CREATE OR REPLACE FUNCTION gw_record_bill_inquiry(p jsonb) RETURNS jsonb
LANGUAGE sql IMMUTABLE AS $$ SELECT '{"outcome": "approved"}'::jsonb $$;

-- A bill payment: unless its reversal came first or its postpaid bill is no
-- longer open (original_not_found), or a counted risk limit declines it, its
-- transfers posted (insufficient_funds when the source cannot cover them);
-- paid in cash, the agent's float after it (float_fen).
-- Its biller outbox (bill_outbox.sql): a payment whose biller's answer was
-- unknown (biller_outcome) posts nothing; one that does not stand has its
-- armed cancel due now; one that stands takes its armed cancel back first (a
-- forwarder has it already: nothing posted, biller_unavailable) and queues
-- its notice.
CREATE OR REPLACE FUNCTION gw_record_bill_payment(p jsonb, p_key text, p_reversed_first boolean) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    v_bill jsonb := p->'bill';
    v_risk jsonb;
    v_result text;
BEGIN
    IF p ? 'biller_outcome' THEN  -- the biller's answer is unknown: it may have accepted
        PERFORM gw_bill_cancel_due(v_bill, p->>'biller_outcome');
        RETURN jsonb_build_object('outcome', p->>'biller_outcome');
    END IF;
    IF p_reversed_first THEN
        PERFORM gw_bill_cancel_due(v_bill, 'reversed_first');
        RETURN '{"outcome": "original_not_found"}';  -- its reversal came first
    END IF;
    IF v_bill ? 'bill_id' THEN  -- postpaid: the bill must still be open
        PERFORM 1 FROM bills WHERE id = (v_bill->>'bill_id')::bigint AND status = 'open' FOR UPDATE;
        IF NOT FOUND THEN
            PERFORM gw_bill_cancel_due(v_bill, 'bill_not_open');
            RETURN '{"outcome": "original_not_found"}';
        END IF;
    END IF;
    IF p ? 'risk' THEN
        v_risk := gw_risk_check(p->'risk', (p->>'amount')::bigint);
        IF v_risk IS NOT NULL THEN
            PERFORM gw_bill_cancel_due(v_bill, v_risk->>'outcome');
            RETURN jsonb_build_object('outcome', v_risk->>'outcome', 'risk', v_risk);
        END IF;
    END IF;
    IF NOT gw_bill_disarm(v_bill) THEN  -- a forwarder is cancelling it at the biller
        RETURN '{"outcome": "biller_unavailable"}';
    END IF;
    v_result := ledger_post(p_key, p->'transfers');
    IF v_result = 'exceeds_credits' THEN
        PERFORM gw_bill_cancel_due(v_bill, 'insufficient_funds');
        RETURN '{"outcome": "insufficient_funds"}';
    ELSIF v_result <> 'ok' THEN
        RAISE EXCEPTION 'bill payment posting failed: %', v_result;
    END IF;
    PERFORM gw_bill_notice(p);
    IF NOT v_bill ? 'float_account_id' THEN
        RETURN jsonb_build_object('outcome', 'approved', 'posting_key', p_key);
    END IF;
    RETURN jsonb_build_object('outcome', 'approved', 'posting_key', p_key, 'values', (
        SELECT jsonb_build_object('float_fen', credits_posted - debits_posted) FROM ledger_accounts
         WHERE id = (v_bill->>'float_account_id')::bigint));
END $$;

-- An approved bill payment, once recorded (p_txn_id): its bill paid, its token sold.
CREATE OR REPLACE FUNCTION gw_bill_paid(p jsonb, p_txn_id bigint) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    v_bill jsonb := p->'bill';
BEGIN
    UPDATE bills SET status = 'paid', paid_txn_id = p_txn_id WHERE id = (v_bill->>'bill_id')::bigint;
    IF v_bill ? 'token' THEN
        INSERT INTO tokens (token, biller_code, meter, amount_fen, receipt, txn_id)
        VALUES (v_bill->>'token', v_bill->>'biller_code', v_bill->>'meter', (p->>'amount')::bigint,
                v_bill->>'receipt', p_txn_id);
    END IF;
END $$;

-- A batch settlement, under the batch's lock taken alone (WIRE.md 9.6, 9.9):
-- the gateway's three counts of what the terminal was told (an original
-- whose reversal was answered 00 is reversed, even if it moved nothing).
-- Debits: approved purchases, completions (request and advice), bill
-- payments and voucher sales; credits: approved voids, refunds and completion voids; none
-- reversed. Gross: a voided purchase stays a debit, its void a credit; v1:
-- the two left out (refunds and completion voids still credits); net: the
-- voided purchase left out, its void a credit. The domestic half is balanced
-- when the terminal's totals (claimed, read from 48 by the gateway; null
-- when not digits) equal a count, its debit count modulo 1,000; the answer
-- carries that count (the gross one when none matched), and for a 62-digit
-- 48 the foreign flag (foreign_zero). The batch is recorded and the
-- terminal moves to the next.
CREATE OR REPLACE FUNCTION gw_record_settlement(p jsonb) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    v_tid text := p->>'tid';
    v_batch integer := (p->>'batch')::integer;
    v_claimed jsonb := p->'claimed';
    v_foreign_zero boolean := (p->>'foreign_zero')::boolean;
    v_counts jsonb;
    v_counted text;
    v_totals jsonb;
BEGIN
    WITH told AS (
        SELECT t.kind, t.status, t.amount_fen,
               t.status = 'reversed' OR EXISTS (
                   SELECT 1 FROM gw_transactions r
                    WHERE r.original_id = t.id AND r.mti_class = '0400' AND r.response_code = '00') AS reversed
          FROM gw_transactions t
         WHERE t.tid = v_tid AND t.batch = v_batch AND t.mti_class IN ('0200', '0220') AND t.status <> 'declined'
           AND t.kind IN ('purchase', 'bill_payment', 'voucher_sale', 'completion', 'completion_advice', 'void',
                          'refund', 'completion_void')),
    counted AS (
        SELECT amount_fen,
               NOT reversed AND kind IN ('purchase', 'bill_payment', 'voucher_sale', 'completion', 'completion_advice')
                   AS gross_debit,
               NOT reversed AND kind IN ('void', 'refund', 'completion_void') AS gross_credit,
               NOT reversed AND (kind IN ('completion', 'completion_advice', 'voucher_sale')
                                 OR kind IN ('purchase', 'bill_payment') AND status <> 'voided') AS v1_debit,
               NOT reversed AND kind IN ('refund', 'completion_void') AS v1_credit
          FROM told),
    sums AS (
        SELECT coalesce(sum(amount_fen) FILTER (WHERE gross_debit), 0) AS gross_debit_fen,
               count(*) FILTER (WHERE gross_debit) AS gross_debit_count,
               coalesce(sum(amount_fen) FILTER (WHERE gross_credit), 0) AS gross_credit_fen,
               count(*) FILTER (WHERE gross_credit) AS gross_credit_count,
               coalesce(sum(amount_fen) FILTER (WHERE v1_debit), 0) AS v1_debit_fen,
               count(*) FILTER (WHERE v1_debit) AS v1_debit_count,
               coalesce(sum(amount_fen) FILTER (WHERE v1_credit), 0) AS v1_credit_fen,
               count(*) FILTER (WHERE v1_credit) AS v1_credit_count
          FROM counted)
    SELECT jsonb_build_object(
               'gross', jsonb_build_object('debit_fen', gross_debit_fen, 'debit_count', gross_debit_count,
                                           'credit_fen', gross_credit_fen, 'credit_count', gross_credit_count),
               'v1', jsonb_build_object('debit_fen', v1_debit_fen, 'debit_count', v1_debit_count,
                                        'credit_fen', v1_credit_fen, 'credit_count', v1_credit_count),
               'net', jsonb_build_object('debit_fen', v1_debit_fen, 'debit_count', v1_debit_count,
                                         'credit_fen', gross_credit_fen, 'credit_count', gross_credit_count))
      INTO v_counts FROM sums;
    IF jsonb_typeof(v_claimed) = 'object' THEN
        SELECT name INTO v_counted
          FROM unnest(ARRAY['gross', 'v1', 'net']) WITH ORDINALITY AS c (name, n)
         WHERE (v_claimed->>'debit_fen')::bigint = (v_counts->name->>'debit_fen')::bigint
           AND (v_claimed->>'debit_count')::integer = (v_counts->name->>'debit_count')::integer % 1000
           AND (v_claimed->>'credit_fen')::bigint = (v_counts->name->>'credit_fen')::bigint
           AND (v_claimed->>'credit_count')::integer = (v_counts->name->>'credit_count')::integer % 1000
         ORDER BY n LIMIT 1;
    END IF;
    v_totals := v_counts->coalesce(v_counted, 'gross');
    INSERT INTO gw_batches (tid, batch, debit_fen, debit_count, credit_fen, credit_count, terminal_totals, balanced,
                            counted, foreign_zero)
    VALUES (v_tid, v_batch, (v_totals->>'debit_fen')::bigint, (v_totals->>'debit_count')::integer,
            (v_totals->>'credit_fen')::bigint, (v_totals->>'credit_count')::integer, p->>'terminal_totals',
            v_counted IS NOT NULL AND coalesce(v_foreign_zero, true), v_counted, v_foreign_zero);
    UPDATE terminals SET batch = (v_batch + 1) % 1000000 WHERE tid = v_tid;
    RETURN jsonb_build_object('outcome', 'approved', 'values', jsonb_build_object(
        'batch_totals', v_totals || jsonb_strip_nulls(jsonb_build_object(
            'balanced', v_counted IS NOT NULL, 'foreign_balanced', v_foreign_zero))));
END $$;

-- Record a batch's plain purchases together (p[n] where p_plain[n]: a
-- purchase with no risk counters and no wrong PIN, and no other request of
-- the batch under its terminal, batch and STAN): the same answers, and the
-- same money moved, as gw_finish for each of them in order, in a handful of
-- statements for the whole set; the postings go through ledger_post_many.
-- Returns an array as long as p: the result of each purchase recorded here,
-- NULL for every other request, and for a purchase with an answer already
-- under its key, a reversal that came first or a settled batch: gw_finish
-- answers those. As in ledger_post_many, no statement joins two arrays.
CREATE OR REPLACE FUNCTION gw_finish_purchases(p jsonb[], p_plain boolean[]) RETURNS jsonb[]
LANGUAGE plpgsql AS $$
DECLARE
    v_recorded boolean[];    -- per request: recorded here
    v_n integer[];           -- the purchases recorded here, their ledger keys and transfers
    v_keys text[];
    v_transfers jsonb[];
    v_pin_ok boolean;
    v_posted text[];
    v_results jsonb[];
BEGIN
    -- Each request's lock and its batch's shared lock, as gw_finish takes them.
    PERFORM pg_advisory_xact_lock(gw_request_lock(r.tid, r.batch, r.stan)),
            pg_advisory_xact_lock_shared(gw_batch_lock(r.tid, r.batch))
       FROM unnest(p, p_plain) AS i (item, plain),
            LATERAL (SELECT item->>'tid' AS tid, (item->>'batch')::integer AS batch, item->>'stan' AS stan) r
      WHERE i.plain;
    -- Under the locks: those with nothing recorded under their key, no
    -- reversal ahead of them and their batch open.
    SELECT array_agg(recorded ORDER BY n),
           array_agg(n ORDER BY n) FILTER (WHERE recorded),
           array_agg(gw_posting_key(r.tid, r.batch, r.stan, r.class) ORDER BY n) FILTER (WHERE recorded),
           array_agg(item->'transfers' ORDER BY n) FILTER (WHERE recorded),
           coalesce(bool_or(item->>'pin' = 'ok') FILTER (WHERE recorded), false)
      INTO v_recorded, v_n, v_keys, v_transfers, v_pin_ok
      FROM unnest(p, p_plain) WITH ORDINALITY AS i (item, plain, n),
           LATERAL (SELECT item->>'tid' AS tid, (item->>'batch')::integer AS batch, item->>'stan' AS stan,
                           item->>'mti_class' AS class, item->>'processing_code' AS code) r,
           LATERAL (SELECT i.plain
                       AND NOT EXISTS (SELECT 1 FROM gw_transactions tx
                                        WHERE tx.tid = r.tid AND tx.batch = r.batch AND tx.stan = r.stan
                                          AND (tx.mti_class = r.class
                                               OR (tx.mti_class = '0400' AND tx.processing_code = r.code)))
                       AND NOT EXISTS (SELECT 1 FROM gw_batches b WHERE b.tid = r.tid AND b.batch = r.batch)
                       AS recorded) d;
    IF v_n IS NULL THEN
        RETURN array_fill(NULL::jsonb, ARRAY[cardinality(p)]);
    END IF;

    -- A right PIN restarts the count (the gateway sends 'ok' only when it was not 0).
    IF v_pin_ok THEN
        UPDATE cards SET pin_tries = 0
         WHERE id IN (SELECT (item->>'card_id')::bigint FROM unnest(p, v_recorded) AS i (item, recorded)
                       WHERE recorded AND item->>'pin' = 'ok')
           AND pin_tries <> 0;
    END IF;

    v_posted := ledger_post_many(v_keys, v_transfers);
    IF EXISTS (SELECT 1 FROM unnest(v_posted) r WHERE r NOT IN ('ok', 'exceeds_credits')) THEN
        RAISE EXCEPTION 'purchase posting failed: %', v_posted;
    END IF;

    WITH posted AS (
        SELECT x.n, x.key, p[x.n] AS i,
               CASE WHEN x.result = 'ok' THEN 'approved' ELSE 'insufficient_funds' END AS outcome
          FROM unnest(v_n, v_keys, v_posted) AS x (n, key, result)),
    answered AS (
        SELECT n, key, i, outcome,
               i->'response' || jsonb_build_object('outcome', outcome)
               || CASE WHEN outcome = 'approved' THEN coalesce(i->'approval', '{}') ELSE '{}' END AS response
          FROM posted),
    recorded AS (
        INSERT INTO gw_transactions (tid, batch, stan, mti_class, kind, processing_code, content_hash, response,
                                     response_code, status, amount_fen, card_id, rrn, local_date, posting_key,
                                     latitude, longitude)
        SELECT i->>'tid', (i->>'batch')::integer, i->>'stan', i->>'mti_class', i->>'kind', i->>'processing_code',
               i->>'content', response, gw_response_code(outcome),
               CASE WHEN outcome = 'approved' THEN 'approved' ELSE 'declined' END,
               (i->>'amount')::bigint, (i->>'card_id')::bigint, response->>'rrn', response->>'local_date',
               CASE WHEN outcome = 'approved' THEN key END,
               (i->'position'->>'lat')::double precision, (i->'position'->>'lon')::double precision
          FROM answered ORDER BY n)
    SELECT array_agg(result ORDER BY n) INTO v_results
      FROM (SELECT n, jsonb_build_object('status', 'new', 'stored', true, 'response', response,
                                         'reversed', NULL, 'risk_rule', NULL) AS result
              FROM answered
            UNION ALL
            SELECT n, NULL FROM unnest(v_recorded) WITH ORDINALITY AS r (recorded, n) WHERE NOT recorded) results;
    RETURN v_results;
END $$;

-- Group commit: record a batch of requests in one transaction and one round
-- trip. The gateway batches the requests that arrive while a batch is in
-- flight; the batch shares one commit. Its plain purchases are recorded
-- together first (gw_finish_purchases: a hot account, a busy merchant, is
-- then updated once per batch, not once per request), then every other
-- request in order. The requests of a batch arrived together, so any order
-- among them is one in which they could have arrived.
--
-- A request checked against the gateway's cached terminal and card carries
-- their row versions (versions: {terminal: the xmin of its terminal, merchant
-- and agent rows, as 'x:y:z'; card: its card row's xmin}). If a row has
-- changed since, nothing is done for it and its result is {status: stale}:
-- the gateway checks it again on a fresh read. The terminal's version ends
-- with its risk limit overrides' (gw_limits_version). With the risk rules
-- on, such a request carries the travel and spike rules it was not checked
-- against (recheck, gw_risk_recheck): one that either would decline is stale
-- too, and its fresh read declines it.
CREATE OR REPLACE FUNCTION gw_finish_many(p jsonb[]) RETURNS jsonb[]
LANGUAGE plpgsql AS $$
DECLARE
    v_stale boolean[];
    v_plain boolean[];
    v_plain_count integer;
    v_results jsonb[];
    v_n integer;
BEGIN
    SELECT array_agg(stale ORDER BY n), array_agg(plain AND NOT stale ORDER BY n),
           count(*) FILTER (WHERE plain AND NOT stale)
      INTO v_stale, v_plain, v_plain_count
      FROM (SELECT n, item->>'op' = 'purchase' AND NOT item ? 'risk' AND item->>'pin' IS DISTINCT FROM 'wrong'
                      AND count(*) OVER (PARTITION BY item->>'tid', item->>'batch', item->>'stan') = 1 AS plain,
                   item ? 'versions' AND NOT EXISTS (
                       SELECT 1 FROM terminals t
                         JOIN merchants m ON m.mid = t.mid
                         JOIN agents a ON a.code = m.agent_code
                         LEFT JOIN cards c ON c.id = (item->>'card_id')::bigint
                        WHERE t.tid = item->>'tid'
                          AND concat_ws(':', t.xmin, m.xmin, a.xmin) || '/' || gw_limits_version(t.mid, t.tid)
                              = item->'versions'->>'terminal'
                          AND c.xmin::text IS NOT DISTINCT FROM item->'versions'->>'card')
                   OR item ? 'recheck' AND gw_risk_recheck(item->'recheck', (item->>'card_id')::bigint) AS stale
              FROM unnest(p) WITH ORDINALITY AS i (item, n)) requests;
    -- Every account the batch's transfers post to, locked at once in the order of their ids:
    -- recorded one by one, the items would lock them in the order of the requests, and two
    -- batches at once (two workers, or two gateways) sharing hot accounts (a merchant's, an
    -- agent's float) deadlock, PostgreSQL breaking it only after deadlock_timeout.
    PERFORM 1 FROM ledger_accounts
     WHERE id IN (SELECT (t->>side)::bigint
                    FROM unnest(p) WITH ORDINALITY AS i (item, n)
                    CROSS JOIN LATERAL jsonb_array_elements(CASE WHEN v_stale[n] THEN '[]'::jsonb
                                                                 ELSE coalesce(item->'transfers', '[]') END) t
                    CROSS JOIN unnest(ARRAY['debit', 'credit']) AS s (side))
     ORDER BY id FOR UPDATE;  -- the strength ledger_apply takes (ledger/functions/ledger.sql)
    IF v_plain_count > 1 THEN  -- a lone purchase costs less through gw_finish
        v_results := gw_finish_purchases(p, v_plain);
    ELSE
        v_results := array_fill(NULL::jsonb, ARRAY[cardinality(p)]);
    END IF;
    FOR v_n IN SELECT n FROM unnest(v_results) WITH ORDINALITY AS r (result, n) WHERE result IS NULL LOOP
        v_results[v_n] := CASE WHEN v_stale[v_n] THEN '{"status": "stale", "stored": false}'::jsonb
                               ELSE gw_finish(p[v_n]) END;
    END LOOP;
    RETURN v_results;
END $$;
