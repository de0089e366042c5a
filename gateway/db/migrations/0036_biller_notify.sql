-- Billers that want a notice of each payment that stands (`biller add --notify`):
-- the payment's transaction queues one in the biller outbox (kind 'notice',
-- sent as POST /payments/{receipt}/confirm).
ALTER TABLE billers ADD COLUMN notify boolean NOT NULL DEFAULT false;
