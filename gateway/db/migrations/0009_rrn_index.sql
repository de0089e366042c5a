-- The void's lookup of its original (terminal, RRN, ...) gets an index led by
-- the RRN. Led by the terminal, it could serve any lookup by terminal, and
-- before gw_transactions had statistics (a new database, its first minute of
-- traffic) the gateway's generic plans read a request's stored answer, keyed
-- by (terminal, batch, STAN, class), through it: every row of the terminal
-- scanned, PostgreSQL's time per purchase growing with them, until the first
-- autoanalyze re-planned. Now only the key's unique index leads with the
-- terminal. (The rebuild blocks writes to gw_transactions while it runs: on a
-- large live table, migrate in a quiet hour.)
DROP INDEX gw_transactions_rrn;
CREATE INDEX gw_transactions_rrn ON gw_transactions (rrn, tid);
