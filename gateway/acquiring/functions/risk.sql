-- Risk counters: re-applied by `posgw db migrate` whenever this file changes.

-- Check the daily and burst limits of a money-moving request under row locks
-- on its terminal's and card's counters for the day, so concurrent requests
-- (on any gateway instance) cannot slip past a limit. Returns NULL when the
-- request is within every limit, else {rule, outcome (amount_limit or
-- frequency_limit: gateway.acquiring.outcomes), values}.
--
-- r: {day, tid, card_id (or null), limits: {name: value}}
CREATE OR REPLACE FUNCTION gw_risk_check(r jsonb, p_amount bigint) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    v_day date := (r->>'day')::date;
    v_limits jsonb := r->'limits';
    v_card text := r->>'card_id';
    v_terminal record;
    v_card_counter record;
    v_burst integer;
    v_limit bigint;
BEGIN
    INSERT INTO risk_counters (scope, owner, day) VALUES ('terminal', r->>'tid', v_day) ON CONFLICT DO NOTHING;
    SELECT count, amount_fen INTO v_terminal FROM risk_counters
     WHERE scope = 'terminal' AND owner = r->>'tid' AND day = v_day FOR UPDATE;
    IF v_card IS NOT NULL THEN
        INSERT INTO risk_counters (scope, owner, day) VALUES ('card', v_card, v_day) ON CONFLICT DO NOTHING;
        SELECT count, amount_fen INTO v_card_counter FROM risk_counters
         WHERE scope = 'card' AND owner = v_card AND day = v_day FOR UPDATE;
    END IF;

    v_limit := coalesce((v_limits->>'terminal_daily_amount_max_fen')::bigint, 0);
    IF v_limit > 0 AND v_terminal.amount_fen + p_amount > v_limit THEN
        RETURN jsonb_build_object('rule', 'terminal_daily_amount_max_fen', 'outcome', 'amount_limit', 'values',
            jsonb_build_object('limit', v_limit, 'today_fen', v_terminal.amount_fen, 'amount_fen', p_amount));
    END IF;
    v_limit := coalesce((v_limits->>'card_daily_amount_max_fen')::bigint, 0);
    IF v_card IS NOT NULL AND v_limit > 0 THEN  -- nested: v_card_counter is unassigned without a card
        IF v_card_counter.amount_fen + p_amount > v_limit THEN
            RETURN jsonb_build_object('rule', 'card_daily_amount_max_fen', 'outcome', 'amount_limit', 'values',
                jsonb_build_object('limit', v_limit, 'today_fen', v_card_counter.amount_fen,
                                   'amount_fen', p_amount));
        END IF;
    END IF;
    v_limit := coalesce((v_limits->>'terminal_daily_count_max')::bigint, 0);
    IF v_limit > 0 AND v_terminal.count + 1 > v_limit THEN
        RETURN jsonb_build_object('rule', 'terminal_daily_count_max', 'outcome', 'frequency_limit', 'values',
            jsonb_build_object('limit', v_limit, 'today_count', v_terminal.count));
    END IF;
    v_limit := coalesce((v_limits->>'card_daily_count_max')::bigint, 0);
    IF v_card IS NOT NULL AND v_limit > 0 THEN
        IF v_card_counter.count + 1 > v_limit THEN
            RETURN jsonb_build_object('rule', 'card_daily_count_max', 'outcome', 'frequency_limit', 'values',
                jsonb_build_object('limit', v_limit, 'today_count', v_card_counter.count));
        END IF;
    END IF;
    v_limit := coalesce((v_limits->>'card_burst_count_max')::bigint, 0);
    IF v_card IS NOT NULL AND v_limit > 0 THEN
        SELECT count(*) INTO v_burst FROM gw_transactions
         WHERE card_id = v_card::bigint AND status = 'approved' AND risk_day IS NOT NULL
           AND created_at > now() - make_interval(secs => coalesce((v_limits->>'card_burst_window_s')::bigint, 0));
        IF v_burst + 1 > v_limit THEN
            RETURN jsonb_build_object('rule', 'card_burst_count_max', 'outcome', 'frequency_limit', 'values',
                jsonb_build_object('limit', v_limit, 'window_s', v_limits->'card_burst_window_s',
                                   'recent_count', v_burst));
        END IF;
    END IF;
    RETURN NULL;
END $$;

-- Add (sign 1) or give back (sign -1) an approval's use of its counters.
CREATE OR REPLACE FUNCTION gw_risk_count(p_tid text, p_card_id bigint, p_day date, p_amount bigint,
                                         p_sign integer) RETURNS void
LANGUAGE sql AS $$
    INSERT INTO risk_counters AS c (scope, owner, day, count, amount_fen)
    SELECT scope, owner, p_day, p_sign, p_sign * p_amount
      FROM (VALUES ('terminal', p_tid), ('card', p_card_id::text)) AS o (scope, owner)
     WHERE owner IS NOT NULL
    ON CONFLICT (scope, owner, day)
    DO UPDATE SET count = c.count + EXCLUDED.count, amount_fen = c.amount_fen + EXCLUDED.amount_fen;
$$;
