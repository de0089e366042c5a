-- Batch upload (WIRE.md 9.4, 9.9): the differences between what a terminal
-- uploaded for a batch and what the gateway approved in it. Re-applied by
-- `posgw db migrate` whenever this file changes.

-- The gateway's side is what the gross count of the settlement counts (the
-- batch's debits and credits, none reversed as the terminal was told), by
-- STAN; the terminal's side its records, advice copies and IC records, by
-- STAN. terminal_only (stan, pan_masked, amount_fen), gateway_only (stan,
-- rrn, kind, amount_fen), amount_differs (stan, terminal_fen, gateway_fen,
-- and both masked PANs: a PAN or an amount that differs), each by STAN.
CREATE OR REPLACE FUNCTION gw_batch_differences(p_tid text, p_batch integer) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    WITH gateway AS (
        SELECT t.stan, t.rrn, t.kind, t.amount_fen, c.pan_hash, c.pan_masked
          FROM gw_transactions t LEFT JOIN cards c ON c.id = t.card_id
         WHERE t.tid = p_tid AND t.batch = p_batch AND t.mti_class IN ('0200', '0220')
           AND t.status NOT IN ('declined', 'reversed')
           AND t.kind IN ('purchase', 'bill_payment', 'voucher_sale', 'completion', 'completion_advice', 'void',
                          'refund', 'completion_void')
           AND NOT EXISTS (SELECT 1 FROM gw_transactions r
                            WHERE r.original_id = t.id AND r.mti_class = '0400' AND r.response_code = '00')),
    terminal AS (
        SELECT stan, pan_hash, pan_masked, amount_fen FROM gw_upload_records WHERE tid = p_tid AND batch = p_batch)
    SELECT jsonb_build_object(
        'terminal_only', coalesce((
            SELECT jsonb_agg(jsonb_build_object('stan', r.stan, 'pan_masked', r.pan_masked, 'amount_fen', r.amount_fen)
                             ORDER BY r.stan)
              FROM terminal r WHERE NOT EXISTS (SELECT 1 FROM gateway g WHERE g.stan = r.stan)), '[]'),
        'gateway_only', coalesce((
            SELECT jsonb_agg(jsonb_build_object('stan', g.stan, 'rrn', g.rrn, 'kind', g.kind,
                                                'amount_fen', g.amount_fen) ORDER BY g.stan)
              FROM gateway g WHERE NOT EXISTS (SELECT 1 FROM terminal r WHERE r.stan = g.stan)), '[]'),
        'amount_differs', coalesce((
            SELECT jsonb_agg(jsonb_build_object('stan', g.stan, 'terminal_fen', r.amount_fen,
                                                'gateway_fen', g.amount_fen, 'terminal_pan_masked', r.pan_masked,
                                                'gateway_pan_masked', g.pan_masked) ORDER BY g.stan)
              FROM gateway g JOIN terminal r ON r.stan = g.stan
             WHERE r.amount_fen IS DISTINCT FROM g.amount_fen
                OR (r.pan_hash IS NOT NULL AND r.pan_hash IS DISTINCT FROM g.pan_hash)), '[]'))
$$;
