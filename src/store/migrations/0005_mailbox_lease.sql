-- Which daemon watches a mailbox: several daemons may share one database and be
-- configured with the same mailbox; one holds its lease and renews it, another takes it
-- over when it expires.
CREATE TABLE mailbox_leases (
    name       TEXT PRIMARY KEY,
    holder     TEXT NOT NULL,
    expires_at TEXT NOT NULL
) STRICT;
