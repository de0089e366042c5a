-- The one table of a recorded transaction's status changes (from, to),
-- mirrored by gateway.domain.vocabulary.TRANSITIONS (a test holds the two
-- together). gw_set_status consults it and raises on any other change. The
-- statuses still to come (refunded, completed, cancelled, expired: WIRE.md
-- 9.2, 9.3) join gw_transactions' status check when their transactions land.
CREATE TABLE gw_status_transitions (
    from_status text NOT NULL,
    to_status text NOT NULL,
    PRIMARY KEY (from_status, to_status)
);
INSERT INTO gw_status_transitions (from_status, to_status) VALUES
    ('approved', 'voided'),
    ('approved', 'reversed'),
    ('voided', 'approved'),
    ('approved', 'refunded'),
    ('refunded', 'approved'),
    ('approved', 'completed'),
    ('completed', 'approved'),
    ('approved', 'cancelled'),
    ('cancelled', 'approved'),
    ('approved', 'expired');
