-- Card transactions, version 2 (WIRE.md 9.2, 9.3, 9.8; issue 21).
-- The statuses of gateway.domain.vocabulary.Status that these transactions
-- reach: a purchase or completion refunded; a pre-authorization completed,
-- cancelled, or left until its hold expired.
ALTER TABLE gw_transactions DROP CONSTRAINT gw_transactions_status_check;
ALTER TABLE gw_transactions ADD CONSTRAINT gw_transactions_status_check
    CHECK (status IN ('approved', 'declined', 'voided', 'reversed', 'refunded', 'completed', 'cancelled',
                      'expired'));
-- A refund, cancel or completion names its original: its refunds and
-- completions are found from it.
CREATE INDEX gw_transactions_original ON gw_transactions (original_id) WHERE original_id IS NOT NULL;

-- A terminal registered without --permit may do everything (9.8): the new
-- permits join the default, and the terminals that had the whole of the
-- version 1 default (registered without --permit, or permitted everything).
ALTER TABLE terminals ALTER COLUMN permit SET DEFAULT '{purchase,balance,void,bill,refund,preauth}';
UPDATE terminals SET permit = permit || '{refund,preauth}'::text[]
 WHERE permit @> '{purchase,balance,void,bill}'::text[] AND NOT permit && '{refund,preauth}'::text[];
