-- The agent's counter (WIRE.md 9.7, 9.9): a prepaid voucher sale's recording
-- (gw_finish dispatches op 'voucher_sale' here), the voucher it keeps, and what
-- its reversal asks of the voucher. The table: migration 0060.

-- A voucher sale: unless its reversal came first or a counted risk limit
-- declines it, its transfers posted (the agent's float to the biller, the
-- commission back to the agent: insufficient_funds when the float is short);
-- approved, the agent's float after it (float_fen, the answer's FB).
CREATE OR REPLACE FUNCTION gw_record_voucher_sale(p jsonb, p_key text, p_reversed_first boolean) RETURNS jsonb
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
    IF v_result = 'exceeds_credits' THEN
        RETURN '{"outcome": "insufficient_funds"}';
    ELSIF v_result <> 'ok' THEN
        RAISE EXCEPTION 'voucher sale posting failed: %', v_result;
    END IF;
    RETURN jsonb_build_object('outcome', 'approved', 'posting_key', p_key, 'values', (
        SELECT jsonb_build_object('float_fen', credits_posted - debits_posted) FROM ledger_accounts
         WHERE id = (p->'bill'->>'float_account_id')::bigint));
END $$;

-- An approved voucher sale, once recorded (p_txn_id): its voucher kept, valid,
-- its PIN as the keyed hash the gateway computed.
CREATE OR REPLACE FUNCTION gw_voucher_sold(p jsonb, p_txn_id bigint) RETURNS void
LANGUAGE sql AS $$
    INSERT INTO vouchers (serial, biller_code, amount_fen, pin_hash, tid, receipt, txn_id, sold_at, sold_on)
    VALUES (p->'voucher'->>'serial', p->'bill'->>'biller_code', (p->>'amount')::bigint,
            decode(p->'voucher'->>'pin_hash', 'hex'), p->>'tid', p->'bill'->>'receipt', p_txn_id,
            (p->'voucher'->>'sold_at')::timestamptz, (p->'voucher'->>'sold_on')::date)
$$;

-- A voucher sale being reversed (p_txn_id, locked by the reversal): whether
-- its voucher was redeemed, the voucher's row locked so that a redemption
-- racing the reversal either came first (redeemed: the reversal moves
-- nothing) or finds the voucher void.
CREATE OR REPLACE FUNCTION gw_voucher_redeemed(p_txn_id bigint) RETURNS boolean
LANGUAGE sql AS $$
    SELECT coalesce((SELECT status = 'redeemed' FROM vouchers WHERE txn_id = p_txn_id FOR UPDATE), false)
$$;
