-- Batch upload (批上送, WIRE.md 9.4, 9.9): what a terminal holds for a batch,
-- kept per (terminal, batch, record STAN), the first one winning: its
-- records (60.3 = 201), advice copies (000: found, when they match an
-- approved 0220 not reversed) and IC TC records (203..206). The PAN is never
-- kept in clear: its keyed hash and masked form. The end message (202/207)
-- keeps the count sent and received and the differences against the
-- gateway's approvals (posgw batch diff).
CREATE TABLE gw_upload_records (
    tid text NOT NULL REFERENCES terminals (tid),
    batch integer NOT NULL,
    stan text NOT NULL,
    kind text NOT NULL CHECK (kind IN ('record', 'advice', 'ic')),
    card_org text,
    pan_hash bytea,
    pan_masked text,
    amount_fen bigint,
    found boolean,  -- an advice copy: its 0220 approved and not reversed
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tid, batch, stan)
);

CREATE TABLE gw_upload_ends (
    tid text NOT NULL REFERENCES terminals (tid),
    batch integer NOT NULL,
    sent_count integer NOT NULL,
    received_count integer NOT NULL,
    differences jsonb NOT NULL,  -- terminal_only, gateway_only, amount_differs (CLI.md batch diff)
    ended_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tid, batch)
);
