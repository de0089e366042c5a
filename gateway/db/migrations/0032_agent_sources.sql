-- What the agent network's run shares and claws back: its plug-in points.
-- A new kind of original (a completion) is one more branch of agent_originals;
-- a new kind of cancellation (a refund, a completion void) one more branch of
-- agent_cancellations, with its amount (negative when the original stands again).

-- Originals: approved when recorded, whatever became of them since (their
-- cancellations are clawed back). discount_fen is what the original's posting
-- actually moved to the house's fee income account.
CREATE VIEW agent_originals AS
SELECT t.id AS txn_id, t.tid, t.created_at, t.amount_fen,
       -- gw_posting_key's text (functions are applied after migrations: a view cannot call it)
       t.tid || ':' || t.batch::text || ':' || t.stan || ':' || t.mti_class AS posting_key
  FROM gw_transactions t
 WHERE t.mti_class = '0200' AND t.kind = 'purchase' AND t.response_code = '00';

-- Cancellations that moved money (posting_key set), with the original they cancel.
CREATE VIEW agent_cancellations AS
SELECT v.id AS event_id, v.original_id, v.created_at, o.amount_fen    -- a void of a purchase
  FROM gw_transactions v JOIN gw_transactions o ON o.id = v.original_id
 WHERE v.mti_class = '0200' AND v.kind = 'void' AND v.posting_key IS NOT NULL
UNION ALL
SELECT r.id, r.original_id, r.created_at, o.amount_fen                -- a reversal of a purchase
  FROM gw_transactions r JOIN gw_transactions o ON o.id = r.original_id
 WHERE r.mti_class = '0400' AND r.posting_key IS NOT NULL AND o.mti_class = '0200' AND o.kind = 'purchase'
UNION ALL
SELECT r.id, v.original_id, r.created_at, -p.amount_fen               -- a reversal of a void: it stands again
  FROM gw_transactions r JOIN gw_transactions v ON v.id = r.original_id JOIN gw_transactions p ON p.id = v.original_id
 WHERE r.mti_class = '0400' AND r.posting_key IS NOT NULL AND v.mti_class = '0200' AND v.kind = 'void';
