-- Ticket numbers come from a counter row per day instead of MAX(seq) + 1, so that a
-- writer that takes a number meanwhile is noticed (see store::ingest::take_number).
CREATE TABLE ticket_counters (
    day      TEXT PRIMARY KEY,
    last_seq INTEGER NOT NULL
);
INSERT INTO ticket_counters (day, last_seq) SELECT day, MAX(seq) FROM tickets GROUP BY day;
