-- The agents' web console (issue 13): agents and their sessions, a ticket's owner and
-- first response, the outbox learning agents' replies beside acknowledgements.

CREATE TABLE agents (
    id            INTEGER PRIMARY KEY,
    email         TEXT NOT NULL UNIQUE,
    name          TEXT NOT NULL,
    role          TEXT NOT NULL CHECK (role IN ('admin', 'editor', 'agent')),
    -- An Argon2id PHC string ("$argon2id$v=19$m=...").
    password_hash TEXT NOT NULL,
    disabled      INTEGER NOT NULL DEFAULT 0,
    created_at    TEXT NOT NULL
) STRICT;

-- A signed-in browser. The cookie carries a random token; only its SHA-256 is kept, so
-- a copy of the database signs nobody in. A restart keeps sessions; sign-out and
-- disabling the agent delete them.
CREATE TABLE sessions (
    token_hash TEXT PRIMARY KEY,
    agent_id   INTEGER NOT NULL REFERENCES agents(id) ON DELETE CASCADE,
    -- The CSRF token every form of this session carries.
    csrf       TEXT NOT NULL,
    created_at TEXT NOT NULL,
    expires_at TEXT NOT NULL
) STRICT;
CREATE INDEX sessions_agent ON sessions(agent_id);

ALTER TABLE tickets ADD COLUMN owner_id INTEGER REFERENCES agents(id) ON DELETE SET NULL;
-- When an agent first answered the customer: the first-response clock stops.
ALTER TABLE tickets ADD COLUMN first_response_at TEXT;
-- The last customer mail after the first, and when an agent last opened the ticket: a
-- ticket whose customer wrote since is marked in the list.
ALTER TABLE tickets ADD COLUMN customer_replied_at TEXT;
ALTER TABLE tickets ADD COLUMN agent_seen_at TEXT;
-- The console lists tickets by latest activity, a page at a time.
CREATE INDEX tickets_activity ON tickets(updated_at, id);
CREATE INDEX tickets_state_activity ON tickets(state, updated_at, id);

-- The agent who wrote an outbound article (a reply or an internal note).
ALTER TABLE articles ADD COLUMN agent_id INTEGER REFERENCES agents(id) ON DELETE SET NULL;

-- What an outbox row is: the acknowledgement of a new ticket (counted by the
-- acknowledgement caps, sent as auto-replied) or an agent's reply.
ALTER TABLE outbox ADD COLUMN kind TEXT NOT NULL DEFAULT 'ack' CHECK (kind IN ('ack', 'reply'));
