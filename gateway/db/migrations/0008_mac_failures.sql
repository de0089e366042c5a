-- MAC failures in a row per terminal: the terminal is frozen automatically
-- after mac_failures_freeze_after of them (a verified MAC resets the count).
ALTER TABLE terminals ADD COLUMN mac_failures integer NOT NULL DEFAULT 0;
