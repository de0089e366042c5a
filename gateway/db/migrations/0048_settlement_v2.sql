-- Settlement, amended (WIRE.md 9.6, 9.9): which of the three counts the
-- terminal's totals matched (gross: a voided purchase a debit and its void a
-- credit; v1: the two left out; net: the voided purchase left out, its void a
-- credit), NULL when none did; the foreign half's flag for a 62-digit 48.
ALTER TABLE gw_batches
    ADD COLUMN counted text CHECK (counted IN ('gross', 'v1', 'net')),
    ADD COLUMN foreign_zero boolean;
