-- Trust, identity and acknowledgement safety (issue 10).

-- A new ticket opened because its sender may not write into the ticket its subject tag
-- or references pointed at: that ticket's number, so an agent can merge by hand.
ALTER TABLE tickets ADD COLUMN referred_ticket TEXT;
-- The receiving server we trust (`[[mailbox]] authserv_id`) recorded dmarc=fail.
ALTER TABLE tickets ADD COLUMN unauthenticated INTEGER NOT NULL DEFAULT 0;

-- Duplicates are the same Message-ID *and* the same content: SHA-256 over the body and
-- From/Date/Subject (trace headers excluded). NULL for articles stored before this
-- migration (their raw bytes are digested when needed).
ALTER TABLE articles ADD COLUMN content_digest TEXT;
-- An article agents see but the customer does not (e.g. a bounce of our acknowledgement).
ALTER TABLE articles ADD COLUMN internal INTEGER NOT NULL DEFAULT 0;
CREATE INDEX articles_message_id ON articles(message_id);

-- Every address on a ticket (From, To, Cc of its articles, and its customer address),
-- normalised: the participants who may write follow-ups.
CREATE TABLE ticket_addresses (
    ticket_id INTEGER NOT NULL REFERENCES tickets(id) ON DELETE CASCADE,
    email     TEXT NOT NULL,
    PRIMARY KEY (ticket_id, email)
) STRICT, WITHOUT ROWID;
CREATE INDEX ticket_addresses_email ON ticket_addresses(email);

INSERT OR IGNORE INTO ticket_addresses (ticket_id, email)
    SELECT id, lower(customer_email) FROM tickets WHERE customer_email IS NOT NULL;
-- The address lists of older articles are stored as "a@x, b@y": split them.
WITH RECURSIVE split(ticket_id, item, rest) AS (
    SELECT ticket_id, '', COALESCE(from_addr, '') || ', ' || to_addrs || ', ' || cc_addrs || ', ' FROM articles
    UNION ALL
    SELECT ticket_id, trim(substr(rest, 1, instr(rest, ', ') - 1)), substr(rest, instr(rest, ', ') + 2)
    FROM split WHERE rest <> ''
)
INSERT OR IGNORE INTO ticket_addresses (ticket_id, email)
    SELECT ticket_id, lower(item) FROM split WHERE item LIKE '%_@_%';

-- The outbox learns the state `bounced` (a delivery report for the acknowledgement came
-- back) and the keys the acknowledgement caps count by: the mailbox with plus-tags (and
-- the dots of providers that ignore them) folded, and the recipient's domain.
CREATE TABLE outbox_new (
    id               INTEGER PRIMARY KEY,
    ticket_id        INTEGER NOT NULL REFERENCES tickets(id) ON DELETE CASCADE,
    recipient        TEXT NOT NULL,
    recipient_name   TEXT,
    recipient_key    TEXT NOT NULL,
    recipient_domain TEXT NOT NULL,
    sender           TEXT NOT NULL,
    sender_name      TEXT,
    subject          TEXT NOT NULL,
    body_text        TEXT NOT NULL,
    message_id       TEXT NOT NULL UNIQUE,
    in_reply_to      TEXT,
    refs             TEXT NOT NULL,
    state            TEXT NOT NULL CHECK (state IN ('queued', 'sent', 'failed', 'bounced')),
    attempts         INTEGER NOT NULL DEFAULT 0,
    last_error       TEXT,
    next_attempt_at  TEXT NOT NULL,
    sent_at          TEXT,
    created_at       TEXT NOT NULL
) STRICT;
INSERT INTO outbox_new (id, ticket_id, recipient, recipient_name, recipient_key, recipient_domain, sender,
        sender_name, subject, body_text, message_id, in_reply_to, refs, state, attempts, last_error,
        next_attempt_at, sent_at, created_at)
    SELECT id, ticket_id, recipient, recipient_name, lower(recipient), lower(substr(recipient, instr(recipient, '@') + 1)),
        sender, sender_name, subject, body_text, message_id, in_reply_to, refs, state, attempts, last_error,
        next_attempt_at, sent_at, created_at
    FROM outbox;
DROP TABLE outbox;
ALTER TABLE outbox_new RENAME TO outbox;
CREATE INDEX outbox_due ON outbox(state, next_attempt_at);
CREATE INDEX outbox_recipient_key ON outbox(recipient_key, created_at);
CREATE INDEX outbox_recipient_domain ON outbox(recipient_domain, created_at);
