-- The customer portal (issue 14): customer users sign in by a link sent by mail, and a
-- public support form opens a ticket only once its sender confirmed their address.

-- Whether a customer user sees the tickets of this organisation in the portal
-- ('organisation', the default) or only their own ('own').
ALTER TABLE organisations ADD COLUMN portal_visibility TEXT NOT NULL DEFAULT 'organisation'
    CHECK (portal_visibility IN ('own', 'organisation'));

-- A sign-in link sent by mail: single use, short-lived. Only the token's SHA-256 is kept.
CREATE TABLE portal_links (
    token_hash  TEXT PRIMARY KEY,
    customer_id INTEGER NOT NULL REFERENCES customer_users(id) ON DELETE CASCADE,
    -- The address the link was sent to: the session writes as this address.
    email       TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    expires_at  TEXT NOT NULL,
    used_at     TEXT
) STRICT;
CREATE INDEX portal_links_expiry ON portal_links(expires_at);

-- A signed-in customer user's browser: as the agents' sessions.
CREATE TABLE portal_sessions (
    token_hash  TEXT PRIMARY KEY,
    customer_id INTEGER NOT NULL REFERENCES customer_users(id) ON DELETE CASCADE,
    email       TEXT NOT NULL,
    csrf        TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    expires_at  TEXT NOT NULL
) STRICT;
CREATE INDEX portal_sessions_customer ON portal_sessions(customer_id);
CREATE INDEX portal_sessions_expiry ON portal_sessions(expires_at);

-- A request sent by the public support form, waiting for its sender to confirm the
-- address: the message as it will be ingested, and the token's SHA-256.
CREATE TABLE portal_requests (
    token_hash TEXT PRIMARY KEY,
    email      TEXT NOT NULL,
    raw        BLOB NOT NULL,
    created_at TEXT NOT NULL,
    expires_at TEXT NOT NULL
) STRICT;
CREATE INDEX portal_requests_expiry ON portal_requests(expires_at);

-- The outbox learns mail that belongs to no ticket: a sign-in link (`sign_in`) and the
-- confirmation of a support request (`confirm`), both automatic. The table is made
-- again because SQLite cannot drop a NOT NULL or change a CHECK in place.
CREATE TABLE outbox_new (
    id               INTEGER PRIMARY KEY,
    ticket_id        INTEGER REFERENCES tickets(id) ON DELETE CASCADE,
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
    created_at       TEXT NOT NULL,
    claimed_by       TEXT,
    kind             TEXT NOT NULL DEFAULT 'ack' CHECK (kind IN ('ack', 'reply', 'sign_in', 'confirm')),
    CHECK ((ticket_id IS NULL) = (kind IN ('sign_in', 'confirm')))
) STRICT;
INSERT INTO outbox_new (id, ticket_id, recipient, recipient_name, recipient_key, recipient_domain, sender,
        sender_name, subject, body_text, message_id, in_reply_to, refs, state, attempts, last_error,
        next_attempt_at, sent_at, created_at, claimed_by, kind)
    SELECT id, ticket_id, recipient, recipient_name, recipient_key, recipient_domain, sender,
        sender_name, subject, body_text, message_id, in_reply_to, refs, state, attempts, last_error,
        next_attempt_at, sent_at, created_at, claimed_by, kind
    FROM outbox;
DROP TABLE outbox;
ALTER TABLE outbox_new RENAME TO outbox;
CREATE INDEX outbox_due ON outbox(state, next_attempt_at);
CREATE INDEX outbox_recipient_key ON outbox(recipient_key, created_at);
CREATE INDEX outbox_recipient_domain ON outbox(recipient_domain, created_at);
CREATE INDEX outbox_ticket ON outbox(ticket_id, id);
