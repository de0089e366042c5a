-- Chip terminals (WIRE.md 9.5, 9.9): the CAPK and AID lists the operator
-- registers, each list's version, and per terminal what it last downloaded and
-- the status of its devices.

CREATE TABLE ic_capks (
    rid bytea NOT NULL CHECK (length(rid) = 5),
    key_index smallint NOT NULL CHECK (key_index BETWEEN 0 AND 255),
    expiry text NOT NULL CHECK (expiry ~ '^[0-9]{8}$'),  -- YYYYMMDD
    hash_algorithm smallint NOT NULL DEFAULT 1,
    key_algorithm smallint NOT NULL DEFAULT 1,
    modulus bytea NOT NULL CHECK (length(modulus) BETWEEN 1 AND 248),
    exponent bytea NOT NULL,
    checksum bytea NOT NULL CHECK (length(checksum) = 20),
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (rid, key_index)
);

CREATE TABLE ic_aids (
    aid bytea PRIMARY KEY CHECK (length(aid) BETWEEN 5 AND 16),
    parameters_tlv bytea NOT NULL DEFAULT '',  -- the AID's parameter TLVs, after 9F06
    created_at timestamptz NOT NULL DEFAULT now()
);

-- One row: each list's version, raised by every change to it.
CREATE TABLE ic_list_versions (
    single boolean PRIMARY KEY DEFAULT true CHECK (single),
    capk_version bigint NOT NULL DEFAULT 0,
    aid_version bigint NOT NULL DEFAULT 0
);
INSERT INTO ic_list_versions DEFAULT VALUES;

-- Per terminal: for each list, whether it has queried it, the version the list
-- had at its last first query of a round (NN = 00), and the version recorded at
-- its last end message; the last status upload.
CREATE TABLE ic_terminal_state (
    tid text PRIMARY KEY REFERENCES terminals (tid) ON DELETE CASCADE,
    capk_queried boolean NOT NULL DEFAULT false,
    capk_round_version bigint,
    capk_version bigint,
    aid_queried boolean NOT NULL DEFAULT false,
    aid_round_version bigint,
    aid_version bigint,
    device_status jsonb,  -- tag -> value, as uploaded (362); what did not parse under "raw"
    device_status_at timestamptz
);
-- Terminals reporting a broken reader (03) or printer (04), for the metric.
CREATE INDEX ic_terminal_state_broken ON ic_terminal_state (tid)
    WHERE device_status->>'03' = '0' OR device_status->>'04' = '0';
