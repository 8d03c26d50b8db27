-- Every message that arrives counts the acknowledgements of the last day to its sender's
-- mailbox and domain (`store::ingest::recent_acks`). With the kind in the index the count
-- reads the index alone, not an outbox row for each acknowledgement counted.
DROP INDEX outbox_recipient_key;
DROP INDEX outbox_recipient_domain;
CREATE INDEX outbox_recipient_key ON outbox(recipient_key, kind, created_at);
CREATE INDEX outbox_recipient_domain ON outbox(recipient_domain, kind, created_at);
