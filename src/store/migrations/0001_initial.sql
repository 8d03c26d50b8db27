-- postdesk schema, version 1. Timestamps are RFC 3339 UTC text ("2026-11-23T10:00:00Z"),
-- which sorts and compares correctly as text.

CREATE TABLE organisations (
    id                   INTEGER PRIMARY KEY,
    name                 TEXT NOT NULL UNIQUE COLLATE NOCASE,
    first_response_hours INTEGER,
    created_at           TEXT NOT NULL
) STRICT;

-- A domain belongs to exactly one organisation.
CREATE TABLE organisation_domains (
    domain          TEXT PRIMARY KEY,
    organisation_id INTEGER NOT NULL REFERENCES organisations(id) ON DELETE CASCADE
) STRICT;
CREATE INDEX organisation_domains_org ON organisation_domains(organisation_id);

CREATE TABLE customer_users (
    id              INTEGER PRIMARY KEY,
    name            TEXT,
    organisation_id INTEGER REFERENCES organisations(id) ON DELETE SET NULL,
    created_at      TEXT NOT NULL
) STRICT;
CREATE INDEX customer_users_org ON customer_users(organisation_id);
CREATE INDEX customer_users_created ON customer_users(created_at);

-- Every address resolves to one customer user; stored normalised (lower-case, IDNA).
CREATE TABLE customer_emails (
    email       TEXT PRIMARY KEY,
    customer_id INTEGER NOT NULL REFERENCES customer_users(id) ON DELETE CASCADE,
    is_primary  INTEGER NOT NULL DEFAULT 0
) STRICT;
CREATE INDEX customer_emails_customer ON customer_emails(customer_id);

-- Organisations a customer user is associated with beside the primary one.
CREATE TABLE customer_links (
    customer_id     INTEGER NOT NULL REFERENCES customer_users(id) ON DELETE CASCADE,
    organisation_id INTEGER NOT NULL REFERENCES organisations(id) ON DELETE CASCADE,
    PRIMARY KEY (customer_id, organisation_id)
) STRICT;

CREATE TABLE tickets (
    id              INTEGER PRIMARY KEY,
    number          TEXT NOT NULL UNIQUE,
    day             TEXT NOT NULL,
    seq             INTEGER NOT NULL,
    subject         TEXT NOT NULL,
    state           TEXT NOT NULL CHECK (state IN ('new', 'open', 'pending', 'closed')),
    customer_id     INTEGER REFERENCES customer_users(id) ON DELETE SET NULL,
    customer_email  TEXT,
    organisation_id INTEGER REFERENCES organisations(id) ON DELETE SET NULL,
    mailbox         TEXT NOT NULL,
    ack             TEXT NOT NULL,
    respond_by      TEXT,
    created_at      TEXT NOT NULL,
    updated_at      TEXT NOT NULL,
    UNIQUE (day, seq)
) STRICT;
CREATE INDEX tickets_customer ON tickets(customer_id);
CREATE INDEX tickets_org ON tickets(organisation_id);

CREATE TABLE articles (
    id             INTEGER PRIMARY KEY,
    ticket_id      INTEGER NOT NULL REFERENCES tickets(id) ON DELETE CASCADE,
    direction      TEXT NOT NULL CHECK (direction IN ('in', 'out')),
    message_key    TEXT UNIQUE,
    message_id     TEXT,
    from_addr      TEXT,
    from_name      TEXT,
    to_addrs       TEXT NOT NULL,
    cc_addrs       TEXT NOT NULL,
    subject        TEXT NOT NULL,
    sent_at        TEXT,
    body_text      TEXT NOT NULL,
    body_html      TEXT,
    classification TEXT NOT NULL,
    created_at     TEXT NOT NULL
) STRICT;
CREATE INDEX articles_ticket ON articles(ticket_id);

CREATE TABLE attachments (
    id           INTEGER PRIMARY KEY,
    article_id   INTEGER NOT NULL REFERENCES articles(id) ON DELETE CASCADE,
    filename     TEXT NOT NULL,
    content_type TEXT NOT NULL,
    size         INTEGER NOT NULL,
    content      BLOB NOT NULL
) STRICT;
CREATE INDEX attachments_article ON attachments(article_id);

CREATE TABLE raw_messages (
    article_id INTEGER PRIMARY KEY REFERENCES articles(id) ON DELETE CASCADE,
    raw        BLOB NOT NULL
) STRICT;

-- Every Message-ID we know (inbound and outbound) and its ticket, for follow-up routing.
CREATE TABLE message_ids (
    message_id TEXT PRIMARY KEY,
    ticket_id  INTEGER NOT NULL REFERENCES tickets(id) ON DELETE CASCADE
) STRICT;

-- The processed-message ledger: one row per source identity that reached a committed outcome.
CREATE TABLE processed (
    source       TEXT PRIMARY KEY,
    message_key  TEXT NOT NULL,
    ticket_id    INTEGER REFERENCES tickets(id) ON DELETE SET NULL,
    outcome      TEXT NOT NULL,
    processed_at TEXT NOT NULL
) STRICT;

CREATE TABLE outbox (
    id              INTEGER PRIMARY KEY,
    ticket_id       INTEGER NOT NULL REFERENCES tickets(id) ON DELETE CASCADE,
    recipient       TEXT NOT NULL,
    recipient_name  TEXT,
    sender          TEXT NOT NULL,
    sender_name     TEXT,
    subject         TEXT NOT NULL,
    body_text       TEXT NOT NULL,
    message_id      TEXT NOT NULL UNIQUE,
    in_reply_to     TEXT,
    refs            TEXT NOT NULL,
    state           TEXT NOT NULL CHECK (state IN ('queued', 'sent', 'failed')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    last_error      TEXT,
    next_attempt_at TEXT NOT NULL,
    sent_at         TEXT,
    created_at      TEXT NOT NULL
) STRICT;
CREATE INDEX outbox_due ON outbox(state, next_attempt_at);
CREATE INDEX outbox_recipient ON outbox(recipient, created_at);

CREATE TABLE failed_messages (
    id         INTEGER PRIMARY KEY,
    source     TEXT NOT NULL UNIQUE,
    reason     TEXT NOT NULL,
    size       INTEGER NOT NULL,
    raw        BLOB NOT NULL,
    attempts   INTEGER NOT NULL DEFAULT 1,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
) STRICT;
