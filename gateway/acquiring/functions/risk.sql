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

-- The version of a terminal's risk limit overrides (its own and its
-- merchant's): part of the row versions a cached terminal is kept with
-- (gateway.acquiring.context_cache), so that a limit set after it was cached
-- sends its next request back for a fresh read.
CREATE OR REPLACE FUNCTION gw_limits_version(p_mid text, p_tid text) RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT coalesce(string_agg(l.scope || l.name || l.xmin::text, ',' ORDER BY l.scope, l.name), '')
      FROM risk_limits l
     WHERE (l.scope = 'merchant' AND l.owner = p_mid) OR (l.scope = 'terminal' AND l.owner = p_tid)
$$;

-- Great-circle distance in km (haversine), as gateway.acquiring.risk.distance_km.
CREATE OR REPLACE FUNCTION gw_distance_km(p_lat1 float8, p_lon1 float8, p_lat2 float8, p_lon2 float8)
RETURNS float8 LANGUAGE sql IMMUTABLE AS $$
    SELECT 2 * 6371.0088 * asin(sqrt(sin(radians(p_lat2 - p_lat1) / 2) ^ 2
           + cos(radians(p_lat1)) * cos(radians(p_lat2)) * sin(radians(p_lon2 - p_lon1) / 2) ^ 2))
$$;

-- The travel and spike rules of a request checked against cached records
-- (which carry no history): true when either would decline it, on what the
-- database holds now, in the transaction that records it. The gateway then
-- checks the request again on a fresh read (gw_finish_many answers it
-- {status: stale}), where gateway.acquiring.risk declines it with its values,
-- exactly as a request never cached. Same rules, same arithmetic:
-- check_travel (the card's last approved use with a position) and
-- check_spike (the terminal's approvals today against its 30-day average).
--
-- r: {travel: {lat, lon, speed_kmh_max, distance_km_min}} and/or
--    {spike: {tid, day, factor, floor}}; p_card_id: the request's card.
CREATE OR REPLACE FUNCTION gw_risk_recheck(r jsonb, p_card_id bigint) RETURNS boolean
LANGUAGE plpgsql STABLE AS $$
DECLARE
    v_travel jsonb := r->'travel';
    v_spike jsonb := r->'spike';
    v_last record;
    v_distance float8;
    v_today integer;
    v_past bigint;
BEGIN
    IF v_travel IS NOT NULL AND p_card_id IS NOT NULL THEN
        SELECT g.latitude, g.longitude, greatest(extract(epoch FROM now() - g.created_at)::float8, 1.0) AS seconds
          INTO v_last
          FROM gw_transactions g
         WHERE g.card_id = p_card_id AND g.status = 'approved' AND g.latitude IS NOT NULL
         ORDER BY g.created_at DESC LIMIT 1;
        IF FOUND THEN
            v_distance := gw_distance_km((v_travel->>'lat')::float8, (v_travel->>'lon')::float8,
                                         v_last.latitude, v_last.longitude);
            IF v_distance >= (v_travel->>'distance_km_min')::float8
               AND v_distance / (v_last.seconds / 3600) > (v_travel->>'speed_kmh_max')::float8 THEN
                RETURN true;
            END IF;
        END IF;
    END IF;
    IF v_spike IS NOT NULL THEN
        SELECT coalesce(sum(count) FILTER (WHERE day = (v_spike->>'day')::date), 0),
               coalesce(sum(count) FILTER (WHERE day < (v_spike->>'day')::date), 0)
          INTO v_today, v_past
          FROM risk_counters
         WHERE scope = 'terminal' AND owner = v_spike->>'tid'
           AND day >= (v_spike->>'day')::date - 30 AND day <= (v_spike->>'day')::date;
        IF v_today + 1 > greatest((v_spike->>'floor')::float8,
                                  (v_spike->>'factor')::float8 * v_past / 30.0) THEN
            RETURN true;
        END IF;
    END IF;
    RETURN false;
END $$;
