-- What the daemon remembers per watched mailbox.
CREATE TABLE mailbox_state (
    name         TEXT PRIMARY KEY,
    uidvalidity  INTEGER NOT NULL,
    last_poll_at TEXT
) STRICT;
