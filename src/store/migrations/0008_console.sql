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
-- A ticket's outbox rows (its acknowledgement's state in every list of tickets).
CREATE INDEX outbox_ticket ON outbox(ticket_id, id);

-- Tickets per state, kept by triggers: the console shows the counts on every list, and
-- counting 100,000 tickets each time costs more than the page.
CREATE TABLE ticket_state_counts (
    state   TEXT PRIMARY KEY,
    tickets INTEGER NOT NULL
) STRICT;
INSERT INTO ticket_state_counts (state, tickets)
    SELECT s.state, (SELECT COUNT(*) FROM tickets t WHERE t.state = s.state)
    FROM (SELECT 'new' AS state UNION ALL SELECT 'open' UNION ALL SELECT 'pending' UNION ALL SELECT 'closed') s;
CREATE TRIGGER tickets_counted_in AFTER INSERT ON tickets BEGIN
    UPDATE ticket_state_counts SET tickets = tickets + 1 WHERE state = NEW.state;
END;
CREATE TRIGGER tickets_counted_out AFTER DELETE ON tickets BEGIN
    UPDATE ticket_state_counts SET tickets = tickets - 1 WHERE state = OLD.state;
END;
CREATE TRIGGER tickets_counted_moved AFTER UPDATE OF state ON tickets WHEN OLD.state <> NEW.state BEGIN
    UPDATE ticket_state_counts SET tickets = tickets - 1 WHERE state = OLD.state;
    UPDATE ticket_state_counts SET tickets = tickets + 1 WHERE state = NEW.state;
END;
-- An agent's tickets, counted by state and listed by activity without reading a row.
CREATE INDEX tickets_owner ON tickets(owner_id, state, updated_at, id);
-- Organisations are named in filters in any case: found by the folded name, not by
-- folding every name.
CREATE INDEX organisations_folded ON organisations(fold(name));
-- A customer's and an organisation's tickets, by latest activity.
DROP INDEX tickets_customer;
DROP INDEX tickets_org;
CREATE INDEX tickets_customer ON tickets(customer_id, updated_at, id);
CREATE INDEX tickets_org ON tickets(organisation_id, updated_at, id);

-- What the Customers page sorts, searches and counts by, kept by triggers so that a page
-- of 50,000 customers reads an index instead of folding every name: the sort key of the
-- name (else the primary address), the folded name and addresses, the ticket count.
-- `sort_key` and `fold` are postdesk's (`store::register_functions`): every connection
-- that writes customers must be opened by postdesk.
ALTER TABLE customer_users ADD COLUMN sort_name TEXT NOT NULL DEFAULT '';
ALTER TABLE customer_users ADD COLUMN search_text TEXT NOT NULL DEFAULT '';
ALTER TABLE customer_users ADD COLUMN ticket_count INTEGER NOT NULL DEFAULT 0;
UPDATE customer_users SET ticket_count = (SELECT COUNT(*) FROM tickets t WHERE t.customer_id = customer_users.id);
CREATE INDEX customer_users_sort ON customer_users(sort_name, id);
-- The Customers page's counts without a filter: all customers, and those with tickets.
CREATE TABLE customer_counts (
    customers    INTEGER NOT NULL,
    with_tickets INTEGER NOT NULL
) STRICT;
INSERT INTO customer_counts (customers, with_tickets)
    SELECT COUNT(*), COALESCE(SUM(ticket_count > 0), 0) FROM customer_users;
CREATE TRIGGER customers_counted_in AFTER INSERT ON customer_users BEGIN
    UPDATE customer_counts SET customers = customers + 1, with_tickets = with_tickets + (NEW.ticket_count > 0);
END;
CREATE TRIGGER customers_counted_out AFTER DELETE ON customer_users BEGIN
    UPDATE customer_counts SET customers = customers - 1, with_tickets = with_tickets - (OLD.ticket_count > 0);
END;
CREATE TRIGGER customers_counted_tickets AFTER UPDATE OF ticket_count ON customer_users
    WHEN (OLD.ticket_count > 0) <> (NEW.ticket_count > 0) BEGIN
    UPDATE customer_counts SET with_tickets = with_tickets + (NEW.ticket_count > 0) - (OLD.ticket_count > 0);
END;
CREATE INDEX customer_users_with_tickets ON customer_users(sort_name, id) WHERE ticket_count > 0;
CREATE INDEX customer_users_without_tickets ON customer_users(sort_name, id) WHERE ticket_count = 0;

-- The search text by its trigrams: a search for a part of a name or an address reads an
-- index instead of every customer (searches of one or two characters still scan).
CREATE VIRTUAL TABLE customer_search USING fts5(text, tokenize = 'trigram');
INSERT INTO customer_search (rowid, text) SELECT id, '' FROM customer_users;
CREATE TRIGGER customer_search_in AFTER INSERT ON customer_users BEGIN
    INSERT INTO customer_search (rowid, text) VALUES (NEW.id, NEW.search_text);
END;
CREATE TRIGGER customer_search_out AFTER DELETE ON customer_users BEGIN
    DELETE FROM customer_search WHERE rowid = OLD.id;
END;
CREATE TRIGGER customer_search_changed AFTER UPDATE OF search_text ON customer_users BEGIN
    UPDATE customer_search SET text = NEW.search_text WHERE rowid = NEW.id;
END;

CREATE TRIGGER customer_named AFTER UPDATE OF name ON customer_users BEGIN
    UPDATE customer_users SET
        sort_name = sort_key(COALESCE(NEW.name, (SELECT e.email FROM customer_emails e
                                                 WHERE e.customer_id = NEW.id AND e.is_primary = 1), '')),
        search_text = fold(COALESCE(NEW.name, '') || ' ' || COALESCE((SELECT group_concat(e.email, ' ')
                                                                      FROM customer_emails e WHERE e.customer_id = NEW.id), ''))
    WHERE id = NEW.id;
END;
-- An address added, removed or moved: the customer's keys are made again by the trigger
-- above, which a same-value update of the name fires.
CREATE TRIGGER customer_email_in AFTER INSERT ON customer_emails BEGIN
    UPDATE customer_users SET name = name WHERE id = NEW.customer_id;
END;
CREATE TRIGGER customer_email_out AFTER DELETE ON customer_emails BEGIN
    UPDATE customer_users SET name = name WHERE id = OLD.customer_id;
END;
CREATE TRIGGER customer_email_moved AFTER UPDATE ON customer_emails BEGIN
    UPDATE customer_users SET name = name WHERE id IN (OLD.customer_id, NEW.customer_id);
END;
-- The sort and search keys of the customers there are: made by the trigger above.
UPDATE customer_users SET name = name;
CREATE TRIGGER customer_ticket_in AFTER INSERT ON tickets WHEN NEW.customer_id IS NOT NULL BEGIN
    UPDATE customer_users SET ticket_count = ticket_count + 1 WHERE id = NEW.customer_id;
END;
CREATE TRIGGER customer_ticket_out AFTER DELETE ON tickets WHEN OLD.customer_id IS NOT NULL BEGIN
    UPDATE customer_users SET ticket_count = ticket_count - 1 WHERE id = OLD.customer_id;
END;
CREATE TRIGGER customer_ticket_moved AFTER UPDATE OF customer_id ON tickets
    WHEN OLD.customer_id IS NOT NEW.customer_id BEGIN
    UPDATE customer_users SET ticket_count = ticket_count - 1 WHERE id = OLD.customer_id;
    UPDATE customer_users SET ticket_count = ticket_count + 1 WHERE id = NEW.customer_id;
END;
