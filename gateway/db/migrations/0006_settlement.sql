-- Settled batches: the gateway's totals, the terminal's, and whether they agree.
CREATE TABLE gw_batches (
    tid text NOT NULL REFERENCES terminals (tid),
    batch integer NOT NULL,
    debit_fen bigint NOT NULL,
    debit_count integer NOT NULL,
    credit_fen bigint NOT NULL,
    credit_count integer NOT NULL,
    terminal_totals text NOT NULL,
    balanced boolean NOT NULL,
    settled_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tid, batch)
);
CREATE INDEX gw_batches_unbalanced ON gw_batches (settled_at) WHERE NOT balanced;
