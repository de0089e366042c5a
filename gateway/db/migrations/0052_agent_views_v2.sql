-- The agent network's run over every kind of original and cancellation (CLI.md
-- rules "Shares" and "Clawbacks"): originals are approved purchases, completions
-- (0200, condition 20) and completion advices (0220, condition 24); cancellations
-- are voids, refunds and completion voids, reversals of an original or of a refund
-- (each taking back), and reversals of a void, a refund or a completion void (each
-- negative: the original stands again, and is shared again). A cancellation counts
-- only when it moved money (posting_key set). Columns as in migration 0032.

CREATE OR REPLACE VIEW agent_originals AS
SELECT t.id AS txn_id, t.tid, t.created_at, t.amount_fen,
       -- gw_posting_key's text (functions are applied after migrations: a view cannot call it)
       t.tid || ':' || t.batch::text || ':' || t.stan || ':' || t.mti_class AS posting_key
  FROM gw_transactions t
 WHERE t.mti_class IN ('0200', '0220') AND t.kind IN ('purchase', 'completion', 'completion_advice')
   AND t.response_code = '00';

CREATE OR REPLACE VIEW agent_cancellations AS
SELECT v.id AS event_id, v.original_id, v.created_at, o.amount_fen      -- a void, a completion void
  FROM gw_transactions v JOIN gw_transactions o ON o.id = v.original_id
 WHERE v.mti_class = '0200' AND v.kind IN ('void', 'completion_void') AND v.posting_key IS NOT NULL
UNION ALL
SELECT r.id, r.original_id, r.created_at, o.amount_fen                  -- a reversal of an original
  FROM gw_transactions r JOIN gw_transactions o ON o.id = r.original_id
 WHERE r.mti_class = '0400' AND r.posting_key IS NOT NULL
   AND o.mti_class IN ('0200', '0220') AND o.kind IN ('purchase', 'completion', 'completion_advice')
UNION ALL
SELECT r.id, v.original_id, r.created_at, -p.amount_fen                 -- a reversal of a void or completion void
  FROM gw_transactions r JOIN gw_transactions v ON v.id = r.original_id JOIN gw_transactions p ON p.id = v.original_id
 WHERE r.mti_class = '0400' AND r.posting_key IS NOT NULL AND v.mti_class = '0200'
   AND v.kind IN ('void', 'completion_void')
UNION ALL
SELECT f.id, f.original_id, f.created_at, f.amount_fen                  -- a refund: its own amount
  FROM gw_transactions f
 WHERE f.kind = 'refund' AND f.response_code = '00' AND f.posting_key IS NOT NULL
UNION ALL
SELECT r.id, f.original_id, r.created_at, -f.amount_fen                 -- a reversal of a refund: shared again
  FROM gw_transactions r JOIN gw_transactions f ON f.id = r.original_id
 WHERE r.mti_class = '0400' AND r.posting_key IS NOT NULL AND f.kind = 'refund';
