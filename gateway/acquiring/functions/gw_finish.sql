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

-- Record a financial request's outcome, moving its money, in one round trip.
--
-- p: an operation of gateway.acquiring.operations, as its as_json() sends it
--    (one dataclass per op: decline, balance, purchase, void, reversal,
--    bill_inquiry, bill_payment, settlement; each documents its keys).
-- Returns {status: new|repeat|conflict, stored: bool, response: {...}[,
-- reversed: {kind, biller_code, receipt}][, risk_rule]}.
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
    v_response jsonb := p->'response';
    v_key text := gw_posting_key(v_tid, v_batch, v_stan, v_class);
    v_rc text;
    v_status text := 'declined';
    v_posting text;
    v_result text;
    v_tries integer;
    v_balance bigint;
    v_original record;
    v_original_id bigint;
    v_exception text;
    v_existing record;
    v_bill jsonb := p->'bill';
    v_approval jsonb := coalesce(p->'approval', '{}');
    v_reversed jsonb;
    v_txn_id bigint;
    v_batch_lock bigint := gw_batch_lock(v_tid, v_batch);
    v_totals text;
    v_count integer;
    v_risk jsonb;
    v_risk_day date;
    v_purchase record;
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
           v_op IN ('purchase', 'bill_payment') AND EXISTS (
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
            RETURN jsonb_build_object('status', 'repeat', 'stored', true, 'response', v_existing.response);
        END IF;
        RETURN jsonb_build_object('status', 'conflict', 'stored', false);
    END IF;
    IF v_op <> 'decline' AND v_existing.batch_settled THEN
        v_op := 'decline';  -- the batch was settled while this request was on its way
        v_rc := '12';
    END IF;

    -- A right PIN restarts the count; the third wrong one in a row blocks the PIN.
    IF p->>'pin' = 'ok' THEN
        UPDATE cards SET pin_tries = 0 WHERE id = v_card_id AND pin_tries <> 0;
    ELSIF p->>'pin' = 'wrong' THEN
        UPDATE cards SET pin_tries = pin_tries + 1, pin_blocked = pin_blocked OR pin_tries + 1 >= 3
         WHERE id = v_card_id RETURNING pin_tries INTO v_tries;
        v_rc := CASE WHEN v_tries >= 3 THEN '75' ELSE '55' END;
    END IF;

    IF v_op = 'decline' THEN
        v_rc := coalesce(v_rc, v_response->>'response_code');
        IF p ? 'risk_event' THEN
            v_risk := p->'risk_event';
        END IF;

    ELSIF v_op = 'balance' THEN
        SELECT credits_posted - debits_posted INTO v_balance FROM ledger_accounts
         WHERE id = (p->>'card_account_id')::bigint;
        v_rc := '00';
        v_status := 'approved';
        v_response := v_response || jsonb_build_object('balance',
            '1002156' || CASE WHEN v_balance < 0 THEN 'D' ELSE 'C' END || lpad(abs(v_balance)::text, 12, '0'));

    ELSIF v_op = 'purchase' THEN
        IF v_existing.reversed_first THEN
            v_rc := '25';  -- its reversal came first
        ELSE
            v_risk := CASE WHEN p ? 'risk' THEN gw_risk_check(p->'risk', v_amount) END;
            IF v_risk IS NOT NULL THEN
                v_rc := v_risk->>'response_code';
            ELSE
                v_result := ledger_post(v_key, p->'transfers');
                IF v_result = 'ok' THEN
                    v_rc := '00';
                    v_status := 'approved';
                    v_posting := v_key;
                ELSIF v_result = 'exceeds_credits' THEN
                    v_rc := '51';
                ELSE
                    RAISE EXCEPTION 'purchase posting failed: %', v_result;
                END IF;
            END IF;
        END IF;

    ELSIF v_op = 'void' THEN
        SELECT id, tid, status, posting_key, card_id, amount_fen, risk_day INTO v_original FROM gw_transactions
         WHERE id = (p->>'original_id')::bigint FOR UPDATE;
        v_original_id := v_original.id;
        IF v_original.status <> 'approved' THEN
            v_rc := '25';
        ELSE
            v_result := ledger_reverse(v_key, v_original.posting_key);
            IF v_result = 'ok' THEN
                v_rc := '00';
                v_status := 'approved';
                v_posting := v_key;
                UPDATE gw_transactions SET status = 'voided' WHERE id = v_original.id;
                IF v_original.risk_day IS NOT NULL THEN
                    PERFORM gw_risk_count(v_original.tid, v_original.card_id, v_original.risk_day,
                                          v_original.amount_fen, -1);
                END IF;
            ELSE
                RAISE EXCEPTION 'void posting failed: %', v_result;
            END IF;
        END IF;

    ELSIF v_op = 'reversal' THEN
        v_rc := '00';
        v_status := 'approved';
        SELECT id, tid, kind, status, amount_fen, posting_key, original_id, biller_code, receipt, card_id,
               risk_day
          INTO v_original FROM gw_transactions
         WHERE tid = v_tid AND batch = v_batch AND stan = v_stan AND mti_class = '0200'
           AND processing_code = p->>'processing_code'
           FOR UPDATE;
        IF FOUND THEN
            v_original_id := v_original.id;
            IF v_original.amount_fen IS NOT NULL AND v_original.amount_fen IS DISTINCT FROM v_amount THEN
                -- 64 is not stored: the terminal may send the same STAN again.
                RETURN jsonb_build_object('status', 'new', 'stored', false,
                                          'response', v_response || '{"response_code": "64"}');
            END IF;
            IF v_original.status = 'approved' THEN
                IF v_original.posting_key IS NULL THEN
                    UPDATE gw_transactions SET status = 'reversed' WHERE id = v_original.id;
                ELSE
                    v_result := ledger_reverse(v_key, v_original.posting_key);
                    IF v_result = 'ok' THEN
                        v_posting := v_key;
                        UPDATE gw_transactions SET status = 'reversed' WHERE id = v_original.id;
                        IF v_original.risk_day IS NOT NULL THEN  -- give back the counters it used
                            PERFORM gw_risk_count(v_original.tid, v_original.card_id, v_original.risk_day,
                                                  v_original.amount_fen, -1);
                        END IF;
                        IF v_original.kind = 'bill_payment' THEN  -- the bill is open again, its token void
                            UPDATE bills SET status = 'open', paid_txn_id = NULL WHERE paid_txn_id = v_original.id;
                            UPDATE tokens SET status = 'void' WHERE txn_id = v_original.id;
                            v_reversed := jsonb_build_object('kind', v_original.kind,
                                                             'biller_code', v_original.biller_code,
                                                             'receipt', v_original.receipt);
                        END IF;
                        IF v_original.kind = 'void' THEN
                            -- The purchase stands again, its money now moved by this posting,
                            -- which is what a later void of it reverses.
                            UPDATE gw_transactions SET status = 'approved', posting_key = v_key
                             WHERE id = v_original.original_id
                            RETURNING risk_day, card_id, amount_fen INTO v_purchase;
                            IF v_purchase.risk_day IS NOT NULL THEN  -- it counts again
                                PERFORM gw_risk_count(v_tid, v_purchase.card_id, v_purchase.risk_day,
                                                      v_purchase.amount_fen, 1);
                            END IF;
                        END IF;
                    ELSIF v_result = 'exceeds_credits' THEN
                        -- A void's reversal the card can no longer cover: answered 00, the
                        -- purchase stays voided, the operator sees it in the daily report.
                        v_exception := 'void_reversal_not_covered';
                    ELSE
                        RAISE EXCEPTION 'reversal posting failed: %', v_result;
                    END IF;
                END IF;
            END IF;
        END IF;
    ELSIF v_op = 'bill_inquiry' THEN
        v_rc := '00';
        v_status := 'approved';

    ELSIF v_op = 'bill_payment' THEN
        IF v_existing.reversed_first THEN
            v_rc := '25';  -- its reversal came first
        ELSIF v_bill ? 'bill_id' THEN  -- postpaid: the bill must still be open
            PERFORM 1 FROM bills WHERE id = (v_bill->>'bill_id')::bigint AND status = 'open' FOR UPDATE;
            IF NOT FOUND THEN
                v_rc := '25';
            END IF;
        END IF;
        IF v_rc IS NULL AND p ? 'risk' THEN
            v_risk := gw_risk_check(p->'risk', v_amount);
            v_rc := v_risk->>'response_code';
        END IF;
        IF v_rc IS NULL THEN
            v_result := ledger_post(v_key, p->'transfers');
            IF v_result = 'ok' THEN
                v_rc := '00';
                v_status := 'approved';
                v_posting := v_key;
                IF v_bill ? 'float_account_id' THEN  -- cash: the float left after the payment
                    SELECT credits_posted - debits_posted INTO v_balance FROM ledger_accounts
                     WHERE id = (v_bill->>'float_account_id')::bigint;
                    v_approval := jsonb_set(v_approval, '{bill_tlv,FB}', to_jsonb(lpad(v_balance::text, 12, '0')));
                END IF;
            ELSIF v_result = 'exceeds_credits' THEN
                v_rc := '51';
            ELSE
                RAISE EXCEPTION 'bill payment posting failed: %', v_result;
            END IF;
        END IF;

    ELSIF v_op = 'settlement' THEN
        -- Debits: approved purchases and bill payments neither voided nor
        -- reversed; credits: refunds, which version 1 does not have.
        SELECT coalesce(sum(amount_fen), 0), count(*) INTO v_balance, v_count FROM gw_transactions
         WHERE tid = v_tid AND batch = v_batch AND mti_class = '0200'
           AND kind IN ('purchase', 'bill_payment') AND status = 'approved';
        v_totals := lpad(v_balance::text, 12, '0') || lpad((v_count % 1000)::text, 3, '0')
                    || repeat('0', 15);
        INSERT INTO gw_batches (tid, batch, debit_fen, debit_count, credit_fen, credit_count, terminal_totals,
                                balanced)
        VALUES (v_tid, v_batch, v_balance, v_count, 0, 0, p->>'terminal_totals',
                v_totals = p->>'terminal_totals');
        UPDATE terminals SET batch = (v_batch + 1) % 1000000 WHERE tid = v_tid;
        v_rc := '00';
        v_status := 'approved';
        v_approval := v_approval || jsonb_build_object('settlement_totals',
            v_totals || CASE WHEN v_totals = p->>'terminal_totals' THEN '1' ELSE '2' END);

    ELSE
        RAISE EXCEPTION 'unknown op %', v_op;
    END IF;

    IF v_rc = '00' AND p ? 'risk' AND v_op IN ('purchase', 'bill_payment') THEN
        v_risk_day := (p->'risk'->>'day')::date;
        PERFORM gw_risk_count(v_tid, v_card_id, v_risk_day, v_amount, 1);
    END IF;
    IF v_risk IS NOT NULL THEN
        INSERT INTO risk_events (tid, card_hash, rule, response_code, risk_values)
        VALUES (v_tid, coalesce(v_risk->>'card_hash', p->'risk'->>'card_hash'), v_risk->>'rule', v_rc,
                coalesce(v_risk->'values', '{}'));
    END IF;
    IF v_rc = '00' THEN
        v_response := v_response || v_approval;
        IF v_op = 'purchase' OR v_op = 'bill_payment' THEN
            v_response := v_response || jsonb_build_object('auth_id', right(v_response->>'rrn', 6));
        END IF;
    END IF;
    v_response := v_response || jsonb_build_object('response_code', v_rc);
    INSERT INTO gw_transactions (tid, batch, stan, mti_class, kind, processing_code, content_hash, response,
                                 response_code, status, amount_fen, card_id, rrn, local_date, posting_key,
                                 original_id, exception, biller_code, bill_account, receipt, commission_fen,
                                 agent_code, paid_in_cash, latitude, longitude, risk_day)
    VALUES (v_tid, v_batch, v_stan, v_class, p->>'kind', p->>'processing_code', p->>'content', v_response,
            v_rc, v_status, v_amount, v_card_id, v_response->>'rrn', v_response->>'local_date', v_posting,
            v_original_id, v_exception, v_bill->>'biller_code', v_bill->>'account', v_bill->>'receipt',
            (v_bill->>'commission_fen')::bigint, v_bill->>'agent_code', v_bill ? 'float_account_id',
            (p->'position'->>'lat')::double precision, (p->'position'->>'lon')::double precision, v_risk_day)
    RETURNING id INTO v_txn_id;

    IF v_op = 'bill_payment' AND v_rc = '00' THEN
        UPDATE bills SET status = 'paid', paid_txn_id = v_txn_id WHERE id = (v_bill->>'bill_id')::bigint;
        IF v_bill ? 'token' THEN
            INSERT INTO tokens (token, biller_code, meter, amount_fen, receipt, txn_id)
            VALUES (v_bill->>'token', v_bill->>'biller_code', v_bill->>'meter', v_amount, v_bill->>'receipt',
                    v_txn_id);
        END IF;
    END IF;
    RETURN jsonb_build_object('status', 'new', 'stored', true, 'response', v_response, 'reversed', v_reversed,
                              'risk_rule', v_risk->>'rule');
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
        SELECT x.n, x.key, p[x.n] AS i, CASE WHEN x.result = 'ok' THEN '00' ELSE '51' END AS rc
          FROM unnest(v_n, v_keys, v_posted) AS x (n, key, result)),
    answered AS (
        SELECT n, key, i, rc,
               CASE WHEN rc = '00'
                    THEN i->'response' || coalesce(i->'approval', '{}')
                         || jsonb_build_object('auth_id', right(i->'response'->>'rrn', 6))
                    ELSE i->'response' END || jsonb_build_object('response_code', rc) AS response
          FROM posted),
    recorded AS (
        INSERT INTO gw_transactions (tid, batch, stan, mti_class, kind, processing_code, content_hash, response,
                                     response_code, status, amount_fen, card_id, rrn, local_date, posting_key,
                                     latitude, longitude)
        SELECT i->>'tid', (i->>'batch')::integer, i->>'stan', i->>'mti_class', i->>'kind', i->>'processing_code',
               i->>'content', response, rc, CASE WHEN rc = '00' THEN 'approved' ELSE 'declined' END,
               (i->>'amount')::bigint, (i->>'card_id')::bigint, response->>'rrn', response->>'local_date',
               CASE WHEN rc = '00' THEN key END,
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
-- the gateway checks it again on a fresh read.
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
                          AND concat_ws(':', t.xmin, m.xmin, a.xmin) = item->'versions'->>'terminal'
                          AND c.xmin::text IS NOT DISTINCT FROM item->'versions'->>'card') AS stale
              FROM unnest(p) WITH ORDINALITY AS i (item, n)) requests;
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
