-- Prepaid cards. No clear PAN and no clear PIN: a keyed hash of the PAN for
-- look-up, the PAN encrypted under the LMK, and a PIN verification value.
CREATE TABLE cards (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    pan_hash bytea NOT NULL UNIQUE,
    pan_lmk bytea NOT NULL,
    pan_masked text NOT NULL,
    pvv bytea NOT NULL,
    expiry text NOT NULL CHECK (expiry ~ '^[0-9]{2}(0[1-9]|1[0-2])$'),
    status text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'frozen')),
    pin_tries integer NOT NULL DEFAULT 0,
    pin_blocked boolean NOT NULL DEFAULT false,
    account_id bigint NOT NULL REFERENCES ledger_accounts (id),
    created_at timestamptz NOT NULL DEFAULT now()
);

-- Every financial request that got a storable answer, under its key
-- (terminal, batch, STAN, MTI class), with the response fields sent, so that
-- a repeat gets the same bytes back.
CREATE TABLE gw_transactions (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tid text NOT NULL,
    batch integer NOT NULL,
    stan text NOT NULL,
    mti_class text NOT NULL,
    kind text NOT NULL,
    processing_code text,
    content_hash text NOT NULL,
    response jsonb NOT NULL,
    response_code text NOT NULL,
    -- approved, declined; an approved original later becomes voided or reversed
    status text NOT NULL CHECK (status IN ('approved', 'declined', 'voided', 'reversed')),
    amount_fen bigint,
    card_id bigint REFERENCES cards (id),
    rrn text NOT NULL,
    local_date text NOT NULL,
    posting_key text,
    original_id bigint REFERENCES gw_transactions (id),
    exception text,
    created_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tid, batch, stan, mti_class)
);
CREATE INDEX gw_transactions_rrn ON gw_transactions (tid, rrn);
CREATE INDEX gw_transactions_created ON gw_transactions (created_at);

-- Record a financial request's outcome, moving its money, in one round trip.
--
-- p: {op: decline|balance|purchase|void|reversal, kind, tid, batch, stan,
--     mti_class, processing_code, content, amount, card_id, card_account_id,
--     pin: ok|wrong|null, transfers (purchase), original_id (void),
--     response: {rrn, local_time, local_date[, response_code]}}
-- Returns {status: new|repeat|conflict, stored: bool, response: {...}}.
--
-- An advisory lock on (terminal, batch, STAN) serialises a request with its
-- repeats and with its reversal, so a repeat waits for its original and a
-- reversal racing its original sees it either wholly done or not at all.
CREATE FUNCTION gw_finish(p jsonb) RETURNS jsonb
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
    v_key text := v_tid || ':' || v_batch || ':' || v_stan || ':' || v_class;
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
BEGIN
    PERFORM pg_advisory_xact_lock(hashtextextended(v_tid || ':' || v_batch || ':' || v_stan, 0));
    SELECT content_hash, response INTO v_existing FROM gw_transactions
     WHERE tid = v_tid AND batch = v_batch AND stan = v_stan AND mti_class = v_class;
    IF FOUND THEN
        IF v_existing.content_hash = p->>'content' THEN
            RETURN jsonb_build_object('status', 'repeat', 'stored', true, 'response', v_existing.response);
        END IF;
        RETURN jsonb_build_object('status', 'conflict', 'stored', false);
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

    ELSIF v_op = 'balance' THEN
        SELECT credits_posted - debits_posted INTO v_balance FROM ledger_accounts
         WHERE id = (p->>'card_account_id')::bigint;
        v_rc := '00';
        v_status := 'approved';
        v_response := v_response || jsonb_build_object('balance',
            '1002156' || CASE WHEN v_balance < 0 THEN 'D' ELSE 'C' END || lpad(abs(v_balance)::text, 12, '0'));

    ELSIF v_op = 'purchase' THEN
        IF EXISTS (SELECT 1 FROM gw_transactions
                    WHERE tid = v_tid AND batch = v_batch AND stan = v_stan AND mti_class = '0400'
                      AND processing_code = p->>'processing_code') THEN
            v_rc := '25';  -- its reversal came first
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

    ELSIF v_op = 'void' THEN
        SELECT id, status, posting_key INTO v_original FROM gw_transactions
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
            ELSE
                RAISE EXCEPTION 'void posting failed: %', v_result;
            END IF;
        END IF;

    ELSIF v_op = 'reversal' THEN
        v_rc := '00';
        v_status := 'approved';
        SELECT id, kind, status, amount_fen, posting_key, original_id INTO v_original FROM gw_transactions
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
                        IF v_original.kind = 'void' THEN
                            -- The purchase stands again, its money now moved by this posting,
                            -- which is what a later void of it reverses.
                            UPDATE gw_transactions SET status = 'approved', posting_key = v_key
                             WHERE id = v_original.original_id;
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
    ELSE
        RAISE EXCEPTION 'unknown op %', v_op;
    END IF;

    IF v_rc = '00' AND v_op IN ('purchase') THEN
        v_response := v_response || jsonb_build_object('auth_id', right(v_response->>'rrn', 6));
    END IF;
    v_response := v_response || jsonb_build_object('response_code', v_rc);
    INSERT INTO gw_transactions (tid, batch, stan, mti_class, kind, processing_code, content_hash, response,
                                 response_code, status, amount_fen, card_id, rrn, local_date, posting_key,
                                 original_id, exception)
    VALUES (v_tid, v_batch, v_stan, v_class, p->>'kind', p->>'processing_code', p->>'content', v_response,
            v_rc, v_status, v_amount, v_card_id, v_response->>'rrn', v_response->>'local_date', v_posting,
            v_original_id, v_exception);
    RETURN jsonb_build_object('status', 'new', 'stored', true, 'response', v_response);
END $$;

-- Numbers the idempotency keys of operator top-ups.
CREATE SEQUENCE topup_seq;
